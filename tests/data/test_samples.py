"""get_image_samples: columns, formats, category mapping and clear errors naming the dataset."""

from __future__ import annotations

import hashlib

import pytest

from brevetti_pipe.config import DatasetConfig
from brevetti_pipe.data import Dataset, get_image_samples
from brevetti_pipe.errors import DatasetError


def _write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_columns_formats_annotations_and_content_etags(tmp_path):
    for i, ext in enumerate(["bmp", "png", "jpg", "jpeg", "tif", "tiff", "BMP"]):
        _write(tmp_path / "a" / f"img{i}.{ext}", bytes([i]) * 10)
    _write(tmp_path / "a" / "notes.txt")
    _write(tmp_path / "b" / "deep" / "x.png", b"deep")
    _write(tmp_path / "b" / "deep" / "x.png.json", b"{}")
    samples = get_image_samples(str(tmp_path), name="parts")
    assert {"path", "category", "folder", "etag", "dataset", "dataset_id", "url", "annotation_path"} <= set(samples)
    assert len(samples) == 8
    assert samples["dataset"].unique().tolist() == ["parts"]
    deep = samples[samples.folder == "b/deep"].iloc[0]
    assert deep.category == ("b", "deep") and deep.annotation_path.endswith("x.png.json")
    assert deep.etag == hashlib.md5(b"deep").hexdigest()
    assert samples["path"].tolist() == sorted(samples["path"])


def test_category_map_and_folder_filter(tmp_path):
    for folder in ("ok", "scratch", "dent"):
        _write(tmp_path / folder / "1.png", folder.encode())
    ds = Dataset("d", str(tmp_path), DatasetConfig(url=str(tmp_path), category_map={"scratch": "defect", "dent": "defect"}, folders=["ok", "scratch"]))
    samples = get_image_samples(ds)
    assert sorted(samples["category"]) == [("defect",), ("ok",)]


def test_missing_dataset_names_it(tmp_path):
    with pytest.raises(DatasetError, match=r"Dataset 'cams' not found: nothing at .*nowhere"):
        get_image_samples(str(tmp_path / "nowhere"), name="cams")


def test_empty_dataset_names_it(tmp_path):
    _write(tmp_path / "a" / "readme.txt")
    with pytest.raises(DatasetError, match=r"Dataset 'cams' at .* contains no images \(bmp, png"):
        get_image_samples(str(tmp_path), name="cams")


def test_category_map_matching_nothing_names_it(tmp_path):
    _write(tmp_path / "ok" / "1.png")
    ds = Dataset("cams", str(tmp_path), DatasetConfig(url=str(tmp_path), category_map={"scrach": "defect"}))
    with pytest.raises(DatasetError, match=r"Dataset 'cams': category_map keys \['scrach'\] match no folder.*Folders found: \['ok'\]"):
        get_image_samples(ds)


def test_memory_filesystem(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/mem_ds/good/1.png", b"one")
    fs.pipe("/mem_ds/bad/2.png", b"two")
    samples = get_image_samples("memory://mem_ds")
    assert samples["path"].tolist() == ["memory:///mem_ds/bad/2.png", "memory:///mem_ds/good/1.png"]
    assert samples["etag"][0] == hashlib.md5(b"two").hexdigest()
