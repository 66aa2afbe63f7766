"""Platform backends: where jobs, artifacts and datasets live (the embedded one works on any fsspec URL)."""

from __future__ import annotations

import os
from typing import Any

from brevetti_pipe._registry import Registry
from brevetti_pipe.config._schema import PlatformConfig
from brevetti_pipe.io import is_local, join_url

__all__ = ["PlatformBackend", "LocalPlatform", "PLATFORMS"]


class PlatformBackend:
    """Base class of a platform backend: maps job ids and dataset ids to URLs.

    Layout (see the README)::

        <root>/datasets/<dataset_id>/<category folders>/<images>
        <root>/jobs/<job_id>/job.json
        <root>/jobs/<job_id>/artifacts/...
    """

    name = "base"

    def __init__(self, config: PlatformConfig) -> None:
        root = config.root
        if is_local(root):
            root = os.path.abspath(os.path.expanduser(root.removeprefix("file://")))
        self.root = root
        self.config = config

    @property
    def storage_options(self) -> dict[str, dict[str, Any]]:
        """fsspec options keyed by protocol, for :class:`~brevetti_pipe.io.IoTools`."""
        if not self.config.storage_options:
            return {}
        protocol = self.root.split("://", 1)[0] if "://" in self.root else "file"
        return {protocol: dict(self.config.storage_options)}

    def job_url(self, job_id: str) -> str:
        return join_url(self.root, "jobs", job_id)

    def artifact_url(self, job_id: str) -> str:
        return join_url(self.root, "jobs", job_id, "artifacts")

    def dataset_url(self, dataset_id: str) -> str:
        return join_url(self.root, "datasets", dataset_id)


class LocalPlatform(PlatformBackend):
    """The embedded platform: plain folders on ``platform.root``, no server needed."""

    name = "local"


PLATFORMS: Registry[type[PlatformBackend]] = Registry("platform backend", config_group="platform")
PLATFORMS.register("local", LocalPlatform)
