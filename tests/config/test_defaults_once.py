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
