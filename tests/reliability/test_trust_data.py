"""Data integrity: fetched bytes are verified, the cache follows object versions, odd datasets and
images are named instead of silently mis-read."""

from __future__ import annotations

import io as _io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brevetti_pipe._util.retry import RetryPolicy
from brevetti_pipe.data import get_image_samples
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.data._generator import localize_samples
from brevetti_pipe.errors import DatasetError, StorageError
from brevetti_pipe.storage import IoTools
from brevetti_pipe.stages import ImagePipeline
from tests.conftest import TINY_ARGS, only_job_dir, read_output, run_cli
from tests.servers import FaultProxy

_QUICK = RetryPolicy(total_seconds=20, initial_delay=0.01, max_delay=0.2)


def _bmp(array: np.ndarray, mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    img = img.convert(mode) if mode and mode != "P" else img
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = _io.BytesIO()
    img.save(buf, format="BMP")
    return buf.getvalue()


@pytest.mark.parametrize("presigned", [True, False], ids=["presigned", "fsspec"])
def test_truncated_bodies_are_refetched_never_bad_samples(s3, tmp_path, presigned):
    generate_vials("s3://bucket/ds", io=IoTools({"s3": s3.options}), per_class=10, size=32)
    with FaultProxy(s3.endpoint, fail_rate=0.0, truncate_rate=0.2, seed=4) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, cache_root=str(tmp_path / "cache"), retry=_QUICK)
        io.presigned_fetch = presigned
        samples = get_image_samples("s3://bucket/ds", io=io)
        local = localize_samples(samples, io)
    assert proxy.stats["truncated"] >= 3, proxy.stats
    assert ImagePipeline(target_size=(16, 16)).check(local) == {}, "healthy images reported as bad"
    fs = s3.fs()
    assert [open(p, "rb").read() for p in local["path"]] == [fs.cat_file(u) for u in samples["path"]]


def test_job_with_truncated_bodies_skips_no_healthy_image(s3, tmp_path):
    generate_vials("s3://bucket/platform/datasets/vials", io=IoTools({"s3": s3.options}), per_class=10, size=48)
    with FaultProxy(s3.endpoint, fail_rate=0.0, truncate_rate=0.2, seed=7) as proxy:
        proc = run_cli(*TINY_ARGS, "platform.root=s3://bucket/platform", "data.on_bad_sample=skip", "job.id=trunc",
                       f"+platform.storage_options.endpoint_url={proxy.endpoint}", cwd=tmp_path, env=s3.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.stats["truncated"] >= 3, proxy.stats
    import json

    out = json.loads(s3.fs().cat_file("bucket/platform/jobs/trunc/artifacts/output.json"))
    assert out["status"] == "completed" and out["bad_samples"] == 0, out.get("bad_samples")


def test_read_file_retries_a_damaged_body(s3):
    fs = s3.fs()
    blobs = {f"bucket/files/{i}.json": os.urandom(300 + i) for i in range(12)}
    for path, data in blobs.items():
        fs.pipe_file(path, data)
    with FaultProxy(s3.endpoint, fail_rate=0.0, truncate_rate=0.3, seed=1) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, retry=_QUICK)
        assert {p: io.read_file(f"s3://{p}") for p in blobs} == blobs
    assert proxy.stats["truncated"] >= 2, proxy.stats


def test_truncation_that_never_heals_is_a_storage_error_naming_the_url(s3, tmp_path):
    generate_vials("s3://bucket/ds", io=IoTools({"s3": s3.options}), per_class=1, size=32)
    with FaultProxy(s3.endpoint, fail_rate=0.0, truncate_rate=1.0) as proxy:
        io = IoTools({"s3": {"endpoint_url": proxy.endpoint}}, cache_root=str(tmp_path / "cache"))
        samples = get_image_samples("s3://bucket/ds", io=io)
        io.retry = RetryPolicy(total_seconds=2, initial_delay=0.01)
        with pytest.raises(StorageError, match=r"gave up after retrying.*s3://bucket/ds/\w+/\w+\.bmp: got \d+ bytes, the listing says \d+"):
            localize_samples(samples, io)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "nothing unverified is left in the cache"


@pytest.mark.parametrize("store", ["s3", "memory"])
def test_same_size_change_after_listing_fails_the_md5_check_naming_the_file(request, tmp_path, store):
    """S3 (presigned fetch: the MD5 of the bytes against the listed ETag) and stores without
    ETags (memory://: the listing's content hash, the fetched file hashed)."""
    import fsspec

    if store == "s3":
        s3 = request.getfixturevalue("s3")
        fs, root, io = s3.fs(), "bucket/ds", IoTools({"s3": s3.options})
    else:
        fs, root, io = fsspec.filesystem("memory"), f"/trust-{tmp_path.name}/ds", IoTools()
    io.set_cache_root(str(tmp_path / "cache"))
    fs.pipe_file(f"{root}/good/a.bmp", _bmp(np.zeros((8, 8, 3), np.uint8)))
    samples = get_image_samples(f"{store}://{root}", io=io)
    io.retry = RetryPolicy(total_seconds=2, initial_delay=0.01)
    fs.pipe_file(f"{root}/good/a.bmp", _bmp(np.full((8, 8, 3), 9, np.uint8)))  # same size, listed before
    with pytest.raises(StorageError, match=rf"{store}://{root}/good/a\.bmp: content MD5 [0-9a-f]{{32}} is not the listed ETag"):
        localize_samples(samples, io)


def test_objects_whose_etag_is_no_md5_are_checked_by_size_only(s3, tmp_path):
    fs = s3.fs()
    data = _bmp(np.zeros((8, 8, 3), np.uint8))
    fs.pipe_file("bucket/ds/good/a.bmp", data, ServerSideEncryption="aws:kms")  # SSE-KMS: the ETag is no MD5
    io = IoTools({"s3": s3.options}, cache_root=str(tmp_path / "cache"), retry=RetryPolicy(total_seconds=5))
    samples = get_image_samples("s3://bucket/ds", io=io).assign(etag="0" * 32)  # as S3 lists such objects
    assert open(localize_samples(samples, io)["path"][0], "rb").read() == data


def test_replaced_object_is_fetched_anew_and_a_damaged_cache_copy_is_replaced(s3, tmp_path):
    fs = s3.fs()
    first = _bmp(np.zeros((8, 8, 3), np.uint8))
    second = _bmp(np.full((8, 8, 3), 200, np.uint8))
    fs.pipe_file("bucket/ds/good/a.bmp", first)
    cache = str(tmp_path / "shared-cache")  # platform.cache_dir: shared by runs

    def run() -> tuple[str, bytes, str]:
        io = IoTools({"s3": s3.options}, cache_root=cache)
        samples = get_image_samples("s3://bucket/ds", io=io)
        path = localize_samples(samples, io)["path"][0]
        return samples["etag"][0], open(path, "rb").read(), path

    etag, data, path = run()
    assert data == first
    fs.pipe_file("bucket/ds/good/a.bmp", second)  # replaced in place, same size, new ETag
    new_etag, data, _ = run()
    assert new_etag != etag and data == second, "the replaced object must not be served from the cache"
    fs.pipe_file("bucket/ds/good/a.bmp", first)
    _, _, path = run()
    with open(path, "r+b") as fh:  # e.g. a copy truncated by an older version or by a full disk
        fh.truncate(10)
    assert run()[1] == first


def test_a_file_as_dataset_url_is_an_error_naming_the_dataset(s3, tmp_path):
    image = tmp_path / "one.bmp"
    image.write_bytes(_bmp(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(DatasetError, match=r"Dataset 'one\.bmp' at .*one\.bmp is a file, not a folder"):
        get_image_samples(str(image))
    s3.fs().pipe_file("bucket/x/img.bmp", image.read_bytes())
    with pytest.raises(DatasetError, match=r"Dataset 'cams' at s3://bucket/x/img\.bmp is a file, not a folder"):
        get_image_samples("s3://bucket/x/img.bmp", io=IoTools({"s3": s3.options}), name="cams")


def test_symlinked_class_folders_are_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "scratch_images"
    elsewhere.mkdir(parents=True)
    for i in range(2):
        (elsewhere / f"s{i}.bmp").write_bytes(_bmp(np.zeros((4, 4, 3), np.uint8)))
    root = tmp_path / "ds"
    (root / "good").mkdir(parents=True)
    (root / "good" / "g.bmp").write_bytes(_bmp(np.zeros((4, 4, 3), np.uint8)))
    os.symlink(elsewhere, root / "scratch")
    (root / "good" / "loop").symlink_to(root)  # a link back up the tree is not walked twice
    samples = get_image_samples(str(root))
    assert sorted(samples["category"]) == [("good",), ("scratch",), ("scratch",)]
    assert sorted(p.rsplit(os.sep, 1)[-1] for p in samples["path"] if "scratch" in p) == ["s0.bmp", "s1.bmp"]


def _non_ascii_dataset(root):
    for folder in ("ridse_æøå", "ü", "日本"):
        for i in range(3):
            value = 40 * i + len(folder) * 10
            path = root / folder / f"bild_{i}_ø.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_bmp(np.full((8, 8, 3), value, np.uint8)))


def test_non_ascii_folder_and_file_names_work_in_the_graph(s3, tmp_path):
    from brevetti_pipe.data import DataGenerator
    from brevetti_pipe.stages import OneHotEncoder

    root = tmp_path / "daten"
    _non_ascii_dataset(root)
    classes = ["ridse_æøå", "ü", "日本"]
    cases = [(str(root), IoTools(), False), (str(root), IoTools(), str(tmp_path / "prefix_æ")),
             ("s3://bucket/daten", IoTools({"s3": s3.options}, cache_root=str(tmp_path / "c_ø")), False)]
    IoTools({"s3": s3.options}).put_tree(str(root), "s3://bucket/daten")
    for url, io, cache in cases:  # local, through the on-disk prefix cache, and from S3 through the cache
        samples = get_image_samples(url, io=io)
        gen = (DataGenerator(samples, batch_size=0, io=io, output_structure=None, cache=cache)
               .map(ImagePipeline(target_size=(8, 8))).map(OneHotEncoder(classes)))
        rows = list(gen)
        assert sorted(r["category"] for r in rows) == sorted(c for c in classes for _ in range(3))
        assert all("bild_" in r["path"] and "_ø.bmp" in r["path"] for r in rows)
        assert all(r["onehot"][classes.index(r["category"])] == 1 for r in rows)
        assert sorted(int(r["img"].mean()) for r in rows) == sorted(
            int(np.asarray(Image.open(p)).mean()) for p in root.rglob("*.bmp")), "each image decoded from its own file"


def test_non_ascii_dataset_trains_end_to_end(tmp_path):
    data = tmp_path / "billeder_æøå"
    _non_ascii_dataset(data)
    # Hydra's override grammar takes non-ASCII values quoted
    proc = run_cli(*TINY_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url='{data}'",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "codec can't encode" not in proc.stderr, "no callback may fail on the names either"
    job_dir = only_job_dir(tmp_path / "p")
    assert read_output(job_dir)["status"] == "completed"
    split = pd.read_csv(job_dir / "artifacts" / "sample_identification.csv")
    assert set(split["category"]) == {"ridse_æøå", "ü", "日本"} and split["path"].str.contains("_ø.bmp").all()


def test_bmps_tensorflow_misreads_are_bad_samples_by_name(tmp_path):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    colour = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    files = {
        "palette.bmp": _bmp(colour, "P"),  # 8-bit palette: TensorFlow returns the indices as grey
        "bilevel.bmp": _bmp(grey, "1"),  # 1 bit per pixel: TensorFlow cannot decode it
        "grey.bmp": _bmp(grey, "L"),  # 8-bit grey ramp palette: indices are the grey levels
        "rgb.bmp": _bmp(colour),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    samples = pd.DataFrame({"path": [str(tmp_path / n) for n in files]})
    bad = ImagePipeline().check(samples)
    assert sorted(bad) == [0, 1], bad
    assert "palette" in bad[0] and "24-bit" in bad[0]
    assert "1 bit(s) per pixel" in bad[1]
    import tensorflow as tf

    for i in (2, 3):  # what passes the check decodes as Pillow does
        decoded = tf.io.decode_image(files[samples["path"][i].rsplit(os.sep, 1)[-1]], channels=3, expand_animations=False)
        expected = np.asarray(Image.open(samples["path"][i]).convert("RGB"))
        np.testing.assert_array_equal(decoded.numpy(), expected)
