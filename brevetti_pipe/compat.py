"""brevettiai 0.5 names in one place, on top of the run, data, stages and reporting layers.

``from brevetti_pipe.compat import ...`` gives what a brevettiai Job API user imports: the job and
settings classes, the data generator and sampler, the split, the image stages and loaders, pivot
tables, facets, ``tile2d`` and ``build_image_data_generator``. The README section "Coming from
brevettiai" maps every brevettiai name and spelling to ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from brevetti_pipe.config import JobSettings
from brevetti_pipe.data import DataGenerator, SampleSplit, StratifiedSampler, explode, get_image_samples
from brevetti_pipe.data import merge_sample_identification
from brevetti_pipe.data.data_generator import build_image_data_generator
from brevetti_pipe.data.image import AnnotationLoader, ImageLoader
from brevetti_pipe.errors import StageError
from brevetti_pipe.reporting import build_facets, export_pivot_table
from brevetti_pipe.reporting import tile2d as _tile2d
from brevetti_pipe.run.job import Job
from brevetti_pipe.stages import (
    ImageAugmenter, ImageDeformation, ImageFiltering, ImageNoise, ImagePipeline, OneHotEncoder, RandomTransformer,
    SegmentationLoader, Stage,
)
from brevetti_pipe.stages._brevettiai import image_pipeline_spellings

__all__ = [
    "AnnotationLoader", "DataGenerator", "ImageAugmenter", "ImageDeformation", "ImageFiltering", "ImageLoader",
    "ImageNoise", "ImagePipeline", "Job", "JobSettings", "OneHotEncoder", "RandomTransformer", "SampleSplit",
    "SegmentationLoader", "StratifiedSampler", "build_facets", "build_image_data_generator", "explode",
    "export_pivot_table", "get_default_fields", "get_image_samples", "merge_sample_identification", "pivot_data",
    "pivot_fields", "stages_from_brevettiai", "tile2d",
]


def tile2d(images, grid=None):  # type: ignore[no-untyped-def]
    """Tile a batch [N, H, W, C] into one image; see :func:`brevetti_pipe.reporting.tile2d`."""
    return _tile2d(images, grid)


def stages_from_brevettiai(config: Mapping[str, Any]) -> list[Stage]:
    """A saved brevettiai ``ImagePipeline`` config -> our stages: the ImagePipeline, and when the config
    holds a ``segmentation`` loader, a SegmentationLoader after it with the same ROIs and size."""
    config = dict(config)
    segmentation = config.pop("segmentation", None)
    image = ImagePipeline.from_config(config)
    if not segmentation:
        return [image]
    if isinstance(segmentation, Stage):
        raise StageError("stages_from_brevettiai takes a saved config: segmentation as a mapping")
    p = image.params
    geometry = {"target_size": p.target_size, "rois": p.rois, "roi_mode": p.roi_mode,
                "keep_aspect_ratio": p.keep_aspect_ratio, "path_key": p.path_key}
    return [image, SegmentationLoader.from_config({**dict(segmentation), **geometry})]


def get_default_fields(samples: pd.DataFrame) -> dict[str, Any]:
    """brevettiai's default pivot fields of a samples table (category, folder, dataset_id, purpose)."""
    fields: dict[str, Any] = {
        "category": {"label": "Category", "sort": sorted({part for c in samples["category"] for part in
                                                          (c if isinstance(c, tuple) else (c,))}, key=str)}
        if "category" in samples else "Category",
        "folder": "Folder", "dataset_id": "Dataset Id", "purpose": "Purpose",
    }
    return {k: v for k, v in fields.items() if k in samples}


def pivot_fields(fields: Mapping[str, Any], rows: Sequence[str] | None = None,
                 cols: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """brevettiai's pivot field layout: ``{rowFields, colFields, fields}`` from ``{key: label or dict}``."""
    spec = {k: {"key": k, "label": v} if isinstance(v, str) else {"key": k, **v} for k, v in fields.items()}
    unknown = [k for k in [*(rows or []), *(cols or [])] if k not in spec]
    if unknown:
        raise KeyError(f"pivot rows/cols {unknown} are not fields; fields: {list(spec)}")
    out: dict[str, list[dict[str, Any]]] = {"rowFields": [], "colFields": [], "fields": []}
    out["rowFields"] = [spec[r] for r in rows or []]
    out["colFields"] = [spec[c] for c in cols or [] if c not in (rows or [])]
    out["fields"] = [v for k, v in spec.items() if k not in (rows or []) and k not in (cols or [])]
    return out


def pivot_data(samples: pd.DataFrame, fields: Mapping[str, Any] | Sequence[str],
               agg: Mapping[str, str] | None = None, **_: Any) -> pd.DataFrame:
    """brevettiai's pivot records: one row per combination of the ``fields`` values (list and tuple cells
    exploded) and ``id`` (the original row group), with ``count`` summed and the ``agg`` columns
    aggregated. brevettiai's ``datasets``/``tags`` arguments are accepted and ignored."""
    names = list(fields.keys()) if isinstance(fields, Mapping) else list(fields)
    how = {**dict(agg or {}), "count": "sum"}
    df = samples if "count" in samples else samples.assign(count=1)
    missing = [c for c in [*names, *how] if c not in df.columns]
    if missing:
        raise KeyError(f"pivot fields {missing} are not sample columns; available: {list(df.columns)}")
    exploded = explode(df[[*names, *[c for c in how if c not in names]]], on=names, duplicate_id="id")
    return exploded.groupby([*names, "id"], dropna=False).agg(how).reset_index()
