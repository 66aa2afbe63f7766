"""Storage faults: transient errors are retried within a bounded time, then fail naming the URL."""

from __future__ import annotations

import json
import time

import pytest

from brevetti_pipe._util.retry import RetryPolicy, is_transient, retry_call
from brevetti_pipe.data._demo import generate_vials
from brevetti_pipe.storage import IoTools
from tests.conftest import TINY_ARGS, run_cli
from tests.servers import FaultProxy


def test_job_completes_with_20_percent_of_s3_requests_failing(s3, tmp_path):
    io = IoTools({"s3": s3.options})
    generate_vials("s3://bucket/platform/datasets/vials", io=io, per_class=8, size=48)
    with FaultProxy(s3.endpoint, fail_rate=0.2, seed=1) as proxy:
        proc = run_cli(
            *TINY_ARGS, "platform.root=s3://bucket/platform", f"+platform.storage_options.endpoint_url={proxy.endpoint}",
            "job.id=faulty", "platform.retry_seconds=60", cwd=tmp_path, env=s3.env, timeout=600,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proxy.stats["failed"] > 5, proxy.stats
    out = json.loads(s3.fs().cat_file("bucket/platform/jobs/faulty/artifacts/output.json"))
    assert out["status"] == "completed"
    assert 0.0 <= out["metrics"]["devel_accuracy"] <= 1.0
    # the same job through a clean connection gives the same metrics: faults change nothing
    clean = run_cli(*TINY_ARGS, "platform.root=s3://bucket/platform", *s3.overrides("platform.storage_options"),
                    "job.id=clean", cwd=tmp_path, env=s3.env, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    again = json.loads(s3.fs().cat_file("bucket/platform/jobs/clean/artifacts/output.json"))
    assert again["metrics"] == out["metrics"]


def test_all_requests_failing_stops_within_bounded_time(s3, tmp_path):
    with FaultProxy(s3.endpoint, fail_rate=1.0) as proxy:
        start = time.monotonic()
        proc = run_cli(
            *TINY_ARGS, "platform.root=s3://bucket/platform", f"+platform.storage_options.endpoint_url={proxy.endpoint}",
            "platform.retry_seconds=5", cwd=tmp_path, env=s3.env, timeout=300,
        )
        elapsed = time.monotonic() - start
    assert proc.returncode != 0
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("brevetti-pipe: error:")]
    assert len(error) == 1 and "s3://bucket/platform" in error[0], proc.stderr[-2000:]
    assert "gave up after retrying transient faults" in error[0]
    assert elapsed < 120, f"took {elapsed:.0f}s"


def test_retry_classification_and_budget():
    assert is_transient(ConnectionResetError())
    assert is_transient(OSError(104, "Connection reset by peer"))
    assert not is_transient(FileNotFoundError("x"))
    assert not is_transient(PermissionError("denied"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert retry_call(flaky, "s3://b/k", RetryPolicy(total_seconds=5, initial_delay=0.01)) == "ok" and len(calls) == 3
    start = time.monotonic()
    with pytest.raises(ConnectionResetError):
        retry_call(lambda: (_ for _ in ()).throw(ConnectionResetError("always")), "s3://b/k",
                   RetryPolicy(total_seconds=0.5, initial_delay=0.05))
    assert time.monotonic() - start < 2
    with pytest.raises(FileNotFoundError):
        retry_call(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), "s3://b/k")
