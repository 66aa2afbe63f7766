"""The command line: help and --cfg without TensorFlow, one-line errors, seed-style flags."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from brevetti_pipe.cli import translate_argv
from brevetti_pipe.errors import ConfigError
from tests.conftest import REPO, run_cli


def _imports_tensorflow(args: list[str]) -> tuple[bool, str]:
    code = textwrap.dedent(f"""
        import sys
        from brevetti_pipe.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        print("TF_IMPORTED=" + str("tensorflow" in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    return "TF_IMPORTED=True" in proc.stdout, proc.stdout + proc.stderr


def test_help_lists_groups_without_tensorflow():
    imported, out = _imports_tensorflow(["--help"])
    assert not imported, out
    assert "recipe: vials_classification" in out
    assert "--api_key" in out


def test_cfg_job_composes_recipe_without_tensorflow():
    imported, out = _imports_tensorflow(["recipe=vials_classification", "--cfg", "job"])
    assert not imported, out
    cfg = yaml.safe_load(out.split("TF_IMPORTED")[0])
    assert cfg["run"] == "vials_classification"
    assert list(cfg["pipeline"]) == ["image", "augment", "onehot"]
    assert cfg["datasets"]["vials"]["generator"] == "vials"


def test_console_script_and_module_entry_agree(tmp_path):
    module = run_cli("recipe=vials_classification", "--cfg", "job", cwd=tmp_path)
    script = subprocess.run(
        [str(REPO / ".venv" / "bin" / "brevetti-pipe"), "recipe=vials_classification", "--cfg", "job"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    ) if (REPO / ".venv" / "bin" / "brevetti-pipe").exists() else module
    assert module.returncode == 0, module.stderr
    assert module.stdout == script.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["recipe=vials_classification", "settings.epochz=1"], "Unknown key 'settings.epochz'. Did you mean 'epochs'?"),
        (["recipe=vials_clasification"], "Available options: vials_classification, vials_segmentation. Did you mean 'vials_classification'?"),
        (["recipe=vials_classification", "settings.epochs=many"], "settings.epochs"),
        (["recipe=vials_classification", "split.fractions.train=0.5"], "fractions must sum to 1"),
    ],
)
def test_config_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("brevetti-pipe: error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr


def test_verbose_flag_shows_the_traceback(tmp_path):
    proc = run_cli("recipe=vials_classification", "settings.epochs=many", "--verbose", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_seed_style_flags_translate_to_overrides():
    argv, verbose = translate_argv([
        "--job_id", "abc", "--api_key", "sekrit-key", "--epochs", "5", "--model.layers", "[1, 2]",
        "--opts={\"a\": 1}", "--name", "two words", "recipe=x", "-m", "--cfg", "job", "--job.seed", "3",
    ])
    assert not verbose
    assert argv == [
        "job.id=abc", "settings.epochs=5", "settings.model.layers=[1,2]", "settings.opts={a:1}",
        "settings.name='two words'", "recipe=x", "job.seed=3", "-m", "--cfg", "job",
    ]
    assert all("sekrit" not in a for a in argv)


def test_flag_without_value_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a value"):
        translate_argv(["--epochs"])


def test_help_usage_line_is_not_masked():
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("brevetti-pipe")
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[key=value ...]" in proc.stdout and "***" not in proc.stdout
