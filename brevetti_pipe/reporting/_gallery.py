"""Report gallery: the evaluated samples worth a look (misclassified, least confident, lowest IoU), read
from ``predictions_<purpose>.csv`` and shown as thumbnails the job's view decodes."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from brevetti_pipe.reporting._facets import png_data_uri, to_uint8

if TYPE_CHECKING:
    from brevetti_pipe.reporting._callback import JobView

__all__ = ["gallery", "gallery_rows", "png_data_uri", "thumbnail_uris"]

log = logging.getLogger(__name__)


def gallery_rows(predictions: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The rows of one purpose's predictions to show, with a ``group`` column, in display order.

    Classification (``true_class``, ``predicted_class``, ``confidence``): the misclassified samples,
    most confident mistakes first, then the least confident correct ones, ``limit`` of each.
    Segmentation (``iou``): the ``limit`` samples of lowest IoU.
    """
    if {"true_class", "predicted_class", "confidence"} <= set(predictions.columns):
        frame = predictions.assign(confidence=pd.to_numeric(predictions["confidence"], errors="coerce"))
        wrong = frame["true_class"].astype(str) != frame["predicted_class"].astype(str)
        mistakes = frame[wrong].sort_values("confidence", ascending=False, kind="mergesort").head(limit)
        unsure = frame[~wrong].sort_values("confidence", ascending=True, kind="mergesort").head(limit)
        return pd.concat([mistakes.assign(group="misclassified"), unsure.assign(group="least confident")])
    if "iou" in predictions.columns:
        frame = predictions.assign(iou=pd.to_numeric(predictions["iou"], errors="coerce"))
        return frame.sort_values("iou", ascending=True, kind="mergesort", na_position="first").head(limit).assign(
            group="lowest IoU")
    return predictions.head(0).assign(group=[])


def thumbnail_uris(job: JobView, rows: pd.DataFrame, size: int) -> list[str | None]:
    """PNG data URIs of ``rows``' images (``size`` x ``size``) through the job's thumbnail generator, in
    order; None for every row when the images cannot be read (logged once)."""
    if rows.empty:
        return []
    known = job.samples
    samples = rows[["path"]].copy()
    if known is not None and "path" in known.columns:
        full = known.drop_duplicates("path").set_index("path")
        if samples["path"].isin(full.index).all():
            samples = full.loc[samples["path"]].reset_index()
    try:
        images: list[np.ndarray] = []
        for batch in job.thumbnails(samples.reset_index(drop=True), size).get_dataset_numpy(structure=None):
            images.extend(np.asarray(batch["img"]))
        return [png_data_uri(to_uint8(image)) for image in images[:len(rows)]]
    except Exception as exc:
        log.warning("Report gallery: could not read the thumbnails (%s); the table is shown without images", exc)
        return [None] * len(rows)


def gallery(job: JobView, predictions: Mapping[str, pd.DataFrame], limit: int, size: int) -> list[dict[str, Any]]:
    """The gallery entries of every purpose: ``purpose``, ``group``, ``path``, ``true``, ``predicted``,
    ``score`` (text), ``img`` (data URI or None)."""
    entries: list[dict[str, Any]] = []
    for purpose, frame in predictions.items():
        if purpose == "train" or "path" not in frame.columns:
            continue
        rows = gallery_rows(frame, limit)
        for (_, row), uri in zip(rows.iterrows(), thumbnail_uris(job, rows, size)):
            segmentation = row["group"] == "lowest IoU"
            entries.append({
                "purpose": purpose, "group": row["group"], "path": str(row["path"]), "img": uri, "size": size,
                "true": None if segmentation else str(row["true_class"]),
                "predicted": None if segmentation else str(row["predicted_class"]),
                "score": (f"IoU {row['iou']:.3f}" + (f" · pixel acc. {float(row['pixel_accuracy']):.3f}"
                                                    if "pixel_accuracy" in row else ""))
                if segmentation else f"confidence {row['confidence']:.3f}",
            })
    return entries
