"""Datasets and platforms on real object stores on loopback: moto's S3 server and the GCS emulator."""

from __future__ import annotations

import json

import pytest

from brevetti_pipe.data import get_image_samples
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.errors import DatasetError
from brevetti_pipe.io import IoTools
from tests.conftest import TINY_ARGS, run_cli


@pytest.mark.parametrize("store_name", ["s3", "gcs"])
def test_recipe_trains_from_store_and_writes_artifacts_back(request, tmp_path, store_name):
    store = request.getfixturevalue(store_name)
    root = f"{store.protocol}://bucket/platform"
    proc = run_cli(
        *TINY_ARGS, f"platform.root={root}", *store.overrides("platform.storage_options"),
        "datasets.vials.generator_params.per_class=8", "datasets.vials.generator_params.size=48",
        "job.id=remote-job", cwd=tmp_path, env=store.env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fs = store.fs()
    images = [p for p in fs.find("bucket/platform/datasets/vials") if p.endswith(".bmp")]
    assert len(images) == 24, "the generator writes the demo set into the store"
    artifacts = "bucket/platform/jobs/remote-job/artifacts"
    names = {p.rsplit("/", 1)[-1] for p in fs.find(artifacts)}
    assert {"output.json", "progress.jsonl", "sample_identification.csv", "model.tar.gz"} <= names
    out = json.loads(fs.cat_file(f"{artifacts}/output.json"))
    assert out["status"] == "completed" and "devel_accuracy" in out["metrics"]


def test_listing_reads_store_etags_and_second_fetch_uses_cache(s3, tmp_path):
    io = IoTools({"s3": s3.options})
    generate_vials("s3://bucket/ds", io=io, per_class=4, size=32)
    samples = get_image_samples("s3://bucket/ds", io=io)
    assert len(samples) == 12 and samples["path"].str.startswith("s3://bucket/ds/").all()
    info = s3.fs().info(samples["path"][0])
    assert samples["etag"][0] == info["ETag"].strip('"')
    io.set_cache_root(str(tmp_path / "cache"))
    first = io.localize(samples["path"].tolist())
    assert all(p.startswith(str(tmp_path / "cache")) for p in first)
    s3.fs().rm("bucket/ds", recursive=True)  # the store no longer has them: the cache must serve
    assert io.localize(samples["path"].tolist()) == first


def test_unreadable_store_is_a_clear_dataset_error(tmp_path):
    from tests.servers import free_port

    io = IoTools({"s3": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "config_kwargs": {"retries": {"max_attempts": 1}}}})
    with pytest.raises(DatasetError, match=r"Cannot list dataset 'ds' at s3://bucket/ds"):
        get_image_samples("s3://bucket/ds", io=io, name="ds")


def test_bad_credentials_name_the_dataset(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    from tests.servers import free_port

    port = free_port()
    # moto enforcing IAM auth from the first request: unknown keys get 403
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        io = IoTools({"s3": {"endpoint_url": f"http://127.0.0.1:{port}", "key": "AKIABAD", "secret": "bad-secret-4711"}})
        with pytest.raises(DatasetError) as err:
            get_image_samples("s3://bucket/ds", io=io, name="cams")
        assert "Cannot list dataset 'cams' at s3://bucket/ds: access denied" in str(err.value)
        assert "check the credentials" in str(err.value)
        assert "bad-secret-4711" not in str(err.value)
    finally:
        server.terminate()
        server.wait(timeout=10)
