"""ImagePipeline semantics: formats, colour modes, rescale ranges, bit depth, ROIs, padding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brevetti_pipe.stages import ImagePipeline
from brevetti_pipe.testing import run_stage, write_image

RGB = np.random.default_rng(3).integers(0, 256, (12, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["bmp", "png", "tif", "tiff", "gif"])
def test_every_listed_format_decodes_exactly(tmp_path, ext):
    path = tmp_path / f"img.{ext}"
    if ext == "gif":
        pytest.importorskip("PIL")
        Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
        expected = np.asarray(Image.open(path).convert("RGB"))
    else:
        write_image(path, RGB)
        expected = RGB
    out = run_stage(ImagePipeline(dtype="uint8"), pd.DataFrame({"path": [str(path)]}))[0]["img"]
    assert np.array_equal(out, expected)


def test_jpeg_decodes_close_to_source(tmp_path):
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=-1).astype(np.uint8)
    path = tmp_path / "img.jpg"
    Image.fromarray(smooth).save(path, quality=95)
    out = run_stage(ImagePipeline(dtype="uint8"), pd.DataFrame({"path": [str(path)]}))[0]["img"]
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3


def test_color_modes_mean_what_they_say(tmp_path):
    rgb = write_image(tmp_path / "rgb.png", RGB)
    grey = write_image(tmp_path / "grey.png", RGB[..., 0])
    s = pd.DataFrame({"path": [rgb, grey]})
    greyscale = run_stage(ImagePipeline(color_mode="greyscale"), s)
    assert [e["img"].shape[-1] for e in greyscale] == [1, 1], "greyscale turns RGB files into 1 channel"
    rgb_mode = run_stage(ImagePipeline(color_mode="rgb"), s)
    assert [e["img"].shape[-1] for e in rgb_mode] == [3, 3]
    assert np.array_equal(rgb_mode[1]["img"][..., 0], rgb_mode[1]["img"][..., 2])
    keep = run_stage(ImagePipeline(color_mode="keep"), s)
    assert [e["img"].shape[-1] for e in keep] == [3, 1]


@pytest.mark.parametrize("mode, lo, hi", [(None, 0, 255), ("unit", 0, 1), ("imagenet", -1, 1)])
def test_rescale_ranges(tmp_path, mode, lo, hi):
    img = np.zeros((4, 4), np.uint8)
    img[0, 0], img[0, 1] = 0, 255
    out = run_stage(ImagePipeline(color_mode="greyscale", rescale=mode), pd.DataFrame({"path": [write_image(tmp_path / "x.png", img)]}))[0]["img"]
    assert out.min() == pytest.approx(lo) and out.max() == pytest.approx(hi)


def test_sixteen_bit_png_keeps_precision(tmp_path):
    img = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 7)
    path = write_image(tmp_path / "d.png", img)
    out = run_stage(ImagePipeline(color_mode="keep", bit_depth=16, rescale="unit"), pd.DataFrame({"path": [path]}))[0]["img"]
    np.testing.assert_allclose(out[..., 0], img / 65535.0, rtol=1e-6)


def test_rois_crop_and_combine(tmp_path):
    path = write_image(tmp_path / "r.png", RGB)
    s = pd.DataFrame({"path": [path]})
    out = run_stage(ImagePipeline(rois=[(0, 0, 4, 3), (4, 2, 8, 5)], dtype="uint8"), s)[0]["img"]
    assert np.array_equal(out, np.concatenate([RGB[0:3, 0:4], RGB[2:5, 4:8]], axis=0))
    stacked = run_stage(ImagePipeline(rois=[(0, 0, 4, 3), (4, 2, 8, 5)], roi_mode="stack", dtype="uint8"), s)[0]["img"]
    assert stacked.shape == (2, 3, 4, 3)


def test_keep_aspect_ratio_pads_with_zeros(tmp_path):
    path = write_image(tmp_path / "wide.png", np.full((10, 20, 3), 200, np.uint8))
    out = run_stage(ImagePipeline(target_size=(20, 20), keep_aspect_ratio=True), pd.DataFrame({"path": [path]}))[0]["img"]
    assert out.shape == (20, 20, 3)
    assert out[0].max() == 0 and out[10, 10, 0] == pytest.approx(200)


def test_stage_sources_have_no_python_in_the_sample_path():
    import pathlib

    import brevetti_pipe.stages as stages

    for path in pathlib.Path(stages.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "py_function" not in text and "numpy_function" not in text, path.name


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_clip_equals_clip_by_value(dtype):
    import tensorflow as tf

    from brevetti_pipe.stages._image_core import clip

    values = np.array([np.nan, -np.inf, -5.0, -1.0, 0.25, 2.0, 7.5, np.inf]) if dtype != "int32" else np.arange(-6, 7)
    x = tf.constant(values.astype(dtype))
    expected = tf.clip_by_value(x, tf.cast(-1, x.dtype), tf.cast(2, x.dtype)).numpy()
    got = clip(x, -1, 2).numpy()
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)  # NaN positions must match too
