"""Sweeps with Hydra's launchers: every run completes in its own job, and sweep.csv lists them all."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import KERAS_ONLY, REPO, run_cli

#: no facets or pivot tables: these tests look at the runs, sweep.csv and sweep.html (which links each report)
BASE = ("recipe=vials_classification", "settings.epochs=1", "pipeline.image.target_size=[32,32]", KERAS_ONLY,
        "~callbacks.facets", "~callbacks.pivot")


def _sweep_dir(cwd: Path) -> Path:
    dirs = [p.parent for p in (cwd / "multirun").rglob("sweep.csv")]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _check_four_runs(tmp_path: Path, proc: subprocess.CompletedProcess[str]) -> pd.DataFrame:
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(_sweep_dir(tmp_path) / "sweep.csv")
    assert len(table) == 4 and (table.status == "completed").all(), table
    assert table.job_id.nunique() == 4
    assert table.devel_accuracy.between(0, 1).all() and table.devel_loss.notna().all()
    jobs = sorted((tmp_path / "p" / "jobs").iterdir())
    assert len(jobs) == 4 and all((j / "artifacts" / "output.json").exists() for j in jobs)
    assert sorted(p.name for p in jobs) == sorted(table.job_id)
    # one split per seed, shared by the runs of that seed
    assert len(list((tmp_path / "p" / "splits").glob("*.csv"))) == 2
    splits = {}
    for job in jobs:
        seed = pd.read_json(job / "artifacts" / "output.json", typ="series")["job"]["seed"]
        splits.setdefault(seed, set()).add((job / "artifacts" / "sample_identification.csv").read_text())
    assert all(len(v) == 1 for v in splits.values()) and len(splits) == 2
    return table


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_four_run_sweep(tmp_path, tiny_vials, launcher, request):
    args = [] if launcher == "basic" else [f"hydra/launcher={launcher}"]
    proc = run_cli("-m", *args, *BASE, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   "settings.batch_size=4,8", "job.seed=0,1", "hydra.callbacks.sweep_summary.sort_by=devel_accuracy",
                   cwd=tmp_path, timeout=600)
    table = _check_four_runs(tmp_path, proc)
    assert list(table.devel_accuracy) == sorted(table.devel_accuracy, reverse=True)
    if launcher == "basic":
        _check_sweep_page(_sweep_dir(tmp_path), table, request.getfixturevalue("browser"))


def _check_sweep_page(sweep: Path, table: pd.DataFrame, browser) -> None:
    """sweep.csv and sweep.html of the 2x2 sweep: a column per swept parameter, the constant overrides
    once above the table, one best run (lowest devel_loss: no sweep.objective, so the first metric), a
    chart per parameter and a working link to each run's report."""
    from tests.browser import open_offline, save_screenshot

    assert sorted(zip(table["settings.batch_size"], table["job.seed"])) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert table.duration_s.gt(0).all()
    assert table.best.sum() == 1 and table.devel_loss[table.best].item() == table.devel_loss.min()
    open_offline(browser, sweep / "sweep.html")
    assert browser.evaluate("[...document.querySelectorAll('#runs th.param')].map(t => t.textContent)") == \
        ["settings.batch_size", "job.seed"]
    assert browser.evaluate("document.querySelectorAll('#runs tr.best').length") == 1
    best_run = browser.evaluate("document.querySelector('#runs tr.best td').textContent")
    assert best_run.split()[0] == str(table.run[table.best].item())
    assert browser.evaluate("document.querySelector('#runs tr.best td:nth-child(2)').textContent") == \
        str(table["settings.batch_size"][table.best].item())
    constant = browser.evaluate("document.getElementById('constant').textContent")
    assert "settings.epochs=1" in constant and "recipe=vials_classification" in constant
    assert "settings.epochs" not in browser.evaluate("document.getElementById('runs').textContent")
    assert browser.evaluate("document.querySelectorAll('#charts svg').length") == 2
    assert "devel_loss" in browser.evaluate("document.querySelector('#charts svg').textContent")
    hrefs = browser.evaluate("[...document.querySelectorAll('#runs a')].map(a => a.getAttribute('href'))")
    assert len(hrefs) == 4 and all((sweep / h).is_file() for h in hrefs)
    save_screenshot(browser, "sweep")


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="the ray extra is not installed (pip install brevetti_pipe[ray])")
def test_ray_launcher_on_a_local_ray_instance(request, tmp_path, tiny_vials):
    import shutil
    import tempfile

    home = tmp_path / "home"
    home.mkdir()
    raytmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets need a short path (<108 bytes)
    request.addfinalizer(lambda: shutil.rmtree(raytmp, ignore_errors=True))
    proc = run_cli("-m", "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                   "+hydra.launcher.ray.init.include_dashboard=false", *BASE, f"platform.root={tmp_path / 'p'}",
                   f"datasets.vials.url={tiny_vials}", "settings.batch_size=4,8", "job.seed=0,1",
                   cwd=tmp_path, env={"HOME": str(home), "RAY_TMPDIR": raytmp}, timeout=600)
    _check_four_runs(tmp_path, proc)


def test_failed_run_is_marked_and_the_others_complete(tmp_path, tiny_vials):
    # user configs name the summary callback brevetti_pipe.sweep.SweepSummary; that name still works
    proc = run_cli("-m", *BASE, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   "settings.learning_rate=0.001,-1",
                   "hydra.callbacks.sweep_summary._target_=brevetti_pipe.sweep.SweepSummary", cwd=tmp_path, timeout=600)
    assert proc.returncode == 1
    assert "1 of 2 runs failed" in proc.stderr
    table = pd.read_csv(_sweep_dir(tmp_path) / "sweep.csv")
    assert list(table.status) == ["completed", "failed"]
    assert "settings.learning_rate" in table.error[1]
    assert "sweep.html" in os.listdir(_sweep_dir(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
                    reason="the optuna extra is not installed (pip install brevetti_pipe[optuna])")
def test_tiny_optuna_search(tmp_path, tiny_vials):
    proc = run_cli("-m", "hydra/sweeper=optuna", "sweep.objective=devel_accuracy", "hydra.sweeper.n_trials=3",
                   "hydra.sweeper.direction=maximize", "hydra.sweeper.sampler.seed=0",
                   "settings.learning_rate=interval(0.001,0.01)", *BASE, f"platform.root={tmp_path / 'p'}",
                   f"datasets.vials.url={tiny_vials}", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = (_sweep_dir(tmp_path) / "optimization_results.yaml").read_text()
    assert "best_params" in results and "settings.learning_rate" in results
    assert len(pd.read_csv(_sweep_dir(tmp_path) / "sweep.csv")) == 3


def test_summary_command_rebuilds_a_sweep(tmp_path, tiny_vials):
    proc = run_cli("-m", *BASE, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={tiny_vials}",
                   "settings.batch_size=4,8", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    (sweep / "sweep.csv").unlink()
    (sweep / "sweep.html").unlink()
    summary = subprocess.run([sys.executable, "-c", "from brevetti_pipe.cli.sweep import main; main()", str(sweep),
                              "--sort-by", "devel_loss", "--ascending"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert summary.returncode == 0, summary.stderr
    table = pd.read_csv(sweep / "sweep.csv")
    assert len(table) == 2 and list(table.devel_loss) == sorted(table.devel_loss)
