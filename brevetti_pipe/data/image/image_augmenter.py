"""brevettiai's ``data.image.image_augmenter`` module path (the stage lives in :mod:`brevetti_pipe.stages`)."""

from brevetti_pipe.stages import ImageAugmenter, ImageDeformation, ImageFiltering, ImageNoise, RandomTransformer

__all__ = ["ImageAugmenter", "ImageDeformation", "ImageFiltering", "ImageNoise", "RandomTransformer"]
