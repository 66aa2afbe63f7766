"""An installed wheel finds its configs and recipes without the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import yaml

from tests.conftest import REPO


def test_wheel_ships_configs_and_recipes(tmp_path):
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("brevetti_pipe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    package = REPO / "brevetti_pipe"
    modules = sorted(f"brevetti_pipe/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py"))
    assert [m for m in modules if m not in names] == [], "every module of the checkout ships in the wheel"
    assert "brevetti_pipe/_configs/config.yaml" in names
    assert "brevetti_pipe/_configs/recipe/vials_classification.yaml" in names
    assert "brevetti_pipe/recipes/vials_classification.py" in names
    for template in ("report.html.j2", "sweep.html.j2", "_style.css"):
        assert f"brevetti_pipe/reporting/templates/{template}" in names, template
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True, timeout=300)
    # Run from an unrelated directory with only the installed copy on the path (deps from this env).
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import brevetti_pipe, sys; from brevetti_pipe.cli import main; print(brevetti_pipe.__file__, file=sys.stderr); main()"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}", "recipe=vials_classification", "--cfg", "job"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(target) in proc.stderr, "the installed copy, not the checkout, must be imported"
    assert yaml.safe_load(proc.stdout)["run"] == "vials_classification"
    # every module imports from the installed copy alone (a package left out of the wheel fails here)
    walk = ("import importlib, pkgutil, brevetti_pipe; "
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(brevetti_pipe.__path__, 'brevetti_pipe.')]")
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {walk}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the report's templates and style sheet are found in the installed package
    render = ("import sys, brevetti_pipe.reporting._report as r; assert r.__file__.startswith(sys.argv[1]), r.__file__; "
              "page = r.render_report(sys.argv[2]); assert 'Content-Security-Policy' in page and '--line:' in page; "
              "print(len(page))")
    (tmp_path / "artifacts").mkdir()
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {render}",
                           str(target), str(tmp_path / "artifacts")], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
