"""Run layer: where a job runs: its scratch folder, its role in a cluster (TF_CONFIG), its strategy, its seeds."""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

from brevetti_pipe._util import collector
from brevetti_pipe._util.paths import check_relative
from brevetti_pipe._util.retry import RetryPolicy
from brevetti_pipe.config import JobConfig
from brevetti_pipe.errors import ConfigError, folder_error
from brevetti_pipe.reporting import CALLBACKS, JobCallback, check_files
from brevetti_pipe.storage import IoTools

__all__ = ["Cluster", "Scratch", "configured_callbacks", "import_keras", "job_io", "own_files", "seed_frameworks"]

log = logging.getLogger(__name__)


def job_io(config: JobConfig, platform_options: dict[str, dict[str, Any]]) -> IoTools:
    """Storage access for a job: the platform's options, plus each remote dataset's own ``storage_options``."""
    io = IoTools(platform_options, retry=RetryPolicy(config.platform.retry_seconds))
    for ds in config.datasets.values():
        if ds.storage_options and "://" in ds.url:
            io.storage_options.setdefault(ds.url.split("://", 1)[0], dict(ds.storage_options))
    return io


def configured_callbacks(config: JobConfig, given: Iterable[JobCallback] | None = None) -> list[JobCallback]:
    """The reporting callbacks of ``callbacks.<name>`` in config order (or ``given`` instead).

    Raises:
        ConfigError: a callback file names one of the job's own artifacts or another callback's file.
    """
    if given is None:
        named = {name: CALLBACKS.get(spec.type, where=f"callbacks.{name}.type")(spec.params())
                 for name, spec in config.callbacks.items()}
    else:
        named = {}
        for i, cb in enumerate(given):
            key = cb.name or type(cb).__name__
            named[f"{key}[{i}]" if key in named else key] = cb
    check_files(named, own_files(config))
    return list(named.values())


def own_files(config: JobConfig) -> dict[str, str]:
    """The artifacts the job itself writes (a name ending with ``/`` is a folder): callbacks keep off them."""
    return {
        "output.json": "the job's output.json", "model.tar.gz": "the model archive",
        "model.unverified.tar.gz": "the model archive that failed export parity",
        config.split.file.removeprefix("./"): "the split (split.file)",
        "bad_samples.csv": "the list of skipped samples", "charts/": "the charts folder",
        "pivot/": "the pivot table folder", "facets/": "the facets folder",
        "checkpoint/": "the resume checkpoint (training.resume)",
        **{f"predictions_{p}.csv": f"the {p} predictions" for p in ("train", "devel", "test")},
    }


#: scratch folders of jobs that were never run (``Job.init`` in a notebook, a script reading data):
#: removed when the interpreter exits, as a run's end removes its own
#: (folder -> the process that made it: a forked child leaves its parent's folders alone)
_REMOVE_AT_EXIT: dict[str, int] = {}
#: in a scratch folder a run took over
_RUN_MARK = ".run-owned"


@atexit.register
def _remove_scratch_folders() -> None:
    for folder, pid in list(_REMOVE_AT_EXIT.items()):
        # a run in a forked child may have taken the folder over (its mark): that run decides
        if pid == os.getpid() and not os.path.exists(os.path.join(folder, _RUN_MARK)):
            shutil.rmtree(folder, ignore_errors=True)
    _REMOVE_AT_EXIT.clear()


class Scratch:
    """A job's local scratch folder (created on first use) and the local cache of remote files in it.

    Args:
        job_id: names the folder.
        io: its cache root is set when the folder is made.
        given: ``job.temp_dir`` from the config: the user's folder, never removed.
        cache_dir: ``platform.cache_dir``: a cache kept outside the scratch folder.
    """

    def __init__(self, job_id: str, io: IoTools, given: str | None = None, cache_dir: str | None = None) -> None:
        self.job_id = job_id
        self.io = io
        self.given = given
        self.cache_dir = cache_dir
        self.created: str | None = given
        self._lock = threading.Lock()
        self._run_owned = False

    @property
    def dir(self) -> str:
        """The folder (created, with the cache root set, on first use)."""
        with self._lock:
            try:
                if self.created is None:
                    self.created = tempfile.mkdtemp(prefix=f"brevetti-pipe-job-{self.job_id}-")
                    self.io.set_cache_root(self.cache_dir or os.path.join(self.created, "cache"))
                elif self.io.cache_root is None:
                    os.makedirs(self.created, exist_ok=True)
                    self.io.set_cache_root(self.cache_dir or os.path.join(self.created, "cache"))
                if self.given is None and not self._run_owned:
                    _REMOVE_AT_EXIT[self.created] = os.getpid()
            except OSError as exc:
                raise folder_error(exc, {"platform.cache_dir": self.cache_dir, "job.temp_dir": self.given}) from None
        return self.created

    def path(self, *parts: str, dir: bool = False) -> str:
        """A local path inside the folder; ``dir=True`` creates it as a directory."""
        rel = check_relative(parts, "temp_path")
        path = os.path.join(self.dir, *rel.split("/"))
        os.makedirs(path if dir else os.path.dirname(path), exist_ok=True)
        return path

    @property
    def owned(self) -> str | None:
        """The folder when this job created it (None for a ``job.temp_dir`` of the user's, or none yet)."""
        return self.created if self.given is None else None

    def run_owns(self) -> None:
        """The job's run decides from now on: its end removes the folder, or keeps it (and says so)
        for a failed trained job; nothing removes it at exit."""
        with self._lock:
            if self.created is not None and not self._run_owned and self.given is None:
                _REMOVE_AT_EXIT.pop(self.created, None)
                try:  # tells a parent process that made the folder before forking this run
                    open(os.path.join(self.created, _RUN_MARK), "a").close()
                except OSError:
                    pass
            self._run_owned = True

    def remove(self) -> None:
        """Delete the folder this job created (with the cache in it, unless ``platform.cache_dir`` holds
        it): a sweep of many runs must not fill the disk. A ``job.temp_dir`` of the user's stays."""
        with self._lock:
            if self.created is None or self.given is not None:
                return
            if self.io.cache_root and os.path.abspath(self.io.cache_root).startswith(os.path.abspath(self.created) + os.sep):
                self.io.cache_root = None  # a later path() makes the folder and the cache anew
            shutil.rmtree(self.created, ignore_errors=True)
            self._run_owned = False  # used again after its run (a notebook inspecting the job): removed at exit


class Cluster:
    """This process's role among the workers of ``distribution.strategy`` and the ``tf.distribute`` strategy."""

    def __init__(self, strategy: str) -> None:
        self.kind = strategy
        self._strategy: Any = None

    @property
    def tf_config(self) -> dict[str, Any]:
        if self.kind != "multi_worker":
            return {}
        try:
            return dict(json.loads(os.environ.get("TF_CONFIG", "") or "{}"))
        except ValueError:
            raise ConfigError("distribution.strategy=multi_worker needs TF_CONFIG to hold valid JSON") from None

    @property
    def num_workers(self) -> int:
        """Workers in the cluster (1 unless distribution.strategy=multi_worker with TF_CONFIG)."""
        cluster = self.tf_config.get("cluster", {})
        return max(1, len(cluster.get("worker", [])) + len(cluster.get("chief", [])))

    @property
    def worker_index(self) -> int:
        """This worker's position among all workers (chief first)."""
        tf_config = self.tf_config
        task = tf_config.get("task", {})
        has_chief = bool(tf_config.get("cluster", {}).get("chief"))
        if task.get("type") == "chief":
            return 0
        return int(task.get("index", 0)) + (1 if has_chief else 0)

    @property
    def is_chief(self) -> bool:
        """True for the one process that writes the job's artifacts."""
        return self.worker_index == 0

    @property
    def strategy(self) -> Any:
        """The strategy of ``distribution.strategy``, created once (imports TensorFlow)."""
        if self._strategy is None:
            import tensorflow as tf

            if self.kind == "mirrored":
                self._strategy = tf.distribute.MirroredStrategy()
            elif self.kind == "multi_worker":
                if not self.tf_config.get("cluster"):
                    raise ConfigError("distribution.strategy=multi_worker needs TF_CONFIG with a cluster spec")
                self._strategy = tf.distribute.MultiWorkerMirroredStrategy()
            else:
                self._strategy = tf.distribute.get_strategy()
        return self._strategy


def seed_frameworks(seed: int, deterministic: bool = True) -> None:
    """Seed Keras, TensorFlow, NumPy and Python's ``random`` from ``seed`` and enable op determinism
    (``deterministic=False`` turns it off again in a process where an earlier job turned it on)."""
    if not deterministic:
        if "tensorflow" in sys.modules:
            try:  # not in TensorFlow's public API; Keras reads the same flag from there
                from tensorflow.python.framework.config import disable_op_determinism

                disable_op_determinism()
            except ImportError:  # pragma: no cover - depends on TF build
                log.warning("Could not turn TensorFlow op determinism off")
        return
    if importlib.util.find_spec("keras") is None:
        return
    keras, tf = import_keras()
    keras.backend.clear_session()  # a fresh Keras state per run (sweeps run several in one process)
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception as exc:  # pragma: no cover - depends on TF build
        log.warning("Could not enable TensorFlow op determinism: %s", exc)


def import_keras() -> tuple[Any, Any]:
    """``(keras, tensorflow)``, imported. The first import in the process runs with the cyclic garbage
    collector paused and freezes the objects alive after it (see :mod:`brevetti_pipe._util.collector`):
    the import makes some 400 000 long-lived objects, which seven full collections would walk during the
    import (0.6 s) and every ``keras.backend.clear_session()`` (0.2 s) and full collection after it. When
    Keras was imported already (by a user's module), the collector is left as it is."""
    if "keras" in sys.modules:
        import keras
        import tensorflow as tf

        return keras, tf
    with collector.paused(freeze=True):
        import keras
        import tensorflow as tf
    return keras, tf
