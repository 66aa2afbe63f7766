"""The configs/ tree mirrors the registries one to one, and every config file validates."""

from __future__ import annotations

import pytest
import yaml

from brevetti_pipe._util.resources import config_dir
from brevetti_pipe.reporting import CALLBACKS
from brevetti_pipe.data import Dataset  # noqa: F401
from brevetti_pipe.platform import PLATFORMS
from brevetti_pipe.run.recipe import RECIPES
from brevetti_pipe.stages import STAGES

def _packaged(registry):
    """Names registered by brevetti_pipe itself (tests register temporary recipes in-process)."""
    def module(item):
        return getattr(getattr(item, "run", item), "__module__", "") or ""

    return [n for n in registry.names() if module(registry.get(n)).startswith("brevetti_pipe")]


REGISTRIES = {"pipeline": STAGES, "callbacks": CALLBACKS, "platform": PLATFORMS, "recipe": RECIPES}


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_registry_names_equal_config_file_names(group):
    files = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    assert files == _packaged(REGISTRIES[group])


@pytest.mark.parametrize("group", ["pipeline", "callbacks"])
def test_component_config_files_are_generated_from_their_models(group):
    """Each file is exactly what its Params model generates (defaults and descriptions stated once)."""
    import os

    from brevetti_pipe._util.yaml_gen import GENERATED_MARK, component_yaml

    registry = REGISTRIES[group]
    stale = []
    for name in registry.names():
        if not registry.get(name).__module__.startswith("brevetti_pipe."):
            continue  # registered by a test module (a user's own component): it ships no config file
        path = config_dir() / group / f"{name}.yaml"
        text = path.read_text()
        header = text.split(GENERATED_MARK)[0] if GENERATED_MARK in text else ""
        expected = component_yaml(name, registry.get(name).Params, header, fillers={"classes": ["a"]})
        data = yaml.safe_load(expected)
        cls = registry.get(name)
        required = {k for k, f in cls.Params.model_fields.items() if f.is_required()}
        assert data.pop("type") == name and set(data) == set(cls.Params.model_fields)
        assert all(data[k] == "???" for k in required)
        if text != expected:
            if os.environ.get("BREVETTI_PIPE_REGEN_CONFIGS") == "1":
                path.write_text(expected)
            else:
                stale.append(f"{group}/{name}.yaml")
    assert not stale, f"{stale} differ from their models; regenerate with BREVETTI_PIPE_REGEN_CONFIGS=1 make test"


def test_generated_config_file_holds_the_model_defaults():
    """The generator writes values the model reads back as its own defaults."""
    from brevetti_pipe._util.yaml_gen import component_yaml

    for registry in (STAGES, CALLBACKS):
        for name in registry.names():
            cls = registry.get(name)
            required = {k for k, f in cls.Params.model_fields.items() if f.is_required()}
            data = yaml.safe_load(component_yaml(name, cls.Params))
            data.pop("type")
            fill = {k: ["a"] for k in required}
            assert cls.Params(**{**data, **fill}).model_dump() == cls.Params(**fill).model_dump(), name


def test_recipe_settings_in_config_match_the_settings_model():
    from brevetti_pipe import Job

    for name in _packaged(RECIPES):
        job = Job.init(overrides=[f"recipe={name}", "platform.root=memory://golden"])
        model = RECIPES.get(name).settings
        assert set(job.config.settings) == set(model.model_fields), name


def test_registering_a_name_twice_is_an_error():
    from brevetti_pipe.stages import Stage

    with pytest.raises(ValueError, match="already registered"):
        class Clash(Stage, name="image_pipeline"):
            pass
