"""brevettiai's ``data.image`` module paths: the image stages and its ImageLoader / AnnotationLoader."""

from brevetti_pipe.data.image.loaders import AnnotationLoader, ImageLoader
from brevetti_pipe.stages import (
    ImageAugmenter, ImageDeformation, ImageFiltering, ImageNoise, ImagePipeline, RandomTransformer, SegmentationLoader,
)

__all__ = [
    "AnnotationLoader", "ImageAugmenter", "ImageDeformation", "ImageFiltering", "ImageLoader", "ImageNoise",
    "ImagePipeline", "RandomTransformer", "SegmentationLoader",
]
