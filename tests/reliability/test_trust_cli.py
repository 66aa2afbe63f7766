"""The command line refuses what it cannot run safely, with one clear line: foreign _target_s, config
bombs, misspelt Hydra flags, launchers that are not installed."""

from __future__ import annotations

import json
import time

import pytest

from brevetti_pipe import ConfigError, Job
from brevetti_pipe.cli import translate_argv
from tests.conftest import run_cli


def _one_line_error(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("brevetti-pipe: error: "), proc.stderr
    return lines[0]


def test_foreign_target_from_the_command_line_runs_nothing(tmp_path):
    src, dst = tmp_path / "src.txt", tmp_path / "dst.txt"
    src.write_text("attacker")
    dst.write_text("precious")
    proc = run_cli("+hydra.callbacks.e._target_=shutil.copyfile", f"+hydra.callbacks.e.src={src}",
                   f"+hydra.callbacks.e.dst={dst}", "job.seed=-1", cwd=tmp_path)
    assert "'_target_' 'shutil.copyfile' is not allowed" in _one_line_error(proc)
    assert dst.read_text() == "precious"
    nested = run_cli(f"+hydra.callbacks={{e:{{_target_:shutil.copyfile,src:'{src}',dst:'{dst}'}}}}", cwd=tmp_path)
    assert "hydra.callbacks.e._target_=shutil.copyfile" in _one_line_error(nested)
    assert dst.read_text() == "precious"


def test_foreign_target_from_a_settings_json_is_refused(tmp_path):
    doc = tmp_path / "job.json"
    doc.write_text(json.dumps({"datasets": {"vials": {"url": "memory://v", "storage_options": {
        "client_kwargs": {"_target_": "os.system", "command": "true"}}}}}))
    with pytest.raises(ConfigError, match=r"job\.json' may not set 'datasets\.vials\.storage_options\.client_kwargs\._target_'.*"
                                          r"Received: datasets\.vials\.storage_options\.client_kwargs\._target_='os\.system'"):
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])


def test_hydra_own_callbacks_stay_allowed(tmp_path):
    proc = run_cli("+hydra.callbacks.log._target_=hydra.experimental.callbacks.LogJobReturnCallback",
                   "recipe=vials_classification", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def test_yaml_anchor_bomb_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "cfg" / "experiment"
    folder.mkdir(parents=True)
    (folder / "bomb.yaml").write_text("# @package _global_\nsettings:\n  " + BOMB.replace("\n", "\n  "))
    assert len(BOMB) < 600
    start = time.monotonic()
    proc = run_cli("--config-dir", str(tmp_path / "cfg"), "+experiment=bomb", "--cfg", "job", cwd=tmp_path, timeout=60)
    line = _one_line_error(proc)
    assert "bomb.yaml" in line and "too large" in line and "anchors/aliases" in line
    assert time.monotonic() - start < 30


def test_recursive_alias_is_refused_naming_the_file(tmp_path):
    from brevetti_pipe.config import check_config_folder

    (tmp_path / "loop.yaml").write_text("a: &a\n  - 1\n  - *a\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml refers to itself"):
        check_config_folder(tmp_path)


def test_deep_yaml_and_json_are_refused_naming_the_file(tmp_path):
    folder = tmp_path / "cfg" / "experiment"
    folder.mkdir(parents=True)
    (folder / "deep.yaml").write_text("# @package _global_\nsettings:\n  x: " + "[" * 300 + "]" * 300 + "\n")
    proc = run_cli("--config-dir", str(tmp_path / "cfg"), "+experiment=deep", "--cfg", "job", cwd=tmp_path)
    assert "deep.yaml is too large: nested more than" in _one_line_error(proc)
    doc = tmp_path / "deep.json"
    for depth in (100_000, 150):  # past the JSON parser's recursion, and within it
        doc.write_text('{"settings": {"x": ' + "[" * depth + "]" * depth + "}}")
        with pytest.raises(ConfigError, match=r"Settings JSON .*deep\.json.* too large: nested more than \d+ levels deep"):
            Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])
    doc.write_text(json.dumps({"settings": {"x": [[[["ok"]]]]}}))
    with pytest.raises(ConfigError, match="Unknown key 'settings.x'"):  # within the caps: validated as usual
        Job.init(overrides=["recipe=vials_classification", f"platform.root={tmp_path}", f"job.settings_json={doc}"])


@pytest.mark.parametrize("flag, meant", [("--multi-run", "--multirun"), ("--verbos", "--verbose"),
                                         ("--config_dir", "--config-dir")])
def test_misspelt_hydra_flag_is_refused_naming_it(tmp_path, flag, meant):
    proc = run_cli("recipe=vials_classification", flag, "settings.epochs=1", cwd=tmp_path)
    line = _one_line_error(proc)
    assert f"Unknown flag '{flag}'. Did you mean '{meant}'?" in line


def test_settings_and_section_flags_keep_working():
    argv, _ = translate_argv(["--epochs", "5", "--distribution.strategy", "mirrored", "--sweep.objective", "x",
                              "--run", "recipe=vials_classification", "--version_tag", "v1"])
    assert argv == ["settings.epochs=5", "distribution.strategy=mirrored", "sweep.objective=x",
                    "recipe=vials_classification", "settings.version_tag=v1", "--run"]


def test_section_flag_lands_in_its_section(tmp_path):
    proc = run_cli("recipe=vials_classification", "--distribution.strategy", "mirrored", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "strategy: mirrored" in proc.stdout


def test_missing_launcher_names_it_and_what_to_install(tmp_path):
    proc = run_cli("hydra/launcher=rq", "recipe=vials_classification", "settings.epochs=1,2", "-m", cwd=tmp_path)
    line = _one_line_error(proc)
    assert "Launcher 'rq' is not installed" in line and "pip install 'hydra-rq-launcher'" in line
    assert "--multirun" not in line


@pytest.mark.parametrize("key, offered", [("settings.epoch", False), ("job.sed", False),
                                          ("datasets.vials.storage_options.anon", True)])
def test_add_key_hint_only_where_new_keys_are_accepted(tmp_path, key, offered):
    from brevetti_pipe.config import compose

    with pytest.raises(ConfigError) as err:
        compose(["recipe=vials_classification", f"{key}=1"])
    assert (f"To add a new key use +{key}=VALUE" in str(err.value)) == offered, str(err.value)
