"""Precedence, lowest to highest: defaults < config files / recipe < settings JSON < command line.

One test per rule, named after it. Job.init composes exactly as the CLI does.
"""

from __future__ import annotations

import json

import pytest

from brevetti_pipe import Job
from brevetti_pipe.errors import ConfigError


def _job(tmp_path, *overrides, json_doc=None, job_id="job-1"):
    if json_doc is not None:
        path = tmp_path / "p" / "jobs" / job_id / "job.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_doc))
    return Job.init(job_id=job_id, overrides=[f"platform.root={tmp_path / 'p'}", *overrides])


def test_defaults_apply_without_recipe(tmp_path):
    job = _job(tmp_path)
    assert job.config.job.name == "brevetti_pipe"
    assert job.config.split.fractions == {"train": 0.8, "devel": 0.2, "test": 0.0}
    assert job.config.run is None and job.config.pipeline == {}


def test_recipe_overrides_defaults(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification")
    assert job.config.job.name == "vials_classification"
    assert job.settings.epochs == 8
    assert list(job.config.pipeline) == ["image", "augment", "onehot"]
    assert job.config.pipeline["image"].params()["target_size"] == (96, 96) or job.config.pipeline["image"].params()["target_size"] == [96, 96]


def test_experiment_file_overrides_recipe(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", "+experiment=vials_quick")
    assert job.settings.epochs == 1
    assert job.config.datasets["vials"].generator_params["per_class"] == 20


def test_settings_json_overrides_recipe(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", json_doc={
        "settings": {"epochs": 3},
        "split": {"fractions": {"train": 0.5, "devel": 0.5, "test": 0.0}},
        "pipeline": {"image": {"target_size": [48, 48]}},
    })
    assert job.settings.epochs == 3
    assert job.settings.batch_size == 16  # untouched keys keep the recipe's values
    assert job.config.split.fractions["train"] == 0.5
    assert list(job.config.pipeline["image"].params()["target_size"]) == [48, 48]
    assert job.config.pipeline["image"].params()["color_mode"] == "greyscale"


def test_settings_json_datasets_replace_the_selection(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", json_doc={"datasets": {"caps": {"url": "memory://caps"}}})
    assert list(job.config.datasets) == ["caps"]


def test_command_line_overrides_settings_json(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", "settings.epochs=2", "pipeline.image.target_size=[40,40]",
               json_doc={"settings": {"epochs": 3, "batch_size": 4}, "pipeline": {"image": {"target_size": [48, 48]}}})
    assert job.settings.epochs == 2
    assert job.settings.batch_size == 4
    assert list(job.config.pipeline["image"].params()["target_size"]) == [40, 40]


def test_command_line_group_choice_overrides_settings_json_datasets(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", "datasets=none",
               json_doc={"datasets": {"caps": {"url": "memory://caps"}}})
    assert job.config.datasets == {}


def test_command_line_delete_overrides_settings_json(tmp_path):
    job = _job(tmp_path, "recipe=vials_classification", "~pipeline.augment",
               json_doc={"pipeline": {"augment": {"image_noise": {"brightness": 0.2}}}})
    assert "augment" not in job.config.pipeline


def test_explicit_settings_json_path_wins_over_job_json(tmp_path):
    explicit = tmp_path / "mine.json"
    explicit.write_text(json.dumps({"settings": {"epochs": 5}}))
    job = _job(tmp_path, "recipe=vials_classification", f"job.settings_json={explicit}",
               json_doc={"settings": {"epochs": 3}})
    assert job.settings.epochs == 5


def test_missing_explicit_settings_json_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="Settings JSON not found.*nope.json"):
        _job(tmp_path, "recipe=vials_classification", f"job.settings_json={tmp_path / 'nope.json'}")


def test_interpolations_see_json_values(tmp_path):
    # datasets.vials.url interpolates ${platform.root}; JSON and CLI land before resolution
    job = _job(tmp_path, "recipe=vials_classification")
    assert job.config.datasets["vials"].url == f"{tmp_path / 'p'}/datasets/vials"
