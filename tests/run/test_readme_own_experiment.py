"""The README's "Your own experiment" example runs as written: a user package and a recipe in a
``--config-dir``, ``run: userpkg.train:run`` (a full run step), through the console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.conftest import REPO


def _example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Your own experiment\n"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"<!-- test: run -->\n```bash\n(.*?)\n```\n", section, re.S)
    assert len(blocks) == 1, "the section holds one runnable example"
    return blocks[0]


def test_readme_own_experiment_runs_end_to_end(tmp_path: Path) -> None:
    scripts = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)  # userpkg is found in the working directory, as for a user
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(["bash", "-e", "-c", _example()], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # --cfg job lists the run step's settings with their defaults (the recipe file sets none of them)
    assert "settings:\n  epochs: 3\n  units: 8" in proc.stdout
    artifacts = tmp_path / "platform" / "jobs" / "tiny-1" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "completed" and out["error"] is None
    assert out["job"]["run"] == "userpkg.train:run"
    assert out["settings"] == {"epochs": 1, "units": 8}  # settings.epochs=1 without '+', units from the default
    assert out["model_path"] == "model.tar.gz"
    with tarfile.open(artifacts / "model.tar.gz") as tar:
        assert any(name.endswith("model.keras") for name in tar.getnames())
    progress = [json.loads(line) for line in (artifacts / "progress.jsonl").read_text().splitlines() if line.strip()]
    assert [p["epoch"] for p in progress] == [1] and "train_loss" in progress[0]  # one epoch, reported
