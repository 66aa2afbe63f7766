"""SegmentationLoader: annotation shapes, label mapping, ignore list, exact ids after resize, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brevetti_pipe.errors import StageError
from brevetti_pipe.stages import ImagePipeline, SegmentationLoader
from brevetti_pipe.stages.segmentation import rasterize
from brevetti_pipe.testing import run_stage, write_image


def test_rasterize_shapes_and_point_formats():
    doc = {"annotations": [
        {"label": "a", "type": "rectangle", "points": [[1, 1], [4, 3]]},
        {"label": "b", "type": "polygon", "points": [{"x": 10, "y": 0}, {"x": 15, "y": 0}, {"x": 15, "y": 5}]},
        {"label": "a", "type": "line", "points": [[0, 9], [19, 9]], "width": 1},
        {"label": "b", "type": "point", "points": [[17, 7]], "width": 3},
        {"label": "skip", "type": "rectangle", "points": [[0, 0], [19, 9]]},
    ]}
    mask = rasterize(doc, (20, 10), {"a": 1, "b": 2}, {"skip"})
    assert mask.shape == (10, 20)
    assert (mask[1:4, 1:5] == 1).all() and mask[0, 0] == 0
    assert mask[1, 14] == 2 and mask[4, 11] == 0
    assert (mask[9] == 1).all()
    assert mask[7, 17] == 2


def test_unknown_label_and_type_are_errors():
    with pytest.raises(StageError, match="label 'rust'"):
        rasterize({"annotations": [{"label": "rust", "points": [[0, 0], [1, 0], [1, 1]]}]}, (4, 4), {"a": 1}, set(), "x.json")
    with pytest.raises(StageError, match="unknown type 'circle'"):
        rasterize({"annotations": [{"label": "a", "type": "circle", "points": [[0, 0]]}]}, (4, 4), {"a": 1}, set())


def test_mapping_resize_and_roi_keep_ids_exact(tmp_path):
    img = write_image(tmp_path / "i.png", np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "i.png.json").write_text(json.dumps({"annotations": [
        {"label": "scratch", "type": "rectangle", "points": [[0, 0], [29, 19]]},
        {"label": "dent", "type": "rectangle", "points": [[30, 20], [59, 39]]},
    ]}))
    samples = pd.DataFrame({"path": [img], "annotation_path": [str(tmp_path / "i.png.json")]})
    loader = SegmentationLoader(classes=["defect"], mapping={"scratch": "defect", "dent": "defect"},
                                mask_mode="integer", target_size=(7, 9))
    out = run_stage(loader, samples)[0]["segmentation"]
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    onehot = run_stage(SegmentationLoader(classes=["defect"], mapping={"scratch": "defect", "dent": "defect"},
                                          rois=[(30, 20, 60, 40)]), samples)[0]["segmentation"]
    assert onehot.shape == (20, 30, 2) and (onehot[..., 1] == 1).all()
    image = run_stage(ImagePipeline(rois=[(30, 20, 60, 40)]), samples)[0]["img"]
    assert image.shape[:2] == onehot.shape[:2]


def test_missing_annotation_is_all_background(tmp_path):
    img = write_image(tmp_path / "i.png", np.zeros((8, 8, 3), np.uint8))
    out = run_stage(SegmentationLoader(classes=["a"]), pd.DataFrame({"path": [img], "annotation_path": [None]}))[0]
    assert (out["segmentation"][..., 0] == 1).all()


def test_bad_mapping_is_a_config_error():
    from brevetti_pipe.errors import ConfigError

    with pytest.raises(ConfigError, match="mapping targets \\['rust'\\] are not in classes"):
        SegmentationLoader(classes=["a"], mapping={"x": "rust"})
