"""Platform layer: the one place that knows the platform layout under ``platform.root``.

::

    <root>/datasets/<dataset_id>/<category folders>/<images>
    <root>/jobs/<job_id>/job.json          (platform-injected settings JSON)
    <root>/jobs/<job_id>/.lock             (the running process's lease)
    <root>/jobs/<job_id>/artifacts/...
    <root>/splits/<key>.csv                (splits shared by the runs of a sweep)
    <root>/cache/{etags,verdicts}/<key>.json  (what reruns reuse: content etags, check verdicts)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from brevetti_pipe.storage import join_url

__all__ = ["artifacts_url", "dataset_url", "job_url", "lock_url", "rerun_cache_url", "settings_json_url",
           "shared_split_url"]


def job_url(root: str, job_id: str) -> str:
    return join_url(root, "jobs", job_id)


def artifacts_url(root: str, job_id: str) -> str:
    return join_url(job_url(root, job_id), "artifacts")


def settings_json_url(root: str, job_id: str) -> str:
    """The settings JSON a platform may inject for the job (``root`` as given, not normalised)."""
    return f"{root.rstrip('/')}/jobs/{job_id}/job.json"


def lock_url(job_folder: str) -> str:
    """The lease object of the job whose folder is ``job_folder`` (see :func:`job_url`)."""
    return join_url(job_folder, ".lock")


def dataset_url(root: str, dataset_id: str) -> str:
    return join_url(root, "datasets", dataset_id)


def shared_split_url(root: str, key: dict[str, Any]) -> str:
    """``<root>/splits/<hash>.csv``: one split per key (datasets, split settings, seed), shared by runs."""
    text = json.dumps(key, sort_keys=True)
    return join_url(root, "splits", hashlib.sha1(text.encode()).hexdigest()[:16] + ".csv")


def rerun_cache_url(root: str, cache_dir: str | None = None) -> str:
    """Where reruns find the content etags and check verdicts of earlier runs: ``platform.cache_dir``
    when set (``<cache_dir>/rerun``), else ``<root>/cache``, shared by every run of the platform."""
    return join_url(cache_dir, "rerun") if cache_dir else join_url(root, "cache")
