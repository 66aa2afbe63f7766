"""Run layer: what a deployed model is fed: encoded image bytes from paths, URLs, arrays or PIL images,
and the job's own ImagePipeline stage applied to a batch of them (the one preprocessing every export
format shares)."""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from brevetti_pipe.errors import StageError

if TYPE_CHECKING:
    from brevetti_pipe.stages import Stage
    from brevetti_pipe.storage import IoTools

__all__ = ["IMAGE_SUFFIXES", "batch_preprocessor", "encode_input", "find_image_stage", "normalise_bytes"]

#: files a folder input contributes (the formats the ImagePipeline decodes; TIFF is transcoded)
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def find_image_stage(pipeline: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(name, config) of the first ``image_pipeline`` stage of a ``pipeline.*`` mapping, or None."""
    for name, spec in pipeline.items():
        data = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else dict(spec)
        if data.get("type") == "image_pipeline":
            return name, data
    return None


def normalise_bytes(data: bytes) -> bytes:
    """Encoded image bytes as the decoders in the graph take them: TIFF (which TensorFlow cannot
    decode) becomes a lossless PNG, as the ImagePipeline's ``prepare`` does for training."""
    if data[:4] in _TIFF_MAGIC:
        from PIL import Image

        with Image.open(_io.BytesIO(data)) as img:
            img.load()
            if img.mode == "I":
                return _png_bytes(np.clip(np.asarray(img), 0, 65535).astype(np.uint16))
            if img.mode.startswith("I;16"):
                return _png_bytes(np.asarray(img).astype(np.uint16))
            converted = img if img.mode in ("L", "LA", "RGB", "RGBA") else img.convert("RGB")
            return _png_bytes(np.asarray(converted))
    return data


def _png_bytes(array: np.ndarray) -> bytes:
    """A uint8/uint16 ``[H, W]`` or ``[H, W, C]`` array (C = 1..4) as lossless PNG bytes."""
    import tensorflow as tf

    if array.ndim == 2:
        array = array[..., np.newaxis]
    return bytes(tf.io.encode_png(tf.constant(array)).numpy())


def _array_bytes(array: np.ndarray, where: str) -> list[bytes]:
    if array.dtype == np.bool_ or array.dtype.kind not in "ui" or array.dtype.itemsize > 2 or array.ndim not in (2, 3, 4):
        raise StageError(
            f"{where}: an image array must be the raw pixels, uint8 or uint16, [H, W], [H, W, C] or [N, H, W, C]. "
            f"Received: {array.dtype} array of shape {array.shape}. For an already preprocessed batch use "
            "predict_preprocessed()"
        )
    array = array.astype(np.uint16 if array.dtype.itemsize == 2 else np.uint8, copy=False)
    if array.ndim == 4:
        return [_png_bytes(a) for a in array]
    if array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4):
        raise StageError(f"{where}: an [H, W, C] image needs 1-4 channels. Received: shape {array.shape}")
    return [_png_bytes(array)]


def encode_input(x: Any, io: IoTools | None = None, where: str = "input") -> list[bytes]:
    """Encoded image bytes for one input: a path or fsspec URL, encoded bytes, a numpy pixel array
    (``[H, W]``, ``[H, W, C]`` or a batch ``[N, H, W, C]``, uint8/uint16) or a PIL image.

    Raises:
        StageError: for anything else, naming what was received.
        StorageError: a path or URL that cannot be read.
    """
    if isinstance(x, (bytes, bytearray, memoryview)):
        return [normalise_bytes(bytes(x))]
    if isinstance(x, (str, os.PathLike)):
        from brevetti_pipe.storage import IoTools

        return [normalise_bytes((io or IoTools()).read_file(os.fspath(x)))]
    if isinstance(x, np.ndarray):
        return _array_bytes(x, where)
    if type(x).__module__.startswith("PIL.") and hasattr(x, "mode"):
        img = x
        if img.mode not in ("L", "LA", "RGB", "RGBA", "I;16"):
            img = img.convert("RGB")
        return [_png_bytes(np.asarray(img).astype(np.uint16) if img.mode == "I;16" else np.asarray(img))]
    raise StageError(
        f"{where}: expected an image path or URL, encoded image bytes, a numpy pixel array or a PIL image. "
        f"Received: {type(x).__name__}"
    )


def batch_preprocessor(stage: Stage, shape: tuple[int | None, ...], dtype: str) -> Any:
    """``images`` (a ``[N]`` tf.string batch of encoded images) -> the ``[N, *shape]`` batch the model
    takes: the stage's ``process_bytes`` per image, cast to the model's input ``dtype``. The same
    function runs inside the SavedModel and before the Keras, ONNX and TFLite models."""
    import tensorflow as tf

    target = tf.as_dtype(dtype)
    spec = tf.TensorSpec(shape, target)

    def one(data: tf.Tensor) -> tf.Tensor:
        return tf.cast(stage.process_bytes(data), target)

    def preprocess(images: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(one, images, fn_output_signature=spec)

    return preprocess
