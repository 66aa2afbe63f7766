"""Config defaults are stated once: the pydantic models are the source; the group files repeat them exactly.

Regenerate a file from its model with ``yaml.safe_dump(Model().model_dump(mode="json"))``.
"""

from __future__ import annotations

import pytest
import yaml

from brevetti_pipe._util.resources import config_dir
from brevetti_pipe.config import DataConfig, JobSection, PlatformConfig, SamplerConfig, SplitConfig, validate_model
from brevetti_pipe.errors import ConfigError

GROUP_FILES = {
    "split/sample_split": SplitConfig,
    "sampler/stratified": SamplerConfig,
    "data/default": DataConfig,
    "job/default": JobSection,
}


@pytest.mark.parametrize("name", sorted(GROUP_FILES))
def test_group_file_equals_the_model_defaults(name):
    data = yaml.safe_load((config_dir() / f"{name}.yaml").read_text())
    assert data == GROUP_FILES[name]().model_dump(mode="json"), f"configs/{name}.yaml differs from its model's defaults"


def test_platform_file_holds_the_model_defaults_besides_the_root():
    data = yaml.safe_load((config_dir() / "platform" / "local.yaml").read_text())
    defaults = PlatformConfig(root=".").model_dump(mode="json")
    assert set(data) == set(defaults)
    assert {k: v for k, v in data.items() if k != "root"} == {k: v for k, v in defaults.items() if k != "root"}


@pytest.mark.parametrize("model, key", [(SplitConfig, "split"), (SamplerConfig, "sampler")])
def test_type_keys_are_checked_not_ignored(model, key):
    with pytest.raises(ConfigError, match=f"{key}.type"):
        validate_model(model, {"type": "nonexistent"}, prefix=key)


def _missing_keys(model, node, prefix=""):
    """Fields of ``model`` (and of its nested section models) that ``node`` does not hold."""
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in node:
            out.append(prefix + key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and isinstance(node[key], dict):
            out += _missing_keys(field.annotation, node[key], f"{prefix}{key}.")
    return out


def test_the_composed_config_holds_every_key_so_plain_overrides_work():
    # a key the schema knows but the YAML leaves out needs Hydra's `+key=` (README-documented keys failed plainly)
    from omegaconf import OmegaConf

    from brevetti_pipe.config import JobConfig
    from brevetti_pipe.config._compose import compose

    cfg, _, _ = compose([])
    assert _missing_keys(JobConfig, OmegaConf.to_container(cfg, resolve=False)) == []
    cfg, _, _ = compose(["export.parity_samples=8", "export.tolerance=0.001"])
    assert (cfg.export.parity_samples, cfg.export.tolerance) == (8, 0.001)


def test_the_plus_once_needed_for_the_export_parity_keys_still_works(tmp_path):
    # `+export.parity_samples=0` was the only spelling before the config held the key; Hydra refuses `+`
    # on an existing key, so the old command lines and Job.init overrides are upgraded to `++`
    from tests.conftest import run_cli

    proc = run_cli("+export.parity_samples=0", "+export.tolerance=0.01", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    export = yaml.safe_load(proc.stdout)["export"]
    assert (export["parity_samples"], export["tolerance"]) == (0, 0.01)


def test_the_main_config_states_the_export_defaults_of_its_model():
    from brevetti_pipe.config import ExportConfig

    data = yaml.safe_load((config_dir() / "config.yaml").read_text())
    assert data["export"] == ExportConfig().model_dump(mode="json")
