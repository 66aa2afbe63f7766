"""Start-up: the cyclic garbage collector is paused while the command starts a job, and the objects the
Keras import made are frozen, so later full collections (each clear_session, training) skip them."""

from __future__ import annotations

import gc
import json
import textwrap
from pathlib import Path

import pytest

from brevetti_pipe._util import collector
from brevetti_pipe.cli import main
from tests.conftest import run_cli

STEP = '''
import gc, json, pathlib, sys
from brevetti_pipe import Job, JobSettings

class GcSettings(JobSettings):
    out: str = ""

class GcJob(Job):
    settings: GcSettings

def run(job: GcJob):
    # seed_frameworks (Keras imported) ran before the run step
    garbage = []
    garbage.append(garbage)  # a reference cycle made by the job: the collector must still find it
    del garbage
    found = gc.collect()
    pathlib.Path(job.settings.out).write_text(json.dumps({
        "keras": "keras" in sys.modules, "enabled": gc.isenabled(), "frozen": gc.get_freeze_count(),
        "collected": found}))
'''


def test_a_job_runs_with_the_collector_on_and_the_keras_import_frozen(tmp_path: Path, tiny_vials: Path) -> None:
    (tmp_path / "gcstep.py").write_text(textwrap.dedent(STEP))
    out = tmp_path / "gc.json"
    proc = run_cli("run=gcstep:run", "datasets=vials_demo", f"datasets.vials.url={tiny_vials}",
                   f"platform.root={tmp_path / 'root'}", "job.id=gc", f"settings.out={out}", "data.check_samples=false",
                   "~callbacks.report", "~callbacks.pivot", "~callbacks.facets", cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(out.read_text())
    assert seen["keras"] and seen["enabled"]
    assert seen["frozen"] > 100_000  # Keras and TensorFlow's module objects, out of every later collection
    assert seen["collected"] >= 1


def test_the_command_turns_the_collector_back_on_when_it_ends_without_a_job(capsys) -> None:
    assert gc.isenabled()
    with pytest.raises(SystemExit) as info:  # a bad flag: one line, exit code 2
        main(["-x"])
    assert info.value.code == 2
    assert "Unknown flag '-x'" in capsys.readouterr().err
    assert gc.isenabled()


def test_paused_restores_the_collector_after_an_error_and_pause_resume_nest_once() -> None:
    try:
        with collector.paused():
            assert not gc.isenabled()
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()
    collector.pause()
    collector.pause()  # a second pause before resume changes nothing
    assert not gc.isenabled()
    collector.resume()
    assert gc.isenabled()
    collector.resume()  # without a pause: nothing to undo
    assert gc.isenabled()
    gc.disable()
    try:  # a caller's choice stays
        collector.pause()
        collector.resume()
        with collector.paused(freeze=False):
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_only_the_command_pauses_the_collector_from_the_package_import(monkeypatch) -> None:
    for argv, paused in ((["python", "-m", "brevetti_pipe", "recipe=x"], True),
                         (["python", "/venv/bin/brevetti-pipe", "--help"], True),
                         (["python", "-m", "brevetti_pipe.cli.predict"], False),
                         (["python", "/venv/bin/brevetti-pipe-predict"], False),
                         (["python", "-m", "pytest", "brevetti_pipe"], False),
                         (["python", "-X", "importtime", "-m", "brevetti_pipe"], True),
                         (["python", "train.py", "-m", "brevetti_pipe"], False),  # a script's own arguments
                         (["python", "-c", "import brevetti_pipe", "-m", "brevetti_pipe"], False)):
        monkeypatch.setattr("sys.orig_argv", argv)
        collector.pause_for_command()
        try:
            assert gc.isenabled() is not paused, argv
        finally:
            collector.resume()
        assert gc.isenabled()
