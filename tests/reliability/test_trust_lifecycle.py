"""Nothing lost at the end of a job: kept models, honest status, one process per job id, clean reruns."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

import pytest

from brevetti_pipe import ConfigError, Job, StorageError
from brevetti_pipe._util.retry import RetryPolicy
from brevetti_pipe.errors import JobLockedError
from tests.servers import FaultProxy

MODEL_BYTES = 2 << 20  # incompressible, so the archive does not fit a 1 MB disk


class ModelJob(Job):
    """Returns a model folder (a path is a model for export_model); no TensorFlow needed."""

    def run(self):
        folder = Path(self.temp_path("trained", dir=True))
        (folder / "weights.bin").write_bytes(os.urandom(MODEL_BYTES))
        return str(folder)


class NoModelJob(Job):
    def run(self):
        return None


@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MB tmpfs (we run as root); the test may remount it bigger."""
    disk = tmp_path / "small"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _s3_overrides(endpoint: str) -> list[str]:
    return ["platform.root=s3://bucket/p", f"+platform.storage_options.endpoint_url={endpoint}"]


JobT = TypeVar("JobT", bound=Job)

#: The job's storage policy while a write is failed on purpose: a failing call gives up after two single
#: requests (no wall-clock race), while a healthy call keeps a budget no loaded machine runs out of.
GIVE_UP_FAST = RetryPolicy(total_seconds=60, attempts=2, store_retries=False)


def _failing(job: JobT) -> JobT:
    job.io.retry = GIVE_UP_FAST
    return job


# -- a failed final write never deletes the trained model ---------------------------------------
def test_500_on_model_put_keeps_the_model_and_a_rerun_uploads_it(s3, failed_job_keeps_here, caplog):
    with FaultProxy(s3.endpoint, 0.0, fail_put_key="jobs/j500/artifacts/model.tar.gz") as proxy:
        job = _failing(ModelJob.init(job_id="j500", overrides=_s3_overrides(proxy.endpoint)))
        with pytest.raises(StorageError, match="The trained model is kept at .*rerun job.id=j500 to upload it") as err:
            job.start()
        kept = Path(job.kept_model)
        assert kept.is_file() and kept.is_relative_to(failed_job_keeps_here) and str(kept) in str(err.value)
        assert "500" in str(err.value) or "InternalError" in str(err.value), str(err.value)
        fs = s3.fs()
        out = json.loads(fs.cat_file("bucket/p/jobs/j500/artifacts/output.json"))
        assert out["status"] == "failed" and out["kept_model"] == str(kept) and str(kept) in out["error"]
        assert not fs.exists("bucket/p/jobs/j500/artifacts/model.tar.gz")
        archive = kept.read_bytes()

        proxy.fail_put_key = None  # the store is healthy again
        caplog.set_level(logging.INFO, logger="brevetti_pipe")
        rerun = NoModelJob.init(job_id="j500", overrides=_s3_overrides(proxy.endpoint))
        assert rerun.start() is None
    assert fs.cat_file("bucket/p/jobs/j500/artifacts/model.tar.gz") == archive
    out = json.loads(fs.cat_file("bucket/p/jobs/j500/artifacts/output.json"))
    assert out["status"] == "completed" and out["model_path"] == "model.tar.gz" and out["attempt"] == 2
    assert "Uploaded the model kept from an earlier run of job j500" in caplog.text
    assert not kept.exists() and not kept.parent.exists(), "the keep is removed once uploaded"


def test_full_disk_keeps_model_and_scratch_and_a_rerun_uploads_it(small_disk, failed_job_keeps_here):
    overrides = [f"platform.root={small_disk}"]
    job = ModelJob.init(job_id="full", overrides=overrides)
    with pytest.raises(StorageError, match="kept at") as err:
        job.start()
    scratch = job.scratch.created
    kept = Path(job.kept_model)
    assert kept.is_file() and kept.is_relative_to(failed_job_keeps_here)
    assert f"scratch folder {scratch} kept too" in str(err.value) and os.path.isdir(scratch)
    artifacts = small_disk / "jobs" / "full" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "failed" and out["kept_model"] == str(kept)
    assert not (artifacts / "model.tar.gz").exists()
    archive = kept.read_bytes()

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    NoModelJob.init(job_id="full", overrides=overrides).start()
    assert (artifacts / "model.tar.gz").read_bytes() == archive
    assert json.loads((artifacts / "output.json").read_text())["status"] == "completed"
    assert not kept.exists() and not os.path.exists(scratch), "the keep and the scratch folder go once uploaded"


# -- output.json that cannot be written ---------------------------------------------------------
def test_unwritable_output_json_ends_with_clear_error_and_no_running_status(s3, failed_job_keeps_here):
    with FaultProxy(s3.endpoint, 0.0) as proxy:

        class BreaksOutput(Job):
            def run(self):
                proxy.fail_put_key = "jobs/jout/artifacts/output.json"  # from now on
                return None

        job = _failing(BreaksOutput.init(job_id="jout", overrides=_s3_overrides(proxy.endpoint)))
        start = time.monotonic()
        with pytest.raises(StorageError) as err:
            job.start()
        elapsed = time.monotonic() - start
    message = str(err.value)
    assert "\n" not in message and "output.json" in message and "The final output.json is kept at" in message
    kept = failed_job_keeps_here.glob("jout-*/output.json")
    kept = next(iter(kept))
    assert str(kept) in message
    assert json.loads(kept.read_text())["status"] == "failed"
    fs = s3.fs()
    stored = "bucket/p/jobs/jout/artifacts/output.json"
    assert not fs.exists(stored) or json.loads(fs.cat_file(stored))["status"] != "running"
    assert elapsed < 60, f"took {elapsed:.0f}s"


# -- one process per job id ---------------------------------------------------------------------
_CHILD = """
import sys
from brevetti_pipe import Job

class Waiting(Job):
    def run(self):
        self.add_output_metric("devel_who", float(sys.argv[2]))
        print("running", flush=True)
        sys.stdin.readline()

Waiting.init(job_id=sys.argv[3], overrides=[f"platform.root={sys.argv[1]}"]).start()
"""


def _child(root: Path, who: int, job_id: str = "twin") -> subprocess.Popen[str]:
    """A real process running job ``job_id`` that reports ``running`` and waits for a line on stdin."""
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(who), job_id], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_second_process_with_same_job_id_refuses_to_start(tmp_path):
    first = _child(tmp_path, 1)
    try:
        assert first.stdout.readline().strip() == "running", first.stderr.read()
        second = _child(tmp_path, 2)
        _, err = second.communicate("\n", timeout=120)
        assert second.returncode != 0
        assert "JobLockedError: Job 'twin' is already running" in err and f"pid {first.pid} on" in err, err[-2000:]
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    out = json.loads((tmp_path / "jobs" / "twin" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_who": 1}
    assert not (tmp_path / "jobs" / "twin" / ".lock").exists(), "the lock goes with its job"


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    first = _child(tmp_path, 1)
    assert first.stdout.readline().strip() == "running", first.stderr.read()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert (tmp_path / "jobs" / "twin" / ".lock").exists()
    second = _child(tmp_path, 2)
    _, err = second.communicate("\n", timeout=120)
    assert second.returncode == 0, err[-2000:]
    assert f"Taking over the lock of job twin: its owner (pid {first.pid} on {socket.gethostname()}) is gone" in err
    out = json.loads((tmp_path / "jobs" / "twin" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_who": 2}


def test_lease_from_another_host_is_honoured_until_it_expires(tmp_path, caplog):
    lock = tmp_path / "jobs" / "far" / ".lock"
    lock.parent.mkdir(parents=True)
    lease = {"token": "t", "pid": 1, "host": "elsewhere", "started_at": "2026-01-01T00:00:00+00:00"}
    lock.write_text(json.dumps({**lease, "expires_at": time.time() + 600, "expires": "in ten minutes"}))
    with pytest.raises(JobLockedError, match="pid 1 on elsewhere"):
        NoModelJob.init(job_id="far", overrides=[f"platform.root={tmp_path}"]).start()
    assert not (tmp_path / "jobs" / "far" / "artifacts" / "output.json").exists(), "a refused run writes nothing"
    lock.write_text(json.dumps({**lease, "expires_at": time.time() - 1}))
    caplog.set_level(logging.WARNING, logger="brevetti_pipe")
    NoModelJob.init(job_id="far", overrides=[f"platform.root={tmp_path}"]).start()
    assert "Taking over the lock of job far: its lease expired" in caplog.text


def test_lease_on_s3_refuses_a_second_start_while_the_first_runs(s3):
    overrides = ["platform.root=s3://bucket/p", *s3.overrides("platform.storage_options")]
    first = NoModelJob.init(job_id="s3twin", overrides=overrides)
    first.start(complete=False)  # running: holds the lease until complete()
    with pytest.raises(JobLockedError, match="Job 's3twin' is already running"):
        NoModelJob.init(job_id="s3twin", overrides=overrides).start()
    first.complete()
    assert not s3.fs().exists("bucket/p/jobs/s3twin/.lock")
    NoModelJob.init(job_id="s3twin", overrides=overrides).start()
    out = json.loads(s3.fs().cat_file("bucket/p/jobs/s3twin/artifacts/output.json"))
    assert out["status"] == "completed" and out["attempt"] == 2


# -- reruns after a kill -9 ---------------------------------------------------------------------
def test_rerun_removes_temp_files_left_by_a_killed_run(tmp_path, caplog):
    overrides = [f"platform.root={tmp_path}"]
    NoModelJob.init(job_id="tmpy", overrides=overrides).start()
    artifacts = tmp_path / "jobs" / "tmpy" / "artifacts"
    # what a kill -9 inside IoTools.write_file / upload leaves behind
    leftovers = [artifacts / ".output.json.k2j4h1.tmp", artifacts / "charts" / ".model.tar.gz.0f3a.tmp"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    (artifacts / "notes.tmp").write_text("a user's file")
    caplog.set_level(logging.INFO, logger="brevetti_pipe")
    NoModelJob.init(job_id="tmpy", overrides=overrides).start()
    assert not any(p.exists() for p in leftovers)
    assert (artifacts / "notes.tmp").exists(), "only the writer's own hidden temp files are removed"
    assert "Removed 2 temporary file(s) left by an interrupted run of job tmpy" in caplog.text


def test_progress_after_a_rerun_does_not_repeat_epochs(tmp_path):
    class Epochs(Job):
        crash = True

        def run(self):
            for epoch in (1, 2):
                self.report_progress(epoch, {"loss": 1.0 / epoch})
            if type(self).crash:
                raise RuntimeError("crashed after epoch 2")

    overrides = [f"platform.root={tmp_path}"]
    with pytest.raises(RuntimeError):
        Epochs.init(job_id="again", overrides=overrides).start()
    Epochs.crash = False
    Epochs.init(job_id="again", overrides=overrides).start()
    artifacts = tmp_path / "jobs" / "again" / "artifacts"
    epochs = [json.loads(ln)["epoch"] for ln in (artifacts / "progress.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    earlier = [json.loads(ln)["epoch"] for ln in (artifacts / "progress.attempt-1.jsonl").read_text().splitlines()]
    assert earlier == [1, 2], "the earlier attempt's epochs are kept aside, not lost"
    assert json.loads((artifacts / "output.json").read_text())["attempt"] == 2


# -- callback file options stay inside the artifacts --------------------------------------------
@pytest.mark.parametrize("override", ["callbacks.report.file={}/escaped.html", "callbacks.progress.file=../../p.jsonl"])
def test_callback_file_options_must_stay_in_the_artifacts(tmp_path, override):
    value = override.format(tmp_path)
    key = value.split("=", 1)[0]
    with pytest.raises(ConfigError, match=rf"^{key} must be a path inside the job's artifacts .*Received: {key}="):
        NoModelJob.init(job_id="bounds", overrides=[f"platform.root={tmp_path / 'p'}", value])
    assert not (tmp_path / "escaped.html").exists()


def test_read_only_root_fails_with_one_clear_line(tmp_path):
    root = tmp_path / "ro"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(root)], check=True)
    try:
        with pytest.raises(StorageError) as err:
            NoModelJob.init(job_id="ro", overrides=[f"platform.root={root}"]).start()
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
    assert "\n" not in str(err.value) and f"{root}/jobs/ro/.lock" in str(err.value)
    assert "Read-only file system" in str(err.value)
