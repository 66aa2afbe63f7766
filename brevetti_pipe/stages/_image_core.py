"""Pure TensorFlow image functions used by the stages (no Python in the per-sample path)."""

from __future__ import annotations

import tensorflow as tf

from brevetti_pipe.errors import StageError

__all__ = ["clip", "decode", "to_channels", "resize", "rescale", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def decode(data: tf.Tensor, dtype: tf.DType = tf.uint8) -> tf.Tensor:
    """Decode BMP / PNG / JPEG / GIF bytes to a ``[H, W, C]`` tensor of ``dtype`` (C as stored).

    16-bit PNGs keep their precision with ``dtype=tf.uint16``; 8-bit sources are scaled to it.
    """
    return tf.io.decode_image(data, channels=0, dtype=dtype, expand_animations=False)


#: brevettiai's demosaicing kernel (4 x 4, RGB out): red at the odd/odd sites, blue at even/even, green between.
_BAYER = [[[0.25, 0.0, 0.0], [0.0, 0.25, 0.0], [0.25, 0.0, 0.0], [0.0, 0.0, 0.0]],
          [[0.0, 0.25, 0.0], [0.0, 0.0, 1.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0]],
          [[0.25, 0.0, 0.0], [0.0, 0.25, 0.0], [0.25, 0.0, 0.0], [0.0, 0.0, 0.0]],
          [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]


def bayer_demosaic(mosaic: tf.Tensor) -> tf.Tensor:
    """A raw Bayer mosaic ``[H, W, 1]`` -> float32 RGB ``[ceil(H/2), ceil(W/2), 3]`` (brevettiai's stride-2
    convolution with "SAME" padding, so old models get the same input)."""
    kernel = tf.constant(_BAYER, tf.float32)[:, :, tf.newaxis, :]
    out = tf.nn.conv2d(tf.cast(mosaic, tf.float32)[tf.newaxis], kernel, strides=[1, 2, 2, 1], padding="SAME")[0]
    out.set_shape([None, None, 3])
    return out


def clip(x: tf.Tensor, low: float | tf.Tensor, high: float | tf.Tensor) -> tf.Tensor:
    """``tf.clip_by_value``: Minimum then Maximum, the same values, NaN included.

    Not the single ``ClipByValue`` kernel: its CPU kernel does not vectorise and took 51 us per
    224x224x3 float image against 24 us for the two vectorised passes (one thread, TF 2.21), the
    largest cost of a flip + brightness augmentation after the resize.
    """
    return tf.maximum(tf.minimum(x, tf.cast(high, x.dtype)), tf.cast(low, x.dtype))


def cast(image: tf.Tensor, dtype: str) -> tf.Tensor:
    """Cast to ``dtype``; integer targets round and clip to their range."""
    target = tf.as_dtype(dtype)
    if target == image.dtype:
        return image
    if target.is_integer:
        return tf.cast(clip(tf.round(tf.cast(image, tf.float32)), target.min, target.max), target)
    return tf.cast(image, target)


def to_channels(image: tf.Tensor, channels: int | None) -> tf.Tensor:
    """Convert ``[H, W, C]`` to 1 (greyscale) or 3 (rgb) channels; None keeps C.

    Grey+alpha and RGBA lose their alpha; RGB -> grey uses ITU-R 601 luma weights.
    """
    if channels is None:
        return image
    n = tf.shape(image)[-1]
    if channels == 3:
        out = tf.case(
            [
                (tf.equal(n, 1), lambda: tf.image.grayscale_to_rgb(image)),
                (tf.equal(n, 2), lambda: tf.image.grayscale_to_rgb(image[..., :1])),
            ],
            default=lambda: image[..., :3],
        )
    elif channels == 1:
        out = tf.case(
            [(tf.less_equal(n, 2), lambda: image[..., :1])],
            default=lambda: tf.image.rgb_to_grayscale(image[..., :3]),
        )
    else:
        raise StageError(f"channels must be 1, 3 or None, got {channels}")
    out.set_shape([None, None, channels])
    return out


def resize(
    image: tf.Tensor, size: tuple[int, int], method: str, antialias: bool, keep_aspect_ratio: bool,
    padding_mode: str = "constant", center_padding: bool = True,
) -> tf.Tensor:
    """Resize ``[H, W, C]`` to ``size`` (height, width); with ``keep_aspect_ratio`` pad the rest
    (``padding_mode`` as ``tf.pad``: constant, reflect, symmetric; centred or at the bottom/right)."""
    if keep_aspect_ratio and (padding_mode != "constant" or not center_padding):
        dtype = image.dtype
        fitted = tf.image.resize(image, size, method=method, preserve_aspect_ratio=True, antialias=antialias)
        missing = tf.constant(size, tf.int32) - tf.shape(fitted)[:2]
        before = missing // 2 if center_padding else tf.zeros_like(missing)
        pads = tf.stack([tf.stack([before[0], missing[0] - before[0]]), tf.stack([before[1], missing[1] - before[1]]),
                         tf.zeros([2], tf.int32)])
        out = tf.pad(fitted, pads, mode=padding_mode.upper())
        out.set_shape([size[0], size[1], image.shape[-1]])
        return out if dtype == out.dtype else tf.cast(out, tf.float32)
    if keep_aspect_ratio:
        return tf.image.resize_with_pad(image, size[0], size[1], method=method, antialias=antialias)
    return tf.image.resize(image, size, method=method, antialias=antialias)


def rescale(
    image: tf.Tensor, mode: str | None, offset: float = 0.0, scale: float = 1.0, maximum: float = 255.0
) -> tf.Tensor:
    """Map pixel values from [0, maximum]: None keeps them, ``unit`` -> [0, 1], ``imagenet`` -> [-1, 1],
    ``imagenet_mean_std`` -> per-channel standardised, ``affine`` -> ``x * scale + offset``."""
    image = tf.cast(image, tf.float32)
    if mode is None:
        return image
    if mode == "unit":
        return image * (1.0 / maximum)
    if mode == "imagenet":
        return image * (2.0 / maximum) - 1.0
    if mode == "imagenet_mean_std":
        channels = image.shape[-1]
        mean = tf.constant(IMAGENET_MEAN, tf.float32)
        std = tf.constant(IMAGENET_STD, tf.float32)
        if channels == 1:
            mean, std = tf.reduce_mean(mean, keepdims=True), tf.reduce_mean(std, keepdims=True)
        return (image * (1.0 / maximum) - mean) / std
    if mode == "affine":
        return image * scale + offset
    raise StageError(f"unknown rescale mode {mode!r}; allowed: unit, imagenet, imagenet_mean_std, affine or null")
