"""brevettiai-named helpers on top of the data and stages layers (``tile2d``, ``build_image_data_generator``)."""

from __future__ import annotations

from typing import Any

from brevetti_pipe._util.category import category_label
from brevetti_pipe.data import DataGenerator
from brevetti_pipe.reporting import tile2d as _tile2d
from brevetti_pipe.stages import ImageAugmenter, ImagePipeline, OneHotEncoder

__all__ = ["build_image_data_generator", "tile2d"]


def tile2d(images, grid=None):  # type: ignore[no-untyped-def]
    """Tile a batch [N, H, W, C] into one image; see :func:`brevetti_pipe.reporting.tile2d`."""
    return _tile2d(images, grid)


def build_image_data_generator(samples, classes=None, image=None, augmentation=None, **kwargs):  # type: ignore[no-untyped-def]
    """A DataGenerator yielding ``(img, onehot)`` for Keras, as in brevettiai.

    Args:
        samples: the samples table.
        classes: class names; default: the sorted categories of ``samples``.
        image: ImagePipeline parameters (dict).
        augmentation: ImageAugmenter parameters (dict); None for no augmentation.
        **kwargs: DataGenerator arguments (batch_size, shuffle, repeat, seed, ...).
    """
    if classes is None:
        classes = sorted({category_label(c) for c in samples["category"]})
    kwargs.setdefault("output_structure", ("img", "onehot"))
    gen = DataGenerator(samples, **kwargs).map(ImagePipeline(**(image or {})))
    if augmentation is not None:
        gen = gen.map(ImageAugmenter(**augmentation))
    return gen.map(OneHotEncoder(classes))
