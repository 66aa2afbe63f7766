"""brevettiai 0.5 spellings of stage parameters -> ours, each translation named in one warning.

A saved brevettiai ``ImagePipeline`` / ``ImageAugmenter`` / ``SegmentationLoader`` config (its
``get_config()`` or the platform's settings form, ``to_settings()``) validates into our parameter
models: the ``mode="before"`` validators call these functions. A brevettiai feature we do not
have is a StageError naming the parameter.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from brevetti_pipe.errors import DeprecatedSpellingWarning, StageError

__all__ = ["augmenter_spellings", "image_pipeline_spellings", "segmentation_spellings"]


def _warn(stage: str, notes: list[str]) -> None:
    if notes:
        warnings.warn(
            f"{stage}: brevettiai spelling(s) translated; write them as: {'; '.join(notes)}",
            DeprecatedSpellingWarning, stacklevel=2,
        )


def _translation(stage: str) -> Callable[[Callable[[dict[str, Any], list[str]], None]], Callable[[Any], Any]]:
    """Make ``fix(d, notes)`` the ``mode="before"`` validator of ``stage``: it edits a copy of the
    parameters in place and notes each translation (one warning for all); what is not a mapping is
    left to pydantic."""
    def wrap(fix: Callable[[dict[str, Any], list[str]], None]) -> Callable[[Any], Any]:
        def translate(data: Any) -> Any:
            if not isinstance(data, dict):
                return data
            d = dict(data)
            notes: list[str] = []
            fix(d, notes)
            _warn(stage, notes)
            return d

        # its name and docstring, not functools.wraps: pydantic reads the signature (data,) of this function
        translate.__name__, translate.__qualname__, translate.__doc__ = fix.__name__, fix.__qualname__, fix.__doc__
        return translate

    return wrap


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _is_point_pair(roi: Any) -> bool:
    return (isinstance(roi, (list, tuple)) and len(roi) == 2
            and all(isinstance(p, (list, tuple)) and len(p) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p) for p in roi))


def _rois(raw: Any, notes: list[str]) -> Any:
    raw = _json(raw)
    if hasattr(raw, "tolist"):
        raw = raw.tolist()
    if raw is None or (isinstance(raw, (list, tuple)) and len(raw) == 0):
        return None
    if _is_point_pair(raw):  # one ROI ((x0, y0), (x1, y1)): brevettiai took it as a list of one
        raw = [raw]
    if isinstance(raw, (list, tuple)) and raw and all(_is_point_pair(r) for r in raw):
        boxes = [[r[0][0], r[0][1], r[1][0], r[1][1]] for r in raw]
        notes.append(f"rois={boxes} (x0, y0, x1, y1) for rois={json.dumps(raw)}")
        return boxes
    return raw


@_translation("ImagePipeline")
def image_pipeline_spellings(d: dict[str, Any], notes: list[str]) -> None:
    """ImagePipeline parameters in brevettiai spellings -> ours (in a new dict)."""
    d.pop("io", None)
    if "input_shape" in d:
        d.setdefault("target_size", d.pop("input_shape"))
        notes.append("target_size for input_shape")
    if "input_height" in d or "input_width" in d:
        h, w = d.pop("input_height", None), d.pop("input_width", None)
        if h is None or w is None:
            raise StageError("ImagePipeline: input_height and input_width come together; write target_size: [height, width]")
        d["target_size"] = [h, w]
        notes.append(f"target_size=[{h}, {w}] for input_height/input_width")
    if "target_size" in d:
        size = _json(d["target_size"])
        d["target_size"] = None if size is None or (isinstance(size, (list, tuple)) and len(size) == 0) else size
    if "rois" in d:
        d["rois"] = _rois(d["rois"], notes)
    mode = d.get("roi_mode", "concatenate_height")
    if mode == "as_timeseries":
        d["roi_mode"] = "stack"
        notes.append("roi_mode=stack for as_timeseries")
    elif "roi_mode" in d and mode is None:
        if d.get("rois") and len(d["rois"]) > 1:
            raise StageError(
                "ImagePipeline: roi_mode=None (one output per ROI) does not exist here. Received: roi_mode=None with "
                f"{len(d['rois'])} rois. Allowed: concatenate_height, concatenate_width, stack (brevettiai's as_timeseries)"
            )
        del d["roi_mode"]
    color = d.get("color_mode")
    if color == "grayscale":
        d["color_mode"] = "greyscale"
        notes.append("color_mode=greyscale for grayscale")
    rescale = _json(d.get("rescale"))
    if rescale == "None":
        d["rescale"] = None
        notes.append("rescale=null for 'None'")
    elif isinstance(rescale, dict):
        unknown = sorted(set(rescale) - {"scale", "offset"})
        if unknown:
            raise StageError(f"ImagePipeline: rescale as a mapping takes scale and offset; got keys {unknown}")
        d.update(rescale="affine", scale=rescale.get("scale", 1.0), offset=rescale.get("offset", 0.0))
        notes.append(f"rescale=affine, scale={d['scale']}, offset={d['offset']} for rescale={rescale}")
    for key in ("padding_mode", "resize_method"):
        value = d.get(key)
        if isinstance(value, str) and value != value.lower():
            d[key] = value.lower()
            notes.append(f"{key}={value.lower()} for {value}")
    if "segmentation" in d:
        seg = d.pop("segmentation")
        if seg:
            raise StageError(
                "ImagePipeline: segmentation inside the image pipeline does not exist here. Received: "
                "segmentation={...}. Add a SegmentationLoader stage after it (pipeline.<name>: {type: "
                "segmentation_loader, classes: [...]}), or use brevetti_pipe.compat.stages_from_brevettiai"
            )


def _range_to_symmetric(name: str, value: Any, notes: list[str]) -> Any:
    value = _json(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = float(value[0]), float(value[1])
        if abs(low + high) > 1e-9:
            raise StageError(
                f"ImageAugmenter: random_transformer.{name} is symmetric here. Received: {name}={list(value)}. "
                f"Allowed: one number a meaning [-a, a]"
            )
        notes.append(f"random_transformer.{name}={high} for {list(value)}")
        return high
    return value


def _part(d: dict[str, Any], key: str, fix: Callable[[dict[str, Any], list[str]], dict[str, Any]], notes: list[str]) -> None:
    if isinstance(d.get(key), dict):
        d[key] = fix(dict(d[key]), notes)


def _transformer(t: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    for name in ("scale", "rotate", "shear"):
        if name in t:
            t[name] = _range_to_symmetric(name, t[name], notes)
    if t.pop("fill_seg_value", None) not in (None, 0, 0.0):
        raise StageError("ImageAugmenter: random_transformer.fill_seg_value does not exist here; masks are filled with 0")
    return t


def _ranges(part: str, names: tuple[str, ...]) -> Callable[[dict[str, Any], list[str]], dict[str, Any]]:
    def fix(p: dict[str, Any], notes: list[str]) -> dict[str, Any]:
        for name in names:
            if name in p:
                value = _json(p[name])
                if value is None:  # brevettiai: None meant its default range
                    del p[name]
                    notes.append(f"{part}.{name}: omit it for the default (not null)")
                elif isinstance(value, (list, tuple)):
                    p[name] = list(value)
        return p

    return fix


@_translation("ImageAugmenter")
def augmenter_spellings(d: dict[str, Any], notes: list[str]) -> None:
    """ImageAugmenter parameters in brevettiai spellings -> ours (in a new dict)."""
    _part(d, "random_transformer", _transformer, notes)
    _part(d, "image_noise", _ranges("image_noise", ("contrast", "saturation")), notes)
    _part(d, "image_filter", _ranges("image_filter", ("emboss_strength", "avg_blur")), notes)
    for key in ("image_keys", "label_keys"):
        if key in d and d[key] is None:
            del d[key]


@_translation("SegmentationLoader")
def segmentation_spellings(d: dict[str, Any], notes: list[str]) -> None:
    """SegmentationLoader parameters in brevettiai spellings -> ours (in a new dict)."""
    brevettiai = "sparse" in d or "input_key" in d or "image_pipeline" in d
    if "input_key" in d:
        d["annotation_key"] = d.pop("input_key")
        notes.append(f"annotation_key={d['annotation_key']} for input_key")
    if "sparse" in d:
        sparse = bool(d.pop("sparse"))
        d.setdefault("mask_mode", "integer" if sparse else "onehot")
        notes.append(f"mask_mode={d['mask_mode']} for sparse={sparse}")
    if brevettiai and "include_background" not in d:
        d["include_background"] = False  # brevettiai's masks had one channel per class, no background
        notes.append("include_background=false (brevettiai masks had no background channel)")
    if d.pop("image_pipeline", None) is not None:
        notes.append("target_size/rois as in the ImagePipeline, not image_pipeline")
    mapping = d.get("mapping")
    if mapping is None and "mapping" in d:
        del d["mapping"]
    elif isinstance(mapping, dict):
        d["mapping"] = {label: _one_class(label, target) for label, target in mapping.items()}


def _one_class(label: str, target: Any) -> Any:
    """A mapping target: brevettiai allowed several classes ("a|b" or a list); here a label is one class."""
    parts = target.split("|") if isinstance(target, str) else list(target) if isinstance(target, (list, tuple)) else [target]
    if len(parts) > 1:
        raise StageError(
            f"SegmentationLoader: a label maps to one class here. Received: mapping.{label}={target!r}. "
            "Allowed: one class name (multi-class labels do not exist here)"
        )
    return parts[0] if parts else target
