"""Run layer: what survives a killed training (the resume checkpoint) and what starts one (warm start).

The checkpoint lives under ``artifacts/checkpoint/``: ``weights-<epoch>.weights.h5`` (Keras's own
weights file: the model's weights and the optimizer's state) and ``state.json`` (the epoch, the
random-generator states Keras keeps outside the weights, a fingerprint of the config and the
weights file's name). Each file is written atomically through the job's storage, ``state.json``
last, so a kill at any moment leaves the previous epoch's checkpoint whole, on S3 too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.errors import ConfigError, StorageError, describe
from brevetti_pipe.storage import join_url

__all__ = ["CHECKPOINT_DIR", "ResumeCheckpoint", "config_fingerprint", "init_weights", "remove_checkpoint"]

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
_STATE = "state.json"
#: training options that may change between a run and its resumption
_FREE = ("epochs", "verbose", "resume", "callbacks")


def config_fingerprint(config: Any) -> str:
    """A hash of what decides the trained weights (not the platform, not the number of epochs)."""
    doc = config.model_dump(mode="json")
    doc.pop("platform", None)
    doc.pop("callbacks", None)
    doc["job"] = {"seed": doc.get("job", {}).get("seed")}
    doc["training"] = {k: v for k, v in doc.get("training", {}).items() if k not in _FREE}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _checkpoint_url(job: Any) -> str:
    # every worker reads the chief's checkpoint (a worker's own artifacts are a private scratch folder)
    return join_url(job.backend.artifact_url(job.id), CHECKPOINT_DIR)


def _rng_variables(model: Any) -> list[Any]:
    """The model's variables that are not weights: the seed generators' states (dropout, noise)."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class ResumeCheckpoint:
    """Writes the checkpoint after every epoch (chief only) and restores it into a freshly built model."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.url = _checkpoint_url(job)
        self.fingerprint = config_fingerprint(job.config)

    def restore(self, model: Any) -> int:
        """Load the last checkpoint into ``model`` (compiled, optimizer built); returns the finished
        epochs (0 when there is none, or it was written for another config)."""
        io = self.job.io
        state_url = join_url(self.url, _STATE)
        if not io.exists(state_url):
            return 0
        state = json.loads(io.read_file(state_url))
        if state.get("fingerprint") != self.fingerprint:
            log.warning("Not resuming from %s: it was written for another config; training from the start",
                        _secrets.redact(self.url))
            return 0
        local = self.job.temp_path("checkpoint", state["weights"])
        with open(local, "wb") as fh:
            fh.write(io.read_file(join_url(self.url, state["weights"])))
        model.optimizer.build(model.trainable_variables)
        model.load_weights(local)
        rng = _rng_variables(model)
        for variable, value in zip(rng, state.get("rng", [])):
            variable.assign(value)
        log.info("Resuming job %s after epoch %d (checkpoint %s)", self.job.id, state["epoch"], _secrets.redact(self.url))
        return int(state["epoch"])

    def save(self, model: Any, epochs_done: int) -> None:
        """Write the checkpoint of ``epochs_done`` finished epochs; the previous weights file goes after."""
        if not self.job.is_chief:
            return
        io = self.job.io
        name = f"weights-{epochs_done}.weights.h5"
        local = self.job.temp_path("checkpoint", name)
        model.save_weights(local)
        io.upload(local, join_url(self.url, name))
        os.remove(local)
        state_url = join_url(self.url, _STATE)
        previous = json.loads(io.read_file(state_url)).get("weights") if io.exists(state_url) else None
        state = {"epoch": epochs_done, "weights": name, "fingerprint": self.fingerprint,
                 "rng": [[int(x) for x in v.numpy().ravel()] for v in _rng_variables(model)]}
        io.write_file(state_url, json.dumps(state))
        if previous and previous != name:
            _remove(io, join_url(self.url, previous))

    def callback(self, initial_epoch: int) -> Any:
        """A Keras callback saving after every epoch."""
        import keras

        checkpoint = self

        class Save(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                checkpoint.save(self.model, epoch + 1)

        return Save()


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
        return load_model(url, job.io).model
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
