"""Every recipe in configs/recipe runs end to end from the command line."""

from __future__ import annotations

from tests.conftest import only_job_dir, read_output, run_cli


def test_segmentation_recipe_reaches_mean_iou(tmp_path):
    root = tmp_path / "platform"
    proc = run_cli("recipe=vials_segmentation", f"platform.root={root}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = read_output(only_job_dir(root))
    assert out["status"] == "completed"
    assert out["metrics"]["devel_mean_iou"] > 0.5, out["metrics"]
    assert {"devel_iou_cap", "devel_iou_liquid", "devel_iou_background"} <= set(out["metrics"])
    assert (only_job_dir(root) / "artifacts" / "charts" / "confusion_matrix_devel.json").exists()


def test_every_recipe_has_an_end_to_end_test():
    import pathlib

    from brevetti_pipe._util.resources import config_dir

    recipes = {p.stem for p in (config_dir() / "recipe").glob("*.yaml")}
    here = pathlib.Path(__file__).parent
    covered = {r for r in recipes if any(f"recipe={r}" in p.read_text() for p in here.rglob("test_*.py"))}
    assert covered == recipes
