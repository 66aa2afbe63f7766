"""End to end: the vials recipe trains for real from the CLI and writes the platform layout."""

from __future__ import annotations

import json
import shutil
import tarfile

import pandas as pd

from tests.conftest import KERAS_ONLY, TINY_ARGS, only_job_dir, read_output, run_cli

OUTPUT_KEYS = {"job", "status", "settings", "metrics", "model_path", "environment", "error"}


def test_recipe_writes_all_artifacts(tmp_path, tiny_vials):
    root = tmp_path / "p"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = run_cli(*TINY_ARGS, "job.seed=3", f"platform.root={root}", f"datasets.vials.url={tiny_vials}", cwd=tmp_path,
                   env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(scratch.glob("brevetti-pipe-job-*")), "the job's own scratch directory is removed at the end"
    job_dir = only_job_dir(root)
    artifacts = job_dir / "artifacts"
    for name in ("output.json", "progress.jsonl", "sample_identification.csv", "model.tar.gz"):
        assert (artifacts / name).is_file(), name
    out = read_output(job_dir)
    assert OUTPUT_KEYS <= set(out)
    assert out["status"] == "completed" and out["error"] is None
    assert out["job"]["id"] == job_dir.name and out["job"]["seed"] == 3
    assert out["settings"]["epochs"] == 1
    assert out["model_path"] == "model.tar.gz"
    assert 0.0 <= out["metrics"]["devel_accuracy"] <= 1.0
    assert out["output"] == out["metrics"]
    assert "tensorflow-cpu" in out["environment"]["packages"] or "tensorflow" in out["environment"]["packages"]
    progress = [json.loads(line) for line in (artifacts / "progress.jsonl").read_text().splitlines()]
    assert [p["epoch"] for p in progress] == [1]
    assert {"train_loss", "train_accuracy", "devel_loss", "devel_accuracy"} <= set(progress[0])
    split = pd.read_csv(artifacts / "sample_identification.csv")
    assert {"etag", "purpose"} <= set(split.columns) and len(split) == 30
    assert set(split.purpose) == {"train", "devel"}
    with tarfile.open(artifacts / "model.tar.gz") as tar:
        names = tar.getnames()
    assert {"model.keras", "metadata.json"} <= set(names)
    assert f"Job {job_dir.name} completed" in proc.stdout
    timings = out["timings"]  # seconds per phase, from marks the job takes as it runs
    assert {"imports", "compose_validate", "job_start", "listing", "sample_check", "split", "export", "total"} <= set(timings)
    assert "training" in timings or "run_step" in timings
    assert all(v >= 0 for v in timings.values())
    phases = sum(v for k, v in timings.items() if k != "total")
    assert 0.9 * timings["total"] <= phases <= timings["total"] + 0.05  # disjoint phases covering the job


def test_user_config_dir_with_own_dataset_and_experiment(tmp_path, tiny_vials):
    # another dataset with other class folders; classes come from the folders
    other = tmp_path / "parts"
    for src, dst in (("good", "ok"), ("missing_cap", "scratch")):
        shutil.copytree(tiny_vials / src, other / dst)
    user = tmp_path / "user_configs"
    (user / "datasets").mkdir(parents=True)
    (user / "experiment").mkdir()
    (user / "datasets" / "parts.yaml").write_text(f"parts:\n  url: {other}\n")
    (user / "experiment" / "short.yaml").write_text(
        "# @package _global_\nsettings:\n  epochs: 1\n  batch_size: 4\npipeline:\n  image:\n    target_size: [24, 24]\n"
    )
    root = tmp_path / "p"
    proc = run_cli(
        "--config-dir", str(user), "recipe=vials_classification", "datasets=parts", "+experiment=short",
        f"platform.root={root}", KERAS_ONLY, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job_dir = only_job_dir(root)
    out = read_output(job_dir)
    assert out["status"] == "completed"
    assert list(out["config"]["datasets"]) == ["parts"]
    assert out["settings"] == {**out["settings"], "epochs": 1, "batch_size": 4}
    assert out["config"]["pipeline"]["image"]["target_size"] == [24, 24]
    with tarfile.open(job_dir / "artifacts" / "model.tar.gz") as tar:
        meta = json.load(tar.extractfile("metadata.json"))
    assert meta["classes"] == ["ok", "scratch"]
    assert not (root / "datasets" / "vials").exists(), "the demo set must not be generated when not selected"


def test_failing_run_step_marks_job_failed(tmp_path):
    root = tmp_path / "p"
    kept = tmp_path / "scratch"
    kept.mkdir()
    (kept / "mine.txt").write_text("the user's")
    proc = run_cli(
        "recipe=vials_classification", f"platform.root={root}", f"datasets.vials.url={tmp_path / 'nowhere'}",
        "~datasets.vials.generator", f"job.temp_dir={kept}", cwd=tmp_path,
    )
    assert proc.returncode == 1
    assert (kept / "mine.txt").read_text() == "the user's", "a job.temp_dir from the config is the user's: kept"
    assert "Dataset 'vials' not found" in proc.stderr
    out = read_output(only_job_dir(root))
    assert out["status"] == "failed"
    assert "Dataset 'vials' not found" in out["error"]
