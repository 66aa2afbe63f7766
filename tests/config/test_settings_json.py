"""Platform settings JSON: every mistake is a ConfigError naming the file and the key."""

from __future__ import annotations

import json

import pytest

from brevetti_pipe import Job
from brevetti_pipe.errors import ConfigError


def _init_with(tmp_path, text: str):
    path = tmp_path / "settings.json"
    path.write_text(text)
    return Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={path}"])


def test_malformed_json_names_file_line_and_column(tmp_path):
    with pytest.raises(ConfigError) as err:
        _init_with(tmp_path, '{\n  "settings": {\n    "epochs": 3,\n  }\n}')
    assert "settings.json" in str(err.value) and "line 4" in str(err.value)


def test_unknown_top_level_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'setings'.*Did you mean 'settings'\?"):
        _init_with(tmp_path, json.dumps({"setings": {"epochs": 3}}))


def test_unknown_nested_key_is_named_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'settings.epoch'.*Did you mean 'epochs'\?"):
        _init_with(tmp_path, json.dumps({"settings": {"epoch": 3}}))


def test_wrong_type_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"settings.epochs.*Received: settings.epochs='three'"):
        _init_with(tmp_path, json.dumps({"settings": {"epochs": "three"}}))


def test_json_must_be_an_object(tmp_path):
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        _init_with(tmp_path, "[1, 2]")


def test_api_key_in_json_is_taken_out(tmp_path):
    job = _init_with(tmp_path, json.dumps({"api_key": "json-secret-123", "settings": {"epochs": 2}}))
    assert job.settings.epochs == 2
    assert "json-secret-123" not in json.dumps(job.output())


def test_unknown_stage_type_lists_registered_stages(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline.image.type.*Did you mean 'image_pipeline'\?"):
        _init_with(tmp_path, json.dumps({"pipeline": {"image": {"type": "image_pipline"}}}))


def test_bad_stage_parameter_is_caught_before_data_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'pipeline.image.target_sise'.*Did you mean 'target_size'\?"):
        _init_with(tmp_path, json.dumps({"pipeline": {"image": {"target_sise": [3, 3]}}}))
    assert not (tmp_path / "datasets").exists()
