"""Saved brevettiai stage configs load and run; stages run standalone on a sample or a batch."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

from brevetti_pipe import ConfigError
from brevetti_pipe.compat import stages_from_brevettiai
from brevetti_pipe.data import DataGenerator, get_image_samples
from brevetti_pipe.errors import DeprecatedSpellingWarning
from brevetti_pipe.stages import ImageAugmenter, ImagePipeline, OneHotEncoder, SegmentationLoader
from brevetti_pipe.testing import make_vials_dataset, write_image

# ImagePipeline(target_size=(32, 48), rois=[[[2, 3], [30, 40]]], color_mode="greyscale", keep_aspect_ratio=True,
# antialias=True).get_config() in brevettiai 0.5.9 (json.dumps of it): every __init__ parameter held as an
# attribute, rois as a nested list, io left out (it is kept as _io).
SAVED_IMAGE_PIPELINE = """{"target_size": [32, 48], "rois": [[[2, 3], [30, 40]]], "roi_mode": "concatenate_height",
 "path_key": "path", "output_key": "img", "color_mode": "greyscale", "segmentation": null, "keep_aspect_ratio": true,
 "rescale": null, "resize_method": "bilinear", "antialias": true, "padding_mode": "CONSTANT", "center_padding": false}"""

# The platform's settings form of the same pipeline (ImagePipeline.to_settings): size as input_height/width,
# rois as a JSON text, rescale as the form's "None".
SAVED_SETTINGS = {"input_height": 32, "input_width": 48, "rois": "[\n  [\n    [\n      2,\n      3\n    ],\n    [\n      30,\n"
                  "      40\n    ]\n  ]\n]", "roi_mode": "concatenate_height", "path_key": "path", "output_key": "img",
                  "color_mode": "greyscale", "segmentation": None, "keep_aspect_ratio": True, "rescale": "None",
                  "resize_method": "bilinear", "antialias": True, "padding_mode": "CONSTANT", "center_padding": False}

# ImageAugmenter(image_noise=ImageNoise(contrast=(0.25, 0.5), ...), image_filter=ImageFiltering(emboss_strength=
# (1.0, 1.25))).get_config(): nested modules as their own get_config().
SAVED_AUGMENTER = {
    "image_keys": ["img"], "label_keys": ["segmentation", "annotation"],
    "random_transformer": {"chance": 0.5, "flip_up_down": True, "flip_left_right": True, "scale": 0.2,
                           "rotate_chance": 0.5, "rotate": 90, "translate_horizontal": 0.1, "translate_vertical": 0.1,
                           "shear": 0.04, "interpolation": "bilinear"},
    "image_noise": {"brightness": 0.25, "contrast": [0.25, 0.5], "hue": 0.05, "saturation": [0, 2.0], "stddev": 0.01,
                    "chance": 0.5},
    "image_filter": {"emboss_strength": [1.0, 1.25], "avg_blur": [3, 3], "gaussian_blur_sigma": 0.5, "chance": 0.5},
    "image_deformation": None,
}


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    rng = np.random.default_rng(0)
    return write_image(tmp_path_factory.mktemp("img") / "a.png", rng.integers(40, 220, (44, 40, 3), dtype=np.uint8))


def test_saved_image_pipeline_config_loads_with_one_warning_and_runs(image):
    with pytest.warns(DeprecatedSpellingWarning) as caught:
        ip = ImagePipeline.from_config(json.loads(SAVED_IMAGE_PIPELINE))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "rois=[[2, 3, 30, 40]]" in message and "padding_mode=constant" in message
    ours = ImagePipeline(target_size=(32, 48), rois=[(2, 3, 30, 40)], color_mode="greyscale", keep_aspect_ratio=True,
                         antialias=True, center_padding=False)
    assert ip == ours
    with pytest.warns(DeprecatedSpellingWarning, match="target_size=\\[32, 48\\]"):
        assert ImagePipeline.from_config(SAVED_SETTINGS) == ours
    img = ip({"path": image})["img"].numpy()
    # the 37x28 crop fits 32 rows; brevettiai padded at the bottom/right (center_padding=false)
    assert img.shape == (32, 48, 1)
    assert (img[:, 26:] == 0).all() and (img[:, :20] > 0).all()
    gen = DataGenerator({"path": [image, image]}, batch_size=2, output_structure="img").map(ip)
    assert np.array_equal(next(gen.get_dataset_numpy())[0], img)


def test_padding_modes_and_a_mapping_rescale(image):
    with pytest.warns(DeprecatedSpellingWarning):
        ip = ImagePipeline(target_size=(24, 48), keep_aspect_ratio=True, padding_mode="REFLECT",
                           rescale={"scale": 0.5, "offset": 1.0}, center_padding=True)
    img = ip({"path": image})["img"].numpy()
    assert img.shape == (24, 48, 3) and img.min() > 1.0  # reflected, not zero padding; x * 0.5 + 1
    # the 24x22 fit sits in columns 13..34; column 12 mirrors column 14 (tf.pad REFLECT), column 35 column 33
    assert np.array_equal(img[:, 12], img[:, 14]) and np.array_equal(img[:, 35], img[:, 33])
    assert not np.array_equal(img[:, 12], img[:, 13])


def test_bayer_color_mode_demosaics_as_brevettiai(tmp_path):
    mosaic = np.full((6, 6), 100, np.uint8)  # blue 40 at even/even sites, red 200 at odd/odd, green 100 between
    mosaic[0::2, 0::2] = 40
    mosaic[1::2, 1::2] = 200
    img = ImagePipeline(color_mode="bayer")({"path": write_image(tmp_path / "raw.png", mosaic)})["img"].numpy()
    # brevettiai: conv2d(stride 2, "SAME") with its 4x4 kernel: inside, the four reds, four greens and the blue;
    # at the top-left corner three of the four reds and two of the greens fall on the zero padding
    assert img.shape == (3, 3, 3)
    assert img[1, 1].tolist() == [200, 100, 40] and img[0, 0].tolist() == [50, 50, 40]


def test_features_that_do_not_exist_here_name_the_parameter():
    with pytest.raises(ConfigError, match="roi_mode=None"):
        ImagePipeline(rois=[[[0, 0], [4, 4]], [[4, 4], [8, 8]]], roi_mode=None)
    with pytest.warns(DeprecatedSpellingWarning, match="roi_mode=stack for as_timeseries"):
        assert ImagePipeline(rois=[[[0, 0], [4, 4]], [[4, 4], [8, 8]]], roi_mode="as_timeseries").roi_mode == "stack"


def test_saved_augmenter_config_keeps_its_ranges(image):
    aug = ImageAugmenter.from_config(SAVED_AUGMENTER)
    assert aug.image_noise.contrast == (0.25, 0.5) and aug.image_filter.emboss_strength == (1.0, 1.25)
    x = ImagePipeline(target_size=(16, 16), rescale="unit")({"path": image})
    assert aug(x)["img"].shape == (16, 16, 3)  # label_keys missing from the sample are skipped, as in brevettiai
    contrast_only = ImageAugmenter(random_transformer=None, image_filter=None, image_deformation=None,
                                   image_noise={"chance": 1.0, "brightness": 0.0, "contrast": [0.25, 0.5]})
    ratios = [float(np.std(contrast_only(x, seed=s)["img"]) / np.std(x["img"])) for s in range(8)]
    assert all(0.249 <= r <= 0.501 for r in ratios) and max(ratios) - min(ratios) > 0.01


def test_saved_segmentation_loader_config(tmp_path):
    with pytest.warns(DeprecatedSpellingWarning, match="annotation_key=annotation_path for input_key"):
        seg = SegmentationLoader.from_config({"classes": ["cap", "liquid"], "mapping": None, "sparse": False,
                                              "input_key": "annotation_path", "output_key": "segmentation"})
    assert seg.mask_mode == "onehot" and seg.include_background is False and seg.annotation_key == "annotation_path"
    with pytest.raises(ConfigError, match="mapping.cap_top"):
        SegmentationLoader(classes=["cap", "liquid"], mapping={"cap_top": "cap|liquid"})
    samples = get_image_samples(make_vials_dataset(tmp_path / "v", per_class=1, size=16, annotations=True))
    saved = {**json.loads(SAVED_IMAGE_PIPELINE), "rois": None, "target_size": [8, 8], "color_mode": "rgb",
             "segmentation": {"classes": ["cap", "liquid"], "mapping": None, "sparse": False,
                              "input_key": "annotation_path", "output_key": "segmentation"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecatedSpellingWarning)
        stages = stages_from_brevettiai(saved)
    assert [type(s) for s in stages] == [ImagePipeline, SegmentationLoader]
    row = samples.iloc[0]
    out = stages[1](stages[0]({"path": row.path, "annotation_path": row.annotation_path}))
    assert out["img"].shape == (8, 8, 3) and out["segmentation"].shape == (8, 8, 2)
    assert float(tf.reduce_sum(out["segmentation"])) > 0


def test_stages_run_standalone_on_a_sample_or_a_batch_with_any_seed(image):
    ip = ImagePipeline(target_size=(8, 8), rescale="unit")
    one = ip({"path": image})["img"]
    batch = ip({"path": np.array([image, image, image], dtype=object), "category": ["a", "b", "a"]})
    assert one.shape == (8, 8, 3) and batch["img"].shape == (3, 8, 8, 3)
    assert np.array_equal(batch["img"][1], one)
    assert OneHotEncoder(["a", "b"])(batch)["onehot"].numpy().tolist() == [[1, 0], [0, 1], [1, 0]]
    aug = ImageAugmenter(image_noise={"chance": 1.0, "brightness": 0.2, "contrast": 0.0})
    own, again = aug(batch)["img"], aug(batch)["img"]
    assert np.array_equal(own, again), "the stage's own seed: the same draws every call"
    assert not np.array_equal(aug(batch, seed=1)["img"], own)
    assert np.array_equal(aug(batch, seed=1)["img"], aug(batch, seed=tf.constant(1))["img"])
    assert not np.array_equal(own[0], own[1]), "each sample of a batch draws its own"
    assert aug({"img": one}, seed=3)["img"].shape == (8, 8, 3)
