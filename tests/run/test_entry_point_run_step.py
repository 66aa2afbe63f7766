"""An installed package's entry points in group ``brevetti_pipe.recipes`` are run steps: a decorated
function, a plain ``run(job)``, a model builder, a ``Job`` subclass. The package is built and installed
by pip (real dist-info, real entry points) into a folder the CLI finds through ``PYTHONPATH``."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brevetti_pipe.run.recipe import RECIPES

PYPROJECT = textwrap.dedent('''
    [build-system]
    requires = ["setuptools"]
    build-backend = "setuptools.build_meta"

    [project]
    name = "ep-steps"
    version = "0.1.0"

    [tool.setuptools]
    packages = ["ep_steps"]

    [project.entry-points."brevetti_pipe.recipes"]
    ep_plain = "ep_steps.steps:run"
    ep_job = "ep_steps.steps:EpJob"
    ep_decorated = "ep_steps.steps:decorated"
    ep_builder = "ep_steps.steps:build_model"
''')
STEPS = textwrap.dedent('''
    from pydantic import Field

    from brevetti_pipe import Job, JobSettings, recipe


    class EpSettings(JobSettings):
        level: int = Field(2, ge=0, description="A level")


    class EpJob(Job):
        settings: EpSettings

        def run(self):
            self.add_output_metric("devel_level", self.settings.level)


    class Plain(Job):
        settings: EpSettings


    def run(job: Plain):
        job.add_output_metric("devel_level", job.settings.level)


    @recipe("ep_decorated", settings=EpSettings)
    def decorated(job):
        return None


    def build_model(job, input_shape, classes):
        return None
''')
NAMES = ("ep_plain", "ep_job", "ep_decorated", "ep_builder")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, installed by pip into its own folder."""
    tmp = tmp_path_factory.mktemp("ep")
    src = tmp / "src"
    (src / "ep_steps").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "ep_steps" / "__init__.py").write_text("")
    (src / "ep_steps" / "steps.py").write_text(STEPS)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(tmp / "site"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp / "site").glob("ep_steps-0.1.0.dist-info/entry_points.txt"))
    return tmp / "site"


@pytest.fixture()
def installed(site: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    for name in NAMES:
        RECIPES.unregister(name)
    for module in [m for m in sys.modules if m == "ep_steps" or m.startswith("ep_steps.")]:
        sys.modules.pop(module)


def test_every_entry_point_form_is_a_recipe(installed):
    plain, job, decorated, builder = (RECIPES.get(n, where="run") for n in NAMES)
    steps = sys.modules["ep_steps.steps"]
    assert (plain.name, plain.kind, plain.settings, plain.job_class) == ("ep_plain", "run", steps.EpSettings, steps.Plain)
    assert (job.kind, job.settings, job.job_class) == ("run", steps.EpSettings, steps.EpJob)
    assert (decorated.kind, decorated.settings, decorated.run) == ("run", steps.EpSettings, steps.decorated)
    assert (builder.name, builder.kind, builder.run) == ("ep_builder", "builder", steps.build_model)


def _cli(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("HYDRA_FULL_ERROR", None)
    exe = str(Path(sys.executable).parent / "brevetti-pipe")
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_an_entry_point_job_runs_from_the_command_line(site, tmp_path):
    proc = _cli("run=ep_job", "settings.level=5", f"platform.root={tmp_path}", "job.id=ep1", site=site, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "jobs" / "ep1" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["metrics"] == {"devel_level": 5}
    assert out["job"]["run"] == "ep_job" and out["settings"] == {"level": 5}


def test_an_entry_point_named_in_a_users_recipe_file_gets_its_settings_defaults(installed, tmp_path):
    from brevetti_pipe import Job

    (tmp_path / "mine" / "recipe").mkdir(parents=True)
    (tmp_path / "mine" / "recipe" / "epmine.yaml").write_text("# @package _global_\nrun: ep_decorated\n")
    job = Job.init(config_dir=tmp_path / "mine", overrides=["recipe=epmine", f"platform.root={tmp_path}"])
    assert job.recipe is RECIPES.get("ep_decorated") and job.config.settings == {"level": 2}
    job = Job.init(config_dir=tmp_path / "mine", overrides=["recipe=epmine", "settings.level=7", f"platform.root={tmp_path}"])
    assert job.settings.level == 7
