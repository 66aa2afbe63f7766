"""Reporting layer: experiment trackers as reporting callbacks: TensorBoard event files and MLflow runs.

Both are off by default and come with optional extras: ``callbacks.tensorboard``
(``pip install brevetti_pipe[tensorboard]``) and ``callbacks.mlflow`` (``brevetti_pipe[mlflow]``);
turn one on with ``+callbacks@callbacks.tensorboard=tensorboard`` or
``+callbacks@callbacks.mlflow=mlflow``. They only read what the job reports (epochs, final metrics,
artifacts) and what it wrote (output.json, the charts, the report, the model archive).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import pathlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import ConfigError
from brevetti_pipe.reporting._callback import JobCallback
from brevetti_pipe.storage import is_local, local_path

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from brevetti_pipe.reporting._callback import JobView

__all__ = ["MlflowTracking", "TensorBoardTracking", "confusion_image", "flatten_config"]

log = logging.getLogger(__name__)

_PURPOSES = ("train", "devel", "test")
_CONFUSION = re.compile(r"(?:^|/)charts/confusion_matrix_(?P<purpose>[^/]+)\.json$")


def _require(module: str, extra: str, callback: str) -> None:
    """A one-line error naming the extra when an optional package is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"callbacks.{callback} needs the '{module.split('.')[0]}' package, which is not installed. "
            f"Install it with: pip install 'brevetti_pipe[{extra}]'"
        ) from None


def _run_and_tag(metric: str) -> tuple[str, str]:
    """``devel_accuracy`` -> (``devel``, ``accuracy``); a name without a purpose prefix goes to ``train``."""
    head, _, rest = metric.partition("_")
    return (head, rest) if head in _PURPOSES and rest else ("train", metric)


def _spread(samples: pd.DataFrame, count: int) -> pd.DataFrame:
    """Up to ``count`` samples spread evenly over the categories (deterministic)."""
    order = samples.assign(_cat=samples["category"].map(lambda c: "/".join(c) if isinstance(c, tuple) else str(c)))
    order["_rank"] = order.groupby("_cat").cumcount()
    return order.sort_values(["_rank", "_cat"], kind="mergesort").head(count).drop(columns=["_rank"])


def confusion_image(matrix: list[list[int]], classes: list[str], cell: int = 40) -> np.ndarray:
    """A confusion matrix as an RGB uint8 heatmap: rows true class, columns predicted, shaded by the
    row-normalised rate, each cell labelled with its count; class names on the left, indices on top."""
    import numpy as np
    from PIL import Image, ImageDraw

    counts = np.asarray(matrix, dtype=np.float64).reshape(len(classes), len(classes))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    left = 12 + 7 * max((len(f"{i}: {c}") for i, c in enumerate(classes)), default=4)
    top = 24
    n = len(classes)
    image = Image.new("RGB", (left + n * cell + 4, top + n * cell + 4), "white")
    draw = ImageDraw.Draw(image)
    for j in range(n):
        draw.text((left + j * cell + cell // 2 - 3, 6), str(j), fill="black")
    for i, name in enumerate(classes):
        draw.text((4, top + i * cell + cell // 2 - 5), f"{i}: {name}", fill="black")
        for j in range(n):
            shade = int(255 * (1 - rates[i, j]))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            draw.text((box[0] + 4, box[1] + cell // 2 - 5), str(int(counts[i, j])),
                      fill="white" if rates[i, j] > 0.5 else "black")
    return np.asarray(image, dtype=np.uint8)


class TensorBoardTracking(JobCallback, name="tensorboard"):
    """TensorBoard event files under ``artifacts/<dir>/``, one run per purpose (``train``, ``devel``,
    ``test``): every epoch's metrics as scalars (``loss``, ``accuracy``... so train and devel overlay),
    the final metrics (``final/<metric>``), each confusion matrix as an image and sample images per
    category (``samples/<category>``). View with ``tensorboard --logdir <artifacts>/tensorboard``.

    Events are written with ``tf.summary``; on a remote artifact store they are written locally and
    uploaded after every epoch and at the end.
    """

    class Params(StrictModel):
        dir: str = Field("tensorboard", description="Folder in the artifacts for the event files")
        images: int = Field(16, ge=0, le=256, description="Sample images shown, spread over categories (0: none)")
        image_size: int = Field(64, ge=8, le=512, description="Edge of the sample images in pixels")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        _require("tensorboard", "tensorboard", self.name or "tensorboard")
        self._writers: dict[str, Any] = {}
        self._local: str | None = None
        self._url: str | None = None
        self._step = 0

    def _writer(self, job: JobView, run: str) -> Any:
        import tensorflow as tf

        if self._local is None:
            self._url = job.artifact_path(self.params.dir)
            self._local = self._url if is_local(self._url) else tempfile.mkdtemp(prefix="brevetti-pipe-tensorboard-")
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self._local, run))
        return self._writers[run]

    def on_epoch_end(self, *, job: JobView, epoch: int, metrics: dict[str, float], **kwargs: Any) -> None:
        import tensorflow as tf

        self._step = int(epoch)
        for name, value in metrics.items():
            if value is None or not math.isfinite(value):
                continue
            run, tag = _run_and_tag(name)
            with self._writer(job, run).as_default():
                tf.summary.scalar(tag, float(value), step=self._step)
        self._flush(job)

    def on_metric(self, *, job: JobView, name: str, value: float, **kwargs: Any) -> None:
        import tensorflow as tf

        run, tag = _run_and_tag(name)
        with self._writer(job, run).as_default():
            tf.summary.scalar(f"final/{tag}", float(value), step=self._step)

    def on_artifact(self, *, job: JobView, path: str, **kwargs: Any) -> None:
        import numpy as np
        import tensorflow as tf

        found = _CONFUSION.search(path.replace("\\", "/"))
        if not found:
            return
        doc = json.loads(job.io.read_file(path))
        image = confusion_image(doc["matrix"], [str(c) for c in doc["classes"]])
        with self._writer(job, found["purpose"]).as_default():
            tf.summary.image("confusion_matrix", image[np.newaxis], step=self._step)

    def on_job_end(self, *, job: JobView, status: str, **kwargs: Any) -> None:
        try:
            self._sample_images(job)
        finally:
            self._flush(job, close=True)

    def _sample_images(self, job: JobView) -> None:
        import numpy as np
        import tensorflow as tf

        samples = job.samples
        if self.params.images == 0 or samples is None or samples.empty:
            return
        chosen = _spread(samples, self.params.images)
        images: list[np.ndarray] = []
        for batch in job.thumbnails(chosen.drop(columns=["_cat"]), self.params.image_size).get_dataset_numpy(structure=None):
            images.extend(np.asarray(batch["img"]).reshape((-1, *np.asarray(batch["img"]).shape[-3:])))
        by_category: dict[str, list[np.ndarray]] = {}
        for category, image in zip(chosen["_cat"], images):
            by_category.setdefault(category or "(none)", []).append(np.clip(image, 0.0, 1.0))
        with self._writer(job, "samples").as_default():
            for category, stack in by_category.items():
                tf.summary.image(f"samples/{category}", np.stack(stack), step=0, max_outputs=len(stack))

    def _flush(self, job: JobView, close: bool = False) -> None:
        for writer in self._writers.values():
            writer.flush()
            if close:
                writer.close()
        if close:
            self._writers.clear()
        if self._local and self._url and self._local != self._url:
            for folder, _, files in os.walk(self._local):
                for name in files:
                    path = os.path.join(folder, name)
                    rel = os.path.relpath(path, self._local).replace(os.sep, "/")
                    job.io.best_effort().upload(path, f"{self._url.rstrip('/')}/{rel}")
            if close:
                shutil.rmtree(self._local, ignore_errors=True)


def flatten_config(tree: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"a.b.c": "value"}`` (lists and empty mappings as JSON, None as ``null``)."""
    out: dict[str, str] = {}
    if isinstance(tree, Mapping) and tree:
        for key, value in tree.items():
            out.update(flatten_config(value, f"{prefix}{key}."))
        return out
    text = tree if isinstance(tree, str) else json.dumps(tree, default=str)
    out[prefix.rstrip(".")] = text
    return out


class MlflowTracking(JobCallback, name="mlflow"):
    """One MLflow run per job: params = the resolved config flattened (secrets masked), metrics per
    epoch (``step`` = epoch) and the final ones, and at the end ``report.html``, ``output.json`` and
    ``model.tar.gz`` as artifacts; the run ends FINISHED or FAILED with the job.

    ``tracking_uri`` defaults to a local file store ``<platform.root>/mlruns`` (``./mlruns`` when the
    root is remote). In a sweep (``--multirun``) every job is a child run of one parent run per sweep
    folder, recorded in ``<sweep dir>/mlflow_parent_run.json``. Its end hook runs after the other
    callbacks' (the report is final by then).

    A rerun of a job that failed or was killed (``attempt`` 2, 3, ...) that resumes its training from
    the checkpoint carries on in the earlier attempt's run (one run per training, its curves unbroken,
    tag ``brevetti_pipe.attempt``); a rerun that trains from the first epoch gets a run of its own.
    """

    last: ClassVar[bool] = True

    class Params(StrictModel):
        tracking_uri: str | None = Field(None, description="MLflow tracking URI (null: <platform.root>/mlruns)")
        experiment: str | None = Field(None, description="Experiment name (null: job.name, else 'brevetti_pipe')")
        run_name: str | None = Field(None, description="Run name (null: the job id)")
        log_artifacts: bool = Field(True, description="Log report.html, output.json and model.tar.gz as artifacts")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        _require("mlflow", "mlflow", self.name or "mlflow")
        self._client: Any = None
        self._run_id: str | None = None
        self._parent_id: str | None = None
        self._step = 0
        self._opening: dict[str, Any] | None = None  # a run to create at the first event (see on_resume)
        self._earlier: str | None = None  # the unfinished run of this job's earlier attempt

    # -- set-up --------------------------------------------------------------------------
    def _tracking_uri(self, root: str) -> str:
        if self.params.tracking_uri:
            return str(self.params.tracking_uri)
        if not is_local(root):
            log.warning("callbacks.mlflow: platform.root is not a local folder; tracking to ./mlruns "
                        "(set callbacks.mlflow.tracking_uri to choose)")
            root = "."
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 wants the opt-in for a file store
        return pathlib.Path(local_path(root), "mlruns").as_uri()  # '#', '%', '?' in a folder name escaped

    def on_job_start(self, *, job: JobView, **kwargs: Any) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        doc = json.loads(job.io.read_file(job.artifact_path("output.json")))  # written before this hook
        config = _secrets.redact_obj(doc.get("config") or {})
        info = doc.get("job") or {}
        attempt = int(doc.get("attempt") or 1)
        self._client = client = MlflowClient(tracking_uri=self._tracking_uri(str(config["platform"]["root"])))
        name = self.params.experiment or info.get("name") or "brevetti_pipe"
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        tags = {"brevetti_pipe.job_id": job.id, "brevetti_pipe.artifacts": _secrets.redact(job.artifacts_url),
                "brevetti_pipe.attempt": str(attempt)}
        sweep = _sweep()
        if sweep is not None:
            self._parent_id = _parent_run(client, experiment_id, sweep["dir"])
            tags.update({"mlflow.parentRunId": self._parent_id, "brevetti_pipe.sweep_dir": sweep["dir"],
                         "brevetti_pipe.sweep_job": str(sweep["num"])})
        self._opening = {"experiment_id": experiment_id, "tags": tags, "experiment": name,
                         "params": [Param(k[:250], v[:6000]) for k, v in sorted(flatten_config(config).items())]}
        self._earlier = _unfinished_run(client, experiment_id, tags) if attempt > 1 else None
        if self._earlier is None:
            self._open()
        # else: wait for on_resume (the training carries on: the earlier run) or any other event (it
        # starts over: a new run), so two trainings never share one run's curves

    def _open(self) -> str:
        """This job's run: the one created at the start, else a new one now."""
        if self._run_id is None and self._opening is not None:
            opening, self._opening, self._earlier = self._opening, None, None
            client = self._client
            run = client.create_run(opening["experiment_id"], run_name=self.params.run_name or opening["tags"][
                "brevetti_pipe.job_id"], tags=opening["tags"])
            self._run_id = run.info.run_id
            params = opening["params"]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
                client.log_batch(self._run_id, params=params[i:i + 100])
            log.info("MLflow run %s (experiment '%s') at %s", self._run_id, opening["experiment"],
                     _secrets.redact(client.tracking_uri))
        return str(self._run_id)

    def on_resume(self, *, job: JobView, epoch: int, progress: list[dict[str, Any]], **kwargs: Any) -> None:
        if self._client is None:
            return
        if self._earlier is not None and self._opening is not None:  # carry on in the earlier attempt's run
            self._run_id, self._earlier = self._earlier, None
            tags = self._opening["tags"]
            self._opening = None
            self._client.update_run(self._run_id, status="RUNNING")
            self._client.set_tag(self._run_id, "brevetti_pipe.attempt", tags["brevetti_pipe.attempt"])
            if "brevetti_pipe.error" in self._client.get_run(self._run_id).data.tags:  # an earlier attempt's
                self._client.delete_tag(self._run_id, "brevetti_pipe.error")
            self._step = epoch  # metrics logged before the next epoch ends (none left to train) go at its step
            log.info("MLflow run %s carries on (attempt %s, training resumed after epoch %d)", self._run_id,
                     tags["brevetti_pipe.attempt"], epoch)
            return
        run_id = self._open()  # a run of its own: give it the finished epochs so its curves start at 1
        for record in progress:
            self._log_epoch(run_id, int(record["epoch"]), {k: v for k, v in record.items() if k != "epoch"})

    # -- progress ------------------------------------------------------------------------
    def on_epoch_end(self, *, job: JobView, epoch: int, metrics: dict[str, float], **kwargs: Any) -> None:
        if self._client is None:
            return
        self._log_epoch(self._open(), int(epoch), metrics)

    def _log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        self._step = epoch
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(v)]
        if batch:
            self._client.log_batch(run_id, metrics=batch)

    def on_metric(self, *, job: JobView, name: str, value: float, **kwargs: Any) -> None:
        if self._client is not None:
            self._client.log_metric(self._open(), name, float(value), step=self._step)

    def on_job_end(self, *, job: JobView, status: str, error: str | None = None, **kwargs: Any) -> None:
        if self._client is None:
            return
        if self._earlier is not None and self._opening is not None and status != "completed":
            # failed before its training carried on or started over: the failure is recorded on the earlier
            # attempt's run, which the next attempt can still carry on (one training, one run)
            self._run_id, self._earlier = self._earlier, None
            self._client.set_tag(self._run_id, "brevetti_pipe.attempt", self._opening["tags"]["brevetti_pipe.attempt"])
            self._opening = None
        self._open()
        try:
            if error:
                self._client.set_tag(self._run_id, "brevetti_pipe.error", _secrets.redact(error)[:5000])
            if self.params.log_artifacts:
                for name in ("report.html", "output.json", "model.tar.gz"):
                    url = job.artifact_path(name)
                    if job.io.exists(url):
                        with _local_copy(job, url, name) as path:
                            self._client.log_artifact(self._run_id, path)
        finally:
            self._client.set_terminated(self._run_id, "FINISHED" if status == "completed" else "FAILED")
            if self._parent_id is not None:  # the sweep's end: its last job to finish sets the end time
                self._client.set_terminated(self._parent_id, "FINISHED")
            self._run_id = None
            self._client = None


def _unfinished_run(client: Any, experiment_id: str, tags: Mapping[str, str]) -> str | None:
    """The latest run of this job (same job id and artifacts folder) when it did not finish, else None."""
    job_id = tags["brevetti_pipe.job_id"].replace("\\", "\\\\").replace("'", "\\'")
    runs = client.search_runs([experiment_id], filter_string=f"tags.`brevetti_pipe.job_id` = '{job_id}'",
                              order_by=["attributes.start_time DESC"], max_results=5)
    for run in runs:
        if run.data.tags.get("brevetti_pipe.artifacts") == tags["brevetti_pipe.artifacts"]:
            return None if run.info.status == "FINISHED" else str(run.info.run_id)
    return None


@contextlib.contextmanager
def _local_copy(job: JobView, url: str, name: str) -> Iterator[str]:
    """A local file path of the artifact ``url`` (itself when local, else a temporary download)."""
    if is_local(url):
        yield url
        return
    folder = tempfile.mkdtemp(prefix="brevetti-pipe-mlflow-")
    try:
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(job.io.read_file(url))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep() -> dict[str, Any] | None:
    """The Hydra sweep this process runs a job of (``dir``, ``num``), or None outside ``--multirun``."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return {"dir": os.path.abspath(str(hc.sweep.dir)), "num": hc.job.num}
    except Exception:
        return None


def _parent_run(client: Any, experiment_id: str, sweep_dir: str) -> str:
    """The parent run of the sweep in ``sweep_dir``: created by the sweep's first job (under a file lock,
    for launchers that run jobs in parallel processes), recorded in ``mlflow_parent_run.json`` there."""
    os.makedirs(sweep_dir, exist_ok=True)
    record = os.path.join(sweep_dir, "mlflow_parent_run.json")
    key = f"{_secrets.redact(client.tracking_uri)}|{experiment_id}"
    with open(os.path.join(sweep_dir, ".mlflow_parent.lock"), "a+") as lock:
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        known: dict[str, str] = {}
        if os.path.exists(record):
            with open(record, encoding="utf-8") as fh:
                known = json.load(fh)
        if key not in known:
            run = client.create_run(experiment_id, run_name=os.path.relpath(sweep_dir, os.path.dirname(
                os.path.dirname(sweep_dir))), tags={"brevetti_pipe.sweep_dir": sweep_dir})
            known[key] = run.info.run_id
            tmp = f"{record}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(known, fh, indent=2)
            os.replace(tmp, record)
        return known[key]
