"""What a user's terminal shows: no TensorFlow start-up noise by default (all of it with --verbose),
INFO lines in a notebook-like session, progress bars only on a terminal; and one tree to look in:
Hydra's run folder and the job's artifacts point at each other, for single runs and sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brevetti_pipe._util.console import NOISE

NOISE_MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "triggered tf.function retracing")


def _cli(*args: str, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "HYDRA_FULL_ERROR")}
    env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return subprocess.run([sys.executable, "-m", "brevetti_pipe", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_vials):
    """A 3-run sweep of the vials recipe (1 epoch, 16 px) with MLflow tracking, run as a user would."""
    cwd = tmp_path_factory.mktemp("sweep")
    proc = _cli("-m", "recipe=vials_classification", "settings.epochs=1", "settings.batch_size=8",
                "pipeline.image.target_size=[16,16]", "job.seed=0,1,2", f"platform.root={cwd / 'p'}",
                f"datasets.vials.url={tiny_vials}", "+callbacks@callbacks.mlflow=mlflow", "export.formats=[keras]",
                "~callbacks.facets", "~callbacks.pivot", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_default_console_has_no_tensorflow_startup_lines(sweep):
    _, proc = sweep
    found = [m for m in NOISE_MARKERS if m in proc.stderr]
    assert not found, f"TensorFlow noise on the console: {found}\n{proc.stderr[-3000:]}"
    assert proc.stderr.count("Job ") >= 3  # our own log lines still show


def test_verbose_shows_tensorflow_startup_lines_and_a_single_run_links_hydra_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("recipe=vials_classification", f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={empty}",
                "datasets.vials.generator=null",
                "--verbose", cwd=tmp_path)
    assert proc.returncode == 1
    assert "absl::InitializeLog" in proc.stderr and "oneDNN custom operations are on" in proc.stderr
    [link] = list((tmp_path / "outputs").glob("*/*/job.json"))
    doc = json.loads(link.read_text())
    out = json.loads(Path(doc["output"]).read_text())
    assert out["status"] == "failed" and out["job"]["id"] == doc["job_id"]
    assert out["hydra_dir"] == str(link.parent) == doc["hydra_dir"]
    assert Path(doc["artifacts"]) == tmp_path / "p" / "jobs" / doc["job_id"] / "artifacts"


def test_sweep_runs_link_hydra_folders_and_artifacts(sweep):
    cwd, _ = sweep
    links = sorted(cwd.glob("multirun/*/*/*/job.json"))
    assert [p.parent.name for p in links] == ["0", "1", "2"]
    ids = set()
    for link in links:
        doc = json.loads(link.read_text())
        out = json.loads(Path(doc["output"]).read_text())
        assert out["status"] == "completed" and out["hydra_dir"] == str(link.parent)
        ids.add(doc["job_id"])
    assert len(ids) == 3


def test_sweep_is_one_mlflow_parent_run_with_three_children(sweep):
    import mlflow

    cwd, _ = sweep
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(f"file://{cwd / 'p' / 'mlruns'}")
    runs = mlflow.search_runs(experiment_names=["vials_classification"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parents) == 1 and len(runs) == 4
    children = runs[runs["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]]
    assert sorted(children["tags.brevetti_pipe.sweep_job"]) == ["0", "1", "2"]
    assert set(children["status"]) == {"FINISHED"}
    assert sorted(children["params.job.seed"]) == ["0", "1", "2"]
    assert children["metrics.devel_accuracy"].notna().all()


def test_notebook_session_shows_info_lines_once_and_can_remove_them(tmp_path, tiny_vials):
    script = textwrap.dedent(f"""
        import logging
        from brevetti_pipe import Job, show_logs

        class Listing(Job):
            def run(self):
                self.get_samples()

        job = Listing.init(overrides=["+datasets.vials.url={tiny_vials}", "platform.root={tmp_path / 'p'}",
                                      "~callbacks.facets"])  # no thumbnails: this session never needs TensorFlow
        Listing.init(overrides=["+datasets.vials.url={tiny_vials}", "platform.root={tmp_path / 'p'}"])
        job.start()
        logger = logging.getLogger("brevetti_pipe")
        print("handlers", len(logger.handlers))
        show_logs(False)
        print("handlers", len(logger.handlers))
        logger.info("after removal")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("INFO brevetti_pipe.data._samples: Getting image samples from dataset 'vials'") == 1
    assert "Job " in proc.stderr and "after removal" not in proc.stderr
    assert proc.stdout.split() == ["handlers", "1", "handlers", "0"]


def test_no_notebook_handler_when_logging_is_configured(tmp_path):
    script = textwrap.dedent("""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from brevetti_pipe import show_logs
        print(show_logs(), len(logging.getLogger("brevetti_pipe").handlers))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["None", "0"], proc.stderr


def test_noise_filter_drops_only_startup_lines_written_to_fd2():
    script = textwrap.dedent("""
        import os
        from brevetti_pipe._util.console import filtered_stderr
        with filtered_stderr():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
            os.write(2, b"I0000 00:00:1796214782.412569    8411 port.cc:153] oneDNN custom operations are on.\\n")
            os.write(2, b"keep me\\n")
            os.write(2, b"W0000 00:00:1796214782.412569    8411 other.cc:1] keep me too\\npartial")
        os.write(2, b"|after\\n")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.stderr.decode().splitlines() == [
        "keep me", "W0000 00:00:1796214782.412569    8411 other.cc:1] keep me too", "partial|after",
    ]
    assert all(p.pattern for p in NOISE)


def test_progress_bars_draw_on_a_terminal_only(tmp_path):
    from brevetti_pipe._util.progress import ProgressBar, progress

    import fcntl
    import select
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal of 100 columns
    with os.fdopen(slave, "w") as tty:
        with ProgressBar(3, "Checking samples", stream=tty) as bar:
            bar.update(3)
        drawn = ""
        while select.select([master], [], [], 2)[0]:
            drawn += os.read(master, 65536).decode()
            if drawn.endswith("\r"):
                break
    os.close(master)
    assert "Checking samples:" in drawn and "/3 [" in drawn
    with open(tmp_path / "log.txt", "w") as log_file:
        assert list(progress([1, 2], "Hashing", stream=log_file)) == [1, 2]
    assert (tmp_path / "log.txt").read_text() == ""


def test_retracing_warnings_of_repeated_calls_are_dropped_unless_verbose():
    import logging

    import tensorflow as tf

    from brevetti_pipe._util.console import quiet_tensorflow

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    def retrace() -> list[str]:
        collect = Collect()
        tf.get_logger().addHandler(collect)
        try:
            @tf.function
            def add(x, n):
                return x + n

            for n in range(6):  # a new Python value each call: a new trace each call (TF warns from the 5th)
                add(tf.constant(1.0), n)
        finally:
            tf.get_logger().removeHandler(collect)
        return [m for m in collect.messages if "retracing" in m]

    try:
        assert quiet_tensorflow(verbose=True) is False
        assert retrace(), "TensorFlow warns about retracing (else this test proves nothing)"
        assert quiet_tensorflow() is True
        assert retrace() == []
    finally:
        quiet_tensorflow()


def test_a_run_module_importing_keras_at_the_top_prints_no_startup_lines(tmp_path):
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "b.py").write_text(textwrap.dedent("""\
        import keras

        def ok(job, input_shape, classes):
            inputs = keras.Input(input_shape)
            x = keras.layers.GlobalAveragePooling2D()(inputs)
            return keras.Model(inputs, keras.layers.Dense(len(classes), activation="softmax")(x))
        """))
    proc = _cli("recipe=vials_classification", "run=userpkg.b:ok", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = [m for m in NOISE_MARKERS if m in proc.stderr]
    assert not found, f"TensorFlow noise on the console: {found}\n{proc.stderr[-3000:]}"
    assert "userpkg.b:ok" in proc.stdout
