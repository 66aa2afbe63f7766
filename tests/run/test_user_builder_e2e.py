"""A user's model builder (``run: userpkg.train:build_model`` in a ``--config-dir`` recipe): the framework
owns the loop (fit, evaluate, export), end to end through the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TRAIN = textwrap.dedent('''
    """A user's model builder: the framework fits, evaluates and exports what it returns."""
    from pydantic import Field

    from brevetti_pipe import Job, JobSettings


    class BuilderSettings(JobSettings):
        units: int = Field(4, ge=1, description="Hidden units")


    class BuilderJob(Job):
        settings: BuilderSettings


    def build_model(job: BuilderJob, input_shape, classes):
        import keras

        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(job.settings.units, activation="relu"),
                                 keras.layers.Dense(len(classes), activation="softmax")])
''')
RECIPE = textwrap.dedent('''
    # @package _global_
    defaults:
      - /pipeline@pipeline.image: image_pipeline
      - /pipeline@pipeline.onehot: onehot_encoder
      - _self_
    run: bld_userpkg.train:build_model
    datasets:
      vials:
        url: ${platform.root}/datasets/vials_tiny
        generator: vials
        generator_params: {per_class: 6, size: 24}
    pipeline:
      image: {target_size: [16, 16], color_mode: greyscale, rescale: unit}
    training:
      epochs: 1
      batch_size: 8
''')


def test_a_user_model_builder_trains_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "bld_userpkg").mkdir()
    (tmp_path / "bld_userpkg" / "__init__.py").write_text("")
    (tmp_path / "bld_userpkg" / "train.py").write_text(TRAIN)
    (tmp_path / "my_configs" / "recipe").mkdir(parents=True)
    (tmp_path / "my_configs" / "recipe" / "mine.yaml").write_text(RECIPE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    env.pop("HYDRA_FULL_ERROR", None)
    exe = str(Path(sys.executable).parent / "brevetti-pipe")
    proc = subprocess.run([exe, "--config-dir", "my_configs", "recipe=mine", "settings.units=3", "platform.root=platform",
                           "job.id=builder", "export.formats=[keras]"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    artifacts = tmp_path / "platform" / "jobs" / "builder" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "completed" and out["settings"] == {"units": 3}
    assert out["model_path"] == "model.tar.gz" and (artifacts / "model.tar.gz").is_file()
