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

REGISTRIES = {"pipeline": STAGES, "callbacks": CALLBACKS, "platform": PLATFORMS, "recipe": RECIPES}


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_registry_names_equal_config_file_names(group):
    files = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    assert files == REGISTRIES[group].names()


@pytest.mark.parametrize("group", ["pipeline", "callbacks"])
def test_component_config_files_hold_every_parameter_with_its_default(group):
    registry = REGISTRIES[group]
    for name in registry.names():
        data = yaml.safe_load((config_dir() / group / f"{name}.yaml").read_text())
        assert data.pop("type") == name
        cls = registry.get(name)
        assert set(data) == set(cls.Params.model_fields), f"{group}/{name}.yaml vs {cls.__name__}.Params"
        required = {k for k, f in cls.Params.model_fields.items() if f.is_required()}
        assert all(data[k] == "???" for k in required), f"{name}: required fields are ??? in the config"
        fillers = {"classes": ["a"]}
        defaults = cls.Params(**{k: fillers[k] for k in required}).model_dump(mode="json")
        optional = {k: v for k, v in data.items() if k not in required}
        assert yaml.safe_load(yaml.safe_dump({k: defaults[k] for k in optional})) == yaml.safe_load(yaml.safe_dump(optional))


def test_recipe_settings_in_config_match_the_settings_model():
    from brevetti_pipe import Job

    for name in RECIPES.names():
        job = Job.init(overrides=[f"recipe={name}", "platform.root=memory://golden"])
        model = RECIPES.get(name).settings
        assert set(job.config.settings) == set(model.model_fields), name


def test_registering_a_name_twice_is_an_error():
    from brevetti_pipe.stages import Stage

    with pytest.raises(ValueError, match="already registered"):
        class Clash(Stage, name="image_pipeline"):
            pass
