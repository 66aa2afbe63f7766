"""tf.distribute: mirrored on one machine, multi_worker with two processes on 127.0.0.1, sharding by sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

from brevetti_pipe.data import DataGenerator
from tests.conftest import KERAS_ONLY, TINY_ARGS, only_job_dir, read_output, run_cli
from tests.servers import free_port


def test_shards_are_disjoint_and_cover_each_epoch():
    samples = pd.DataFrame({"path": [f"/{i}" for i in range(23)], "etag": [f"e{i}" for i in range(23)]})
    epochs = []
    for index in range(3):
        gen = DataGenerator(samples, batch_size=None, shuffle=True, repeat=True, seed=4, shard=(3, index), output_structure="etag")
        it = gen.get_samples_numpy("__default__")
        epochs.append([[next(it) for _ in range(len(gen))] for _ in range(2)])
        assert len(gen) in (7, 8)
    for e in range(2):
        seen = [x for shard in epochs for x in shard[e]]
        assert sorted(seen) == sorted(samples.etag), "each epoch's shards partition the samples"
    assert epochs[0][0] != epochs[0][1], "each epoch reshuffles before sharding"


def test_mirrored_strategy_trains(tmp_path, tiny_vials):
    proc = run_cli(*TINY_ARGS, "distribution.strategy=mirrored", f"platform.root={tmp_path / 'p'}",
                   f"datasets.vials.url={tiny_vials}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_output(only_job_dir(tmp_path / "p"))["status"] == "completed"


SEG_ARGS = ("recipe=vials_segmentation", "settings.epochs=1", "settings.batch_size=4", "settings.filters=2",
            "pipeline.image.target_size=[16,16]", KERAS_ONLY)


def test_multi_worker_trains_the_segmentation_recipe_unchanged(tmp_path, tiny_vials_seg):
    artifacts, out, results = _multi_worker(tmp_path, [*SEG_ARGS, f"datasets.vials_seg.url={tiny_vials_seg}"])
    assert [json.loads(line)["epoch"] for line in (artifacts / "progress.jsonl").read_text().splitlines()] == [1]
    assert np.isfinite(out["metrics"]["devel_pixel_accuracy"]) and "devel_mean_iou" in out["metrics"]
    assert (artifacts / "predictions_devel.csv").exists() and (artifacts / "model.tar.gz").exists()
    assert out["weights_sha256"]


def _multi_worker(tmp_path, args):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        env.pop("HYDRA_FULL_ERROR", None)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "brevetti_pipe", *args, "distribution.strategy=multi_worker",
             "job.id=mw", f"platform.root={tmp_path / 'p'}"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    artifacts = tmp_path / "p" / "jobs" / "mw" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "completed" and out["config"]["distribution"]["strategy"] == "multi_worker"
    assert "worker-1-artifacts" in results[1][1], "the second worker writes outside the job's artifacts"
    return artifacts, out, results


def test_multi_worker_training_with_two_processes(tmp_path, tiny_vials):
    artifacts, out, results = _multi_worker(tmp_path, [*TINY_ARGS, "settings.epochs=2", f"datasets.vials.url={tiny_vials}"])
    assert [json.loads(line)["epoch"] for line in (artifacts / "progress.jsonl").read_text().splitlines()] == [1, 2]
    assert (artifacts / "model.tar.gz").exists()
    # both workers hold the same weights after synchronous training: the same devel metrics
    metrics = [line for _, err in results for line in err.splitlines()]
    assert np.isfinite(out["metrics"]["devel_loss"])
    assert len([ln for ln in metrics if "completed. Output:" in ln]) == 2
