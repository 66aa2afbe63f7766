"""Golden files of every recipe's composed config (`--cfg job`).

Regenerate after an intended change with:  BREVETTI_PIPE_REGEN_GOLDEN=1 make test
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from brevetti_pipe._util.resources import config_dir
from tests.conftest import run_cli

GOLDEN = Path(__file__).parent / "golden"
RECIPES = sorted(p.stem for p in (config_dir() / "recipe").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_composed_recipe_config_matches_golden(tmp_path, recipe):
    proc = run_cli(f"recipe={recipe}", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    golden = GOLDEN / f"recipe_{recipe}.yaml"
    if os.environ.get("BREVETTI_PIPE_REGEN_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(proc.stdout)
    assert golden.exists(), f"no golden file {golden}; regenerate with BREVETTI_PIPE_REGEN_GOLDEN=1 make test"
    expected = golden.read_text()
    if proc.stdout != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), proc.stdout.splitlines(True), str(golden), "composed"))
        pytest.fail(f"composed config of recipe={recipe} differs from its golden file "
                    f"(BREVETTI_PIPE_REGEN_GOLDEN=1 make test to accept):\n{diff}")
