"""Local keep of what a job could not upload at its end (the model archive, the final output.json).

One folder per (platform root, job id) under ``$XDG_CACHE_HOME/brevetti-pipe/kept`` (default
``~/.cache``), so the next run of the same ``job.id`` finds it and uploads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["KeptFiles"]

log = logging.getLogger(__name__)


def _root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base, "brevetti-pipe", "kept")


class KeptFiles:
    """The keep of one job: ``kept.json`` lists the model archive and the scratch folder left behind.

    Args:
        job_url: the job's folder URL (tells two platform roots with the same job id apart).
        job_id: the job id (readable part of the folder name).
    """

    def __init__(self, job_url: str, job_id: str) -> None:
        digest = hashlib.sha1(job_url.encode()).hexdigest()[:12]
        self.dir = _root() / f"{re.sub(r'[^A-Za-z0-9._-]', '_', job_id)[:64]}-{digest}"
        self.index = self.dir / "kept.json"

    def read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.index.read_text()))
        except (OSError, ValueError):
            return {}

    def note(self, **entries: Any) -> None:
        """Add ``entries`` (model, name, scratch) to kept.json."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".kept.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**self.read(), **entries}, indent=2))
        os.replace(tmp, self.index)

    def keep_model(self, archive: str, name: str, scratch: str | None) -> str:
        """Move ``archive`` (artifact ``name``) into the keep if it is in the scratch folder; return where it is."""
        where = archive
        if scratch and os.path.abspath(archive).startswith(os.path.abspath(scratch) + os.sep):
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                where = shutil.move(archive, str(self.dir / name))
            except OSError as exc:  # e.g. no space in the keep: it stays in the scratch folder
                log.warning("Could not move the model archive to %s (%s); it stays at %s", self.dir, exc, archive)
        try:
            self.note(model=str(where), name=name, scratch=scratch)
        except OSError as exc:
            log.warning("Could not record the kept model in %s: %s", self.index, exc)
        return str(where)

    def keep_output(self, document: dict[str, Any]) -> str:
        """Save the output.json that could not be written; return its local path (or a temp file's)."""
        text = json.dumps(document, indent=2)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            path = self.dir / "output.json"
            path.write_text(text)
            return str(path)
        except OSError:
            fd, path_str = tempfile.mkstemp(prefix="brevetti-pipe-output-", suffix=".json")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            return path_str

    def clear(self) -> None:
        """Remove the keep and the scratch folder it recorded (after the model was uploaded)."""
        scratch = self.read().get("scratch")
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
