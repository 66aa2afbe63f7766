"""Datasets and platforms on real object stores on loopback: moto's S3 server and the GCS emulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brevetti_pipe.data import get_image_samples
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.errors import DatasetError, describe
from brevetti_pipe.storage import IoTools
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


def _epochs(gen, batches):
    it = iter(gen.get_dataset())
    return [tuple(t.numpy() for t in next(it)) for _ in range(batches)]


def test_first_epoch_starts_while_files_arrive_and_matches_a_full_fetch(s3, tmp_path):
    from brevetti_pipe.data import DataGenerator
    from brevetti_pipe.stages import ImageAugmenter, ImagePipeline, OneHotEncoder
    from tests.servers import FaultProxy

    generate_vials("s3://bucket/ds", io=IoTools({"s3": s3.options}), per_class=12, size=32)
    with FaultProxy(s3.endpoint, fail_rate=0.0, delay=1.0) as slow:  # every request takes a second
        io = IoTools({"s3": {"endpoint_url": slow.endpoint}}, cache_root=str(tmp_path / "streamed"))
        samples = get_image_samples("s3://bucket/ds", io=io)

        def generator(io):
            return (DataGenerator(samples, batch_size=8, shuffle=True, repeat=True, seed=3, io=io,
                                  output_structure=("img", "onehot"))
                    .map(ImagePipeline(target_size=(24, 24), rescale="unit"))
                    .map(ImageAugmenter())
                    .map(OneHotEncoder(["failed_cap", "good", "missing_cap"])))

        streamed = generator(io)
        dataset = streamed.get_dataset()
        assert streamed._prefetch is not None and not streamed._prefetch.done, "the dataset is ready before the files"
        it = iter(dataset)
        got = [tuple(t.numpy() for t in next(it)) for _ in range(2 * len(streamed))]  # two epochs
    full_io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "full"))
    full_io.localize(samples["path"].tolist())
    reference = generator(full_io)
    expected = _epochs(reference, 2 * len(reference))
    assert reference._prefetch is None or reference._prefetch.done, "nothing left to fetch: a plain dataset"
    for (a, b), (c, d) in zip(got, expected):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_a_file_missing_from_the_store_fails_the_streamed_epoch_by_name(s3, tmp_path):
    import pandas as pd

    from brevetti_pipe.data import DataGenerator
    from brevetti_pipe.stages import ImagePipeline

    io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "cache"))
    generate_vials("s3://bucket/ds", io=io, per_class=2, size=32)
    samples = get_image_samples("s3://bucket/ds", io=io)
    samples = pd.concat([samples, samples.iloc[:1].assign(path="s3://bucket/ds/good/gone.bmp")], ignore_index=True)
    gen = DataGenerator(samples, batch_size=4, io=io, output_structure="img").map(ImagePipeline(target_size=(16, 16)))
    with pytest.raises(Exception, match=r"File not found while caching.*gone\.bmp") as caught:
        for _ in gen.get_dataset():
            pass
    # what output.json and the CLI say: one line, without TensorFlow's wrapping
    assert describe(caught.value).startswith("File not found while caching: s3://bucket/ds/good/gone.bmp:")
    assert "\n" not in describe(caught.value)


def test_presigned_cache_fetch_matches_fsspec_and_names_missing_files(s3, tmp_path):
    from brevetti_pipe.storage import _s3fetch
    from brevetti_pipe.errors import StorageError

    io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "presigned"))
    generate_vials("s3://bucket/ds", io=io, per_class=3, size=32)
    urls = get_image_samples("s3://bucket/ds", io=io)["path"].tolist()
    assert _s3fetch.supported(io.storage_options["s3"]) and io.presigned_fetch
    fast = io.localize(urls)
    plain_io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "fsspec"))
    plain_io.presigned_fetch = False
    plain = plain_io.localize(urls)
    assert [open(p, "rb").read() for p in fast] == [open(p, "rb").read() for p in plain]
    assert [open(p, "rb").read() for p in fast] == [s3.fs().cat_file(u) for u in urls]
    with pytest.raises(StorageError, match=r"File not found while caching: s3://bucket/ds/nope\.bmp") as caught:
        io.localize(["s3://bucket/ds/nope.bmp"])
    assert "X-Amz-" not in str(caught.value) and "Signature" not in str(caught.value)


@pytest.mark.parametrize("options, expected", [
    ({"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}, True),
    ({"anon": True, "client_kwargs": {"region_name": "eu-west-1"}}, True),
    ({"requester_pays": True}, False),
    ({"s3_additional_kwargs": {"SSECustomerKey": "x"}}, False),
    ({"client_kwargs": {"verify": False}}, False),
    ({"config_kwargs": {"proxies": {"https": "http://proxy:3128"}}}, False),
])
def test_presigned_fetch_only_for_options_it_mirrors(options, expected):
    from brevetti_pipe.storage import _s3fetch

    assert _s3fetch.supported(options) is expected


def test_prefetch_fetches_in_the_given_order_and_wait_returns_local_files(s3, tmp_path):
    import os

    io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "cache"))
    generate_vials("s3://bucket/ds", io=io, per_class=30, size=16)  # 90 files: two fetch batches
    urls = get_image_samples("s3://bucket/ds", io=io)["path"].tolist()
    order = list(range(len(urls)))[::-1]
    pending = io.prefetch(urls, order=order)
    assert pending._chunk_of[order[0]] == 0 and pending._chunk_of[order[-1]] == 1, "the first batch holds order's head"
    first = pending.wait(order[0])
    assert os.path.exists(first) and open(first, "rb").read() == s3.fs().cat_file(urls[order[0]])
    pending.join()
    assert pending.done and all(os.path.exists(p) for p in pending.paths)
    again = io.prefetch(urls)
    assert again.done and again.paths == pending.paths, "nothing left to fetch"


@pytest.mark.parametrize("options", [
    {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"},
    {"key": "AKIDEXAMPLE", "secret": "s", "token": "tok/+=", "client_kwargs": {"region_name": "eu-west-1"}},
    {"key": "AKIDEXAMPLE", "secret": "s", "config_kwargs": {"s3": {"addressing_style": "virtual"}}},
    {"key": "AKIDEXAMPLE", "secret": "s", "config_kwargs": {"s3": {"addressing_style": "path"}}},
    {"anon": True, "client_kwargs": {"region_name": "eu-west-1"}},
], ids=["endpoint", "session-token", "virtual-host", "path-style", "anonymous"])
@pytest.mark.parametrize("bucket", ["bucket", "dotted.bucket"])
def test_presigned_urls_are_botocore_s_own(options, bucket):
    """Keys signed on the probe's URL layout give exactly ``generate_presigned_url``'s URLs."""
    import datetime
    from unittest import mock

    from fsspec.asyn import sync

    from brevetti_pipe.storage import _s3fetch

    fs, _ = IoTools({"s3": {**options, "skip_instance_cache": True}}).fs("s3://bucket")
    keys = ["a/b.png", "with space/ü+x~y.jpg", "x%41/y?z#w", "dir//double/slash", "=&;:,@$!'()*.bmp"]

    async def urls() -> tuple[bool, list[tuple[str, str]]]:
        await fs.set_session()
        client = await fs.get_s3(bucket)
        with mock.patch("botocore.auth.get_current_datetime", return_value=datetime.datetime(2026, 12, 1, 12, 0, 0)):
            presigner = await _s3fetch._Presigner.create(client, bucket)
            return presigner.prefix is not None, [
                (await presigner.url(k, None), await client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": k}, ExpiresIn=_s3fetch._EXPIRES))
                for k in keys]

    fast, pairs = sync(fs.loop, urls)
    assert fast is ("anon" not in options), "signed clients use the one-probe path"
    for ours, botocore in pairs:
        assert ours == botocore


def test_deferred_prefetch_starts_on_start_or_wait(s3, tmp_path):
    import os

    io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "cache"))
    generate_vials("s3://bucket/ds", io=io, per_class=2, size=16)
    urls = get_image_samples("s3://bucket/ds", io=io)["path"].tolist()
    pending = io.prefetch(urls, start=False)
    assert not pending.done and not any(os.path.exists(p) for p in pending.paths), "nothing fetched before start"
    assert open(pending.wait(0), "rb").read() == s3.fs().cat_file(urls[0]), "wait starts the fetch"
    pending.join()
    assert pending.done and all(os.path.exists(p) for p in pending.paths)
    later = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "other")).prefetch(urls, start=False)
    later.start()
    later.start()  # once
    later.join()
    assert later.done and [open(p, "rb").read() for p in later.paths] == [open(p, "rb").read() for p in pending.paths]
