"""SegmentationLoader stage: annotation JSON beside each image -> class mask aligned with the image."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import StageError
from brevetti_pipe.stages._brevettiai import segmentation_spellings
from brevetti_pipe.stages._base import ImageSize, Roi, Stage

if TYPE_CHECKING:
    import pandas as pd
    import tensorflow as tf

__all__ = ["SegmentationLoader", "SegmentationLoaderParams", "rasterize"]


class SegmentationLoaderParams(StrictModel):
    """Parameters of :class:`SegmentationLoader`."""

    classes: list[str] = Field(..., min_length=1, description="Foreground classes; mask id i+1 is classes[i], 0 is background")
    mapping: dict[str, str] = Field(default_factory=dict, description="Annotation label -> class (many labels may share one)")
    ignore_labels: list[str] = Field(default_factory=list, description="Labels that are not drawn")
    mask_mode: Literal["onehot", "integer"] = Field("onehot", description="One-hot float32 or integer class ids")
    include_background: bool = Field(True, description="One-hot: channel 0 is the background")
    target_size: ImageSize | None = Field(None, description="Output (height, width); match the ImagePipeline")
    rois: list[Roi] | None = Field(None, description="ROIs (x0, y0, x1, y1) as in the ImagePipeline")
    roi_mode: Literal["concatenate_height", "concatenate_width", "stack"] = Field("concatenate_height")
    keep_aspect_ratio: bool = Field(False, description="Pad instead of stretching, as in the ImagePipeline")
    annotation_key: str = Field("annotation_path", description="Element key holding the annotation JSON path")
    path_key: str = Field("path", description="Element key holding the image path (for the mask size)")
    output_key: str = Field("segmentation", description="Element key receiving the mask")

    _brevettiai = model_validator(mode="before")(segmentation_spellings)

    @field_validator("classes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise StageError("classes must be unique")
        return value

    @field_validator("mapping")
    @classmethod
    def _targets_are_classes(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        classes = info.data.get("classes")
        unknown = sorted(set(value.values()) - set(classes or []))
        if classes is not None and unknown:  # invalid classes are reported on their own
            raise StageError(f"mapping targets {unknown} are not in classes {classes}")
        return value


def _points(raw: Any) -> list[tuple[float, float]]:
    out = []
    for p in raw or []:
        if isinstance(p, dict):
            out.append((float(p["x"]), float(p["y"])))
        else:
            out.append((float(p[0]), float(p[1])))
    return out


def rasterize(annotation: dict[str, Any], size: tuple[int, int], class_of: dict[str, int], ignore: set[str],
              source: str = "annotation") -> np.ndarray:
    """Draw an annotation document into a ``[H, W]`` uint8 mask of class ids (0 = background).

    Later annotations paint over earlier ones. Raises StageError for a label that is neither
    a class, mapped, nor ignored, and for an unknown shape type.
    """
    from PIL import Image, ImageDraw

    width, height = size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for i, ann in enumerate(annotation.get("annotations", [])):
        label = str(ann.get("label", ""))
        if label in ignore:
            continue
        if label not in class_of:
            raise StageError(f"{source}: annotation {i} has label {label!r}, which is not a class, mapped or ignored")
        value = class_of[label]
        kind = str(ann.get("type", "polygon")).lower()
        pts = _points(ann.get("points"))
        line_width = max(1, int(round(float(ann.get("width", 1)))))
        if kind == "polygon" and len(pts) >= 3:
            draw.polygon(pts, fill=value)
        elif kind in ("rectangle", "bbox") and len(pts) >= 2:
            (x0, y0), (x1, y1) = pts[0], pts[1]
            draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=value)
        elif kind in ("line", "polyline") and len(pts) >= 2:
            draw.line(pts, fill=value, width=line_width, joint="curve")
        elif kind == "point" and pts:
            r = line_width / 2
            for x, y in pts:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=value)
        elif kind not in ("polygon", "rectangle", "bbox", "line", "polyline", "point"):
            raise StageError(f"{source}: annotation {i} has unknown type {kind!r} (polygon, rectangle, line, point)")
    return np.asarray(mask, dtype=np.uint8)


class SegmentationLoader(Stage, name="segmentation_loader"):
    """Loads the segmentation mask of each sample.

    :meth:`prepare` reads ``<image>.json`` (see the README for the format) and rasterises it
    once, at the image's size, into a cached PNG of class ids; the graph then decodes it,
    applies the same ROI crops and resizes nearest-neighbour so ids stay exact.

    Output: ``x[output_key]``: ``mask_mode="onehot"``: float32 ``[H, W, n]`` (n = classes, +1
    with the background); ``"integer"``: uint8 ``[H, W, 1]`` of ids (0 = background).
    """

    Params = SegmentationLoaderParams
    check_per_sample = True  # each annotation is judged on its own

    @property
    def _mask_column(self) -> str:
        return f"{self.params.output_key}_mask_path"

    @property
    def depth(self) -> int:
        return len(self.params.classes) + (1 if self.params.include_background else 0)

    def reads(self) -> set[str]:
        return {self._mask_column}

    def sample_ranks(self) -> dict[str, int]:
        return {self._mask_column: 0, self.params.annotation_key: 0}

    def check(self, samples: pd.DataFrame) -> dict[int, str]:
        """Annotations that do not parse, or that use a label that is not a class, mapped or ignored."""
        p = self.params
        known = set(p.classes) | set(p.mapping) | set(p.ignore_labels)
        bad: dict[int, str] = {}
        for i, ann_path in enumerate(samples.get(p.annotation_key, [None] * len(samples))):
            if not isinstance(ann_path, str) or not ann_path:
                continue
            try:
                with open(ann_path, encoding="utf-8") as fh:
                    doc = json.load(fh)
                labels = {str(a.get("label", "")) for a in doc.get("annotations", [])}
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                bad[i] = f"annotation {os.path.basename(ann_path)} does not parse ({str(exc).splitlines()[0]})"
                continue
            unknown = sorted(labels - known)
            if unknown:
                bad[i] = f"annotation {os.path.basename(ann_path)} uses label(s) {unknown} not in classes, mapping or ignore_labels"
        return bad

    def prepare(self, samples: pd.DataFrame, cache_dir: str) -> pd.DataFrame:
        from PIL import Image

        from brevetti_pipe.stages._transcode import cache_name, write_png

        p = self.params
        class_of = {c: i + 1 for i, c in enumerate(p.classes)}
        class_of.update({label: class_of[target] for label, target in p.mapping.items()})
        signature = json.dumps([p.classes, p.mapping, p.ignore_labels])
        masks = []
        for image_path, ann_path in zip(samples[p.path_key].astype(str), samples.get(p.annotation_key, [None] * len(samples))):
            with Image.open(image_path) as img:
                size = img.size
            source = ann_path if isinstance(ann_path, str) and ann_path else image_path
            target = cache_name(source, cache_dir, "masks", ".png", extra=f"{signature}|{size}")
            if not os.path.exists(target):
                doc: dict[str, Any] = {"annotations": []}
                if isinstance(ann_path, str) and ann_path:
                    try:
                        with open(ann_path, encoding="utf-8") as fh:
                            doc = json.load(fh)
                    except (OSError, json.JSONDecodeError) as exc:
                        raise StageError(f"Cannot read annotation {ann_path}: {exc}") from None
                write_png(rasterize(doc, size, class_of, set(p.ignore_labels), source=str(ann_path)), target)
            masks.append(target)
        return samples.assign(**{self._mask_column: masks})

    def __call__(self, x: dict[str, tf.Tensor], seed: tf.Tensor | None = None) -> dict[str, Any]:
        import tensorflow as tf

        from brevetti_pipe.stages import _image_core as core

        p = self.params
        if self._mask_column not in x:
            raise StageError("SegmentationLoader needs its prepare() step; use it inside a DataGenerator")
        mask = tf.io.decode_png(tf.io.read_file(x[self._mask_column]), channels=1)
        if p.rois:
            crops = [mask[y0:y1, x0:x1] for (x0, y0, x1, y1) in p.rois]
            if p.target_size is not None:
                crops = [core.resize(c, p.target_size, "nearest", False, p.keep_aspect_ratio) for c in crops]
            axis = {"concatenate_height": 0, "concatenate_width": 1, "stack": None}[p.roi_mode]
            mask = tf.stack(crops) if axis is None else tf.concat(crops, axis=axis)
        elif p.target_size is not None:
            mask = core.resize(mask, p.target_size, "nearest", False, p.keep_aspect_ratio)
        mask = tf.cast(mask, tf.uint8)
        if p.mask_mode == "integer":
            if p.target_size is not None and not p.rois:
                mask.set_shape([p.target_size[0], p.target_size[1], 1])
            return {**x, p.output_key: mask}
        ids = tf.cast(mask[..., 0], tf.int32) - (0 if p.include_background else 1)
        onehot = tf.one_hot(ids, self.depth, dtype=tf.float32)
        if p.target_size is not None and not p.rois:
            onehot.set_shape([p.target_size[0], p.target_size[1], self.depth])
        return {**x, p.output_key: onehot}
