"""Reporting callback base class, registry and dispatcher (the job's hooks into reporting)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

from brevetti_pipe._util.paths import check_relative
from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._errors import validate_model
from brevetti_pipe.config._schema import StrictModel
from brevetti_pipe.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from brevetti_pipe.storage import IoTools

__all__ = ["JobCallback", "JobView", "CallbackList", "CALLBACKS", "check_files"]

log = logging.getLogger(__name__)

class JobView(Protocol):
    """The read-only view of a job that reporting callbacks receive as ``job=`` (not the Job itself).

    The run layer implements it; reporting never imports the run, data or stages layers.
    """

    @property
    def id(self) -> str: ...

    @property
    def io(self) -> IoTools: ...

    @property
    def artifacts_url(self) -> str: ...

    @property
    def samples(self) -> pd.DataFrame | None:
        """The samples table with its ``purpose`` column once the job listed its data, else None."""

    def artifact_path(self, *parts: str, dir: bool = False) -> str: ...

    def thumbnails(self, samples: pd.DataFrame, size: int) -> Any:
        """A generator of ``img`` batches (``size`` x ``size``, values in [0, 1]) of ``samples``, in order."""

    def launch(self) -> dict[str, Any]:
        """How the job was started, secrets masked: ``command`` (text), ``overrides`` (list of
        ``key=value``) and ``choices`` (config group -> option)."""

    def model_summary(self) -> dict[str, Any] | None:
        """The job's model once it has one: ``name``, ``layers`` (``name``, ``type``, ``output_shape``,
        ``params``), ``total_params``, ``trainable_params``, ``non_trainable_params``; else None."""


CALLBACKS: Registry[type["JobCallback"]] = Registry("callback", config_group="callbacks", entry_points="brevetti_pipe.callbacks")


class _NoParams(StrictModel):
    """No parameters."""


class JobCallback:
    """Base class of reporting callbacks. Every hook does nothing by default.

    Hooks take keyword arguments plus ``**kwargs`` so new arguments never break old callbacks.
    Set ``required = True`` for a callback whose failure must fail the job; otherwise a failing
    hook is logged once as a warning and the job goes on. A parameter named ``file`` or ending
    in ``dir`` is a path inside the job's artifacts: relative, without ``..`` (checked here).

    Subclass with a registry name and a parameter model::

        class Ping(JobCallback, name="ping"):
            class Params(StrictModel):
                url: str
    """

    name: ClassVar[str] = ""
    required: ClassVar[bool] = False
    #: True for a callback whose end hook must run after every other one (it publishes what they wrote).
    last: ClassVar[bool] = False

    #: The parameter model; a subclass sets its own (nested class or assignment).
    Params: ClassVar[type[Any]] = _NoParams
    #: The validated parameters (an instance of the subclass's ``Params``).
    params: Any

    def __init_subclass__(cls, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name:
            cls.name = name
            CALLBACKS.register(name, cls)

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, **kwargs: Any) -> None:
        if isinstance(params, BaseModel):
            self.params = params
        else:
            merged = {**(params or {}), **kwargs}
            self.params = validate_model(self.Params, merged, prefix=f"callbacks.{self.name}")
        for field, value in self.params.model_dump().items():
            if isinstance(value, str) and (field == "file" or field.endswith("dir")):
                try:
                    check_relative([value], field)
                except ValueError:
                    raise ConfigError(
                        f"callbacks.{self.name}.{field} must be a path inside the job's artifacts (relative, "
                        f"no '..'). Received: callbacks.{self.name}.{field}={value!r}"
                    ) from None

    def files(self) -> dict[str, str]:
        """The artifact files this callback writes, by parameter name (the ``file`` parameters)."""
        return {f: v for f, v in self.params.model_dump().items() if f == "file" and isinstance(v, str)}

    def owns(self, path: str) -> bool:
        """True when this callback writes the artifact ``path`` (relative, normalized)."""
        return path in {check_relative([v], f) for f, v in self.files().items()}

    def on_job_start(self, *, job: JobView, **kwargs: Any) -> None: ...

    def on_epoch_end(self, *, job: JobView, epoch: int, metrics: dict[str, float], **kwargs: Any) -> None: ...

    def on_metric(self, *, job: JobView, name: str, value: float, **kwargs: Any) -> None: ...

    def on_resume(self, *, job: JobView, epoch: int, progress: list[dict[str, Any]], **kwargs: Any) -> None:
        """Training resumes after ``epoch`` finished epochs of an earlier run; ``progress`` holds their
        records (``{"epoch": n, ...metrics}``), for callbacks that show every epoch of the training."""

    def on_artifact(self, *, job: JobView, path: str, **kwargs: Any) -> None: ...

    def on_job_end(self, *, job: JobView, status: str, error: str | None = None, **kwargs: Any) -> None: ...


class CallbackList:
    """Dispatches hooks: start and progress hooks in order, end hooks in reverse order."""

    _END_HOOKS = ("on_job_end",)

    def __init__(self, callbacks: Iterable[JobCallback] = ()) -> None:
        self.callbacks = list(callbacks)
        self._warned: set[tuple[int, str]] = set()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.callbacks)

    def _call(self, hook: str, **kwargs: Any) -> None:
        order = list(reversed(self.callbacks)) if hook in self._END_HOOKS else list(self.callbacks)
        if hook in self._END_HOOKS:
            order.sort(key=lambda cb: cb.last)  # stable: the others keep their reverse order
        for cb in order:
            try:
                getattr(cb, hook)(**kwargs)
            except Exception as exc:
                if cb.required:
                    raise
                key = (id(cb), hook)
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("Callback '%s' failed in %s and is ignored from now on: %s", cb.name, hook, exc)

    def on_job_start(self, **kwargs: Any) -> None:
        self._call("on_job_start", **kwargs)

    def on_epoch_end(self, **kwargs: Any) -> None:
        self._call("on_epoch_end", **kwargs)

    def on_metric(self, **kwargs: Any) -> None:
        self._call("on_metric", **kwargs)

    def on_resume(self, **kwargs: Any) -> None:
        self._call("on_resume", **kwargs)

    def on_artifact(self, **kwargs: Any) -> None:
        self._call("on_artifact", **kwargs)

    def on_job_end(self, **kwargs: Any) -> None:
        self._call("on_job_end", **kwargs)


def check_files(callbacks: Mapping[str, JobCallback], reserved: Mapping[str, str]) -> None:
    """Refuse a callback file that names one of the job's own artifacts or another callback's file.

    Args:
        callbacks: the callbacks by config key (``callbacks.<key>``).
        reserved: the job's artifact files (a name ending with ``/`` is a folder) -> what they hold.

    Raises:
        ConfigError: naming the key, the value and what the file already is.
    """
    for key, cb in callbacks.items():
        for field, value in cb.files().items():
            path = check_relative([value], field)
            taken = next((what for name, what in reserved.items()
                          if path == name or (name.endswith("/") and path.startswith(name))), None)
            if taken is None and path.rsplit("/", 1)[-1].startswith("."):
                taken = "a hidden name (the job's lock and temporary files)"
            if taken is None:
                other = next((k for k, c in callbacks.items() if k != key and c.owns(path)), None)
                taken = f"the file of callbacks.{other}" if other else None
            if taken:
                raise ConfigError(
                    f"callbacks.{key}.{field} names a file the job already writes: {taken}. "
                    f"Received: callbacks.{key}.{field}={value!r}. Pick another file name."
                )
