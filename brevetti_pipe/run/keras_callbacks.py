"""Run layer: the Keras callbacks of ``training.callbacks.<name>``, registered by name like every component.

A registered Keras callback is a factory ``make(job, **params) -> keras.callbacks.Callback`` or a
Keras ``Callback`` class (called with ``**params``). Installed packages add their own through the
entry-point group ``brevetti_pipe.keras_callbacks``. A callback with ``get_state() -> dict`` and
``set_state(dict)`` keeps its state across a resume (the values: JSON types and NumPy arrays;
``set_state`` is called after every callback's ``on_train_begin``); the built-in ones do. Metric names in the parameters use the job's
names (``devel_loss``, ``train_accuracy``) and are handed to Keras under its own (``val_loss``,
``accuracy``). Keras is imported only when a callback is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.reporting._output import progress_name
from brevetti_pipe.errors import ConfigError, did_you_mean

__all__ = ["KERAS_CALLBACKS", "keras_callback", "keras_callbacks_by_name", "keras_metric_name", "make_keras_callbacks",
           "our_metric_name"]

KERAS_CALLBACKS: Registry[Callable[..., Any]] = Registry(
    "Keras callback", config_group="training.callbacks", entry_points="brevetti_pipe.keras_callbacks")

#: callback parameters that name a metric
_METRIC_PARAMS = ("monitor",)
#: the metrics the framework compiles (our names); Keras's own names are taken too
_METRICS = ("devel_loss", "devel_accuracy", "train_loss", "train_accuracy")


def keras_callback(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a Keras callback factory ``make(job, **params)`` (or a Callback class) as ``name``.

    Example:
        >>> @keras_callback("print_lr")
        ... def print_lr(job, every=1): ...
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        KERAS_CALLBACKS.register(name, fn)
        return fn

    return wrap


def keras_metric_name(name: str) -> str:
    """Our metric name -> Keras's log key: ``devel_loss`` -> ``val_loss``, ``train_loss`` -> ``loss``."""
    if name.startswith("devel_"):
        return "val_" + name[len("devel_"):]
    if name.startswith("train_"):
        return name[len("train_"):]
    return name


def our_metric_name(key: str) -> str:
    """Keras's log key -> our metric name (the inverse of :func:`keras_metric_name`)."""
    return progress_name(key)


def make_keras_callbacks(job: Any, specs: Mapping[str, Any]) -> list[Any]:
    """The Keras callbacks of ``training.callbacks`` (name -> spec with ``type`` and parameters), in order.

    Raises:
        ConfigError: an unknown ``type``, or parameters the callback does not take.
    """
    return list(keras_callbacks_by_name(job, specs).values())


def keras_callbacks_by_name(job: Any, specs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`make_keras_callbacks` keyed by their ``training.callbacks`` names."""
    callbacks = {}
    for name, spec in specs.items():
        make = KERAS_CALLBACKS.get(spec.type, where=f"training.callbacks.{name}.type")
        params = dict(spec.params())
        for key in _METRIC_PARAMS:
            if isinstance(params.get(key), str):
                if params[key] not in _METRICS and our_metric_name(params[key]) not in _METRICS:
                    raise ConfigError(f"training.callbacks.{name}.{key} must be one of {list(_METRICS)}. "
                                      f"Received: training.callbacks.{name}.{key}={params[key]!r}"
                                      + did_you_mean(params[key], _METRICS))
                params[key] = keras_metric_name(params[key])
        try:
            callbacks[name] = make(**params) if isinstance(make, type) else make(job, **params)
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"Invalid parameters for 'training.callbacks.{name}' ({spec.type}): {exc}. "
                              f"Received: {spec.params()}") from None
    return callbacks


def _number(value: Any) -> Any:
    """A monitored value as a plain float (Keras may hold a NumPy or backend scalar), None kept."""
    return None if value is None else float(value)


@keras_callback("early_stopping")
def early_stopping(job: Any, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                   mode: str = "auto", restore_best_weights: bool = False, start_from_epoch: int = 0) -> Any:
    """Stop when ``monitor`` stops improving for ``patience`` epochs (Keras ``EarlyStopping``)."""
    import keras

    class EarlyStopping(keras.callbacks.EarlyStopping):  # type: ignore[misc]
        def get_state(self) -> dict[str, Any]:
            return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": _number(self.best),
                    "best_epoch": self.best_epoch, "best_weights": self.best_weights}

        def set_state(self, state: Mapping[str, Any]) -> None:
            self.wait, self.stopped_epoch, self.best = state["wait"], state["stopped_epoch"], state["best"]
            self.best_epoch = state["best_epoch"]
            weights = state["best_weights"]
            self.best_weights = None if weights is None else list(weights)

    return EarlyStopping(monitor=monitor, patience=patience, min_delta=min_delta, mode=mode,
                         restore_best_weights=restore_best_weights, start_from_epoch=start_from_epoch)


@keras_callback("reduce_lr_on_plateau")
def reduce_lr_on_plateau(job: Any, monitor: str = "val_loss", factor: float = 0.1, patience: int = 3,
                         min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, mode: str = "auto") -> Any:
    """Scale the learning rate by ``factor`` when ``monitor`` plateaus (Keras ``ReduceLROnPlateau``)."""
    import keras

    class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):  # type: ignore[misc]
        # the learning rate itself is an optimizer variable: the checkpoint restores it with the weights
        def get_state(self) -> dict[str, Any]:
            return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": _number(self.best)}

        def set_state(self, state: Mapping[str, Any]) -> None:
            self.wait, self.cooldown_counter, self.best = state["wait"], state["cooldown_counter"], state["best"]

    return ReduceLROnPlateau(monitor=monitor, factor=factor, patience=patience, min_delta=min_delta,
                             cooldown=cooldown, min_lr=min_lr, mode=mode)


@keras_callback("model_checkpoint")
def model_checkpoint(job: Any, monitor: str = "val_loss", mode: str = "auto") -> Any:
    """Keep the weights of the best epoch by ``monitor`` and restore them when training ends
    (Keras ``ModelCheckpoint`` with ``save_best_only``, into the job's scratch folder)."""
    import keras

    import numpy as np

    class BestWeights(keras.callbacks.ModelCheckpoint):  # type: ignore[misc]
        def on_train_end(self, logs: Any = None) -> None:
            super().on_train_end(logs)
            if os.path.exists(self.filepath):
                self.model.load_weights(self.filepath)

        def get_state(self) -> dict[str, Any]:
            saved = None
            if os.path.exists(self.filepath):
                with open(self.filepath, "rb") as f:
                    saved = np.frombuffer(f.read(), dtype=np.uint8)
            return {"best": _number(self.best), "weights_file": saved}

        def set_state(self, state: Mapping[str, Any]) -> None:
            self.best = state["best"]
            if state["weights_file"] is not None:
                tmp = f"{self.filepath}.tmp"
                with open(tmp, "wb") as f:
                    f.write(np.asarray(state["weights_file"], dtype=np.uint8).tobytes())
                os.replace(tmp, self.filepath)

    path = job.temp_path("model_checkpoint", "best.weights.h5")
    if os.path.exists(path):
        os.remove(path)
    return BestWeights(path, monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True)


@keras_callback("csv_logger")
def csv_logger(job: Any, filename: str = "training_log.csv", separator: str = ",") -> Any:
    """One CSV row per epoch (epochs from 1, our metric names) in ``artifacts/<filename>``, uploaded after each epoch."""
    import csv

    import keras

    from brevetti_pipe._util.paths import check_relative
    from brevetti_pipe.run.context import own_files

    key = "training.callbacks.csv_logger.filename"
    rel = check_relative((filename,), key)
    for own, what in own_files(job.config).items():
        if rel == own or (own.endswith("/") and rel.startswith(own)):
            raise ConfigError(f"{key} may not name {what}. Received: {key}={filename!r}; expected another file name, "
                              "e.g. training_log.csv")
    local = job.temp_path("csv_logger", rel)

    class ArtifactCSVLogger(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.columns: list[str] | None = None

        def on_train_begin(self, logs: Any = None) -> None:
            self.columns = None

        def get_state(self) -> dict[str, Any]:
            text = None
            if self.columns is not None and os.path.exists(local):
                with open(local, newline="") as f:
                    text = f.read()
            return {"columns": self.columns, "text": text}

        def set_state(self, state: Mapping[str, Any]) -> None:
            if state["text"] is not None:
                os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
                with open(local, "w", newline="") as f:
                    f.write(state["text"])
                self.columns = list(state["columns"])

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            row = {our_metric_name(k): v for k, v in (logs or {}).items()}
            new = self.columns is None
            if self.columns is None:
                self.columns = sorted(row)
            with open(local, "w" if new else "a", newline="") as f:
                writer = csv.writer(f, delimiter=separator)
                if new:
                    writer.writerow(["epoch", *self.columns])
                writer.writerow([epoch + 1, *(row.get(c, "NA") for c in self.columns)])
            if job.is_chief:
                url = job.artifact_path(rel)
                job.io.upload(local, url)
                job.on_artifact(url)

    return ArtifactCSVLogger()
