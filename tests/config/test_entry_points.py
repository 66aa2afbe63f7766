"""Installed packages add recipes, stages and callbacks through entry points (a real distribution on sys.path)."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from brevetti_pipe.reporting import CALLBACKS
from brevetti_pipe.run.recipe import RECIPES
from brevetti_pipe.stages import STAGES

PLUGIN = textwrap.dedent('''
    from brevetti_pipe import recipe
    from brevetti_pipe.reporting import JobCallback
    from brevetti_pipe.stages import Stage


    class Invert(Stage, name="ep_invert"):
        def __call__(self, x, seed=None):
            return {**x, "img": 1.0 - x["img"]}


    class Ping(JobCallback):
        pass


    def run(job):
        """Trains nothing."""
        return None
''')

ENTRY_POINTS = textwrap.dedent('''
    [brevetti_pipe.recipes]
    ep_recipe = ep_plugin:run

    [brevetti_pipe.stages]
    ep_invert = ep_plugin:Invert

    [brevetti_pipe.callbacks]
    ep_ping = ep_plugin:Ping
''')


@pytest.fixture()
def installed_plugin(tmp_path, monkeypatch):
    """A tiny distribution (module + .dist-info with entry_points.txt), as pip would lay it out."""
    (tmp_path / "ep_plugin.py").write_text(PLUGIN)
    info = tmp_path / "ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield
    for registry, name in ((RECIPES, "ep_recipe"), (STAGES, "ep_invert"), (CALLBACKS, "ep_ping")):
        registry.unregister(name)
    sys.modules.pop("ep_plugin", None)


def test_entry_points_register_recipes_stages_and_callbacks(installed_plugin):
    assert STAGES.get("ep_invert").__module__ == "ep_plugin"
    assert CALLBACKS.get("ep_ping").__name__ == "Ping"
    found = RECIPES.get("ep_recipe", where="run")
    assert found.name == "ep_recipe" and found.description == "Trains nothing."


def test_a_job_runs_a_recipe_from_an_entry_point(installed_plugin, tmp_path):
    from brevetti_pipe import Job

    job = Job.init(job_id="ep", overrides=["run=ep_recipe", f"platform.root={tmp_path / 'platform'}"])
    assert job.recipe is not None and job.recipe.name == "ep_recipe"
    assert job.start() is None and job.status == "completed"
