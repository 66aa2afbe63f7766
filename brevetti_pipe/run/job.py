"""Run layer: ``Job``, the facade over one run: settings, storage, data, reporting and completion.

Each method delegates to the layer that owns it: :mod:`~brevetti_pipe.run.context` (scratch,
cluster, seeds), :mod:`~brevetti_pipe.data.selection` and :mod:`~brevetti_pipe.data.pipeline`
(samples, stages, generators), :mod:`~brevetti_pipe.reporting` (callbacks, output.json),
:mod:`~brevetti_pipe.run.lifecycle` (start, fail, complete) and :mod:`~brevetti_pipe.run.export`.

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
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from brevetti_pipe._util.console import show_logs
from brevetti_pipe._util.paths import check_relative
from brevetti_pipe._util.timing import PhaseTimer
from brevetti_pipe.config import JobConfig, JobSettings, validate_model
from brevetti_pipe.errors import ConfigError
from brevetti_pipe.platform import PLATFORMS
from brevetti_pipe.reporting import CallbackList, JobCallback
from brevetti_pipe.run import lifecycle
from brevetti_pipe.run._kept import KeptFiles
from brevetti_pipe.run._lease import JobLease
from brevetti_pipe.run._reporting import JobReporting
from brevetti_pipe.run._view import ReportingView
from brevetti_pipe.run import _settings
from brevetti_pipe.run.evaluation import Evaluation
from brevetti_pipe.run.context import Cluster, Scratch, configured_callbacks, job_io, seed_frameworks
from brevetti_pipe.run.export import environment
from brevetti_pipe.run.lifecycle import JobInterrupted
from brevetti_pipe.run.recipe import Recipe, resolve_run
from brevetti_pipe.storage import is_local, join_url

if TYPE_CHECKING:
    import pandas as pd

    from types import ModuleType

    from brevetti_pipe.data import DataGenerator, Dataset
    from brevetti_pipe.data.selection import SampleSelection
    from brevetti_pipe.stages import Stage

__all__ = ["Job", "JobInterrupted", "environment"]

log = logging.getLogger(__name__)



def _pipeline() -> ModuleType:
    """The data layer's pipeline module, imported on first use (it brings pandas and NumPy along,
    which ``brevetti-pipe --help`` and ``--cfg job`` do without)."""
    from brevetti_pipe.data import pipeline

    return pipeline


def _selection(job: Job) -> SampleSelection:
    from brevetti_pipe.data.selection import SampleSelection

    return SampleSelection(job.config, job.io, seed=job.seed, root=job.backend.root, artifact_path=job.artifact_path,
                           on_artifact=job.on_artifact, local_cache=lambda: job.temp_dir)


class Job(JobReporting):
    """The execution context of one training job (see the module docstring for an example).

    Attributes:
        id, name, seed: ``job.id`` (a fresh UUID by default), ``job.name``, ``job.seed``.
        config: the validated :class:`JobConfig`; settings: its typed ``settings.*`` tree.
        io: fsspec-backed reads and writes; backend: the platform backend mapping ids to URLs.
        callbacks: the reporting callbacks (``callbacks.<name>`` in the config).
        attempt: 1 for the first run of this job id, n + 1 for a rerun after n (in output.json).
        kept_model: the local path of a model archive that could not be uploaded (in output.json).
        hydra_dir: Hydra's run folder (``outputs/...`` or ``multirun/.../N``) when run from the command
            line, else None (in output.json; that folder's ``job.json`` points back at the artifacts).
    """

    settings: JobSettings

    def __init__(self, config: JobConfig, *, callbacks: Iterable[JobCallback] | None = None) -> None:
        if config.job.id is None:
            raise ConfigError("job.id is missing; build jobs with Job.init() or resolve_config()")
        self.config, self.id, self.name, self.seed = config, config.job.id, config.job.name, config.job.seed
        self.timings = PhaseTimer()
        model = self._settings_model()
        if model is JobSettings and config.run:
            model = resolve_run(config.run).settings
        self.settings = validate_model(model, config.settings, prefix="settings")
        self.backend = PLATFORMS.get(config.platform.type, where="platform.type")(config.platform)
        self.io = job_io(config, self.backend.storage_options)
        self.callbacks = CallbackList(configured_callbacks(config, callbacks))
        _pipeline().validate_pipeline(config)
        self.scratch = Scratch(self.id, self.io, config.job.temp_dir, config.platform.cache_dir)
        self.cluster = Cluster(config.distribution.strategy)
        self.data = _selection(self)
        self.metrics: dict[str, float] = {}
        self.metadata: dict[str, Any] = {}
        self.status = "created"
        self.error: str | None = None
        self.attempt = 1
        self.model_path: str | None = None
        self.kept_model: str | None = None
        self.started_at: str | None = None
        self.ended_at: str | None = None
        self.lease: JobLease | None = None
        self.output_error: BaseException | None = None
        self.output_warned = False
        self.trained = False
        self.fitted: Any = None
        self.evaluations: dict[str, Evaluation] = {}
        self.exported: dict[str, Any] = {}  # weights_sha256, export parity, operating_point (output.json)
        self.weights_sha256: str | None = None  # of the trained model, before export
        self.hydra_dir: str | None = None  # Hydra's run folder when the command line runs the job
        self.timings.mark("job_built")

    # -- construction --------------------------------------------------------------------
    @classmethod
    def _settings_model(cls) -> type[JobSettings]:
        return _settings.hinted_settings(cls)

    @classmethod
    def init(cls, job_id: str | None = None, api_key: str | None = None, *, overrides: Sequence[str] = (),
             config_dir: str | os.PathLike[str] | None = None, config_name: str = "config",
             argv: Sequence[str] | None = None) -> Job:
        """Compose the config with Hydra (as the CLI does) and build the job: ``job_id`` is ``job.id=...``,
        ``api_key`` stays out of every output, ``overrides`` are Hydra's (``["settings.epochs=1"]``),
        ``config_dir`` is like ``--config-dir``; seed-style flags in ``argv`` (default ``sys.argv``, ``[]``
        for none) apply below explicit arguments. Raises ConfigError for an invalid key, value or option.

        In a session where nothing configured logging (a notebook, a plain script) the job's INFO lines
        show on stderr: one handler on the ``brevetti_pipe`` logger (``brevetti_pipe.show_logs(False)``
        removes it)."""
        show_logs()
        config, task_overrides, choices = _settings.compose_job_config(
            cls, job_id, api_key, overrides, config_dir=config_dir, config_name=config_name, argv=argv)
        job = cls.from_config(config)
        job.view.launched_with(task_overrides, choices)  # for the report's header
        return job

    @classmethod
    def from_config(cls, config: JobConfig) -> Job:
        """Build the job for a validated config, as the Job subclass ``run`` names when it names one
        (``run: package.module:MyJob``, or a run step whose job parameter is annotated ``MyJob``).

        Raises:
            ConfigError: ``run`` names no run step, or a Job class that is not a ``cls``.
        """
        target, config = _settings.job_class_for(cls, config)
        return cast("Job", target(config))

    @property
    def recipe(self) -> Recipe | None:
        """The run step ``run`` names (a registered recipe, an entry point or ``package.module:attr``), or None."""
        return resolve_run(self.config.run) if self.config.run else None

    # -- paths and cluster (run.context) -------------------------------------------------
    @property
    def temp_dir(self) -> str:
        """This job's local scratch directory (created on first use)."""
        return self.scratch.dir

    def temp_path(self, *parts: str, dir: bool = False) -> str:
        """A local path inside the job's temp dir; ``dir=True`` creates it as a directory."""
        return self.scratch.path(*parts, dir=dir)

    @property
    def job_url(self) -> str:
        return self.backend.job_url(self.id)

    @property
    def artifacts_url(self) -> str:
        """The job's artifacts; a worker other than the chief writes to a private local folder."""
        if not self.is_chief:
            return os.path.join(self.temp_dir, f"worker-{self.worker_index}-artifacts")
        return self.backend.artifact_url(self.id)

    def artifact_path(self, *parts: str, dir: bool = False) -> str:
        """The URL (or local path) of an artifact: ``parts`` relative to ``<root>/jobs/<id>/artifacts``
        (no ``..``, not absolute); ``dir=True`` creates the folder (local artifacts only)."""
        rel = check_relative(parts, "artifact_path")
        url = join_url(self.artifacts_url, rel) if rel != "." else self.artifacts_url
        if dir and is_local(url):
            os.makedirs(url, exist_ok=True)
        return url

    num_workers = property(lambda self: self.cluster.num_workers, doc="Workers in the cluster.")
    worker_index = property(lambda self: self.cluster.worker_index, doc="This worker's position (chief first).")
    is_chief = property(lambda self: self.cluster.is_chief, doc="True for the process that writes the artifacts.")
    strategy = property(lambda self: self.cluster.strategy, doc="The ``tf.distribute`` strategy; build models in its scope.")

    def steps_per_epoch(self, generator: DataGenerator) -> int:
        """Training steps per epoch: ``batch_size`` is the global batch, rebatched across replicas."""
        return len(generator) * self.num_workers

    def seed_frameworks(self) -> None:
        """Seed Keras, TensorFlow, NumPy and ``random`` from ``job.seed``; call it right before building a
        model (storage clients draw from ``random`` too). :meth:`start` calls it once before :meth:`run`."""
        seed_frameworks(self.seed, self.config.job.deterministic)

    # -- data (data.selection, data.pipeline) --------------------------------------------
    @property
    def datasets(self) -> list[Dataset]:
        """The datasets selected in the config, in config order."""
        return self.data.datasets

    def get_samples(self) -> pd.DataFrame:
        """All images of all datasets with their ``purpose``; the split persists in ``artifacts/<split.file>``."""
        samples = self.data.get(lambda: self.build_pipeline(fill_classes=False))
        self.timings.mark("samples_ready")
        return samples

    @property
    def samples(self) -> pd.DataFrame | None:
        """The samples table with purposes once :meth:`get_samples` ran, else None."""
        return self.data.samples

    @property
    def bad_samples(self) -> int:
        return self.data.bad_samples

    @property
    def classes(self) -> list[str]:
        """Class names in label order: from the dataset configs when listed, else the category folders, sorted."""
        return self.data.classes(lambda: self.build_pipeline(fill_classes=False))

    def build_pipeline(self, fill_classes: bool = True) -> list[Stage]:
        """The map stages of ``pipeline.*`` in chain order, with class lists filled in from the data."""
        return _pipeline().build_stages(self.config, (lambda: self.classes) if fill_classes else None)

    def data_generator(self, samples: pd.DataFrame, *, train: bool = False, output_structure: Any = None,
                       **kwargs: Any) -> DataGenerator:
        """A DataGenerator over ``samples`` with the configured pipeline, seed and data options (see
        :func:`~brevetti_pipe.data.pipeline.make_generator`); with several workers a train generator
        takes this worker's shard."""
        shard = (self.num_workers, self.worker_index) if self.num_workers > 1 else None
        stages = self.build_pipeline()
        _ = self.temp_dir  # sets up the local cache for remote datasets
        return _pipeline().make_generator(samples, self.config, self.io, stages, seed=self.seed, train=train,
                                        shard=shard, output_structure=output_structure, **kwargs)

    # -- training and evaluation (run.training, run.evaluation) ---------------------------
    def fit(self, model: Any, train: DataGenerator | None = None, devel: DataGenerator | None = None, *,
            epochs: int | None = None, callbacks: Sequence[Any] = ()) -> list[dict[str, float]]:
        """Train ``model`` as the framework trains a builder's (see :func:`~brevetti_pipe.run.training.fit_job`)."""
        from brevetti_pipe.run.training import fit_job

        return fit_job(self, model, train, devel, epochs=epochs, callbacks=callbacks)

    def evaluate(self, model: Any, purpose: str = "devel") -> Evaluation | None:
        """Predict every ``purpose`` sample once: ``<purpose>_*`` metrics, confusion matrix, predictions CSV
        (see :func:`~brevetti_pipe.run.training.evaluate`); also in ``job.evaluations[purpose]``."""
        from brevetti_pipe.run.training import evaluate

        return evaluate(self, model, purpose)

    def thumbnails(self, samples: pd.DataFrame, size: int) -> DataGenerator:
        """``img`` thumbnails of ``samples`` for the facets report (see :class:`JobView`)."""
        return _pipeline().thumbnail_generator(samples, self.config, self.io, size)

    # -- reporting -----------------------------------------------------------------------
    @functools.cached_property
    def view(self) -> ReportingView:
        """The read-only view of this job that reporting callbacks receive."""
        return ReportingView(self)

    # -- lifecycle (run.lifecycle, run.export) -------------------------------------------
    def run(self) -> Any:
        """The job's work, returning a Keras model, a model path or None: the recipe named by ``run``,
        unless a subclass overrides it."""
        if self.recipe is None:
            raise ConfigError("Nothing to run: pick a recipe (recipe=NAME) or subclass Job and override run()")
        if self.recipe.kind == "builder":
            from brevetti_pipe.run.training import train_evaluate

            return train_evaluate(self, self.recipe)
        return self.recipe.run(self)

    def start(self, complete: bool = True) -> Any:
        """Take the job's lock, write output.json (running), call :meth:`run`, then :meth:`complete`.
        A failure (or SIGTERM/SIGINT) marks it ``failed`` in output.json and re-raises; JobLockedError
        when another live process runs the same ``job.id``."""
        return lifecycle.start(self, complete)

    def complete(self, model: Any = None) -> str | None:
        """Export ``model`` (a Keras model or a local path) to artifacts/model.tar.gz and finish; a
        StorageError says where an unwritten model is kept for a rerun of the same ``job.id``."""
        return lifecycle.complete(self, model)

    @functools.cached_property
    def kept(self) -> KeptFiles:
        """The local keep of what this job id could not upload."""
        return KeptFiles(self.job_url, self.id)

    def export_model(self, model: Any, name: str = "model.tar.gz") -> str:
        """Write ``model`` with a metadata.json into artifacts/``name``; returns the relative path."""
        self.view.note_model(model)  # the report's model summary outlives the model
        return lifecycle.export_model(self, model, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, run={self.config.run!r}, status={self.status!r})"
