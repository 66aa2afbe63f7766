"""Progress reporting: one JSON line per epoch in progress.jsonl, optionally POSTed to a URL."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from pydantic import Field

from brevetti_pipe import _secrets
from brevetti_pipe.callbacks._base import JobCallback
from brevetti_pipe.config._schema import StrictModel

if TYPE_CHECKING:
    from brevetti_pipe.job import Job

__all__ = ["Progress"]

log = logging.getLogger(__name__)


class Progress(JobCallback, name="progress"):
    """Appends ``{"epoch": n, ...metrics}`` to artifacts/progress.jsonl after every epoch.

    The file is rewritten atomically each time, so a reader (or a crash) never sees a half
    line. With ``url`` set, the same JSON is POSTed there; the API key travels in the
    ``Authorization`` header only. A server that is down is warned about once; the job goes on.
    """

    class Params(StrictModel):
        file: str = Field("progress.jsonl", description="Artifact file receiving one JSON line per epoch")
        url: str | None = Field(None, description="HTTP endpoint receiving each progress line as a POST")
        timeout: float = Field(5.0, gt=0, description="Seconds per POST attempt")
        retries: int = Field(2, ge=0, description="Extra attempts per POST on connection errors and 5xx")
        backoff: float = Field(0.5, ge=0, description="Seconds before the first retry (doubles each time)")

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self._lines: list[str] = []
        self._post_failed = False

    def on_job_start(self, *, job: Job, **kwargs: Any) -> None:
        # A rerun of the same job id continues its progress file.
        url = job.artifact_path(self.params.file)
        if job.io.exists(url):
            text = job.io.read_file(url).decode("utf-8", "replace")
            self._lines = [ln for ln in text.splitlines() if ln.strip()]

    def on_epoch_end(self, *, job: Job, epoch: int, metrics: dict[str, float], **kwargs: Any) -> None:
        record = {"epoch": int(epoch), **{k: float(v) for k, v in metrics.items()}}
        line = json.dumps(record, sort_keys=False)
        self._lines.append(line)
        job.io.write_file(job.artifact_path(self.params.file), "\n".join(self._lines) + "\n")
        if self.params.url:
            self._post(job, record)

    def _post(self, job: Job, record: dict[str, Any]) -> None:
        body = json.dumps({"job_id": job.id, **record}).encode()
        headers = {"Content-Type": "application/json"}
        key = _secrets.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = self.params.backoff
        error: str = ""
        for attempt in range(self.params.retries + 1):
            request = urllib.request.Request(self.params.url or "", data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.params.timeout) as response:
                    if 200 <= response.status < 300:
                        return
                    error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.params.retries:
                time.sleep(delay)
                delay *= 2
        if not self._post_failed:
            self._post_failed = True
            log.warning(
                "Progress POST to %s failed (%s); training goes on, further failures are not logged.",
                _secrets.redact(self.params.url or ""),
                _secrets.redact(error),
            )
