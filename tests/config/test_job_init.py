"""Job.init / Job.start from Python with a user subclass and typed settings."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import Field

from brevetti_pipe import ConfigError, Job, JobSettings


class Inner(JobSettings):
    depth: int = 2
    names: list[str] = Field(default_factory=list)


class MySettings(JobSettings):
    my_custom_int_setting: int = Field(25, description="My own custom integer setting")
    inner: Inner = Field(default_factory=Inner)


class MyJob(Job):
    settings: MySettings

    def run(self):
        self.add_output_metric("devel_custom", self.settings.my_custom_int_setting)
        return None


def test_subclass_settings_defaults_and_overrides(tmp_path):
    job = MyJob.init(job_id="abc", overrides=[f"platform.root={tmp_path}", "+settings.my_custom_int_setting=10",
                                              "+settings.inner={depth:4,names:[a,b]}"])
    assert isinstance(job.settings, MySettings)
    assert job.settings.my_custom_int_setting == 10 and job.settings.inner.names == ["a", "b"]
    job.start()
    out = json.loads((tmp_path / "jobs" / "abc" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_custom": 10}
    assert out["settings"] == {"my_custom_int_setting": 10, "inner": {"depth": 4, "names": ["a", "b"]}}


def test_subclass_unknown_setting_is_rejected_with_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"settings.inner.deph.*Did you mean 'depth'\?"):
        MyJob.init(overrides=[f"platform.root={tmp_path}", "+settings.inner={deph:3}"])


def test_run_step_error_marks_job_failed(tmp_path):
    class Broken(Job):
        def run(self):
            raise RuntimeError("boom in the run step")

    job = Broken.init(job_id="bad", overrides=[f"platform.root={tmp_path}"])
    with pytest.raises(RuntimeError):
        job.start()
    out = json.loads((tmp_path / "jobs" / "bad" / "artifacts" / "output.json").read_text())
    assert out["status"] == "failed" and out["error"] == "RuntimeError: boom in the run step"


def test_metrics_must_be_numbers_and_non_finite_ones_are_null(tmp_path):
    job = MyJob.init(overrides=[f"platform.root={tmp_path}"])
    job.add_output_metric("devel_loss", float("nan"))  # a diverged training: recorded, not an exception
    assert math.isnan(job.metrics["devel_loss"]) and job.output()["metrics"] == {"devel_loss": None}
    with pytest.raises(ValueError, match="number"):
        job.add_output_metric("devel_loss", "low")


@pytest.mark.parametrize("parts", [("/etc/passwd",), ("..", "x"), ("a/../../b",)])
def test_artifact_and_temp_paths_stay_inside(tmp_path, parts):
    job = MyJob.init(overrides=[f"platform.root={tmp_path}"])
    with pytest.raises(ValueError, match="relative"):
        job.artifact_path(*parts)
    with pytest.raises(ValueError, match="relative"):
        job.temp_path(*parts)
