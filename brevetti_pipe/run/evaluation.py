"""Run layer: evaluation of a trained model on each purpose: one pass of predictions, the task's
metrics (NumPy), the confusion matrix and a per-sample ``predictions_<purpose>.csv``.

Classification metrics: ``loss`` (categorical cross-entropy, Keras's clipping), ``accuracy``,
``macro_f1``, ``auc`` (macro one-vs-rest ROC AUC over the classes that have both positive and
negative samples in the purpose; a class without them is left out of the mean, NaN when none has),
``precision_<class>``, ``recall_<class>``, ``f1_<class>`` (0 where undefined, as scikit-learn's
``zero_division=0``). Segmentation: ``pixel_accuracy``, ``iou_<class>`` and ``dice_<class>`` (classes
absent from both truth and prediction are left out), ``mean_iou`` (over the foreground classes, the
background class 0 left out, as defects are what an inspection looks for).
"""

from __future__ import annotations

import io as _io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from brevetti_pipe.data import DataGenerator

__all__ = ["Evaluation", "classification_metrics", "evaluate", "roc_auc_ovr", "segmentation_metrics"]

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What evaluating one purpose produced.

    Attributes:
        purpose: ``devel``, ``test`` or ``train``.
        metrics: ``<purpose>_<metric>`` values (also in output.json).
        samples: the evaluated rows of the samples table, in prediction order.
        probabilities: (N, C) class probabilities (classification), else None.
        y_true: (N,) true class indices (classification), else None.
        extra: task-specific arrays (e.g. per-sample IoU for segmentation).
        weights_sha256: the evaluated model's weights digest (:func:`~brevetti_pipe.run.export.weights_sha256`),
            so a later step knows whether these predictions are the current model's.
    """

    purpose: str
    metrics: dict[str, float]
    samples: pd.DataFrame
    probabilities: np.ndarray | None = None
    y_true: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str | None = None


# -- metrics (NumPy only) ------------------------------------------------------------------
def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def roc_auc_ovr(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float]]:
    """Macro one-vs-rest ROC AUC and the per-class AUCs (NaN for a class without both positive and
    negative samples; the macro mean leaves those out, NaN when none is left)."""
    import numpy as np

    per_class = []
    for c in range(probabilities.shape[1]):
        positive = y_true == c
        n_pos, n_neg = int(positive.sum()), int((~positive).sum())
        if n_pos == 0 or n_neg == 0:
            per_class.append(float("nan"))
            continue
        ranks = _ranks(probabilities[:, c].astype(np.float64))
        per_class.append(float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)))
    defined = [a for a in per_class if not np.isnan(a)]
    return (float(np.mean(defined)) if defined else float("nan")), per_class


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    import numpy as np

    return np.bincount(y_true.astype(np.int64) * n + y_pred.astype(np.int64), minlength=n * n).reshape(n, n)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str],
                           purpose: str) -> tuple[dict[str, float], np.ndarray]:
    """``<purpose>_*`` classification metrics and the confusion matrix (rows true, columns predicted)."""
    import numpy as np

    n = len(classes)
    y_pred = np.argmax(probabilities, axis=1)
    matrix = _confusion(y_true, y_pred, n)
    tp = np.diag(matrix).astype(np.float64)
    precision, recall = _ratio(tp, matrix.sum(axis=0)), _ratio(tp, matrix.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    p = probabilities.astype(np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    eps = 1e-7  # Keras's backend epsilon: the loss equals keras.losses.categorical_crossentropy
    picked = np.clip(p[np.arange(len(y_true)), y_true], eps, 1 - eps)
    auc, _ = roc_auc_ovr(y_true, p)
    metrics = {"loss": float(np.mean(-np.log(picked))), "accuracy": float(np.mean(y_pred == y_true)),
               "macro_f1": float(np.mean(f1)), "auc": auc}
    for i, name in enumerate(classes):
        metrics.update({f"precision_{name}": float(precision[i]), f"recall_{name}": float(recall[i]),
                        f"f1_{name}": float(f1[i])})
    return {f"{purpose}_{k}": v for k, v in metrics.items()}, matrix


def segmentation_metrics(matrix: np.ndarray, classes: Sequence[str], purpose: str,
                         background: bool = True) -> dict[str, float]:
    """``<purpose>_*`` segmentation metrics from a pixel confusion matrix (rows true, columns predicted);
    ``background``: class 0 is the background, left out of ``mean_iou``."""
    import numpy as np

    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    present = union > 0
    iou, dice = _ratio(tp, union), _ratio(2 * tp, union + tp)
    metrics = {"pixel_accuracy": float(tp.sum() / max(matrix.sum(), 1))}
    for i, name in enumerate(classes):
        if present[i]:
            metrics[f"iou_{name}"] = float(iou[i])
            metrics[f"dice_{name}"] = float(dice[i])
    foreground = [iou[i] for i in range(int(background), len(classes)) if present[i]]
    metrics["mean_iou"] = float(np.mean(foreground)) if foreground else float("nan")
    return {f"{purpose}_{k}": v for k, v in metrics.items()}


def _per_sample_segmentation(true: np.ndarray, pred: np.ndarray, n: int, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample mean foreground IoU (NaN without foreground in truth and prediction) and pixel accuracy."""
    import numpy as np

    ious, accs = [], []
    for t, p in zip(true.reshape(len(true), -1), pred.reshape(len(pred), -1)):
        m = _confusion(t, p, n)
        tp = np.diag(m).astype(np.float64)
        union = m.sum(axis=0) + m.sum(axis=1) - tp
        fg = [tp[i] / union[i] for i in range(first, n) if union[i] > 0]
        ious.append(float(np.mean(fg)) if fg else float("nan"))
        accs.append(float(tp.sum() / max(m.sum(), 1)))
    return np.array(ious), np.array(accs)


# -- one purpose ---------------------------------------------------------------------------
def _predict(job: Any, model: Any, dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, targets) over a finite ``(x, y)`` dataset, on this worker alone (no collective ops)."""
    import numpy as np

    preds, targets = [], []
    full = None
    for x, y in dataset.as_numpy_iterator():
        if job.num_workers > 1:
            out = model(x, training=False)
        else:
            # a short last batch is padded to the first batch's size, so the predict function is traced
            # once, not a second time for a shape of its own
            n = len(x)
            full = full or n
            short = isinstance(x, np.ndarray) and 0 < n < full
            out = np.asarray(model.predict_on_batch(np.concatenate([x, np.repeat(x[-1:], full - n, axis=0)]) if short else x))[:n]
        preds.append(np.asarray(out, dtype=np.float32))
        targets.append(np.asarray(y))
    return np.concatenate(preds), np.concatenate(targets)


def _reads_once(generator: DataGenerator, rows: pd.DataFrame, batch_size: int, structure: tuple[str, str]) -> bool:
    """Whether ``generator`` yields ``rows`` once, in order, in batches of ``batch_size`` shaped as ``structure``."""
    samples = generator.samples
    return (generator.in_order_once and generator.shard is None and not any(st.random for st in generator.stages)
            and generator.batch_size == batch_size and not generator.drop_remainder
            and tuple(generator.output_structure or ()) == tuple(structure)
            and len(samples) == len(rows) and "path" in samples.columns
            and bool((samples["path"].to_numpy() == rows["path"].to_numpy()).all()))


def _write_csv(job: Any, purpose: str, table: pd.DataFrame) -> None:
    buffer = _io.StringIO()
    table.to_csv(buffer, index=False)
    url = job.artifact_path(f"predictions_{purpose}.csv")
    job.io.write_file(url, buffer.getvalue())
    job.on_artifact(url)


def _labels(target: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Class ids of ``target``: one-hot (as many axes as the prediction) or ids (with or without a last axis of 1)."""
    import numpy as np

    if target.ndim == pred.ndim and target.shape[-1] == pred.shape[-1] and pred.shape[-1] > 1:
        return np.argmax(target, axis=-1)
    return target.reshape(pred.shape[:-1]).astype(np.int64)


def evaluate(job: Any, model: Any, purpose: str, *, task: str, structure: tuple[str, str], classes: Sequence[str],
             batch_size: int, background: bool = True, generator: DataGenerator | None = None) -> Evaluation | None:
    """Predict every ``purpose`` sample once, record its metrics, confusion matrix and predictions CSV,
    and store the result in ``job.evaluations[purpose]``; None when the purpose has no samples.

    ``generator``: the job's own generator over these samples (the training's devel generator), read
    when it is one plain pass over exactly them with this batch size and structure: what its in-memory
    cache holds is not decoded again. Any other generator is ignored."""
    import numpy as np

    import pandas as pd

    samples = job.get_samples()
    rows = samples[samples.purpose == purpose].reset_index(drop=True)
    if rows.empty:
        log.warning("No %s samples to evaluate", purpose)
        return None
    if generator is None or not _reads_once(generator, rows, batch_size, structure):
        # one pass: an in-memory cache would only hold memory (an explicit cache setting is kept)
        one_pass = {"cache": False} if job.config.data.cache == "auto" else {}
        generator = job.data_generator(rows, batch_size=batch_size, output_structure=structure, **one_pass)
    pred, target = _predict(job, model, generator.get_dataset())
    ids = pd.DataFrame({"path": rows["path"].astype(str),
                        "etag": rows["etag"] if "etag" in rows.columns else ""})
    n = len(classes)
    if task == "segmentation":
        true, predicted = _labels(target, pred), np.argmax(pred, axis=-1)
        matrix = _confusion(true.ravel(), predicted.ravel(), n)
        metrics = segmentation_metrics(matrix, classes, purpose, background)
        iou, accuracy = _per_sample_segmentation(true, predicted, n, int(background))
        evaluation = Evaluation(purpose, metrics, rows, extra={"iou": iou, "pixel_accuracy": accuracy})
        table = ids.assign(iou=iou, pixel_accuracy=accuracy)
    else:
        y_true = _labels(target, pred)
        metrics, matrix = classification_metrics(y_true, pred, classes, purpose)
        from brevetti_pipe.run.export import weights_sha256

        evaluation = Evaluation(purpose, metrics, rows, probabilities=pred, y_true=y_true,
                                weights_sha256=weights_sha256(model))
        table = ids.assign(true_class=[classes[i] for i in y_true], predicted_class=[classes[i] for i in pred.argmax(1)],
                           confidence=pred.max(axis=1), **{f"p_{c}": pred[:, i] for i, c in enumerate(classes)})
    job.add_output_metrics(metrics)
    job.write_confusion_matrix(matrix.tolist(), list(classes), purpose=purpose)
    _write_csv(job, purpose, table)
    job.evaluations[purpose] = evaluation
    return evaluation
