"""Job: one run's execution context (settings, storage, datasets, reporting, completion)."""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import platform as _platform
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brevetti_pipe import _secrets
from brevetti_pipe._category import category_label
from brevetti_pipe._kept import KeptFiles
from brevetti_pipe._lease import JobLease
from brevetti_pipe._paths import check_relative
from brevetti_pipe._overrides import hydra_literal
from brevetti_pipe._retry import RetryPolicy
from brevetti_pipe.callbacks import CALLBACKS, CallbackList, JobCallback, check_files
from brevetti_pipe.config._errors import validate_model
from brevetti_pipe.config._schema import JobConfig, JobSettings
from brevetti_pipe.errors import ConfigError, JobLockedError, StorageError, describe, folder_error
from brevetti_pipe.io import IoTools, is_local, join_url
from brevetti_pipe.platform import PLATFORMS

if TYPE_CHECKING:
    import pandas as pd

    from brevetti_pipe.data import DataGenerator, Dataset
    from brevetti_pipe.stages import Stage

__all__ = ["Job", "JobInterrupted", "environment"]

log = logging.getLogger(__name__)

_PACKAGES = (
    "brevetti_pipe", "tensorflow-cpu", "tensorflow", "keras", "numpy", "pandas", "hydra-core",
    "omegaconf", "pydantic", "fsspec", "s3fs", "gcsfs", "pillow",
)


class JobInterrupted(KeyboardInterrupt):
    """Raised inside a running job on SIGTERM/SIGINT so it can be marked failed before exit."""


def environment() -> dict[str, Any]:
    """Versions of Python and of the packages a run depends on (for output.json)."""
    return copy.deepcopy(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> dict[str, Any]:
    # read once per process: output.json is rewritten on every metric
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"python": _platform.python_version(), "platform": _platform.platform(), "packages": versions}


class Job:
    """The execution context of one training job.

    Subclass it with a typed settings tree and a ``run`` method, or run a registered recipe::

        class MySettings(JobSettings):
            epochs: int = 5

        class MyJob(Job):
            settings: MySettings

            def run(self):
                ...
                return model

        job = MyJob.init(overrides=["settings.epochs=3"])
        job.start()

    Attributes:
        id: the job id (``job.id`` in the config; a fresh UUID by default).
        config: the validated :class:`JobConfig`.
        settings: the typed settings tree (``settings.*``).
        io: fsspec-backed reads and writes (:class:`~brevetti_pipe.io.IoTools`).
        backend: the platform backend mapping ids to URLs.
        callbacks: the reporting callbacks (``callbacks.<name>`` in the config).
        attempt: 1 for the first run of this job id, n + 1 for a rerun after n (in output.json).
        kept_model: the local path of a model archive that could not be uploaded (in output.json).
    """

    settings: JobSettings

    def __init__(self, config: JobConfig, *, callbacks: Iterable[JobCallback] | None = None) -> None:
        if config.job.id is None:
            raise ConfigError("job.id is missing; build jobs with Job.init() or resolve_config()")
        self.config = config
        self.id: str = config.job.id
        self.name = config.job.name
        self.seed = config.job.seed
        model = self._settings_model()
        if model is JobSettings and config.run:
            from brevetti_pipe.recipe import RECIPES

            model = RECIPES.get(config.run, where="run").settings
        self.settings = validate_model(model, config.settings, prefix="settings")
        self.backend = PLATFORMS.get(config.platform.type, where="platform.type")(config.platform)
        self.io = IoTools(self.backend.storage_options, retry=RetryPolicy(config.platform.retry_seconds))
        for ds in config.datasets.values():
            if ds.storage_options and "://" in ds.url:
                self.io.storage_options.setdefault(ds.url.split("://", 1)[0], dict(ds.storage_options))
        if callbacks is None:
            named = {name: CALLBACKS.get(spec.type, where=f"callbacks.{name}.type")(spec.params())
                     for name, spec in config.callbacks.items()}
        else:
            named = {}
            for i, cb in enumerate(callbacks):
                key = cb.name or type(cb).__name__
                named[f"{key}[{i}]" if key in named else key] = cb
        check_files(named, self._own_files())
        self.callbacks = CallbackList(named.values())
        self._validate_pipeline()
        self.metrics: dict[str, float] = {}
        self.metadata: dict[str, Any] = {}
        self.status = "created"
        self.error: str | None = None
        self.model_path: str | None = None
        self.kept_model: str | None = None
        self.attempt = 1
        self.bad_samples = 0
        self.started_at: str | None = None
        self.ended_at: str | None = None
        self._temp_dir: str | None = config.job.temp_dir
        self._samples: pd.DataFrame | None = None
        self._classes: list[str] | None = None
        self._lock = threading.Lock()
        self._strategy: Any = None
        self._lease: JobLease | None = None
        self._output_error: BaseException | None = None
        self._output_warned = False
        self._trained = False
        self._fitted: Any = None

    # -- construction --------------------------------------------------------------------
    def _own_files(self) -> dict[str, str]:
        """The artifacts the job itself writes (a name ending with ``/`` is a folder): callbacks keep off them."""
        return {
            "output.json": "the job's output.json", "model.tar.gz": "the model archive",
            self.config.split.file.removeprefix("./"): "the split (split.file)",
            "bad_samples.csv": "the list of skipped samples", "charts/": "the charts folder",
            "pivot/": "the pivot table folder", "facets/": "the facets folder",
        }

    @classmethod
    def _settings_model(cls) -> type[JobSettings]:
        try:
            hinted = typing.get_type_hints(cls).get("settings", JobSettings)
        except Exception:
            hinted = cls.__annotations__.get("settings", JobSettings)
        return hinted if isinstance(hinted, type) and issubclass(hinted, JobSettings) else JobSettings

    @classmethod
    def init(
        cls,
        job_id: str | None = None,
        api_key: str | None = None,
        *,
        overrides: Sequence[str] = (),
        config_dir: str | os.PathLike[str] | None = None,
        config_name: str = "config",
    ) -> Job:
        """Compose the config with Hydra (as the CLI does) and build the job.

        Args:
            job_id: the job id (same as the override ``job.id=...``).
            api_key: the platform API key; kept out of every output.
            overrides: Hydra overrides, e.g. ``["recipe=vials_classification", "settings.epochs=1"]``.
            config_dir: a user's config directory added to the search path (like ``--config-dir``).
            config_name: the primary config.

        Raises:
            ConfigError: for any invalid key, value or group option.
        """
        from brevetti_pipe.config import compose

        if api_key:
            _secrets.set_api_key(api_key)
        overrides = list(overrides)
        if job_id:
            overrides.append(f"job.id={hydra_literal(str(job_id))}")
        cfg, task_overrides, groups = compose(overrides, config_dir=config_dir, config_name=config_name)
        from brevetti_pipe.config import resolve_config

        config = resolve_config(cfg, task_overrides, groups)
        return cls.from_config(config)

    @classmethod
    def from_config(cls, config: JobConfig) -> Job:
        """Build the job for a validated config; a recipe's own Job class is honoured."""
        return cls(config)

    # -- settings of the recipe ----------------------------------------------------------
    @property
    def recipe(self) -> Any:
        """The registered recipe named by ``run`` (None when the job runs its own ``run``)."""
        if not self.config.run:
            return None
        from brevetti_pipe.recipe import RECIPES

        return RECIPES.get(self.config.run, where="run")

    # -- paths ---------------------------------------------------------------------------
    @property
    def temp_dir(self) -> str:
        """This job's local scratch directory (created on first use)."""
        with self._lock:
            try:
                if self._temp_dir is None:
                    self._temp_dir = tempfile.mkdtemp(prefix=f"brevetti-pipe-job-{self.id}-")
                    self.io.set_cache_root(self.config.platform.cache_dir or os.path.join(self._temp_dir, "cache"))
                elif self.io.cache_root is None:
                    os.makedirs(self._temp_dir, exist_ok=True)
                    self.io.set_cache_root(self.config.platform.cache_dir or os.path.join(self._temp_dir, "cache"))
            except OSError as exc:
                raise folder_error(exc, {"platform.cache_dir": self.config.platform.cache_dir,
                                         "job.temp_dir": self.config.job.temp_dir}) from None
        return self._temp_dir

    def temp_path(self, *parts: str, dir: bool = False) -> str:
        """A local path inside the job's temp dir; ``dir=True`` creates it as a directory."""
        rel = check_relative(parts, "temp_path")
        path = os.path.join(self.temp_dir, *rel.split("/"))
        os.makedirs(path if dir else os.path.dirname(path), exist_ok=True)
        return path

    @property
    def job_url(self) -> str:
        return self.backend.job_url(self.id)

    @property
    def artifacts_url(self) -> str:
        """The job's artifacts; a worker other than the chief writes to a private local folder."""
        if not self.is_chief:
            return os.path.join(self.temp_dir, f"worker-{self.worker_index}-artifacts")
        return self.backend.artifact_url(self.id)

    # -- distribution --------------------------------------------------------------------
    @property
    def _tf_config(self) -> dict[str, Any]:
        if self.config.distribution.strategy != "multi_worker":
            return {}
        try:
            return json.loads(os.environ.get("TF_CONFIG", "") or "{}")
        except ValueError:
            raise ConfigError("distribution.strategy=multi_worker needs TF_CONFIG to hold valid JSON") from None

    @property
    def num_workers(self) -> int:
        """Workers in the cluster (1 unless distribution.strategy=multi_worker with TF_CONFIG)."""
        cluster = self._tf_config.get("cluster", {})
        return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))

    @property
    def worker_index(self) -> int:
        """This worker's position among all workers (chief first)."""
        task = self._tf_config.get("task", {})
        has_chief = bool(self._tf_config.get("cluster", {}).get("chief"))
        if task.get("type") == "chief":
            return 0
        return int(task.get("index", 0)) + (1 if has_chief else 0)

    @property
    def is_chief(self) -> bool:
        """True for the one process that writes the job's artifacts."""
        return self.worker_index == 0

    @property
    def strategy(self) -> Any:
        """The ``tf.distribute`` strategy of ``distribution.strategy`` (created once); build models in its scope."""
        if self._strategy is None:
            import tensorflow as tf

            kind = self.config.distribution.strategy
            if kind == "mirrored":
                self._strategy = tf.distribute.MirroredStrategy()
            elif kind == "multi_worker":
                if not self._tf_config.get("cluster"):
                    raise ConfigError("distribution.strategy=multi_worker needs TF_CONFIG with a cluster spec")
                self._strategy = tf.distribute.MultiWorkerMirroredStrategy()
            else:
                self._strategy = tf.distribute.get_strategy()
        return self._strategy

    def steps_per_epoch(self, generator: DataGenerator) -> int:
        """Training steps per epoch for ``generator`` under the strategy.

        ``batch_size`` is the global batch; each worker's shard is rebatched across the
        replicas in sync, so every worker takes the same number of steps.
        """
        return len(generator) * self.num_workers

    def artifact_path(self, *parts: str, dir: bool = False) -> str:
        """The URL (or local path) of an artifact of this job.

        Args:
            parts: path parts relative to ``<root>/jobs/<id>/artifacts`` (no ``..``, not absolute).
            dir: create the folder (local artifacts only; object stores have no folders).
        """
        rel = check_relative(parts, "artifact_path")
        url = join_url(self.artifacts_url, rel) if rel != "." else self.artifacts_url
        if dir and is_local(url):
            os.makedirs(url, exist_ok=True)
        return url

    # -- data ----------------------------------------------------------------------------
    @property
    def datasets(self) -> list[Dataset]:
        """The datasets selected in the config, in config order."""
        from brevetti_pipe.data import Dataset

        out = []
        for name, cfg in self.config.datasets.items():
            url = cfg.url
            if is_local(url):
                url = os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
            out.append(Dataset(name, url, cfg))
        return out

    def _ensure_dataset(self, ds: Dataset) -> None:
        if not ds.config.generator:
            return
        fs, path = self.io.fs(ds.url)
        try:
            if self.io.call(lambda: fs.exists(path) and bool(fs.find(path, maxdepth=2)), ds.url):
                return
        except PermissionError:
            return  # listing the dataset next says "access denied", naming it; generating would fail too
        from brevetti_pipe.data import GENERATORS
        from brevetti_pipe.data import _demo  # noqa: F401  (registers the built-in generators)

        generator = GENERATORS.get(ds.config.generator, where=f"datasets.{ds.name}.generator")
        try:
            generator(ds.url, io=self.io, **ds.config.generator_params)
        except TypeError as exc:
            raise ConfigError(f"Invalid datasets.{ds.name}.generator_params: {exc}") from None

    def get_samples(self) -> pd.DataFrame:
        """All images of all datasets with their ``purpose`` (train / devel / test).

        The split is read from / persisted to ``artifacts/<split.file>`` so a rerun of the same
        job keeps it; it is computed once per job and cached.
        """
        if self._samples is not None:
            return self._samples
        from brevetti_pipe.data import SampleSplit
        from brevetti_pipe.data._samples import concat_samples

        if not self.config.datasets:
            raise ConfigError("No datasets configured. Select some with datasets=NAME or datasets.<name>.url=URL")
        frames = []
        for ds in self.datasets:
            self._ensure_dataset(ds)
            frames.append(ds.get_image_samples(io=self.io))
        samples = self._drop_bad_samples(concat_samples(frames))
        split_cfg = self.config.split
        split = SampleSplit(
            split_cfg.fractions, split_cfg.stratify, split_cfg.unique_key,
            seed=self.seed if split_cfg.seed is None else split_cfg.seed, manual_column=split_cfg.manual_column,
        )
        own = self.artifact_path(split_cfg.file)
        shared = self._shared_split_url(split)
        if not self.io.exists(own) and self.io.exists(shared):
            # another run of this sweep (same datasets, split settings and seed) split these already
            self.io.write_file(own, self.io.read_file(shared))
        self._samples = split.update_unassigned(samples, id_path=own, io=self.io)
        content = self.io.read_file(own)
        if not self.io.exists(shared) or self.io.read_file(shared) != content:
            self.io.write_file(shared, content)
        self.on_artifact(own)
        counts = self._samples.groupby("purpose").size().to_dict()
        log.info("Split: %s", counts)
        return self._samples

    def _shared_split_url(self, split: Any) -> str:
        """``<root>/splits/<key>.csv``: one split per (datasets, split settings, seed), shared by runs."""
        import hashlib

        key = json.dumps({
            "datasets": sorted((d.id, d.url) for d in self.datasets),
            "fractions": split.fractions, "stratify": split.stratify, "unique_key": split.unique_key,
            "seed": split.seed, "manual": split.manual_column,
        }, sort_keys=True)
        return join_url(self.backend.root, "splits", hashlib.sha1(key.encode()).hexdigest()[:16] + ".csv")

    def _drop_bad_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Run every stage's ``check`` on local copies; fail or skip bad samples per ``data.on_bad_sample``."""
        from brevetti_pipe.data._generator import localize_samples
        from brevetti_pipe.errors import DatasetError
        from brevetti_pipe.stages import Stage

        if not self.config.data.check_samples or samples.empty:
            return samples
        checkers = [st for st in self.build_pipeline(fill_classes=False) if type(st).check is not Stage.check]
        if not checkers:
            return samples
        _ = self.temp_dir  # the local cache the generators reuse
        local = localize_samples(samples.reset_index(drop=True), self.io)
        reasons: dict[int, str] = {}
        for stage in checkers:
            for i, reason in stage.check(local).items():
                reasons.setdefault(i, reason)
        if not reasons:
            return samples
        positions = sorted(reasons)
        bad = samples.iloc[positions][["path", "dataset"]].assign(reason=[reasons[i] for i in positions])
        if self.config.data.on_bad_sample == "fail":
            first = bad.iloc[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise DatasetError(
                f"Bad sample in dataset '{first['dataset']}': {_secrets.redact(str(first['path']))}: {first['reason']}{more}. "
                "Fix or remove it, or set data.on_bad_sample=skip to train without bad samples."
            )
        url = self.artifact_path("bad_samples.csv")
        self.io.write_file(url, bad.to_csv(index=False))
        self.on_artifact(url)
        self.bad_samples = len(bad)
        log.warning("Skipping %d bad sample(s), listed in %s", len(bad), _secrets.redact(url))
        return samples.drop(index=samples.index[positions]).reset_index(drop=True)

    @property
    def samples(self) -> pd.DataFrame | None:
        """The samples table with purposes once :meth:`get_samples` ran, else None."""
        return self._samples

    def report_confusion_matrix(self, y_true: Sequence[int], y_pred: Sequence[int], purpose: str = "devel",
                                classes: Sequence[str] | None = None) -> list[list[int]]:
        """Write artifacts/charts/confusion_matrix_<purpose>.json (rows: true class, columns: predicted)."""
        names = list(classes or self.classes)
        matrix = [[0] * len(names) for _ in names]
        for t, p in zip(y_true, y_pred):
            matrix[int(t)][int(p)] += 1
        return self.write_confusion_matrix(matrix, names, purpose)

    def write_confusion_matrix(self, matrix: Sequence[Sequence[int]], classes: Sequence[str], purpose: str = "devel") -> list[list[int]]:
        """Write a precomputed confusion matrix (rows true, columns predicted) for the report."""
        rows = [[int(v) for v in row] for row in matrix]
        if len(rows) != len(classes) or any(len(r) != len(classes) for r in rows):
            raise ValueError(f"confusion matrix must be {len(classes)}x{len(classes)} for classes {list(classes)}")
        url = self.artifact_path("charts", f"confusion_matrix_{purpose}.json")
        self.io.write_file(url, json.dumps({"classes": list(classes), "matrix": rows}))
        self.on_artifact(url)
        return rows

    @property
    def classes(self) -> list[str]:
        """Class names in label order: from the dataset configs when listed, else the category folders, sorted."""
        if self._classes is None:
            listed = [c for ds in self.config.datasets.values() for c in (ds.classes or [])]
            if listed:
                self._classes = list(dict.fromkeys(listed))
            else:
                samples = self.get_samples()
                self._classes = sorted({category_label(c) for c in samples["category"]})
        return self._classes

    def _validate_pipeline(self) -> None:
        """Check every ``pipeline.<name>`` entry (type and parameters) before any data is read."""
        from brevetti_pipe.stages import STAGES

        for name, spec in self.config.pipeline.items():
            stage_cls = STAGES.get(spec.type, where=f"pipeline.{name}.type")
            validate_model(stage_cls.Params, spec.params(), prefix=f"pipeline.{name}")

    def build_pipeline(self, fill_classes: bool = True) -> list[Stage]:
        """The map stages of ``pipeline.*`` in chain order, with class lists filled in from the data."""
        from brevetti_pipe.stages import Stage

        stages = []
        for name, spec in self.config.pipeline.items():
            params = spec.params()
            if fill_classes and spec.type == "onehot_encoder" and params.get("classes") is None:
                params["classes"] = self.classes
            stages.append(Stage.from_config({"type": spec.type, **params}, where=f"pipeline.{name}"))
        return stages

    def data_generator(
        self, samples: pd.DataFrame, *, train: bool = False, output_structure: Any = None, **kwargs: Any
    ) -> DataGenerator:
        """A DataGenerator over ``samples`` with the configured pipeline, seed and data options.

        With ``train=True`` it shuffles, repeats, draws with the configured sampler and, with
        several workers, takes this worker's shard; otherwise it reads each sample once, in
        order, and leaves out the random stages (augmentation).
        """
        from brevetti_pipe.data import DataGenerator, StratifiedSampler

        sampler = None
        if train and self.config.sampler.groupby:
            sampler = StratifiedSampler(self.config.sampler.groupby, self.config.sampler.weighting, seed=self.seed)
        options = dict(
            seed=self.seed, shuffle=train, repeat=train, sampler=sampler, output_structure=output_structure,
            shard=(self.num_workers, self.worker_index) if train and self.num_workers > 1 else None,
            num_parallel_calls=self.config.data.num_parallel_calls, prefetch=self.config.data.prefetch,
            io=self.io, stages=[st for st in self.build_pipeline() if train or not st.random],
            cache=self.config.data.cache,
        )
        options.update(kwargs)
        _ = self.temp_dir  # sets up the local cache for remote datasets
        return DataGenerator(samples, **options)

    # -- reporting -----------------------------------------------------------------------
    def add_output_metric(self, name: str, value: float) -> None:
        """Record a final metric (``<purpose>_<metric>``) and rewrite output.json."""
        self.add_output_metrics({name: value})

    def add_output_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Record several metrics at once and rewrite output.json once (best effort: the final
        write in :meth:`complete` carries every metric).

        A value that is not finite (NaN, inf: a diverged training) is kept in :attr:`metrics` and
        written as null to output.json (JSON has no NaN), with a warning naming it.

        Raises:
            ValueError: for a value that is not a number (text, None).
        """
        clean: dict[str, float] = {}
        for name, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"Metric '{name}' must be a number; got {value!r}") from None
            if not math.isfinite(number):
                log.warning("Metric '%s' is not finite (%s); output.json records it as null", name, number)
            clean[str(name)] = int(value) if isinstance(value, int) and not isinstance(value, bool) else number
        self.metrics.update(clean)
        for name, value in clean.items():
            if math.isfinite(value):
                self.callbacks.on_metric(job=self, name=name, value=value)
        self._update_output()

    def _update_output(self) -> None:
        """Rewrite output.json while the job runs; a failure is warned about once and training goes on."""
        if self._lease is not None and self._lease.lost:
            return
        try:
            self.io.best_effort().write_file(self.artifact_path("output.json"), json.dumps(self.output(), indent=2))
        except Exception as exc:
            if not self._output_warned:
                self._output_warned = True
                log.warning("Could not update output.json (%s); the job goes on and writes it at its end",
                            _secrets.redact(describe(exc)))

    def remember_model(self, model: Any) -> None:
        """Note the trained ``model`` (the Keras monitor does at the end of ``fit``): a failure before
        :meth:`complete` then keeps it locally for a rerun instead of losing it."""
        self._fitted = model

    def report_progress(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Report the metrics of a finished epoch to the progress callbacks."""
        values = {}
        for k, v in metrics.items():
            try:
                number = float(v)
            except (TypeError, ValueError):
                continue
            values[k] = number if math.isfinite(number) else None
        self.callbacks.on_epoch_end(job=self, epoch=int(epoch), metrics=values)

    def on_artifact(self, path: str) -> None:
        self.callbacks.on_artifact(job=self, path=path)

    def get_remote_monitor(self) -> Any:
        """A Keras callback reporting each epoch (``val_*`` as ``devel_*``, others as ``train_*``)."""
        from brevetti_pipe._keras import make_remote_monitor

        return make_remote_monitor(self)

    def output(self) -> dict[str, Any]:
        """The output.json document (secrets redacted)."""
        settings = self.settings.model_dump(mode="json")
        config = self.config.model_dump(mode="json")
        metrics = {k: v if math.isfinite(v) else None for k, v in self.metrics.items()}  # JSON has no NaN
        return _secrets.redact_obj({
            "job": {"id": self.id, "name": self.name, "seed": self.seed, "run": self.config.run},
            "status": self.status,
            "settings": settings,
            "config": config,
            "metrics": metrics,
            "output": dict(metrics),
            "model_path": self.model_path,
            "kept_model": self.kept_model,
            "attempt": self.attempt,
            "environment": environment(),
            "error": self.error,
            "bad_samples": self.bad_samples,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        })

    def upload_job_output(self) -> str:
        """Write artifacts/output.json atomically and return its URL (failures raise)."""
        url = self.artifact_path("output.json")
        log.debug("Uploading output.json to %s", _secrets.redact(url))
        try:
            self.io.write_file(url, json.dumps(self.output(), indent=2, allow_nan=False))
        except Exception as exc:
            self._output_error = exc  # _fail does not wait out the same write's retries again
            raise
        return url

    # -- lifecycle -----------------------------------------------------------------------
    def run(self) -> Any:
        """The job's work; returns a Keras model, a path to a model, or None.

        The default runs the recipe named by ``run`` in the config. Override it in a subclass.
        """
        recipe = self.recipe
        if recipe is None:
            raise ConfigError("Nothing to run: pick a recipe (recipe=NAME) or subclass Job and override run()")
        return recipe.run(self)

    def seed_frameworks(self) -> None:
        """Seed Keras, TensorFlow, NumPy and Python's ``random`` from ``job.seed`` (and enable op determinism).

        Call it right before building a model: storage clients (botocore's retry jitter, for one)
        draw from Python's global ``random``, which Keras 3 also uses for default initializer
        seeds, so I/O between seeding and model building would shift the initial weights.
        :meth:`start` calls it once before :meth:`run`.
        """
        if not self.config.job.deterministic or importlib.util.find_spec("keras") is None:
            return
        import keras
        import tensorflow as tf

        keras.backend.clear_session()  # a fresh Keras state per run (sweeps run several in one process)
        keras.utils.set_random_seed(self.seed)
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception as exc:  # pragma: no cover - depends on TF build
            log.warning("Could not enable TensorFlow op determinism: %s", exc)

    def start(self, complete: bool = True) -> Any:
        """Run the job: take its lock, write output.json (running), call :meth:`run`, then :meth:`complete`.

        A failure (or SIGTERM/SIGINT) marks the job ``failed`` with the reason in output.json
        and re-raises; nothing written before is lost.

        Raises:
            JobLockedError: another live process runs the same ``job.id``.
        """
        self._begin()
        log.info("Job %s started; artifacts at %s", self.id, _secrets.redact(self.artifacts_url))
        previous = self._install_signal_handlers()
        try:
            if self.config.distribution.strategy != "default":
                _ = self.strategy  # multi-worker strategies must exist before other TensorFlow work
            self.callbacks.on_job_start(job=self)
            if self.config.run is not None or "tensorflow" in sys.modules:
                self.seed_frameworks()
            result = self.run()
            if complete:
                self.complete(result)
            return result
        except BaseException as exc:
            if self.status == "running":
                self._fail(exc)
            raise
        finally:
            self._restore_signal_handlers(previous)

    def _begin(self) -> None:
        """Take the job's lock, clean up after an interrupted run, upload a model an earlier run kept,
        start a fresh progress file for this attempt and write output.json (running)."""
        if self.is_chief:
            lease = JobLease(self.io, join_url(self.job_url, ".lock"), self.id)
            lease.acquire()  # before anything is written: a refused run changes nothing
            self._lease = lease
        try:
            self.attempt = self._previous_attempts() + 1
            self._tidy("removing temp files an interrupted run left", self._remove_leftover_temp_files)
            if self.is_chief:
                self._upload_kept_model()
            self.status = "running"
            self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            self.upload_job_output()
            if self.attempt > 1:
                self._tidy("setting the earlier progress aside", self._set_aside_progress)
        except BaseException as exc:
            self.status, self.error = "failed", _secrets.redact(describe(exc))
            self._end()
            raise

    @functools.cached_property
    def _kept(self) -> KeptFiles:
        return KeptFiles(self.job_url, self.id)

    def _remove(self, url: str) -> None:
        fs, path = self.io.fs(url)
        self.io.best_effort().call(lambda: fs.rm_file(path), url)

    def _tidy(self, what: str, step: Any) -> None:
        """Run a clean-up step at the start of a rerun; a failure is a warning, not a failed job."""
        try:
            step()
        except Exception as exc:
            log.warning("Job %s: %s failed (%s); the job goes on", self.id, what, exc)

    def _previous_attempts(self) -> int:
        """Attempts recorded by earlier runs of this job id (output.json, else the local keep)."""
        url = self.artifact_path("output.json")
        try:
            text = self.io.read_file(url) if self.io.exists(url) else self._kept.dir.joinpath("output.json").read_bytes()
            return int(json.loads(text).get("attempt") or 1)
        except (OSError, ValueError, AttributeError):
            return 0

    def _remove_leftover_temp_files(self) -> None:
        """Delete the ``.*.tmp`` files an interrupted (kill -9) run left among the artifacts."""
        fs, path = self.io.fs(self.artifacts_url)
        try:
            found = self.io.call(lambda: fs.find(path), self.artifacts_url)
        except FileNotFoundError:
            return
        leftovers = [p for p in found if p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".tmp")]
        for p in leftovers:
            self.io.best_effort().call(lambda p=p: fs.rm_file(p), self.artifacts_url)
        if leftovers:
            log.info("Removed %d temporary file(s) left by an interrupted run of job %s", len(leftovers), self.id)

    def _upload_kept_model(self) -> None:
        """Upload the model archive an earlier run of this job id could not upload (see :meth:`export_model`)."""
        record = self._kept.read()
        model, name = record.get("model"), str(record.get("name") or "model.tar.gz")
        if model and os.path.isfile(model):
            url = self.artifact_path(name)
            if self.io.exists(url):
                log.warning("Not uploading the model kept at %s: the artifacts already hold %s", model, name)
                return
            try:
                self.io.upload(model, url)
            except Exception as exc:
                log.warning("Could not upload the model kept from an earlier run (%s); it stays at %s", exc, model)
                return
            self.model_path = name
            log.info("Uploaded the model kept from an earlier run of job %s (%s) to %s", self.id, model, _secrets.redact(url))
        if record:
            self._kept.clear()

    def _set_aside_progress(self) -> None:
        """A rerun trains from the first epoch: the earlier attempts' progress moves to ``<file>.attempt-N``."""
        from brevetti_pipe.callbacks.progress import Progress

        for cb in self.callbacks:
            if not isinstance(cb, Progress):
                continue
            url = self.artifact_path(cb.params.file)
            if self.io.exists(url):
                stem, dot, ext = cb.params.file.rpartition(".")
                aside = f"{stem}.attempt-{self.attempt - 1}.{ext}" if dot else f"{ext}.attempt-{self.attempt - 1}"
                self.io.best_effort().write_file(self.artifact_path(aside), self.io.read_file(url))
                self._remove(url)
                log.info("Attempt %d of job %s: the progress of the earlier attempt is in %s", self.attempt, self.id, aside)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def interrupt(signum: int, frame: Any) -> None:
            raise JobInterrupted(f"interrupted by {signal.Signals(signum).name}")

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, interrupt)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _fail(self, exc: BaseException) -> typing.NoReturn:
        """Mark the job failed, record it and end it; raise ``exc``, or an error that also says
        where the final output.json is kept when it could not be written."""
        if isinstance(exc, KeyboardInterrupt):
            reason = f"interrupted ({exc})" if str(exc) else "interrupted"
        else:
            reason = describe(exc)
        self.status = "failed"
        self.error = _secrets.redact(reason)
        self.ended_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._keep_fitted_model()
        failure = exc
        try:
            if self._lease is not None and self._lease.lost:
                raise self._lease.lost_error()
            if exc is self._output_error:
                raise exc
            self.upload_job_output()
        except JobLockedError:
            pass  # the job's artifacts are its new owner's now: write nothing there
        except Exception as write_error:
            kept = self._kept.keep_output(self.output())
            try:  # an output.json saying "running" would outlive this process
                self._remove(self.artifact_path("output.json"))
            except Exception:
                pass
            note = f"The final output.json is kept at {kept}"
            if write_error is not exc:
                note = f"output.json could not be written either ({describe(write_error)}). {note}"
            log.error("%s", _secrets.redact(note))
            if not isinstance(exc, KeyboardInterrupt):
                failure = StorageError(_secrets.redact(f"{self.error}. {note}"))
        try:
            self.callbacks.on_job_end(job=self, status="failed", error=self.error)
        except Exception as cb_error:
            log.error("A callback failed while ending the failed job: %s", cb_error)
        log.error("Job %s failed: %s", self.id, self.error)
        self._end()
        if failure is exc:
            raise exc
        raise failure from exc

    def _keep_fitted_model(self) -> None:
        """Keep the model trained by this run locally when the job fails before uploading it."""
        if self._fitted is None or self.kept_model is not None:
            return
        self._trained = True
        try:
            archive = self._archive(self._fitted, "model.tar.gz")
            scratch = self._temp_dir if self.config.job.temp_dir is None else None
            self.kept_model = self._kept.keep_model(str(archive), "model.tar.gz", scratch)
        except Exception as exc:
            log.error("Could not keep the trained model of job %s: %s", self.id, exc)
            return
        self.error = f"{self.error}. The trained model is kept at {self.kept_model}; rerun job.id={self.id} to upload it"
        log.error("The trained model of the failed job %s is kept at %s; rerun job.id=%s to upload it",
                  self.id, self.kept_model, self.id)

    def complete(self, model: Any = None) -> str | None:
        """Export ``model`` (a Keras model or a local path) to artifacts/model.tar.gz and finish.

        Returns:
            The artifact-relative model path, or None when there is no model.

        Raises:
            StorageError: the model or output.json could not be written; the error says where
                the model (and the scratch folder) are kept for a rerun of the same ``job.id``.
        """
        self._trained = True
        try:
            if self._lease is not None:
                self._lease.check()  # a run that lost its lock must not write over its successor's
            if model is not None:
                self.model_path = self.export_model(model)
                self._fitted = None  # uploaded
            self.status = "completed"
            self.ended_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            self.upload_job_output()
        except BaseException as exc:
            self._fail(exc)
        try:
            self.callbacks.on_job_end(job=self, status="completed", error=None)
            log.info("Job %s completed. Output: %s", self.id, _secrets.redact(self.artifact_path("output.json")))
        finally:
            self._end()
        return self.model_path

    def _end(self) -> None:
        """Release the job's lock and remove its scratch folder (kept when a trained job failed)."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self.status == "failed" and self._trained and self._temp_dir and self.config.job.temp_dir is None:
            log.warning("Keeping the scratch folder %s of the failed job %s", self._temp_dir, self.id)
            try:
                self._kept.note(scratch=self._temp_dir)  # the next run of this job id removes it
            except OSError:
                pass
            return
        self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        """Delete the scratch directory this job created (with the local cache of remote files,
        unless ``platform.cache_dir`` holds it): a sweep of many runs must not fill the disk. A
        ``job.temp_dir`` given in the config is the user's and stays."""
        with self._lock:
            if self._temp_dir is None or self.config.job.temp_dir is not None:
                return
            if self.io.cache_root and os.path.abspath(self.io.cache_root).startswith(os.path.abspath(self._temp_dir) + os.sep):
                self.io.cache_root = None  # a later temp_path() makes the folder and the cache anew
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    def export_model(self, model: Any, name: str = "model.tar.gz") -> str:
        """Write ``model`` with a metadata.json into artifacts/``name``; returns the relative path."""
        archive = self._archive(model, name)
        url = self.artifact_path(name)
        try:
            self.io.upload(str(archive), url)
        except BaseException as exc:  # an interrupted upload keeps the model too
            scratch = self._temp_dir if self.config.job.temp_dir is None else None
            self.kept_model = self._kept.keep_model(str(archive), name, scratch)
            if not isinstance(exc, Exception):
                raise
            raise StorageError(
                f"Could not upload the model to {_secrets.redact(url)} ({_secrets.redact(describe(exc))}). "
                f"The trained model is kept at {self.kept_model}"
                + (f" (scratch folder {scratch} kept too)" if scratch else "")
                + f"; rerun job.id={self.id} to upload it."
            ) from exc
        self.on_artifact(url)
        return name

    def _archive(self, model: Any, name: str) -> Path:
        """The local model archive ``name`` of ``model`` (a Keras model or a path) in the scratch folder."""
        staging = Path(self.temp_path("export", dir=True))
        archive = Path(self.temp_path(name))
        if isinstance(model, (str, os.PathLike)):
            src = Path(model)
            if not src.exists():
                raise StorageError(f"The run step returned a model path that does not exist: {src}")
            if src.is_file() and src.name.endswith((".tar.gz", ".tgz")):
                archive = src
            else:
                with tarfile.open(archive, "w:gz") as tar:
                    tar.add(src, arcname=src.name)
        else:
            model.save(staging / "model.keras")
            meta = {
                "job_id": self.id,
                "name": self.name,
                "classes": self._classes,
                "pipeline": {n: s.model_dump(mode="json") for n, s in self.config.pipeline.items()},
                "brevetti_pipe": environment()["packages"].get("brevetti_pipe"),
                **self.metadata,
            }
            (staging / "metadata.json").write_text(json.dumps(_secrets.redact_obj(meta), indent=2))
            with tarfile.open(archive, "w:gz") as tar:
                for item in ("model.keras", "metadata.json"):
                    tar.add(staging / item, arcname=item)
            shutil.rmtree(staging, ignore_errors=True)
        return archive

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, run={self.config.run!r}, status={self.status!r})"
