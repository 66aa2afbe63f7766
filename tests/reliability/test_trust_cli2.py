"""One clear line at the command line and in the config: config folders on any search path entry, deep
nesting in flags, overrides and defaults lists, Hydra's flags anywhere, paths and URLs checked by the schema."""

from __future__ import annotations

import os
import re

import pytest
from omegaconf import OmegaConf

from brevetti_pipe import ConfigError, Job
from brevetti_pipe.cli import translate_argv
from brevetti_pipe.config import compose
from tests.conftest import run_cli
from tests.reliability.test_trust_cli import BOMB, _one_line_error


def test_bomb_on_a_searchpath_entry_without_scheme_is_refused(tmp_path):
    folder = tmp_path / "bomb" / "experiment"
    folder.mkdir(parents=True)
    (folder / "boom.yaml").write_text("# @package _global_\nsettings:\n  " + BOMB.replace("\n", "\n  "))
    for entry in (str(tmp_path / "bomb"), f"'{tmp_path / 'bomb'}'"):
        proc = run_cli("recipe=vials_classification", f"hydra.searchpath=[pkg://brevetti_pipe,{entry}]",
                       "+experiment=boom", "--cfg", "job", cwd=tmp_path, timeout=60)
        line = _one_line_error(proc)
        assert "boom.yaml is too large" in line and "anchors/aliases" in line


def test_deep_seed_style_flag_and_override_are_one_line(tmp_path):
    deep = "[" * 50000 + "]" * 50000
    with pytest.raises(ConfigError, match=r"^Flag --x is nested 50000 levels deep; allowed: at most 100 levels\.$"):
        translate_argv(["--x", deep])
    with pytest.raises(ConfigError, match=r"Override '\+x' is nested 20000 levels deep"):
        translate_argv(["+x=" + "[" * 20000 + "]" * 20000])
    quoted = "+y='" + "[" * 500 + "'"  # brackets inside quotes are text, not nesting
    assert translate_argv([quoted])[0] == [quoted]
    proc = run_cli("recipe=vials_classification", "--x", deep, "--cfg", "job", cwd=tmp_path)
    assert "Flag --x is nested 50000 levels deep" in _one_line_error(proc)
    proc = run_cli("recipe=vials_classification", "+x=" + "[" * 20000 + "]" * 20000, "--cfg", "job", cwd=tmp_path)
    assert "Override '+x' is nested 20000 levels deep" in _one_line_error(proc)


def test_defaults_loop_names_the_configs(tmp_path):
    folder = tmp_path / "cfg" / "experiment"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("# @package _global_\ndefaults: [b]\n")
    (folder / "b.yaml").write_text("# @package _global_\ndefaults: [a]\n")
    loop = "loop: experiment/a -> experiment/b -> experiment/a."
    proc = run_cli("recipe=vials_classification", "--config-dir", str(tmp_path / "cfg"), "+experiment=a", "--cfg", "job",
                   cwd=tmp_path)
    assert loop in _one_line_error(proc)
    with pytest.raises(ConfigError, match=loop.replace(".", r"\.")):
        compose(["recipe=vials_classification", "+experiment=a"], config_dir=tmp_path / "cfg")


def test_hydra_flags_are_accepted_anywhere(tmp_path):
    from brevetti_pipe.cli import _check_hydra_flags

    argv, _ = translate_argv(["recipe=x", "settings.epochs=1", "--multirun", "settings.epochs=2", "--config-dir",
                              "d", "-cn", "config", "--info", "defaults", "job.seed=1", "--cfg", "job"])
    assert argv == ["recipe=x", "settings.epochs=1", "settings.epochs=2", "job.seed=1", "--multirun",
                    "--config-dir", "d", "-cn", "config", "--info", "defaults", "--cfg", "job"]
    _check_hydra_flags(translate_argv(["a=1", "-m", "b=2", "--info", "c=3"])[0][:4])  # Hydra's parser takes it
    proc = run_cli("recipe=vials_classification", "settings.epochs=1", "--cfg", "job", "settings.epochs=7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epochs: 7" in proc.stdout


@pytest.mark.parametrize("args, expected", [
    (["-multirun"], "Unknown flag '-multirun'. Did you mean '--multirun'?"),
    (["--cfg=jobb"], "--cfg/-c: invalid choice: 'jobb' (choose from 'job', 'hydra', 'all')"),
    (["--cfg", "jobb"], "--cfg/-c: invalid choice: 'jobb'"),
    (["settings.epochs=1", "--cfg"], "--cfg/-c: expected one argument"),
    (["-m", "--cfg", "job"], "Flags --multirun and --cfg cannot be combined"),
])
def test_bad_hydra_flag_is_one_line_naming_it(tmp_path, args, expected):
    proc = run_cli("recipe=vials_classification", *args, cwd=tmp_path)
    assert expected in _one_line_error(proc)


@pytest.mark.parametrize("value", ["../../x.csv", "/abs.csv", "a/../../x.csv", "~/x.csv", ""])
def test_split_file_must_stay_in_the_artifacts_folder(tmp_path, value):
    with pytest.raises(ConfigError, match=r"Invalid value for 'split\.file'.*relative.*without '\.\.'"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"split.file='{value}'"])
    job = Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", "split.file=splits/s.csv"])
    assert job.config.split.file == "splits/s.csv"


@pytest.mark.parametrize("key", ["job.temp_dir", "platform.cache_dir"])
def test_uncreatable_scratch_folder_names_its_key(tmp_path, key):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "sub"
    job = Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"{key}={bad}"])
    with pytest.raises(ConfigError, match=rf"^Cannot create the folder {key} names \(.*\)\. Received: {key}={bad}$"):
        _ = job.temp_dir


@pytest.mark.parametrize("root, why", [("''", "must not be empty"), ("s3://", "s3:// URL needs a location"),
                                       ("gs:///", "gs:// URL needs a location")])
def test_platform_root_needs_a_location(tmp_path, root, why):
    with pytest.raises(ConfigError, match=rf"Invalid value for 'platform\.root'.*{why}"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={root}"])


@pytest.mark.parametrize("key", ["platform.cache_dir", "job.temp_dir"])
@pytest.mark.parametrize("value, why", [("s3://bucket/cache", "must be a local directory, not a s3:// URL"),
                                        ("''", "must not be empty"), ("file://", "file:// URL needs a folder")])
def test_local_folder_keys_must_be_local_folders(tmp_path, key, value, why):
    with pytest.raises(ConfigError, match=rf"Invalid value for '{re.escape(key)}'.*{why}"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"{key}={value}"])


def test_a_data_cache_folder_is_read_as_the_other_local_folder_keys(tmp_path):
    # it was used as written: file://... made a folder named "file:", ~ one named "~", s3://... one named "s3:"
    def cache(value):
        job = Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"data.cache={value}"])
        return job.config.data.cache

    assert cache(f"file://{tmp_path}/c") == cache(f"local://{tmp_path}/c") == f"{tmp_path}/c"
    assert cache("'~/prefix-cache'") == os.path.expanduser("~/prefix-cache")
    assert cache("auto") == "auto" and cache("true") is True and cache("false") is False
    with pytest.raises(ConfigError, match=r"Invalid value for 'data\.cache'.*must be a local directory, not a s3:// URL"):
        cache("s3://bucket/cache")
    # a word is a setting, not a folder's name: data.cache=off and a quoted "false" made folders ./off and ./false
    for word in ("off", "'false'", "'True'", "no"):
        with pytest.raises(ConfigError, match=r"Invalid value for 'data\.cache'.*allowed: auto, true, false or a local directory"):
            cache(word)


def test_a_local_url_with_one_slash_is_read_as_fsspec_reads_it(tmp_path):
    # file:/x is /x for fsspec (the rerun cache under platform.cache_dir went there) but was ./file:/x for the
    # root and the cache folders: one setting split over two folders; s3:/b/x became a folder named "s3:"
    job = Job.init(overrides=["recipe=vials_classification", f"platform.root=file:{tmp_path}/p",
                              f"platform.cache_dir=file:{tmp_path}/c", f"job.temp_dir=local:{tmp_path}/t",
                              f"data.cache=file:{tmp_path}/d"])
    config = job.config
    assert (config.platform.root, config.platform.cache_dir, config.job.temp_dir, config.data.cache) == (
        f"{tmp_path}/p", f"{tmp_path}/c", f"{tmp_path}/t", f"{tmp_path}/d")
    from brevetti_pipe.storage import local_path

    assert local_path(f"file:{tmp_path}/p") == local_path(f"local:{tmp_path}/p") == f"{tmp_path}/p"
    for key in ("platform.root", "platform.cache_dir", "data.cache"):
        with pytest.raises(ConfigError, match=rf"Invalid value for '{re.escape(key)}'.*'s3:/b/x' is a URL missing a "
                                              r"slash: write s3://b/x"):
            Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"{key}=s3:/b/x"])


@pytest.mark.parametrize("key", ["platform.cache_dir", "job.temp_dir"])
def test_local_folder_keys_take_a_file_url_and_a_home_folder(tmp_path, key):
    # the folder the job writes is the folder the config names (the temp dir was made as ./~ or ./file:)
    def folder(value):
        job = Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"{key}={value}"])
        return OmegaConf.select(OmegaConf.create(job.config.model_dump()), key)

    assert folder(f"file://{tmp_path}/c") == f"{tmp_path}/c"
    assert folder(f"local://{tmp_path}/c") == f"{tmp_path}/c"
    # file://name/c is relative, as the dataset and platform URLs read it (fsspec, storage.local_path)
    from brevetti_pipe.storage import local_path

    assert os.path.abspath(folder("file://rel/c")) == local_path("file://rel/c") == os.path.abspath("rel/c")
    assert folder("'~/brevetti-cache'") == os.path.expanduser("~/brevetti-cache")  # not a folder named "~"


def test_a_local_url_root_is_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    job = Job.init(job_id="loc", overrides=["recipe=vials_classification", f"platform.root=local://{tmp_path}/p"])
    assert job.artifacts_url == str(tmp_path / "p" / "jobs" / "loc" / "artifacts")  # not ./local:/...


def test_credentials_in_a_python_api_root_are_masked_in_its_error(tmp_path):
    with pytest.raises(Exception) as raised:
        Job.init(overrides=["recipe=vials_classification", "platform.root=s3://AKIAEXAMPLE:wJalrXUtnSECRET@bucket/p"])
    assert "AKIAEXAMPLE" not in str(raised.value) and "wJalrXUtnSECRET" not in str(raised.value), str(raised.value)


def test_empty_bucket_root_writes_nothing_in_the_current_folder(tmp_path, tiny_vials):
    proc = run_cli("recipe=vials_classification", "settings.epochs=1", f"datasets.vials.url={tiny_vials}",
                   "platform.root=s3://", cwd=tmp_path)
    assert "platform.root" in _one_line_error(proc)
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # Hydra's run folder only: no ./s3:/jobs


@pytest.mark.parametrize("key", ["classes", "category_map", "folders"])
def test_model_field_missing_from_the_config_offers_plus(key):
    with pytest.raises(ConfigError, match=rf"^Key 'datasets\.vials\.{key}' is not set in the composed config; to set "
                                          rf"it use \+datasets\.vials\.{key}=VALUE\.$"):
        compose(["recipe=vials_classification", f"datasets.vials.{key}=[a]"])
    with pytest.raises(ConfigError, match=r"Did you mean 'classes'\? Allowed keys here: url, id, classes, category_map"):
        compose(["recipe=vials_classification", "datasets.vials.clases=[a]"])


def test_unknown_component_parameter_lists_the_component_keys():
    with pytest.raises(ConfigError, match=r"Unknown key 'pipeline\.image\.foo'\. Allowed keys here: type, target_size"):
        compose(["recipe=vials_classification", "pipeline.image.foo=1"])


def test_a_group_made_of_several_entries_set_as_a_whole_says_how_to_change_it():
    # Hydra's "Did you mean to override one of ..." became "Unknown key 'callbacks'. Did you mean 'callbacks'?"
    with pytest.raises(ConfigError) as caught:
        compose(["callbacks=[report]"])
    message = str(caught.value)
    assert "\n" not in message and "Unknown key" not in message
    assert message.startswith("'callbacks' cannot be set as a whole")
    assert "callbacks@callbacks.report" in message and "~callbacks@callbacks." in message
    compose(["~callbacks@callbacks.facets", "+callbacks@callbacks.tensorboard=tensorboard"])  # the ways it names work
