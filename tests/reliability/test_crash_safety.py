"""Crash safety: kill -9 mid-training loses nothing; SIGTERM/SIGINT mark the job failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.conftest import KERAS_ONLY, run_cli

SLOW_ARGS = (
    "recipe=vials_classification", "settings.epochs=6", "settings.batch_size=1",
    "pipeline.image.target_size=[96,96]", "job.id=crashy", KERAS_ONLY,
)


def _start(tmp_path, tiny_vials):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(
        [sys.executable, "-m", "brevetti_pipe", *SLOW_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_epochs(progress, n: int, proc, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress.exists() and len(progress.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the job ended before epoch {n}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    pytest.fail(f"epoch {n} did not finish in {timeout}s")


def test_kill_9_during_epoch_2_then_rerun_finishes(tmp_path, tiny_vials):
    artifacts = tmp_path / "p" / "jobs" / "crashy" / "artifacts"
    proc = _start(tmp_path, tiny_vials)
    _wait_for_epochs(artifacts / "progress.jsonl", 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "running"
    split_before = (artifacts / "sample_identification.csv").read_text()
    assert len(pd.read_csv(artifacts / "sample_identification.csv")) == 30
    for line in (artifacts / "progress.jsonl").read_text().splitlines():
        json.loads(line)
    assert not [p for p in artifacts.iterdir() if p.name.endswith(".tmp")], "no temp files are left visible"

    rerun = run_cli(*SLOW_ARGS, "settings.epochs=1", "settings.batch_size=8", f"platform.root={tmp_path / 'p'}",
                    f"datasets.vials.url={tiny_vials}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Using train / development split from run cached in artifacts" in rerun.stderr
    assert (artifacts / "sample_identification.csv").read_text() == split_before
    assert json.loads((artifacts / "output.json").read_text())["status"] == "completed"
    assert (artifacts / "model.tar.gz").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_mark_the_job_failed(tmp_path, tiny_vials, sig):
    artifacts = tmp_path / "p" / "jobs" / "crashy" / "artifacts"
    proc = _start(tmp_path, tiny_vials)
    _wait_for_epochs(artifacts / "progress.jsonl", 1, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "failed"
    assert out["error"].startswith("interrupted"), out["error"]
    assert signal.Signals(sig).name in out["error"]
    assert "interrupted" in stderr
