"""Golden images of ImagePipeline resize/rescale and of each deterministic augmentation function.

Inputs are generated here; expected outputs live in tests/stages/golden/*.png.
Regenerate after an intended change with:  BREVETTI_PIPE_REGEN_GOLDEN=1 make test
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from brevetti_pipe.stages import ImagePipeline
from brevetti_pipe.stages import _augment_core as aug
from brevetti_pipe.testing import write_image

GOLDEN = Path(__file__).parent / "golden"
SEED = tf.constant([5, 9], tf.int64)


def _input() -> np.ndarray:
    """A 40x48 RGB test card: gradients, a bright square, a diagonal line."""
    yy, xx = np.mgrid[0:40, 0:48]
    img = np.stack([xx * 5, yy * 6, (xx + yy) * 3], axis=-1).astype(np.float32)
    img[8:20, 10:24] = 250
    img[np.abs(yy - xx * 0.8) < 1.0] = 20
    return np.clip(img, 0, 255).astype(np.uint8)


def _unit() -> tf.Tensor:
    return tf.constant(_input(), tf.float32) / 255.0


def _pipeline(tmp: Path, **params) -> np.ndarray:
    path = write_image(tmp / "card.png", _input())
    return ImagePipeline(**params).process_bytes(tf.io.read_file(path)).numpy()


CASES = {
    "pipeline_resize_bilinear_unit": lambda t: _pipeline(t, target_size=(20, 30), rescale="unit"),
    "pipeline_resize_antialias_imagenet": lambda t: (_pipeline(t, target_size=(16, 16), antialias=True, rescale="imagenet") + 1) / 2,
    "pipeline_keep_aspect_grey": lambda t: _pipeline(t, target_size=(32, 32), keep_aspect_ratio=True, color_mode="greyscale", rescale="unit"),
    "pipeline_nearest_raw": lambda t: _pipeline(t, target_size=(10, 12), resize_method="nearest") / 255.0,
    "flip_left_right": lambda t: tf.image.flip_left_right(_unit()).numpy(),
    "flip_up_down": lambda t: tf.image.flip_up_down(_unit()).numpy(),
    "rot90": lambda t: tf.image.rot90(_unit()[:40, :40], 1).numpy(),
    "affine_bilinear": lambda t: aug.warp(_unit(), aug.affine_matrix(40, 48, tf.constant(math.radians(30.0)), tf.constant(1.1), tf.constant(0.1), tf.constant(3.0), tf.constant(-2.0)), "bilinear").numpy(),
    "affine_nearest_constant": lambda t: aug.warp(_unit(), aug.affine_matrix(40, 48, tf.constant(math.radians(-20.0)), tf.constant(0.9), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)), "nearest", "CONSTANT").numpy(),
    "gaussian_blur": lambda t: aug.separable_filter(_unit(), aug.gaussian_kernel(tf.constant(1.5), 5), aug.gaussian_kernel(tf.constant(1.5), 5)).numpy(),
    "box_blur": lambda t: aug.separable_filter(_unit(), tf.fill([3], 1 / 3), tf.fill([5], 1 / 5)).numpy(),
    "emboss": lambda t: np.clip(aug.filter2d(_unit(), tf.constant(aug.EMBOSS)).numpy() * 0.5 + 0.5 * _unit().numpy(), 0, 1),
    "elastic": lambda t: aug.dense_warp(_unit(), *aug.displacement(SEED, 1, tf.constant([40, 48]), 6.0, 3.0), nearest=False).numpy(),
    "salt_and_pepper": lambda t: aug.salt_and_pepper(_unit(), SEED, 2, tf.constant(0.1), 0.0, 1.0).numpy(),
    "hue_saturation": lambda t: tf.image.adjust_saturation(tf.image.adjust_hue(_unit(), 0.15), 1.6).numpy(),
}


def _to_png_array(values: np.ndarray) -> np.ndarray:
    arr = np.clip(np.round(np.asarray(values, np.float64) * 255.0), 0, 255).astype(np.uint8)
    return arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_image(tmp_path, name):
    got = _to_png_array(CASES[name](tmp_path))
    golden = GOLDEN / f"{name}.png"
    if os.environ.get("BREVETTI_PIPE_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        Image.fromarray(got).save(golden)
    assert golden.exists(), f"no golden image {golden}; regenerate with BREVETTI_PIPE_REGEN_GOLDEN=1 make test"
    expected = np.asarray(Image.open(golden))
    assert got.shape == expected.shape, (got.shape, expected.shape)
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert diff.max() <= 1, f"{name}: {int((diff > 1).sum())} pixels differ by more than 1 (max {diff.max()})"


def test_transforms_actually_change_the_image(tmp_path):
    original = _to_png_array(_unit().numpy())
    for name in ("flip_left_right", "affine_bilinear", "gaussian_blur", "elastic", "salt_and_pepper", "hue_saturation"):
        assert not np.array_equal(_to_png_array(CASES[name](tmp_path)), original), name
