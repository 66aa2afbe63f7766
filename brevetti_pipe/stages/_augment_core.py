"""Pure TensorFlow augmentation functions driven by stateless per-sample seeds."""

from __future__ import annotations

import math

import tensorflow as tf

from brevetti_pipe.stages._image_core import clip


__all__ = ["uniform", "chance", "affine_matrix", "warp", "clip"]

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


def gaussian_kernel(sigma: tf.Tensor, radius: int) -> tf.Tensor:
    """A normalised 1-D Gaussian of a fixed ``2 * radius + 1`` taps for a (traced) ``sigma``."""
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    return k / tf.reduce_sum(k)


def separable_filter(image: tf.Tensor, ky: tf.Tensor, kx: tf.Tensor) -> tf.Tensor:
    """Filter ``[H, W, C]`` float with a separable kernel, reflecting at the borders."""
    channels = tf.shape(image)[-1]
    ry, rx = (tf.shape(ky)[0] - 1) // 2, (tf.shape(kx)[0] - 1) // 2
    padded = tf.pad(image, [[ry, ry], [rx, rx], [0, 0]], mode="REFLECT")[tf.newaxis]
    kv = tf.tile(tf.reshape(ky, [-1, 1, 1, 1]), [1, 1, channels, 1])
    kh = tf.tile(tf.reshape(kx, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, kv, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kh, [1, 1, 1, 1], "VALID")
    return out[0]


def filter2d(image: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Filter ``[H, W, C]`` float with a small 2-D kernel, reflecting at the borders."""
    channels = tf.shape(image)[-1]
    r = (kernel.shape[0] - 1) // 2
    padded = tf.pad(image, [[r, r], [r, r], [0, 0]], mode="REFLECT")[tf.newaxis]
    k = tf.tile(tf.reshape(kernel, [kernel.shape[0], kernel.shape[1], 1, 1]), [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(padded, k, [1, 1, 1, 1], "VALID")[0]


EMBOSS = ((-2.0, -1.0, 0.0), (-1.0, 1.0, 1.0), (0.0, 1.0, 2.0))


def displacement(seed: tf.Tensor, key: int, shape: tf.Tensor, alpha: float, sigma: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Smooth random displacement fields (dy, dx) in pixels for an elastic deformation."""
    radius = max(1, int(math.ceil(3 * sigma)))
    k = gaussian_kernel(tf.constant(sigma, tf.float32), radius)
    field = tf.random.stateless_uniform(tf.concat([shape, [2]], 0), seed=_fold(seed, key), minval=-1.0, maxval=1.0)
    field = separable_filter(field, k, k) * alpha
    return field[..., 0], field[..., 1]


def dense_warp(image: tf.Tensor, dy: tf.Tensor, dx: tf.Tensor, nearest: bool) -> tf.Tensor:
    """Sample ``image`` at (y + dy, x + dx) per pixel (bilinear, or nearest for masks), clamped at edges."""
    dtype = image.dtype
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32), indexing="ij")
    sy = clip(yy + dy, 0.0, tf.cast(h - 1, tf.float32))
    sx = clip(xx + dx, 0.0, tf.cast(w - 1, tf.float32))
    if nearest:
        idx = tf.stack([tf.cast(tf.round(sy), tf.int32), tf.cast(tf.round(sx), tf.int32)], axis=-1)
        return tf.ensure_shape(tf.gather_nd(image, idx), image.shape)
    img = tf.cast(image, tf.float32)
    y0, x0 = tf.floor(sy), tf.floor(sx)
    wy, wx = (sy - y0)[..., tf.newaxis], (sx - x0)[..., tf.newaxis]
    y0i, x0i = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    y1i, x1i = tf.minimum(y0i + 1, h - 1), tf.minimum(x0i + 1, w - 1)

    def at(yi: tf.Tensor, xi: tf.Tensor) -> tf.Tensor:
        return tf.gather_nd(img, tf.stack([yi, xi], axis=-1))

    top = at(y0i, x0i) * (1 - wx) + at(y0i, x1i) * wx
    bottom = at(y1i, x0i) * (1 - wx) + at(y1i, x1i) * wx
    out = top * (1 - wy) + bottom * wy
    if dtype.is_integer:
        out = tf.round(out)
    return tf.ensure_shape(tf.cast(out, dtype), image.shape)


def salt_and_pepper(image: tf.Tensor, seed: tf.Tensor, key: int, amount: tf.Tensor, lo: float, hi: float) -> tf.Tensor:
    """Set a fraction ``amount`` of pixels (all channels) to ``lo`` or ``hi`` at random."""
    u = tf.random.stateless_uniform(tf.shape(image)[:2], seed=_fold(seed, key))[..., tf.newaxis]
    image = tf.where(u < amount / 2, tf.cast(lo, image.dtype), image)
    return tf.where(u > 1 - amount / 2, tf.cast(hi, image.dtype), image)
