"""Job.init reads brevettiai's seed-style flags from sys.argv; explicit arguments win; strictness stays."""

from __future__ import annotations

import logging
import sys

import pytest
from pydantic import Field

from brevetti_pipe import ConfigError, Job, JobSettings
from brevetti_pipe._util import secrets


class Inner(JobSettings):
    depth: int = 2
    names: list[str] = Field(default_factory=list)


class MySettings(JobSettings):
    my_custom_int_setting: int = 25
    inner: Inner = Field(default_factory=Inner)


class MyJob(Job):
    settings: MySettings


@pytest.fixture
def root(tmp_path):
    return [f"platform.root={tmp_path}"]


def test_flags_from_sys_argv_reach_the_settings_and_foreign_arguments_are_ignored(root, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ipykernel_launcher.py", "-f", "/run/kernel-1.json", "--my_custom_int_setting", "10",
                                      "--inner.names", '["a", "b"]', "--inner.depth=4", "--job_id", "job-7",
                                      "--api_key", "sekrit-77", "--job.seed", "5"])
    monkeypatch.setattr(secrets, "_api_key", None)
    job = MyJob.init(overrides=root)
    assert job.settings.my_custom_int_setting == 10
    assert job.settings.inner == Inner(depth=4, names=["a", "b"])
    assert job.id == "job-7" and job.config.job.seed == 5
    assert secrets.api_key() == "sekrit-77" and "sekrit-77" not in str(job.output())


def test_explicit_arguments_win_and_argv_empty_reads_nothing(root, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--my_custom_int_setting", "10", "--job_id", "from-argv"])
    job = MyJob.init(job_id="explicit", overrides=[*root, "++settings.my_custom_int_setting=3"])
    assert job.id == "explicit" and job.settings.my_custom_int_setting == 3
    job = MyJob.init(overrides=root, argv=[])
    assert job.settings.my_custom_int_setting == 25 and job.id != "from-argv"
    job = MyJob.init(overrides=root, argv=["--my_custom_int_setting", "12"])
    assert job.settings.my_custom_int_setting == 12


def test_unknown_flags_are_left_alone_with_how_to_declare_them(root, monkeypatch, caplog):
    monkeypatch.setattr(sys, "argv", ["train.py", "--durations=15", "--my_custom_int_settin", "10"])
    with caplog.at_level(logging.WARNING, logger="brevetti_pipe"):
        job = MyJob.init(overrides=root)
    assert job.settings.my_custom_int_setting == 25
    text = caplog.text
    assert "--my_custom_int_settin" in text and "declare it in your JobSettings subclass (my_custom_int_settin: int = 0)" in text


def test_settings_stay_strict_for_flags_and_overrides(root, monkeypatch):
    with pytest.raises(ConfigError, match=r"settings.inner.deph.*Did you mean 'depth'"):
        MyJob.init(overrides=root, argv=["--inner.deph", "3"])
    with pytest.raises(ConfigError, match=r"Unknown key 'settings.brand_new'.*declare it in your JobSettings subclass"):
        MyJob.init(overrides=[*root, "++settings.brand_new=1"], argv=[])
