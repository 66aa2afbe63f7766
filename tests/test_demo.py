"""The demo as `make demo` runs it: default recipe settings on the generated 512 px set."""

from __future__ import annotations

from tests.conftest import only_job_dir, read_output, run_cli


def test_demo_recipe_reaches_high_devel_accuracy(tmp_path):
    root = tmp_path / "platform"
    proc = run_cli("recipe=vials_classification", f"platform.root={root}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (root / "datasets" / "vials" / "good").is_dir(), "the demo set is generated on first use"
    out = read_output(only_job_dir(root))
    assert out["status"] == "completed"
    assert out["metrics"]["devel_accuracy"] > 0.9, out["metrics"]
