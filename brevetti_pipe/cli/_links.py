"""Command line: one tree to look in: Hydra's run folder points at the job's artifacts and back."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from brevetti_pipe._util import secrets as _secrets

__all__ = ["link_hydra_dir"]

log = logging.getLogger(__name__)


def link_hydra_dir(job: Any, hydra_dir: str | None) -> str | None:
    """Record Hydra's run folder on the job (output.json's ``hydra_dir``) and write ``<hydra_dir>/job.json``
    naming the job and its artifacts; returns that file's path. Best effort: a folder that cannot be
    written is a warning (the job's own outputs are what matter).

    ``job.json``: ``{"job_id", "artifacts", "output", "report", "hydra_dir"}`` (URLs, secrets masked).
    """
    if not hydra_dir:
        return None
    hydra_dir = os.path.abspath(hydra_dir)
    job.hydra_dir = hydra_dir
    doc = {
        "job_id": job.id,
        "artifacts": job.artifacts_url,
        "output": job.artifact_path("output.json"),
        "report": job.artifact_path("report.html"),
        "hydra_dir": hydra_dir,
    }
    path = os.path.join(hydra_dir, "job.json")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(hydra_dir, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(_secrets.redact_obj(doc), fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("Could not write %s (%s); the job goes on", path, exc)
        return None
    return path
