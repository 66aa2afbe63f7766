"""brevettiai's ``ImageLoader`` / ``AnnotationLoader`` (with a ``CropResizeProcessor``) as our stages.

``ImageLoader(...)`` returns an :class:`~brevetti_pipe.stages.ImagePipeline` and ``AnnotationLoader(...)``
a :class:`~brevetti_pipe.stages.SegmentationLoader` doing the same crop, resize and decode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brevetti_pipe.errors import StageError
from brevetti_pipe.stages import ImagePipeline, SegmentationLoader

__all__ = ["AnnotationLoader", "ImageLoader"]

_CHANNELS = {0: "keep", 1: "greyscale", 3: "rgb"}
_PROCESSOR_KEYS = {"type", "output_height", "output_width", "roi_horizontal_offset", "roi_vertical_offset", "roi_width",
                   "roi_height", "interpolation"}


def _crop_resize(postprocessor: Mapping[str, Any] | None, who: str) -> dict[str, Any]:
    """A CropResizeProcessor config -> our ``rois`` / ``target_size`` / ``resize_method``."""
    p = dict(postprocessor or {})
    kind = p.get("type", "CropResizeProcessor")
    if kind != "CropResizeProcessor":
        raise StageError(f"{who}: postprocessor type {kind!r} does not exist here; allowed: CropResizeProcessor")
    unknown = sorted(set(p) - _PROCESSOR_KEYS)
    if unknown:
        raise StageError(f"{who}: unknown postprocessor keys {unknown}; allowed: {sorted(_PROCESSOR_KEYS - {'type'})}")
    x0, y0 = int(p.get("roi_horizontal_offset", 0)), int(p.get("roi_vertical_offset", 0))
    w, h = int(p.get("roi_width", 0)), int(p.get("roi_height", 0))
    out: dict[str, Any] = {}
    if w and h:
        out["rois"] = [(x0, y0, x0 + w, y0 + h)]
    elif w or h or x0 or y0:
        raise StageError(
            f"{who}: a ROI reaching the image border (roi_width/roi_height 0) needs the image size, which is not "
            f"known here. Received: offset=({x0}, {y0}), size=({w}, {h}). Give roi_width and roi_height"
        )
    oh, ow = int(p.get("output_height", 0)), int(p.get("output_width", 0))
    if oh and ow:
        out["target_size"] = (oh, ow)
    elif oh or ow:
        if not (w and h):
            raise StageError(f"{who}: output_height and output_width come together without a ROI; got ({oh}, {ow})")
        out["target_size"] = (oh or h, ow or w)
    if "interpolation" in p:
        out["resize_method"] = p["interpolation"]
    return out


def ImageLoader(  # noqa: N802 - brevettiai's class name
    path_key: str = "path", output_key: str = "img", postprocessor: Mapping[str, Any] | None = None,
    interpolation_method: str = "bilinear", channels: int = 0, **ignored: Any,
) -> ImagePipeline:
    """brevettiai's ImageLoader: decode ``path_key`` (``channels`` 0 keeps them, 1 grey, 3 RGB), crop
    and resize per the CropResizeProcessor ``postprocessor``; float32 values in [0, 255]."""
    ignored.pop("type", None)
    if ignored:
        raise StageError(f"ImageLoader: unknown parameters {sorted(ignored)}")
    if channels not in _CHANNELS:
        raise StageError(f"ImageLoader: channels={channels} does not exist here; allowed: 0 (as stored), 1, 3")
    return ImagePipeline(path_key=path_key, output_key=output_key, color_mode=_CHANNELS[channels],
                         **_crop_resize(postprocessor, "ImageLoader"))


def AnnotationLoader(  # noqa: N802 - brevettiai's class name
    classes: Sequence[str], mapping: Mapping[str, str] | None = None, path_key: str = "annotation_path",
    output_key: str = "annotation", postprocessor: Mapping[str, Any] | None = None, **ignored: Any,
) -> SegmentationLoader:
    """brevettiai's AnnotationLoader: the annotation JSON at ``path_key`` drawn as a one-hot float mask
    with one channel per class (no background channel), cropped and resized like the image."""
    ignored.pop("type", None)
    if ignored:
        raise StageError(f"AnnotationLoader: unknown parameters {sorted(ignored)}")
    geometry = _crop_resize(postprocessor, "AnnotationLoader")
    geometry.pop("resize_method", None)  # masks are always resized nearest-neighbour
    return SegmentationLoader(classes=list(classes), mapping=dict(mapping or {}), annotation_key=path_key,
                              output_key=output_key, include_background=False, mask_mode="onehot", **geometry)
