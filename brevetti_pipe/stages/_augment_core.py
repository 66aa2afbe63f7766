"""Pure TensorFlow augmentation functions driven by stateless per-sample seeds."""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["uniform", "chance", "affine_matrix", "warp"]

_fold = tf.random.experimental.stateless_fold_in


def uniform(seed: tf.Tensor, key: int, low: float, high: float) -> tf.Tensor:
    """One stateless draw in [low, high) for transform ``key`` (independent of other keys)."""
    return tf.random.stateless_uniform([], seed=_fold(seed, key), minval=low, maxval=high)


def chance(seed: tf.Tensor, key: int, p: float) -> tf.Tensor:
    """A stateless coin flip that is True with probability ``p``."""
    return uniform(seed, key, 0.0, 1.0) < p


def affine_matrix(
    height: tf.Tensor, width: tf.Tensor, angle: tf.Tensor, scale: tf.Tensor, shear: tf.Tensor,
    tx: tf.Tensor, ty: tf.Tensor,
) -> tf.Tensor:
    """The 8-vector mapping output pixels to input pixels for a rotation (radians), zoom,
    shear and translation (pixels) about the image centre (ImageProjectiveTransformV3 form)."""
    cx = (tf.cast(width, tf.float32) - 1.0) / 2.0
    cy = (tf.cast(height, tf.float32) - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    # forward: p_out = A @ (p_in - c) + c + t  with A = R(angle) @ Shear(shear) @ S(scale)
    a00, a01 = cos * scale, (cos * shear - sin) * scale
    a10, a11 = sin * scale, (sin * shear + cos) * scale
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    ox, oy = cx + tx, cy + ty
    b0 = cx - (i00 * ox + i01 * oy)
    b1 = cy - (i10 * ox + i11 * oy)
    zero = tf.zeros([], tf.float32)
    return tf.stack([i00, i01, b0, i10, i11, b1, zero, zero])


def warp(image: tf.Tensor, transform: tf.Tensor, interpolation: str, fill_mode: str = "REFLECT") -> tf.Tensor:
    """Apply an 8-vector projective transform to ``[H, W, C]``, keeping dtype and shape."""
    dtype = image.dtype
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[tf.newaxis],
        transforms=transform[tf.newaxis],
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation=interpolation.upper(),
        fill_mode=fill_mode,
    )[0]
    if dtype.is_integer:
        out = tf.cast(tf.round(out), dtype)
    else:
        out = tf.cast(out, dtype)
    return tf.ensure_shape(out, image.shape)


DEG = math.pi / 180.0
