"""``run:`` names a user's own code: ``package.module:function`` / ``:JobSubclass`` from the working
directory, registered names; the run step's settings defaults are composed in (``settings.x=V``
without ``+``); bad values and a settings JSON naming code are one-line ConfigErrors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import Field

from brevetti_pipe import ConfigError, Job, JobSettings
from brevetti_pipe.config import parse_settings_json
from brevetti_pipe.run.recipe import RECIPES, as_recipe, resolve_run

PKG = "rs_userpkg"
STEPS = textwrap.dedent('''
    """A user's run steps."""
    from pydantic import Field

    from brevetti_pipe import Job, JobSettings, recipe


    class StepSettings(JobSettings):
        units: int = Field(8, ge=1, description="Hidden units")
        label: str = "x"


    class StepJob(Job):
        settings: StepSettings


    def run(job: StepJob):
        """A full run step."""
        job.add_output_metric("devel_units", job.settings.units)


    def build_model(job, input_shape, classes):
        return None


    class OwnJob(Job):
        settings: StepSettings

        def run(self):
            self.add_output_metric("devel_units", self.settings.units)


    class BareJob(Job):
        settings: StepSettings


    @recipe("rs_decorated", settings=StepSettings)
    def decorated(job):
        return None


    @recipe("rs_hinted")
    def hinted(job: StepJob):
        return None


    class ReqSettings(JobSettings):
        needed: int


    class ReqJob(Job):
        settings: ReqSettings

        def run(self):
            return None


    NOT_CALLABLE = 3


    class NotAJob:
        pass
''')


@pytest.fixture(scope="module")
def pkg_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding the user's package (not on sys.path)."""
    root = tmp_path_factory.mktemp("work")
    (root / PKG).mkdir()
    (root / PKG / "__init__.py").write_text("")
    (root / PKG / "steps.py").write_text(STEPS)
    (root / "configs" / "recipe").mkdir(parents=True)
    (root / "configs" / "recipe" / "mine.yaml").write_text("# @package _global_\nrun: rs_decorated\n")
    yield root
    RECIPES.unregister("rs_decorated")
    RECIPES.unregister("rs_hinted")
    for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
        sys.modules.pop(name)


@pytest.fixture()
def in_pkg_dir(pkg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(pkg_dir)
    return pkg_dir


def _root(tmp_path: Path) -> str:
    return f"platform.root={tmp_path / 'platform'}"


def test_every_form_resolves_from_the_working_directory_and_leaves_sys_path_alone(in_pkg_dir):
    before = list(sys.path)
    plain = resolve_run(f"{PKG}.steps:run")
    assert sys.path == before and str(in_pkg_dir) not in sys.path
    steps = sys.modules[f"{PKG}.steps"]
    assert (plain.kind, plain.settings, plain.job_class, plain.run) == ("run", steps.StepSettings, steps.StepJob, steps.run)
    assert plain.description == "A full run step."
    builder = resolve_run(f"{PKG}.steps:build_model")
    assert builder.kind == "builder" and builder.settings is JobSettings and builder.job_class is None
    own = resolve_run(f"{PKG}.steps:OwnJob")
    assert (own.kind, own.settings, own.job_class) == ("run", steps.StepSettings, steps.OwnJob)
    assert resolve_run(f"{PKG}.steps:decorated") is RECIPES.get("rs_decorated") is resolve_run("rs_decorated")
    hinted = resolve_run("rs_hinted")
    assert (hinted.settings, hinted.job_class, hinted.run) == (steps.StepSettings, steps.StepJob, steps.hinted)
    assert as_recipe("x", plain) is plain


def test_settings_override_without_plus_for_a_function_path(in_pkg_dir, tmp_path):
    job = Job.init(overrides=[f"run={PKG}.steps:run", "settings.units=5", _root(tmp_path)])
    steps = sys.modules[f"{PKG}.steps"]
    assert type(job) is steps.StepJob and isinstance(job.settings, steps.StepSettings)
    assert (job.settings.units, job.settings.label) == (5, "x")
    assert job.config.settings == {"units": 5, "label": "x"}


def test_settings_override_without_plus_for_a_recipe_name(in_pkg_dir, tmp_path):
    resolve_run(f"{PKG}.steps:decorated")  # importing the user's package registers rs_decorated
    job = Job.init(config_dir=in_pkg_dir / "configs", overrides=["recipe=mine", "settings.label=y", _root(tmp_path)])
    assert job.recipe is RECIPES.get("rs_decorated")
    assert (job.settings.units, job.settings.label) == (8, "y")


def test_run_names_a_job_subclass_which_job_init_builds(in_pkg_dir, tmp_path):
    job = Job.init(overrides=[f"run={PKG}.steps:OwnJob", "settings.units=3", _root(tmp_path)])
    assert type(job).__name__ == "OwnJob" and job.settings.units == 3


class MySettings(JobSettings):
    my_setting: int = Field(25, description="My own setting")


class MyJob(Job):
    settings: MySettings

    def run(self):
        return None


def test_job_subclass_init_takes_a_setting_without_plus(tmp_path):
    job = MyJob.init(overrides=["settings.my_setting=10", _root(tmp_path)])
    assert job.settings.my_setting == 10
    assert MyJob.init(overrides=["+settings.my_setting=11", _root(tmp_path)]).settings.my_setting == 11  # old spelling


def test_unknown_setting_is_refused_with_a_suggestion(in_pkg_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown key 'settings.unit'\. Did you mean 'units'\?"):
        Job.init(overrides=[f"run={PKG}.steps:run", "settings.unit=5", _root(tmp_path)])
    with pytest.raises(ConfigError, match=r"Unknown key 'settings.my_settin'.*Did you mean 'my_setting'\?"):
        MyJob.init(overrides=["settings.my_settin=10", _root(tmp_path)])


def test_a_setting_without_default_must_be_set(in_pkg_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"Missing required key 'settings.needed'"):
        Job.init(overrides=[f"run={PKG}.steps:ReqJob", _root(tmp_path)])
    assert Job.init(overrides=[f"run={PKG}.steps:ReqJob", "settings.needed=4", _root(tmp_path)]).settings.needed == 4


@pytest.mark.parametrize("value, message", [
    ("vials_clasification", r"Unknown recipe 'vials_clasification'.*Did you mean 'vials_classification'\?"),
    (f"{PKG}.steps:BareJob", r"BareJob does not override run\(\).*run='rs_userpkg.steps:BareJob'"),
    (f"{PKG}.steps:NotAJob", r"NotAJob is a class but not a brevetti_pipe Job subclass"),
    (f"{PKG}/steps.py", r"Invalid run step\. Received: run='rs_userpkg/steps.py'"),
    (f"{PKG}.steps:Job", r"The Job base class has no run step of its own"),
])
def test_bad_run_values(in_pkg_dir, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run(value)


def test_a_job_class_must_fit_the_class_that_builds_it(in_pkg_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"run names the Job class OwnJob, which is not a MyJob"):
        MyJob.init(overrides=[f"run={PKG}.steps:OwnJob", _root(tmp_path)])


def test_a_settings_json_setting_run_is_refused(tmp_path):
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"settings": {"epochs": 1}, "run": f"{PKG}.steps:run"}))
    with pytest.raises(ConfigError, match=r"Settings JSON .*job\.json' may not set 'run': it names code to run"):
        Job.init(overrides=["recipe=vials_classification", _root(tmp_path), f"job.settings_json={path}"])


@pytest.mark.parametrize("doc, message", [
    ({"pipeline": {"image": {"type": "rs_userpkg.steps:Stage"}}}, "may not name code in 'pipeline.image.type'"),
    ({"datasets": {"d": {"url": "x", "generator": "rs_userpkg.steps:make"}}}, "may not name code in 'datasets.d.generator'"),
    ({"settings": {"model": {"_target_": "os.system"}}}, "may not set 'settings.model._target_'"),
    ({"pipeline": {"image": {"type": "image_pipeline", "_target_": "os.system"}}}, "may not set 'pipeline.image._target_'"),
])
def test_a_settings_json_naming_code_anywhere_is_refused(doc, message):
    with pytest.raises(ConfigError, match=re.escape(f"Settings JSON 'mem://job.json' {message}")):
        parse_settings_json(json.dumps(doc).encode(), "mem://job.json")


#: Runs ``brevetti_pipe.cli.main`` on each argv in one process (``-P``: like the console script, the working
#: directory is not on sys.path), recording exit code, stdout and stderr, then whether TensorFlow was imported.
SESSION = textwrap.dedent("""
    import contextlib, io, json, sys
    from brevetti_pipe.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        out, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code
        results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
    print(json.dumps({"runs": results, "tensorflow": "tensorflow" in sys.modules}))
""")
BAD_VALUES = [
    ("rs_userpkg.nope:run", "Cannot import module 'rs_userpkg.nope' for the run step. Received: run='rs_userpkg.nope:run'"),
    ("rs_userpkg.steps:rn", "'rs_userpkg.steps' has no attribute 'rn'. Received: run='rs_userpkg.steps:rn'. Did you mean 'run'?"),
    ("rs_userpkg.steps:NOT_CALLABLE", "The run step is not callable: int 3. Received: run='rs_userpkg.steps:NOT_CALLABLE'"),
]


@pytest.fixture(scope="module")
def cli_session(pkg_dir: Path) -> dict:
    """``--cfg job`` with a user's run step, then each bad ``run=`` value, through the CLI in one process."""
    argvs = [[f"run={PKG}.steps:run", "settings.label=z", "--cfg", "job"],
             *([f"run={value}", "platform.root=unused"] for value, _ in BAD_VALUES)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    proc = subprocess.run([sys.executable, "-P", "-c", SESSION, json.dumps(argvs)], cwd=pkg_dir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(BAD_VALUES)))
def test_bad_run_values_on_the_command_line_are_one_line_with_exit_code_2(cli_session, index):
    run = cli_session["runs"][1 + index]
    assert run["code"] == 2, run
    lines = run["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("brevetti-pipe: error: "), run["err"]
    assert BAD_VALUES[index][1] in lines[0]


def test_cfg_job_shows_the_defaults_without_importing_tensorflow(cli_session):
    run = cli_session["runs"][0]
    assert run["code"] == 0, run["err"]
    assert "run: rs_userpkg.steps:run\nsettings:\n  units: 8\n  label: z\n" in run["out"]
    assert cli_session["tensorflow"] is False


def test_a_sweep_over_run_steps_drops_only_the_other_steps_untouched_defaults(in_pkg_dir, tmp_path):
    from brevetti_pipe.config import compose
    from brevetti_pipe.platform import resolve_config
    from brevetti_pipe.run._settings import prepare_settings

    # a --multirun sweep composes each of its runs with the defaults its first run step installed
    prepare_settings([f"run={PKG}.steps:run"])
    cfg, task, groups = compose([f"run={PKG}.steps:ReqJob", "+settings.needed=2", _root(tmp_path)])
    job = Job.from_config(resolve_config(cfg, task, groups))
    assert type(job).__name__ == "ReqJob" and job.settings.needed == 2 and job.config.settings == {"needed": 2}
    cfg, task, groups = compose([f"run={PKG}.steps:ReqJob", "+settings.needed=2", "settings.units=9", _root(tmp_path)])
    with pytest.raises(ConfigError, match=r"Unknown key 'settings.units'"):
        Job.from_config(resolve_config(cfg, task, groups))
