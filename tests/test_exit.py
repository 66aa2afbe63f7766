"""The console command's quick exit: nothing a normal exit does that matters is skipped."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_cli

STEP = '''
import atexit, concurrent.futures, pathlib
import tensorflow as tf  # the quick exit applies once TensorFlow is loaded
from brevetti_pipe import Job, JobSettings

class ExitSettings(JobSettings):
    marker: str = ""
    fail: bool = False

class ExitJob(Job):
    settings: ExitSettings

def run(job: ExitJob):
    out = pathlib.Path(job.settings.marker)
    atexit.register(out.write_text, "atexit ran")  # a user's own exit handler
    pool = concurrent.futures.ThreadPoolExecutor(2)  # idle non-daemon workers: must not hang the exit
    assert pool.submit(lambda: 41 + 1).result() == 42
    for i in range(2000):  # more than a pipe's buffer: all of it must reach the reader
        print(f"line {i}", flush=False)
    if job.settings.fail:
        raise RuntimeError("the run step failed on purpose")
'''


@pytest.fixture(scope="module")
def step_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exitstep")
    (root / "exitstep.py").write_text(textwrap.dedent(STEP))
    return root


@pytest.mark.parametrize("fail", [False, True])
def test_the_quick_exit_keeps_the_exit_code_buffered_output_atexit_handlers_and_threads(step_dir, tiny_vials, fail):
    marker = step_dir / f"marker-{fail}"
    proc = run_cli("run=exitstep:run", "datasets=vials_demo", f"datasets.vials.url={tiny_vials}", f"platform.root={step_dir / str(fail)}",
                   "job.id=exit", f"settings.marker={marker}", f"settings.fail={fail}", "data.check_samples=false",
                   cwd=step_dir, timeout=240)
    assert proc.returncode == (1 if fail else 0), proc.stderr[-2000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("line ")]
    assert lines == [f"line {i}" for i in range(2000)]
    assert marker.read_text() == "atexit ran"
    output = json.loads((step_dir / str(fail) / "jobs" / "exit" / "artifacts" / "output.json").read_text())
    assert output["status"] == ("failed" if fail else "completed")


def test_output_that_cannot_be_written_is_an_error_not_a_success(tmp_path):
    # stdout on a full disk: the quick exit must not turn a lost output into exit code 0
    import os
    import subprocess
    import sys

    script = ("import tensorflow, sys\nfrom brevetti_pipe._util.exit import exit_after\n"
              "exit_after(lambda: print('x' * 100))\n")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-c", script], stdout=full, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": ""}, timeout=120)
    assert proc.returncode == 120, proc.stderr
    assert "could not write the output" in proc.stderr
