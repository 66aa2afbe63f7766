"""Nothing lost after training, one owner per job id, callbacks that cannot clobber, progress that cannot hold training."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from brevetti_pipe import ConfigError, Job, StorageError
from brevetti_pipe.errors import JobLockedError
from tests.conftest import TINY_ARGS
from tests.reliability.test_trust_lifecycle import _child as _twin_child
from tests.reliability.test_trust_lifecycle import _failing, _s3_overrides
from tests.servers import FaultProxy


class NoModelJob(Job):
    def run(self):
        return None


# -- a failed write after training never loses the trained model ---------------------------------
def test_store_failing_at_the_end_of_training_keeps_the_model_and_a_rerun_uploads_it(
        s3, tiny_vials, failed_job_keeps_here):
    with FaultProxy(s3.endpoint, 0.0) as proxy:

        class StoreDiesAfterFit(Job):
            def get_remote_monitor(self):
                monitor = super().get_remote_monitor()
                trained = monitor.on_train_end

                def on_train_end(logs=None):
                    trained(logs)
                    proxy.fail_rate = 1.0  # every request from now on: 503 or a dropped connection

                monitor.on_train_end = on_train_end
                return monitor

        overrides = [*TINY_ARGS, "settings.epochs=2", f"datasets.vials.url={tiny_vials}", *_s3_overrides(proxy.endpoint)]
        job = _failing(StoreDiesAfterFit.init(job_id="ep1", overrides=overrides))
        with pytest.raises(StorageError) as err:
            job.start()
        message = str(err.value)
        assert f"The trained model is kept at {job.kept_model}; rerun job.id=ep1 to upload it" in message, message
        kept = Path(job.kept_model)
        assert kept.is_file() and kept.is_relative_to(failed_job_keeps_here)
        with tarfile.open(kept) as tar:
            assert "model.keras" in tar.getnames()
        archive = kept.read_bytes()
    # the store is back (straight, not through the proxy, which writes given up on may still be retrying through)
    NoModelJob.init(job_id="ep1", overrides=_s3_overrides(s3.endpoint)).start()
    fs = s3.fs()
    assert fs.cat_file("bucket/p/jobs/ep1/artifacts/model.tar.gz") == archive
    out = json.loads(fs.cat_file("bucket/p/jobs/ep1/artifacts/output.json"))
    assert out["status"] == "completed" and out["model_path"] == "model.tar.gz" and out["attempt"] == 2


def test_output_json_failing_from_the_run_step_on_still_uploads_the_model(s3, failed_job_keeps_here, caplog):
    with FaultProxy(s3.endpoint, 0.0) as proxy:

        class Trains(Job):
            def run(self):
                proxy.fail_put_key = "jobs/ojs/artifacts/output.json"
                folder = Path(self.temp_path("trained", dir=True))
                (folder / "weights.bin").write_bytes(b"trained weights")
                self.add_output_metrics({"devel_loss": 0.25, "devel_accuracy": 0.75})  # after fit, as the recipes do
                return str(folder)

        caplog.set_level(logging.WARNING, logger="brevetti_pipe")
        with pytest.raises(StorageError, match="The final output.json is kept at"):
            _failing(Trains.init(job_id="ojs", overrides=_s3_overrides(proxy.endpoint))).start()
    assert caplog.text.count("Could not update output.json") == 1
    with tarfile.open(fileobj=s3.fs().open("bucket/p/jobs/ojs/artifacts/model.tar.gz")) as tar:
        assert tar.extractfile("trained/weights.bin").read() == b"trained weights"
    kept = json.loads(next(failed_job_keeps_here.glob("ojs-*/output.json")).read_text())
    assert kept["model_path"] == "model.tar.gz" and kept["metrics"] == {"devel_loss": 0.25, "devel_accuracy": 0.75}


def test_a_non_finite_metric_is_recorded_as_null_with_a_warning(tmp_path, caplog):
    class Diverged(Job):
        def run(self):
            self.report_progress(1, {"loss": float("nan"), "accuracy": 0.5})
            self.add_output_metrics({"devel_loss": float("nan"), "devel_accuracy": 0.5})
            return None

    caplog.set_level(logging.WARNING, logger="brevetti_pipe")
    Diverged.init(job_id="nan", overrides=[f"platform.root={tmp_path}"]).start()
    out = json.loads((tmp_path / "jobs" / "nan" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_loss": None, "devel_accuracy": 0.5}
    assert "Metric 'devel_loss' is not finite (nan); output.json records it as null" in caplog.text
    assert "Callback 'report' failed" not in caplog.text and "Callback 'progress' failed" not in caplog.text
    progress = (tmp_path / "jobs" / "nan" / "artifacts" / "progress.jsonl").read_text()
    assert json.loads(progress) == {"epoch": 1, "loss": None, "accuracy": 0.5}
    assert "null" in (tmp_path / "jobs" / "nan" / "artifacts" / "report.html").read_text()


# -- callback files may not name the job's own artifacts nor each other's -----------------------
@pytest.mark.parametrize(("override", "taken"), [
    ("callbacks.report.file=model.tar.gz", "the model archive"),
    ("callbacks.progress.file=output.json", "the job's output.json"),
    ("callbacks.report.file=sample_identification.csv", "the split"),
    ("callbacks.report.file=bad_samples.csv", "skipped samples"),
    ("callbacks.report.file=progress.jsonl", "the file of callbacks.progress"),
    ("callbacks.report.file=progress.attempt-1.jsonl", "the file of callbacks.progress"),
    ("callbacks.progress.file=.lock", "hidden name"),
    ("callbacks.report.file=charts/report.html", "the charts folder"),
])
def test_callback_files_may_not_name_the_jobs_own_artifacts(tmp_path, override, taken):
    key, value = override.split("=", 1)
    with pytest.raises(ConfigError) as err:
        NoModelJob.init(job_id="clash", overrides=[f"platform.root={tmp_path}", override])
    message = str(err.value)
    assert message.startswith(f"{key} names a file the job already writes: ") and taken in message, message
    assert f"Received: {key}='{value}'" in message and "\n" not in message
    assert not (tmp_path / "jobs").exists(), "refused before the job starts"


# -- one owner per job id -----------------------------------------------------------------------
def _child(root: Path, who: int) -> subprocess.Popen[str]:
    return _twin_child(root, who, job_id="exp1")


def test_a_live_owner_on_this_host_keeps_its_lock_after_its_lease_expired(tmp_path):
    first = _child(tmp_path, 1)
    try:
        assert first.stdout.readline().strip() == "running", first.stderr.read()
        lock = tmp_path / "jobs" / "exp1" / ".lock"
        held = json.loads(lock.read_text())
        lock.write_text(json.dumps({**held, "expires_at": time.time() - 120}))  # what a minute of failed renewals leaves
        second = _child(tmp_path, 2)
        _, err = second.communicate("\n", timeout=120)
        assert second.returncode != 0 and "Taking over" not in err, err[-2000:]
        assert f"JobLockedError: Job 'exp1' is already running (pid {first.pid} on {socket.gethostname()}" in err, err[-2000:]
        first.stdin.write("\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    out = json.loads((tmp_path / "jobs" / "exp1" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_who": 1}


@pytest.mark.usefixtures("failed_job_keeps_here")
def test_an_owner_that_lost_its_lock_stops_before_its_final_writes(tmp_path):
    lock = tmp_path / "jobs" / "lost" / ".lock"

    class LosesItsLock(Job):
        def run(self):
            taken = {**json.loads(lock.read_text()), "token": "another-run", "pid": 1, "host": "elsewhere"}
            lock.write_text(json.dumps(taken))  # another run took the lock over
            folder = Path(self.temp_path("trained", dir=True))
            (folder / "weights.bin").write_bytes(b"weights")
            return str(folder)

    with pytest.raises(JobLockedError, match=r"^Job 'lost' lost its lock .* to another run \(pid 1 on elsewhere\)"):
        LosesItsLock.init(job_id="lost", overrides=[f"platform.root={tmp_path}"]).start()
    artifacts = tmp_path / "jobs" / "lost" / "artifacts"
    assert not (artifacts / "model.tar.gz").exists(), "the new owner's artifacts are not overwritten"
    assert json.loads((artifacts / "output.json").read_text())["status"] == "running", "left to the new owner"
    assert json.loads(lock.read_text())["token"] == "another-run", "the new owner's lock stays"


# -- a hung progress endpoint does not hold training --------------------------------------------
class Epochs(Job):
    epochs = 4
    hook = None
    after_first = None  # called once epoch 1 is reported (outside the timed part)

    def run(self):
        self.epoch_seconds = []
        for epoch in range(1, self.epochs + 1):
            start = time.monotonic()
            self.report_progress(epoch, {"loss": 1.0 / epoch})
            self.epoch_seconds.append(time.monotonic() - start)
            if epoch == 1 and type(self).after_first:
                type(self).after_first()
        if type(self).hook:
            type(self).hook()
        return None


def test_a_hung_progress_endpoint_costs_no_time_per_epoch(tmp_path, caplog):
    # the same job without a progress URL, on this machine now: what the job costs besides the endpoint
    start = time.monotonic()
    Epochs.init(job_id="unhung", overrides=[f"platform.root={tmp_path}"]).start()
    baseline = time.monotonic() - start
    with socket.socket() as hung:  # accepts connections (the kernel's backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/progress"
        overrides = [f"platform.root={tmp_path}", f"callbacks.progress.url={url}", "callbacks.progress.timeout=1"]
        caplog.set_level(logging.WARNING, logger="brevetti_pipe")
        job = Epochs.init(job_id="hung", overrides=overrides)
        start = time.monotonic()
        job.start()
        elapsed = time.monotonic() - start
    assert max(job.epoch_seconds) < 0.9, job.epoch_seconds  # one POST attempt alone would take the 1 s timeout
    # four epochs waiting on their POSTs would add at least 4 s; the end waits for one 1 s attempt at most
    assert elapsed - baseline < 3, f"the job took {elapsed:.1f}s, {baseline:.1f}s without a progress URL"
    assert "Progress POST to" in caplog.text or "did not finish within 1s" in caplog.text
    lines = (tmp_path / "jobs" / "hung" / "artifacts" / "progress.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3, 4]


def test_progress_posts_the_newest_epoch_and_the_last_one_arrives(tmp_path):
    received: list[int] = []
    release, first_in = threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body["epoch"])
            first_in.set()
            release.wait(30)  # the first POST hangs until the run step has reported every epoch
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/p"
        Epochs.hook = release.set
        Epochs.after_first = lambda: first_in.wait(30)  # epoch 1 is in flight before epochs 2-4 are reported
        job = Epochs.init(job_id="newest", overrides=[f"platform.root={tmp_path}", f"callbacks.progress.url={url}"])
        job.start()
    finally:
        Epochs.hook = Epochs.after_first = None
        server.shutdown()
        server.server_close()
    assert max(job.epoch_seconds) < 0.9, job.epoch_seconds  # one POST attempt alone would take the 1 s timeout
    assert received == [1, 4], "epochs 2 and 3 were replaced by the newest while epoch 1 was in flight"


@pytest.mark.usefixtures("failed_job_keeps_here")  # the kept.json of the failed child
def test_a_job_that_never_runs_leaves_no_scratch_folder_behind(tmp_path):
    """``Job.init`` in a notebook or a script that only reads data makes a scratch folder (the cache of
    remote files lives there): it goes when the interpreter exits. A job whose run decides (a failed
    trained job keeps its folder for its next run) is left to that decision."""
    import shutil
    import sys

    def child(job_id: str, then: str = "") -> str:
        code = (f"from brevetti_pipe import Job\njob = Job.init(job_id={job_id!r}, overrides=['platform.root={tmp_path}'])\n"
                f"print(job.temp_dir)\n{then}")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    reader = child("reader")
    assert "brevetti-pipe-job-reader-" in reader
    assert not Path(reader).exists()
    # a trained job that failed keeps its folder for its next run, also when it was completed without start()
    kept = child("kept", "from brevetti_pipe.run import lifecycle\njob.status, job.trained = 'failed', True\n"
                         "lifecycle.end(job)\n")
    assert "brevetti-pipe-job-kept-" in kept and Path(kept).is_dir()
    shutil.rmtree(kept)
    # a job inspected after its run (a notebook reading data again) makes the folder anew: gone at exit too
    again = child("again", "job.scratch.run_owns()\njob.scratch.remove()\nprint(job.temp_dir)\n").split()
    assert again[0] == again[1] and not Path(again[1]).exists()
