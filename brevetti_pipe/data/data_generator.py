"""brevettiai's ``data.data_generator`` module path: DataGenerator, StratifiedSampler, OneHotEncoder and
``build_image_data_generator``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from brevetti_pipe._util.category import category_label
from brevetti_pipe.data._generator import DataGenerator
from brevetti_pipe.data._sampler import WEIGHTINGS, StratifiedSampler
from brevetti_pipe.stages import ImageAugmenter, ImagePipeline, OneHotEncoder, Stage

__all__ = ["DataGenerator", "OneHotEncoder", "StratifiedSampler", "WEIGHTINGS", "build_image_data_generator"]


def build_image_data_generator(
    samples: pd.DataFrame, classes: Sequence[str] | None = None, image: Mapping[str, Any] | Stage | None = None,
    augmentation: Mapping[str, Any] | Stage | None = None, **kwargs: Any,
) -> DataGenerator:
    """A DataGenerator yielding ``(img, onehot)`` for Keras, as in brevettiai.

    Args:
        samples: the samples table.
        classes: class names; default: the sorted categories of ``samples``.
        image: ImagePipeline parameters (dict) or stage.
        augmentation: ImageAugmenter parameters (dict) or stage; None for no augmentation.
        **kwargs: DataGenerator arguments (batch_size, shuffle, repeat, seed, ...).
    """
    if classes is None:
        classes = sorted({category_label(c) for c in samples["category"]})
    kwargs.setdefault("output_structure", ("img", "onehot"))
    image_stage = image if isinstance(image, Stage) else ImagePipeline(**(image or {}))
    gen = DataGenerator(samples, **kwargs).map(image_stage)
    if augmentation is not None:
        gen = gen.map(augmentation if isinstance(augmentation, Stage) else ImageAugmenter(**augmentation))
    return gen.map(OneHotEncoder(list(classes)))
