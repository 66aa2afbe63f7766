"""Run layer: what survives a killed training (the resume checkpoint) and what starts one (warm start).

The checkpoint lives under ``artifacts/checkpoint/``: ``variables-<epoch>.npz`` (every model
variable: the weights and the seed-generator states of dropout or noise layers, then the
optimizer's variables: its step, moments and learning rate; then the arrays of the Keras callbacks'
states) and ``state.json`` (the epoch, a fingerprint of the config, the variable paths, the file's
name, the Keras callbacks' states, whether a callback stopped the training, and the progress
records of the finished epochs). Keras callbacks keep their state across a resume when they have
``get_state() -> dict`` and ``set_state(dict)`` (the built-in ones do; ``set_state`` runs after
every callback's ``on_train_begin``). Each file is written
atomically through the job's storage, ``state.json`` last, so a kill at any moment leaves the
previous epoch's checkpoint whole, on S3 too. (NumPy's ``.npz`` rather than Keras's
``save_weights``: a tenth of the time per epoch, and it holds the seed-generator states too.)
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.errors import ConfigError, StorageError, describe
from brevetti_pipe.storage import join_url

__all__ = ["CHECKPOINT_DIR", "ResumeCheckpoint", "config_fingerprint", "init_weights", "name_callbacks",
           "remove_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
_STATE = "state.json"
#: training options that may change between a run and its resumption
_FREE = ("epochs", "verbose", "resume", "callbacks")
#: data options that change speed and memory, never the tensors (every cache mode is bit-identical)
_DATA_FREE = ("cache", "cache_max_bytes", "num_parallel_calls", "prefetch")


def config_fingerprint(config: Any) -> str:
    """A hash of what decides the trained weights (not the platform, not the number of epochs)."""
    doc = config.model_dump(mode="json")
    doc.pop("platform", None)
    doc.pop("callbacks", None)
    doc["job"] = {"seed": doc.get("job", {}).get("seed")}
    doc["training"] = {k: v for k, v in doc.get("training", {}).items() if k not in _FREE}
    doc["data"] = {k: v for k, v in doc.get("data", {}).items() if k not in _DATA_FREE}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _checkpoint_url(job: Any) -> str:
    # every worker reads the chief's checkpoint (a worker's own artifacts are a private scratch folder)
    return join_url(job.backend.artifact_url(job.id), CHECKPOINT_DIR)


def _encode(value: Any, key: str, arrays: dict[str, Any]) -> Any:
    """A callback state as JSON, its NumPy arrays moved into ``arrays`` (``{"__array__": key}`` left in place)."""
    import numpy as np

    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    return value


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def _type_name(callback: Any) -> str:
    return f"{type(callback).__module__}.{type(callback).__qualname__}"


class ResumeCheckpoint:
    """Writes the checkpoint after every epoch (chief only) and restores it into a freshly built model,
    its Keras callbacks and the job's progress."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.url = _checkpoint_url(job)
        self.fingerprint = config_fingerprint(job.config)
        self._previous: str | None = None
        self._callbacks: dict[str, Any] = {}  # name -> Keras callback, whose state is saved and restored
        self._restored: dict[str, Any] = {}  # name -> {"type", "state", "settings"} read from the checkpoint
        self.stopped = False  # a callback had stopped the training the checkpoint holds
        self._unsaved: set[str] = set()  # callbacks whose state could not be saved (warned once)

    @staticmethod
    def _variables(model: Any) -> list[Any]:
        # every model variable (weights and seed-generator states), then the optimizer's
        return [*model.variables, *model.optimizer.variables]

    def restore(self, model: Any) -> int:
        """Load the last checkpoint into the compiled ``model`` (its optimizer is built first); returns
        the finished epochs (0 when there is none, or it was written for another config or model).
        The callbacks' states wait for :meth:`callback`; the progress records go to the job at once."""
        import numpy as np

        io = self.job.io
        state_url = join_url(self.url, _STATE)
        if not io.exists(state_url):
            return 0
        state = json.loads(io.read_file(state_url))
        self._previous = state.get("file")
        if state.get("fingerprint") != self.fingerprint:
            log.warning("Not resuming from %s: it was written for another config; training from the start",
                        _secrets.redact(self.url))
            return 0
        model.optimizer.build(model.trainable_variables)
        variables = self._variables(model)
        with np.load(_io.BytesIO(io.read_file(join_url(self.url, state["file"])))) as saved:
            count = sum(1 for k in saved.files if k[0] == "v" and k[1:].isdigit())
            values = [saved[f"v{i}"] for i in range(count)]
            arrays = {k: saved[k] for k in saved.files if k.startswith("cb.")}
        if [tuple(v.shape) for v in variables] != [x.shape for x in values]:
            log.warning("Not resuming from %s: its variables do not fit the built model; training from the start",
                        _secrets.redact(self.url))
            return 0
        for variable, value in zip(variables, values):
            variable.assign(value)
        epoch = int(state["epoch"])
        self._restored = {name: {"type": doc.get("type"), "state": _decode(doc.get("state"), arrays),
                                 "settings": doc.get("settings")}
                          for name, doc in (state.get("callbacks") or {}).items()}
        self.stopped = bool(state.get("stopped"))
        resume_progress = getattr(self.job, "resume_progress", None)
        if resume_progress is not None and "progress" in state:
            resume_progress(epoch, [r for r in state["progress"] if int(r.get("epoch", 0)) <= epoch])
        log.info("Resuming job %s after epoch %d (checkpoint %s)", self.job.id, epoch, _secrets.redact(self.url))
        return epoch

    def track(self, callbacks: Mapping[str, Any]) -> None:
        """Save and restore the state of these Keras callbacks (name -> callback; names are stable
        across runs: the ``training.callbacks`` keys). One without ``get_state``/``set_state`` is
        named in a log line on resume: its state restarts."""
        self._callbacks = dict(callbacks)

    def _settings(self, name: str) -> str | None:
        """The configured parameters of the callback ``name`` (``training.callbacks.<name>``), as JSON."""
        spec = getattr(getattr(getattr(self.job, "config", None), "training", None), "callbacks", {}).get(name)
        if spec is None:
            return None
        doc = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec
        return json.dumps(doc, sort_keys=True, default=str)

    def _set_states(self, epoch: int) -> None:
        for name, callback in self._callbacks.items():
            saved = self._restored.get(name)
            if not (callable(getattr(callback, "get_state", None)) and callable(getattr(callback, "set_state", None))):
                log.info("Keras callback %s (%s) has no get_state()/set_state(): its state restarts at epoch %d",
                         name, type(callback).__name__, epoch + 1)
            elif saved is None or saved["type"] != _type_name(callback):
                log.info("Keras callback %s: the checkpoint holds no state for it; its state restarts at epoch %d",
                         name, epoch + 1)
            elif saved["settings"] is not None and saved["settings"] != self._settings(name):
                # e.g. another monitor: the saved best value would be compared with a different metric
                log.info("Keras callback %s: its settings changed since the checkpoint; its state restarts at epoch %d",
                         name, epoch + 1)
            else:
                callback.set_state(saved["state"])

    def save(self, model: Any, epochs_done: int) -> None:
        """Write the checkpoint of ``epochs_done`` finished epochs; the previous variables file goes after."""
        import numpy as np

        if not self.job.is_chief:
            return
        io = self.job.io
        name = f"variables-{epochs_done}.npz"
        buffer = _io.BytesIO()
        arrays: dict[str, Any] = {f"v{i}": np.asarray(v) for i, v in enumerate(self._variables(model))}
        states = {}
        for cb_name, callback in self._callbacks.items():
            get_state = getattr(callback, "get_state", None)
            if not (callable(get_state) and callable(getattr(callback, "set_state", None))):
                continue
            own: dict[str, Any] = {}
            try:
                encoded = _encode(get_state(), f"cb.{cb_name}", own)
                json.dumps(encoded)
            except Exception as exc:  # a user's callback: its state is lost on resume, the training goes on
                if cb_name not in self._unsaved:
                    self._unsaved.add(cb_name)
                    log.warning("Keras callback %s: get_state() failed or returned something other than JSON values "
                                "and NumPy arrays (%s); its state will restart on resume", cb_name, describe(exc))
                continue
            arrays.update(own)
            states[cb_name] = {"type": _type_name(callback), "state": encoded, "settings": self._settings(cb_name)}
        np.savez(buffer, **arrays)
        io.write_file(join_url(self.url, name), buffer.getvalue())
        progress = [r for r in getattr(self.job, "progress_history", []) if int(r.get("epoch", 0)) <= epochs_done]
        io.write_file(join_url(self.url, _STATE), json.dumps({
            "epoch": epochs_done, "file": name, "fingerprint": self.fingerprint,
            "variables": [getattr(v, "path", v.name) for v in self._variables(model)],
            "callbacks": states, "stopped": bool(getattr(model, "stop_training", False)), "progress": progress}))
        if self._previous and self._previous != name:
            _remove(io, join_url(self.url, self._previous))
        self._previous = name

    def callback(self, initial_epoch: int) -> Any:
        """A Keras callback (put it last) that restores the tracked callbacks' states at the start of
        training, after their own ``on_train_begin`` reset, and saves the checkpoint after every epoch."""
        import keras

        checkpoint = self

        class Save(keras.callbacks.Callback):  # type: ignore[misc]
            def on_train_begin(self, logs: Any = None) -> None:
                if initial_epoch > 0:
                    checkpoint._set_states(initial_epoch)

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                checkpoint.save(self.model, epoch + 1)

        return Save()

    def finish(self, model: Any, initial_epoch: int) -> None:
        """The checkpoint holds a finished training: run the callbacks' begin (restoring their states)
        and end hooks, so those that act at the end (best weights) do as they would have."""
        import keras

        hooks = keras.callbacks.CallbackList([*self._callbacks.values(), self.callback(initial_epoch)], model=model)
        hooks.on_train_begin()
        hooks.on_train_end()


def name_callbacks(configured: Mapping[str, Any] | Sequence[Any], passed: Sequence[Any]) -> dict[str, Any]:
    """Stable names for the Keras callbacks of a fit: the ``training.callbacks`` keys, then
    ``callbacks[i]`` for those handed to ``fit``."""
    named = dict(configured) if isinstance(configured, Mapping) else {str(i): cb for i, cb in enumerate(configured)}
    named.update({f"callbacks[{i}]": cb for i, cb in enumerate(passed)})
    return named


def _remove(io: Any, url: str) -> None:
    fs, path = io.fs(url)
    io.best_effort().call(lambda: fs.rm(path, recursive=True) if fs.exists(path) else None, url)


def remove_checkpoint(job: Any) -> None:
    """Delete ``artifacts/checkpoint/`` (a completed job's rerun trains anew instead of resuming)."""
    _remove(job.io, _checkpoint_url(job))


# -- warm start ----------------------------------------------------------------------------
def _archive_url(job: Any, source: str) -> str:
    """``training.init_from`` as an archive URL: a URL or path as it is, a job id as that job's model."""
    if "://" in source or source.endswith((".tar.gz", ".tgz", ".keras")) or os.path.exists(source):
        return source
    return join_url(job.backend.artifact_url(source), "model.tar.gz")


def _source_model(job: Any, url: str) -> Any:
    import keras

    from brevetti_pipe.run.model import load_model

    try:
        if url.endswith(".keras"):
            return keras.saving.load_model(url, compile=False)
        return load_model(url, job.io, format="keras").model  # layers by name: the Keras format
    except ConfigError:
        raise
    except Exception as exc:
        raise StorageError(f"Cannot load the model of training.init_from: {describe(exc)}. "
                           f"Received: training.init_from={_secrets.redact(job.config.training.init_from)}") from None


def init_weights(job: Any, model: Any) -> list[str]:
    """Load ``training.init_from``'s weights into ``model``, layer by layer where name and weight
    shapes match; returns the layers left as built.

    Raises:
        ConfigError: some layers do not match and ``training.init_from_partial`` is false.
    """
    training = job.config.training
    assert training.init_from
    url = _archive_url(job, training.init_from)
    source = {layer.name: layer for layer in _source_model(job, url).layers}
    loaded, mismatched = [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        src = source.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        theirs = [tuple(w.shape) for w in src.weights] if src is not None else None
        if src is None or theirs != shapes:
            mismatched.append(f"{layer.name} ({'not in the source model' if src is None else f'{theirs} vs {shapes}'})")
            continue
        layer.set_weights(src.get_weights())
        loaded.append(layer.name)
    if mismatched and not training.init_from_partial:
        raise ConfigError(
            f"training.init_from: {len(mismatched)} layer(s) do not match by name and shape: {'; '.join(mismatched)}. "
            f"Received: training.init_from={_secrets.redact(training.init_from)}; "
            "set training.init_from_partial=true to load the matching layers only")
    log.info("Warm start from %s: %d layer(s) loaded%s", _secrets.redact(url), len(loaded),
             f", left as built: {', '.join(mismatched)}" if mismatched else "")
    return mismatched
