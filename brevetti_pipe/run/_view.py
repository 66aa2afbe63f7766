"""Run layer: the read-only view of a job handed to reporting callbacks (implements ``JobView``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from brevetti_pipe.storage import IoTools

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ReportingView"]


class _Source(Protocol):
    id: str
    io: IoTools

    @property
    def artifacts_url(self) -> str: ...

    @property
    def samples(self) -> pd.DataFrame | None: ...

    def artifact_path(self, *parts: str, dir: bool = False) -> str: ...

    def thumbnails(self, samples: pd.DataFrame, size: int) -> Any: ...


class ReportingView:
    """What a reporting callback may read of a job: its id, storage, artifacts and samples."""

    __slots__ = ("_job",)

    def __init__(self, job: _Source) -> None:
        self._job = job

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

    def __repr__(self) -> str:
        return f"ReportingView(id={self.id!r})"
