"""Every registered stage passes the conformance suite (a few lines per stage)."""

from __future__ import annotations

from brevetti_pipe.stages import (
    STAGES, ImageAugmenter, ImageDeformation, ImageFiltering, ImageNoise, ImagePipeline, OneHotEncoder,
    RandomTransformer, SegmentationLoader,
)
from brevetti_pipe.testing import StageConformance

TESTED: set[str] = set()


def _covers(name: str) -> None:
    TESTED.add(name)


class TestImagePipeline(StageConformance):
    expected = {"img": ("float32", (16, 20, 3))}

    def make_stage(self):
        _covers("image_pipeline")
        return ImagePipeline(target_size=(16, 20), rescale="unit", antialias=True)


class TestImagePipelineGreyRois(StageConformance):
    expected = {"img": ("uint8", (20, 8, 1))}

    def make_stage(self):
        return ImagePipeline(rois=[(0, 0, 10, 10), (10, 10, 20, 20)], target_size=(10, 8), color_mode="greyscale", dtype="uint8")


class TestOneHotEncoder(StageConformance):
    expected = {"onehot": ("float32", (2,))}

    def make_stage(self):
        _covers("onehot_encoder")
        return OneHotEncoder(["bad", "good"], label_smoothing=0.1)


class TestImageAugmenter(StageConformance):
    expected = {"img": ("float32", (24, 24, 3)), "mask": ("uint8", (24, 24, 1))}

    def make_upstream(self):
        return [
            ImagePipeline(target_size=(24, 24), rescale="unit"),
            SegmentationLoader(classes=["a", "b"], target_size=(24, 24), mask_mode="integer", output_key="mask"),
        ]

    def make_stage(self):
        _covers("image_augmenter")
        return ImageAugmenter(
            image_keys=["img"], label_keys=["mask"],
            random_transformer=RandomTransformer(chance=0.9, rotate=40, rotate_chance=0.8, rotate90=True),
            image_noise=ImageNoise(chance=0.9, hue=0.1, saturation=0.2, stddev=0.02, salt_pepper=0.02),
            image_filter=ImageFiltering(chance=0.5, gaussian_blur_sigma=1.0, emboss_strength=0.3, avg_blur=(3, 3)),
            image_deformation=ImageDeformation(chance=0.5, alpha=4, sigma=3),
        )


class TestSegmentationLoader(StageConformance):
    expected = {"segmentation": ("float32", (12, 16, 3))}

    def make_stage(self):
        _covers("segmentation_loader")
        return SegmentationLoader(classes=["a", "b"], target_size=(12, 16))


def test_every_registered_stage_is_in_the_suite():
    for cls in (TestImagePipeline, TestOneHotEncoder, TestImageAugmenter, TestSegmentationLoader):
        cls().make_stage()
    # stages registered by other test modules (a user's own stage, as in tests/deploy) are not ours
    ours = {n for n in STAGES.names() if STAGES.get(n).__module__.startswith("brevetti_pipe.")}
    assert TESTED == ours
