"""Resume, bit for bit: a job killed (-9) in epoch 3 of 5 and rerun continues after epoch 2 and ends
with the weights of an uninterrupted run in another process (weights_sha256 in output.json)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from brevetti_pipe import Job
from tests.conftest import REPO
from tests.run._resume_child import RESUME_ARGS


def _child(root, data, job_id, *flags):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.run._resume_child", str(root), str(data), job_id, *flags],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_job_killed_in_epoch_3_resumes_to_bit_identical_weights(tmp_path, tiny_vials):
    root = tmp_path / "p"
    killed = _child(root, tiny_vials, "resumed", "--block")
    try:
        marker = root / "epoch3-started"
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert killed.poll() is None, killed.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "epoch 3 never started"
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    artifacts = root / "jobs" / "resumed" / "artifacts"
    assert json.loads((artifacts / "checkpoint" / "state.json").read_text())["epoch"] == 2
    assert json.loads((artifacts / "output.json").read_text())["status"] == "running"

    # the uninterrupted run, in this (another) process, same config
    clean = Job.init(overrides=[*RESUME_ARGS, f"platform.root={root}", f"datasets.vials.url={tiny_vials}", "job.id=clean"])
    clean.start()
    assert clean.weights_sha256 and not (root / "jobs" / "clean" / "artifacts" / "checkpoint").exists()

    rerun = _child(root, tiny_vials, "resumed")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert "Resuming job resumed after epoch 2" in err
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "completed" and out["attempt"] == 2
    assert [json.loads(line)["epoch"] for line in (artifacts / "progress.jsonl").read_text().splitlines()] == [3, 4, 5]
    assert out["weights_sha256"] == clean.weights_sha256
    assert out["metrics"]["devel_loss"] == clean.metrics["devel_loss"]
    assert not (artifacts / "checkpoint").exists(), "a completed job keeps no checkpoint to resume from"


def test_a_skipped_stream_equals_the_tail_of_the_full_stream(tiny_vials):
    """Batches run across the generator's epochs (18 samples, batches of 8): resuming after k steps
    must continue mid-epoch, with the same order and augmentation draws."""
    import numpy as np
    import pandas as pd

    from brevetti_pipe.data import DataGenerator

    samples = pd.DataFrame({"path": [f"/{i}" for i in range(18)], "etag": [f"e{i}" for i in range(18)]})
    gen = DataGenerator(samples, batch_size=8, shuffle=True, repeat=True, seed=3, output_structure="etag")
    full = gen.get_dataset().as_numpy_iterator()
    stream = [next(full) for _ in range(9)]
    for steps in (1, 3, 5):
        tail = gen.get_dataset(skip=steps * 8).as_numpy_iterator()
        for expected in stream[steps:]:
            np.testing.assert_array_equal(next(tail), expected)
    sharded = DataGenerator(samples, batch_size=4, shuffle=True, repeat=True, seed=3, output_structure="etag", shard=(2, 1))
    full = sharded.get_dataset().as_numpy_iterator()
    stream = [next(full) for _ in range(7)]
    tail = sharded.get_dataset(skip=3 * 4).as_numpy_iterator()
    for expected in stream[3:]:
        np.testing.assert_array_equal(next(tail), expected)
