"""Shared fixtures: tiny generated datasets and a CLI runner (subprocess, like a user)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _forget_secrets_after_each_test():
    """Secrets a test registers (a fuzzed settings JSON may hold ``api_key: unit``) are process-wide:
    forget them afterwards, or a later test's outputs are redacted by them."""
    from brevetti_pipe._util import secrets

    known, api_key = set(secrets._secrets), secrets._api_key
    yield
    with secrets._lock:
        secrets._secrets.clear()
        secrets._secrets.update(known)
    secrets._api_key = api_key


@pytest.fixture()
def failed_job_keeps_here(tmp_path, monkeypatch) -> Path:
    """What a failed trained job keeps for its next run (kept.json under $XDG_CACHE_HOME, its scratch
    folder under the temp dir) goes under ``tmp_path``, not the user's home and /tmp. Returns the keep."""
    import tempfile

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    return tmp_path / "home-cache" / "brevetti-pipe" / "kept"


@pytest.fixture(scope="session")
def tiny_vials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic vials dataset (3 classes x 10 images, 64 px BMP), made once per session."""
    from brevetti_pipe.data._demo import generate_vials

    root = tmp_path_factory.mktemp("data") / "vials_tiny"
    generate_vials(str(root), per_class=10, size=64)
    return root


@pytest.fixture(scope="session")
def tiny_vials_seg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Annotated vials (cap and liquid polygons): 3 classes x 5 images, 32 px, made once per session."""
    from brevetti_pipe.data._demo import generate_vials

    root = tmp_path_factory.mktemp("data") / "vials_seg_tiny"
    generate_vials(str(root), per_class=5, size=32, annotations=True)
    return root


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m brevetti_pipe ARGS`` in ``cwd`` and return the finished process."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "brevetti_pipe", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


def only_job_dir(root: Path) -> Path:
    jobs = sorted((root / "jobs").iterdir())
    assert len(jobs) == 1, f"expected one job under {root}/jobs, found {jobs}"
    return jobs[0]


def read_output(job_dir: Path) -> dict:
    return json.loads((job_dir / "artifacts" / "output.json").read_text())


#: Export the Keras file only: the SavedModel and its parity check (seconds per job) are the deploy tests' subject.
KERAS_ONLY = "export.formats=[keras]"

TINY_ARGS = (
    "recipe=vials_classification",
    "settings.epochs=1",
    "settings.batch_size=8",
    "pipeline.image.target_size=[32,32]",
    KERAS_ONLY,
)


@pytest.fixture(scope="session")
def _moto_endpoint():
    """One moto S3 server for the session (starting one costs about a second); each test empties it."""
    import logging

    from tests.servers import moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture()
def s3(_moto_endpoint):
    """An empty S3 store with a bucket ``bucket`` (the session's moto server, reset for this test)."""
    from tests.servers import s3_store

    with s3_store(_moto_endpoint) as store:
        store.fs().mkdir("bucket")
        yield store


@pytest.fixture()
def gcs():
    from tests.servers import gcs_server

    with gcs_server() as store:
        store.fs().mkdir("bucket")
        yield store


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """One headless Chromium for the session, behind a loopback proxy (see tests/browser.py)."""
    from tests.browser import DevTools, find_chromium, start_proxy

    proxy = start_proxy()
    tools = DevTools(find_chromium(), tmp_path_factory.mktemp("chromium-profile"),
                     f"127.0.0.1:{proxy.server_address[1]}")
    yield tools
    tools.close()
    proxy.shutdown()
    proxy.server_close()
