"""Run layer: the read-only view of a job handed to reporting callbacks (implements ``JobView``)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from brevetti_pipe._util import secrets as _secrets
from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportingView", "model_summary"]


class _Source(Protocol):
    id: str
    io: IoTools
    fitted: Any

    @property
    def artifacts_url(self) -> str: ...

    @property
    def samples(self) -> pd.DataFrame | None: ...

    def artifact_path(self, *parts: str, dir: bool = False) -> str: ...

    def thumbnails(self, samples: pd.DataFrame, size: int) -> Any: ...


def _mask(args: Sequence[str]) -> list[str]:
    return [_secrets.redact(_secrets.redact_config_text(str(a))).replace(f"'{_secrets.MASK}'", _secrets.MASK)
            for a in args]


def _shell_words(args: Sequence[str]) -> str:
    """The command line as a person would type it: only words with blanks are quoted."""
    return " ".join(shlex.quote(a) if any(c.isspace() for c in a) or not a else a for a in args)


def model_summary(model: Any) -> dict[str, Any] | None:
    """Name, layers (name, type, output shape, parameters) and parameter counts of a Keras model;
    None for anything else (a path, an archive)."""
    layers = getattr(model, "layers", None)
    if layers is None or not hasattr(model, "count_params"):
        return None
    rows = []
    for layer in layers:
        try:
            shape = layer.output.shape
            output = str(tuple(shape)).replace("None", "batch")
        except Exception:  # a layer that was never called (subclassed models)
            output = ""
        rows.append({"name": layer.name, "type": type(layer).__name__, "output_shape": output,
                     "params": int(layer.count_params()) if getattr(layer, "built", True) else 0})

    def count(weights: Any) -> int:
        total = 0
        for w in weights:
            n = 1
            for d in w.shape:
                n *= int(d)
            total += n
        return total

    trainable = count(getattr(model, "trainable_weights", []))
    frozen = count(getattr(model, "non_trainable_weights", []))
    return {"name": str(getattr(model, "name", type(model).__name__)), "layers": rows,
            "total_params": trainable + frozen, "trainable_params": trainable, "non_trainable_params": frozen}


def _hydra_launch() -> dict[str, Any] | None:
    """The overrides and group choices of the Hydra app this process runs in, if any."""
    if "hydra" not in sys.modules:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return {"overrides": [str(o) for o in hc.overrides.task],
            "choices": {str(k): (None if v is None else str(v)) for k, v in hc.runtime.choices.items()}}


class ReportingView:
    """What a reporting callback may read of a job: its id, storage, artifacts, samples, how it was
    launched and the model it trains."""

    __slots__ = ("_job", "_launch", "_summary")

    def __init__(self, job: _Source) -> None:
        self._job = job
        self._launch: dict[str, Any] | None = None
        self._summary: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def io(self) -> IoTools:
        return self._job.io

    @property
    def artifacts_url(self) -> str:
        return self._job.artifacts_url

    @property
    def samples(self) -> pd.DataFrame | None:
        return self._job.samples

    def artifact_path(self, *parts: str, dir: bool = False) -> str:
        return self._job.artifact_path(*parts, dir=dir)

    def thumbnails(self, samples: pd.DataFrame, size: int) -> Any:
        return self._job.thumbnails(samples, size)

    def launched_with(self, overrides: Sequence[str], choices: Mapping[str, Any]) -> None:
        """Record the overrides and config-group choices a job built in Python (``Job.init``) was composed with."""
        self._launch = {"overrides": [str(o) for o in overrides],
                        "choices": {str(k): (None if v is None else str(v)) for k, v in choices.items()}}

    def note_model(self, model: Any) -> None:
        """Remember the summary of the model the job trained (the model itself is not kept)."""
        summary = model_summary(model)
        if summary is not None:
            self._summary = summary

    def model_summary(self) -> dict[str, Any] | None:
        """Layers and parameter counts of the job's model, once it has one (see :func:`model_summary`)."""
        if self._job.fitted is not None:
            self.note_model(self._job.fitted)
        return self._summary

    def launch(self) -> dict[str, Any]:
        """How the job was started, secrets masked: ``command`` (the process's command line),
        ``overrides`` (this run's Hydra overrides) and ``choices`` (config group -> option)."""
        hydra = _hydra_launch()
        launch = hydra or self._launch or {"overrides": [], "choices": {}}
        overrides = _mask(launch["overrides"])
        if hydra is None and self._launch is not None:
            command = "Job.init (Python): see the overrides"
        else:
            argv = list(sys.argv) or ["python"]
            prog = os.path.basename(argv[0])
            command = _shell_words(["python -m brevetti_pipe" if prog == "__main__.py" else prog, *_mask(argv[1:])])
        choices = {k: v for k, v in launch["choices"].items() if not k.startswith("hydra/") and v is not None}
        return {"command": command, "overrides": overrides, "choices": choices}

    def __repr__(self) -> str:
        return f"ReportingView(id={self.id!r})"
