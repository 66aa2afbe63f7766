"""Resume, bit for bit: a job killed (-9) in epoch 3 of 5 and rerun continues after epoch 2 and ends
with the weights of an uninterrupted run in another process (weights_sha256 in output.json), its
Keras callbacks (early stopping, reduce_lr_on_plateau, csv_logger) carrying on from where they were."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time


from brevetti_pipe import Job
from tests.conftest import REPO
from tests.run._resume_child import RESUME_ARGS
from tests.run.conftest import CLS_ARGS


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
    progress = [json.loads(line) for line in (artifacts / "progress.jsonl").read_text().splitlines()]
    clean_artifacts = root / "jobs" / "clean" / "artifacts"
    # early stopping stops both after epoch 4 (at the same weights); the progress, and so the report's
    # curves, show every epoch
    assert progress[-1]["epoch"] == 4 and out["weights_sha256"] == clean.weights_sha256
    assert [r["epoch"] for r in progress] == [1, 2, 3, 4]
    assert progress == [json.loads(line) for line in (clean_artifacts / "progress.jsonl").read_text().splitlines()]
    log_csv = (artifacts / "log.csv").read_text()
    assert log_csv == (clean_artifacts / "log.csv").read_text()
    rates = [float(row["learning_rate"]) for row in csv.DictReader(log_csv.splitlines())]
    assert len(rates) == 4 and rates[3] == rates[0] / 2, rates  # halved once, after epoch 3
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


def test_a_training_stopped_early_then_killed_resumes_to_its_best_weights_without_training_on(tmp_path, tiny_vials,
                                                                                            caplog):
    """Early stopping ended the training and the job died before its end (here: a failing callback at
    the end of fit, after the others restored their best weights). The rerun trains no further epoch and
    ends with the same weights: early stopping's best and model_checkpoint's (listed last, they win).
    A callback of the user's keeps its state through get_state/set_state; one without is named in the log."""
    import keras

    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.export import weights_sha256

    class Counting(keras.callbacks.Callback):
        def __init__(self, fail):
            super().__init__()
            self.fail, self.seen = fail, 0

        def on_train_begin(self, logs=None):
            self.seen = 0  # reset per fit, as Keras's own callbacks do: set_state comes after this

        def on_epoch_end(self, epoch, logs=None):
            self.seen += 1

        def on_train_end(self, logs=None):
            if self.fail:
                raise RuntimeError("died after the training")

        def get_state(self):
            return {"seen": self.seen}

        def set_state(self, state):
            self.seen = state["seen"]

    # min_delta 1e9: nothing improves on epoch 1, so patience 1 stops after epoch 2 of 4; early stopping's
    # best is epoch 1, model_checkpoint's (the lowest devel loss) is another
    args = [*CLS_ARGS, "settings.epochs=4", f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}", "job.id=j",
            "+training.callbacks.early_stopping.patience=1", "+training.callbacks.early_stopping.min_delta=1e9",
            "+training.callbacks.early_stopping.restore_best_weights=true",
            "+training.callbacks.model_checkpoint.monitor=devel_loss", "+training.callbacks.model_checkpoint.mode=min"]

    def fit(*callbacks):
        job = Job.init(overrides=args)
        job.seed_frameworks()
        model = build_model(job, (16, 16, 1), job.classes)
        try:
            return job.fit(model, callbacks=list(callbacks)), model
        except RuntimeError:
            return None, model

    history, first = fit(Counting(fail=True), keras.callbacks.Callback())
    assert history is None
    state = json.loads((tmp_path / "jobs" / "j" / "artifacts" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2
    counting = Counting(fail=False)
    with caplog.at_level("INFO", logger="brevetti_pipe.run.checkpoint"):
        history, rerun = fit(counting, keras.callbacks.Callback())
    assert history == [], "no epoch is trained after early stopping"
    assert weights_sha256(rerun) == weights_sha256(first)
    assert counting.seen == 2
    assert "callbacks[1] (Callback) has no get_state()/set_state(): its state restarts at epoch 3" in caplog.text
    # another monitor: model_checkpoint's saved best (a loss) must not be compared with an accuracy
    args[-2:] = ["+training.callbacks.model_checkpoint.monitor=devel_accuracy", "+training.callbacks.model_checkpoint.mode=max"]
    caplog.clear()
    with caplog.at_level("INFO", logger="brevetti_pipe.run.checkpoint"):
        fit(Counting(fail=False))
    assert "Keras callback model_checkpoint: its settings changed since the checkpoint; its state restarts" in caplog.text
    assert "early_stopping: its settings changed" not in caplog.text


def test_speed_and_memory_options_keep_the_checkpoint_what_decides_the_weights_does_not():
    from brevetti_pipe.config import compose, resolve_config
    from brevetti_pipe.run.checkpoint import config_fingerprint

    def fingerprint(*overrides: str) -> str:
        return config_fingerprint(resolve_config(*compose(["recipe=vials_classification", *overrides])))

    base = fingerprint()
    # a job killed for memory under data.cache=auto is rerun with the cache off: it must resume, not restart
    for same in ("data.cache=false", "data.cache=true", "data.cache_max_bytes=2147483648", "data.num_parallel_calls=2",
                 "data.prefetch=1", "training.epochs=20"):
        assert fingerprint(same) == base, same
    for other in ("job.seed=7", "settings.learning_rate=0.1", "pipeline.image.target_size=[32,32]"):
        assert fingerprint(other) != base, other
