"""Platform backends: where jobs, artifacts and datasets live (the embedded one works on any fsspec URL)."""

from __future__ import annotations

from typing import Any

from brevetti_pipe._util.registry import Registry
from brevetti_pipe.config._schema import PlatformConfig
from brevetti_pipe.platform import layout
from brevetti_pipe.storage import is_local, local_path

__all__ = ["PlatformBackend", "LocalPlatform", "PLATFORMS"]


class PlatformBackend:
    """Base class of a platform backend: maps job ids and dataset ids to URLs.

    The layout under the root is :mod:`brevetti_pipe.platform.layout`'s.
    """

    name = "base"

    def __init__(self, config: PlatformConfig) -> None:
        root = config.root
        if is_local(root):
            root = local_path(root)
        self.root = root
        self.config = config

    @property
    def storage_options(self) -> dict[str, dict[str, Any]]:
        """fsspec options keyed by protocol, for :class:`~brevetti_pipe.storage.IoTools`."""
        if not self.config.storage_options:
            return {}
        protocol = self.root.split("://", 1)[0] if "://" in self.root else "file"
        return {protocol: dict(self.config.storage_options)}

    def job_url(self, job_id: str) -> str:
        return layout.job_url(self.root, job_id)

    def artifact_url(self, job_id: str) -> str:
        return layout.artifacts_url(self.root, job_id)

    def dataset_url(self, dataset_id: str) -> str:
        return layout.dataset_url(self.root, dataset_id)


class LocalPlatform(PlatformBackend):
    """The embedded platform: plain folders on ``platform.root``, no server needed."""

    name = "local"


PLATFORMS: Registry[type[PlatformBackend]] = Registry(
    "platform backend", config_group="platform", entry_points="brevetti_pipe.platforms"
)
PLATFORMS.register("local", LocalPlatform)
