"""Run layer: a job's trained Keras model -> the deployable archive: every export format, the
operating point chosen on devel, and the parity of each format with the trained model measured on
the same devel image bytes (recorded in metadata.json and output.json)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe._util.category import category_label
from brevetti_pipe.config import JobConfig
from brevetti_pipe.run._images import find_image_stage, normalise_bytes
from brevetti_pipe.run.export import (
    archive_folder, archive_model, check_export_formats, environment, file_digests, metadata_digests,
    stage_preprocessor, weights_sha256, write_formats,
)
from brevetti_pipe.run.operating_point import accept_index, choose_operating_point, rates, tradeoff_curve
from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    import pandas as pd

    from brevetti_pipe.run.evaluation import Evaluation

__all__ = ["Exported", "export_archive", "parity"]

log = logging.getLogger(__name__)

#: the artifact a model whose formats disagree is kept as (the job fails; nothing is lost)
UNVERIFIED = "model.unverified.tar.gz"
_BATCH = 32


class ExportSource(Protocol):
    """What the export reads of a job (the :class:`~brevetti_pipe.run.job.Job` has it all)."""

    id: str
    config: JobConfig
    io: IoTools
    metadata: dict[str, Any]
    evaluations: dict[str, Evaluation]

    @property
    def samples(self) -> pd.DataFrame | None: ...

    @property
    def classes(self) -> list[str]: ...

    def artifact_path(self, *parts: str, dir: bool = False) -> str: ...

    def on_artifact(self, path: str) -> None: ...


@dataclass
class Exported:
    """What exporting produced: the local archive and the figures output.json records."""

    archive: Path
    weights_sha256: str | None = None
    export: dict[str, dict[str, Any]] = field(default_factory=dict)
    operating_point: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    def output_fields(self) -> dict[str, Any]:
        return {"weights_sha256": self.weights_sha256, "export": self.export, "operating_point": self.operating_point}


def _is_keras_model(model: Any) -> bool:
    return hasattr(model, "save") and hasattr(model, "weights") and hasattr(model, "inputs")


def _task(job: ExportSource, model: Any) -> str:
    from brevetti_pipe.run.recipe import resolve_run

    task = resolve_run(job.config.run).task if job.config.run else None
    if task:
        return str(task)
    return "segmentation" if len(model.outputs[0].shape) == 4 else "classification"


def _classes(job: ExportSource, task: str, metadata: dict[str, Any]) -> list[str]:
    if task == "segmentation":
        if job.metadata.get("segmentation_classes"):
            return list(job.metadata["segmentation_classes"])
        for spec in job.config.pipeline.values():
            if spec.type == "segmentation_loader":
                params = spec.params()
                background = ["background"] if params.get("include_background", True) else []
                return [*background, *params.get("classes", [])]
    if metadata.get("classes"):
        return list(metadata["classes"])
    return list(job.classes) if job.samples is not None else []  # listed already: no extra I/O


def _read(io: IoTools, paths: Sequence[str]) -> list[bytes]:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [normalise_bytes(b) for b in pool.map(io.read_file, [str(p) for p in paths])]


def _rows(samples: pd.DataFrame | None, purpose: str, limit: int | None) -> pd.DataFrame | None:
    if samples is None or "purpose" not in samples.columns:
        return None
    rows = samples[samples["purpose"] == purpose]
    return rows if limit is None else rows.head(limit)


def _labels(rows: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(row positions whose category is a class, their class indices)."""
    index = {c: i for i, c in enumerate(classes)}
    labels = [index.get(category_label(c), -1) for c in rows["category"]] if "category" in rows.columns else []
    keep = np.array([i for i, v in enumerate(labels) if v >= 0], dtype=np.int64)
    return keep, np.array([labels[i] for i in keep], dtype=np.int64)


def _evaluated(found: Any, rows: pd.DataFrame | None, output_shape: tuple[Any, ...]) -> np.ndarray | None:
    """The outputs of ``found`` (the devel evaluation of the model being exported, or None) for ``rows``,
    in their order, when it predicted every one of them (same path and etag); else None.

    These are the trained path's outputs (the tf.data pipeline feeding the model, as the reported metrics
    were measured), so parity against them checks the deployable path end to end: encoded bytes, the
    export's preprocessing, the written format as loaded."""
    if rows is None or not len(rows) or found is None or found.probabilities is None or "path" not in rows.columns:
        return None
    probabilities = np.asarray(found.probabilities)
    evaluated = found.samples
    if len(evaluated) != len(probabilities) or tuple(probabilities.shape[1:]) != tuple(output_shape[1:]):
        return None

    def keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
        etags = frame["etag"] if "etag" in frame.columns else [""] * len(frame)
        return [(str(p), str(e)) for p, e in zip(frame["path"], etags)]

    position = {key: i for i, key in enumerate(keys(evaluated))}
    wanted = [position.get(key) for key in keys(rows)]
    if len(position) != len(evaluated) or any(i is None for i in wanted):
        return None
    return probabilities[np.asarray(wanted, dtype=np.int64)]


def parity(outputs: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """``{max_abs_diff, label_agreement, samples}`` of ``outputs`` against ``reference`` (same shape;
    the label is the argmax of the last axis: the class, or every pixel's class)."""
    if outputs.shape != reference.shape:
        return {"max_abs_diff": None, "label_agreement": 0.0, "samples": int(reference.shape[0]),
                "error": f"output shape {list(outputs.shape)} != {list(reference.shape)}"}
    if not reference.shape[0]:  # nothing to compare: not checked (null), never a claim of parity
        return {"max_abs_diff": None, "label_agreement": None, "samples": 0}
    diff = float(np.max(np.abs(outputs.astype(np.float64) - reference.astype(np.float64))))
    agree = float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(reference, axis=-1)))
    return {"max_abs_diff": diff if math.isfinite(diff) else None, "label_agreement": agree, "samples": int(reference.shape[0])}


def _failure(fmt: str, figures: dict[str, Any], tolerance: float) -> str | None:
    diff, agree = figures.get("max_abs_diff"), figures["label_agreement"]
    if figures.get("error"):
        return f"{fmt}: {figures['error']}"
    if not figures.get("samples"):
        return None  # not checked: warned when the devel split is empty
    if diff is None or diff > tolerance or agree < 1.0:
        return (f"{fmt}: max_abs_diff {diff} (export.tolerance {tolerance:g}), label_agreement {agree:g} "
                f"on {figures['samples']} devel samples")
    return None


def _operating_point(job: ExportSource, classes: list[str], own: dict[str, tuple[np.ndarray, np.ndarray]],
                     evaluations: dict[str, Any]) -> dict[str, Any] | None:
    """The threshold chosen on devel, its devel and test rates; writes charts/operating_point.json."""
    config = job.config.evaluation.operating_point
    if config is None:
        return None
    column = accept_index(classes, config.accept_class)

    def scores(purpose: str) -> tuple[np.ndarray, np.ndarray] | None:
        found = evaluations.get(purpose)
        if found is not None and found.probabilities is not None and found.y_true is not None:
            return np.asarray(found.probabilities)[:, column], np.asarray(found.y_true) == column
        if purpose in own:
            probs, y_true = own[purpose]
            return probs[:, column], y_true == column
        return None

    devel = scores("devel")
    if devel is None or not devel[0].size:
        log.warning("No devel samples to choose the operating point on: the archive has none")
        return None
    chosen = choose_operating_point(devel[0], devel[1], config.max_escape_rate)
    test = scores("test")
    on_test = rates(test[0], test[1], chosen.threshold) if test is not None and test[0].size else None
    point = {
        "accept_class": config.accept_class, "max_escape_rate": config.max_escape_rate, "threshold": chosen.threshold,
        "devel_escape_rate": chosen.escape_rate, "devel_false_reject_rate": chosen.false_reject_rate,
        "test_escape_rate": on_test.escape_rate if on_test else None,
        "test_false_reject_rate": on_test.false_reject_rate if on_test else None,
        "devel_samples": int(devel[0].size), "test_samples": int(test[0].size) if test is not None else 0,
    }
    curve = [p.as_dict() for p in tradeoff_curve(devel[0], devel[1])]
    url = job.artifact_path("charts", "operating_point.json")
    job.io.write_file(url, json.dumps({"purpose": "devel", "accept_class": config.accept_class,
                                       "max_escape_rate": config.max_escape_rate, "curve": curve, "chosen": point}))
    job.on_artifact(url)
    return point


def export_archive(job: ExportSource, model: Any, staging: Path, archive: Path, metadata: dict[str, Any]) -> Exported:
    """Export ``model`` into the local ``archive`` (see the module docstring).

    A model that is a path (a folder or a ready archive) is packed as it is, without formats or parity.
    Parity failures do not raise: they are listed in :attr:`Exported.failures` and the archive is
    still written, so the caller can keep it.

    Raises:
        ConfigError: a format's extra is missing, or the operating point names an unknown class.
    """
    if not _is_keras_model(model):
        return Exported(archive_model(model, staging, archive, metadata))
    export = job.config.export
    formats = list(dict.fromkeys(export.formats))
    check_export_formats(formats)
    task = _task(job, model)
    classes = _classes(job, task, metadata)
    image = find_image_stage(job.config.pipeline)
    if (image is None or len(model.inputs) != 1) and set(formats) - {"keras"}:
        log.warning("export.formats=%s: only keras is written: %s", formats,
                    "the pipeline has no image_pipeline stage" if image is None else "the model has several inputs")
        formats = ["keras"]
    if image is None or len(model.inputs) != 1:
        return Exported(archive_model(model, staging, archive, {**metadata, "task": task, "classes": classes}),
                        weights_sha256(model))

    import tensorflow as tf

    from brevetti_pipe.run.model import LoadedModel
    from brevetti_pipe.stages import Stage

    stage = Stage.from_config(image[1], where=f"pipeline.{image[0]}")
    spec = model.inputs[0]
    shape = tuple(spec.shape)
    dtype = str(tf.as_dtype(spec.dtype).name)
    # traced once: the SavedModel's endpoints, the passes below and the Keras format's parity check share it
    pre = stage_preprocessor(stage.get_config(), shape[1:], dtype)

    # one pass of the trained model over the devel (and, for the operating point, test) image bytes
    need_op = task == "classification" and job.config.evaluation.operating_point is not None
    # hashed here, not taken from the job: a run step may train the model further after its evaluation
    digest = weights_sha256(model)
    # evaluations of this very model (one made before more training predicts for other weights)
    current = {p: e for p, e in job.evaluations.items() if e.weights_sha256 == digest}
    own_devel = need_op and "devel" not in current
    own_test = need_op and "test" not in current
    parity_rows = _rows(job.samples, "devel", export.parity_samples)
    devel_rows = _rows(job.samples, "devel", None) if own_devel else parity_rows
    test_rows = _rows(job.samples, "test", None) if own_test else None
    if devel_rows is None or parity_rows is None:
        log.warning("The job listed no samples: export parity is not measured")
    elif not len(parity_rows):
        devel_empty = not len(_rows(job.samples, "devel", None))  # type: ignore[arg-type]
        why = "The devel split is empty: nothing was evaluated on devel, and" if devel_empty else "export.parity_samples is 0:"
        log.warning(f"{why} export parity is not checked (export.<format>.max_abs_diff and label_agreement are null)")

    def predict(rows: pd.DataFrame | None) -> tuple[list[bytes], np.ndarray]:
        data = _read(job.io, list(rows["path"])) if rows is not None and len(rows) else []
        outs = [np.asarray(model(pre(tf.constant(data[i:i + _BATCH])), training=False)) for i in range(0, len(data), _BATCH)]
        return data, (np.concatenate(outs) if outs else np.zeros((0,) + tuple(model.outputs[0].shape[1:]), np.float32))

    # the parity reference: the evaluation's own devel outputs when it has them (no second pass),
    # else one pass of the trained model over the devel bytes through the export's preprocessing
    evaluated = None if own_devel else _evaluated(current.get("devel"), parity_rows, tuple(model.outputs[0].shape))
    if evaluated is not None:
        devel_bytes, devel_out = _read(job.io, list(parity_rows["path"])), evaluated  # type: ignore[index]
    else:
        devel_bytes, devel_out = predict(devel_rows)
    log.debug("Export parity reference: %s", "the devel evaluation" if evaluated is not None else "an export pass")
    own: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if own_devel and devel_rows is not None:
        keep, y = _labels(devel_rows, classes)
        own["devel"] = (devel_out[keep], y)
    if own_test and test_rows is not None and len(test_rows):
        keep, y = _labels(test_rows, classes)
        own["test"] = (predict(test_rows.iloc[keep])[1], y)
    operating_point = _operating_point(job, classes, own, current) if need_op else None

    written = write_formats(model, staging, formats, pre, tf.TensorSpec(shape, dtype))
    meta = {
        **metadata, "format_version": 1, "task": task, "classes": classes,
        "preprocessing": {
            "stage": stage.get_config(),
            "applies_to": [f for f in formats if f != "saved_model"],
            "description": "Decode (BMP/PNG/JPEG/GIF; TIFF transcoded to PNG first), colour mode, ROIs, resize, "
                           "rescale and cast, as the stage's config says; the SavedModel's serving_default does it in-graph",
        },
        "input": {"shape": list(shape), "dtype": dtype, "encoded": "saved_model serving_default: [N] tf.string"},
        "output": {"shape": list(model.outputs[0].shape), "dtype": str(tf.as_dtype(model.outputs[0].dtype).name),
                   "meaning": "per-pixel class probabilities" if task == "segmentation" else "class probabilities"},
        "formats": written, "operating_point": operating_point,
        "packages": environment()["packages"], "weights_sha256": digest,
        "files": file_digests(staging),
    }
    meta["metadata_sha256"] = metadata_digests(_secrets.redact_obj(meta))  # as written: checked on load
    (staging / "metadata.json").write_text(json.dumps(_secrets.redact_obj(meta), indent=2))

    # parity: every exported format, loaded as a user loads it, on the same devel bytes
    n = len(parity_rows) if parity_rows is not None else 0
    reference, sample_bytes = devel_out[:n], devel_bytes[:n]
    figures: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for fmt in formats:
        with LoadedModel(staging, fmt) as loaded:
            out = loaded.predict_bytes(sample_bytes) if sample_bytes else reference
        figures[fmt] = parity(out, reference)
        problem = _failure(fmt, figures[fmt], export.tolerance)
        if problem:
            failures.append(problem)
    meta["export"] = figures
    (staging / "metadata.json").write_text(json.dumps(_secrets.redact_obj(meta), indent=2))
    archive_folder(staging, archive)
    shutil.rmtree(staging, ignore_errors=True)
    return Exported(archive, meta["weights_sha256"], figures, operating_point, failures)
