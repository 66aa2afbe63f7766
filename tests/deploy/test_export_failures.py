"""Export failures: a format that drifts from the trained model fails the job naming it, and the model is
kept; a format whose extra is missing fails before training, naming the extra."""

from __future__ import annotations

import json
import sys

import pytest

from brevetti_pipe import ExportError, Job, load_model
from brevetti_pipe.errors import ConfigError
from brevetti_pipe.recipes.vials_classification import VialsClassificationSettings
from brevetti_pipe.run.recipe import recipe
from brevetti_pipe.stages import Stage
from tests.deploy.conftest import QUIET

CALLS: list[str] = []


@recipe("deploy_drifting_layer", settings=VialsClassificationSettings)
def drifting(job):  # noqa: ANN001, ANN201
    """A model whose custom layer forgets one of its arguments in get_config: model.keras reloads it
    with the default, so the Keras file predicts differently from the model that was trained."""
    import keras

    CALLS.append(job.id)

    @keras.saving.register_keras_serializable(package="deploy_tests")
    class Sharpen(keras.layers.Layer):
        def __init__(self, factor: float = 1.0, **kwargs):  # noqa: ANN003
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):  # noqa: ANN001, ANN201
            return x * self.factor

        def get_config(self):  # noqa: ANN201
            config = super().get_config()
            config.pop("factor", None)  # the bug: a new argument never made it into the config
            return config

    job.get_samples()
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Dense(3)(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Softmax()(Sharpen(factor=25.0)(x))
    return keras.Model(inputs, outputs)


def _overrides(tmp_path, tiny_vials, *extra: str) -> list[str]:
    return ["recipe=vials_classification", "pipeline.image.target_size=[12,12]", f"platform.root={tmp_path}",
            f"datasets.vials.url={tiny_vials}", *QUIET, *extra]


@pytest.mark.usefixtures("failed_job_keeps_here")
def test_a_drifting_format_fails_the_job_naming_it_and_keeps_the_model(tmp_path, tiny_vials):
    job = Job.init(job_id="drift", overrides=_overrides(tmp_path, tiny_vials, "run=deploy_drifting_layer",
                                                         "export.formats=[saved_model,keras]"))
    with pytest.raises(ExportError) as info:
        job.start()
    message = str(info.value)
    assert message.startswith("Export parity failed for keras: max_abs_diff") and "saved_model" not in message
    artifacts = tmp_path / "jobs" / "drift" / "artifacts"
    assert "model.unverified.tar.gz" in message and str(artifacts) in message
    out = json.loads((artifacts / "output.json").read_text())
    assert out["status"] == "failed" and out["error"].startswith("Export parity failed for keras")
    assert out["export"]["keras"]["max_abs_diff"] > 1e-4 and out["export"]["keras"]["samples"] == 6
    assert out["export"]["saved_model"]["max_abs_diff"] == 0.0, "the SavedModel traced the trained model itself"
    assert out["model_path"] is None and out["kept_model"] == "model.unverified.tar.gz"
    assert not (artifacts / "model.tar.gz").exists()
    with load_model(artifacts / "model.unverified.tar.gz") as kept:  # nothing trained is lost
        assert kept.format == "saved_model" and kept.metadata["job_id"] == "drift"


def test_onnx_without_the_export_extra_fails_before_training(tmp_path, tiny_vials, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as on an install without brevetti_pipe[export]
    job = Job.init(job_id="noonnx", overrides=_overrides(tmp_path, tiny_vials, "run=deploy_drifting_layer",
                                                          "export.formats=[keras,onnx]"))
    with pytest.raises(ConfigError) as info:
        job.start()
    assert "\n" not in str(info.value)
    assert "export.formats asks for onnx, which needs tf2onnx" in str(info.value)
    assert "Install brevetti_pipe[export]" in str(info.value)
    assert "noonnx" not in CALLS, "the run step never ran"


def test_an_export_error_after_training_keeps_the_model_locally(tmp_path, tiny_vials, failed_job_keeps_here):
    job = Job.init(job_id="badop", overrides=_overrides(tmp_path, tiny_vials, "run=deploy_drifting_layer",
                                                         "export.formats=[keras]",
                                                         "evaluation.operating_point={accept_class:godo}"))
    with pytest.raises(ConfigError) as info:
        job.start()
    assert str(info.value) == ("evaluation.operating_point.accept_class must be one of the model's classes "
                               "['failed_cap', 'good', 'missing_cap']. Received: evaluation.operating_point."
                               "accept_class='godo' Did you mean 'good'?")
    out = json.loads((tmp_path / "jobs" / "badop" / "artifacts" / "output.json").read_text())
    assert out["status"] == "failed" and out["kept_model"].startswith(str(failed_job_keeps_here))
    assert "The trained model is kept at" in out["error"]
    with load_model(out["kept_model"], format="keras") as kept:
        assert kept.metadata["job_id"] == "badop"


class _InvertAfterLoading(Stage, name="deploy_invert_after_loading"):
    """A pixel stage after the image_pipeline: training and evaluation see inverted images, while the
    archive's preprocessing (the image_pipeline stage alone) would feed the deployed model plain ones."""

    def __call__(self, x, seed=None):  # noqa: ANN001, ANN204
        return {**x, "img": 1.0 - x["img"]}


@pytest.mark.usefixtures("failed_job_keeps_here")
def test_parity_compares_the_deployable_path_with_the_evaluated_model(tmp_path, tiny_vials):
    job = Job.init(job_id="inv", overrides=_overrides(
        tmp_path, tiny_vials, "settings.epochs=1", "settings.batch_size=8", "settings.filters=2",
        "+pipeline.invert={type:deploy_invert_after_loading}", "export.formats=[keras]"))
    with pytest.raises(ExportError) as info:
        job.start()
    assert str(info.value).startswith("Export parity failed for keras: max_abs_diff"), str(info.value)
    artifacts = tmp_path / "jobs" / "inv" / "artifacts"
    out = json.loads((artifacts / "output.json").read_text())
    assert "devel_accuracy" in out["metrics"], "the model was trained and evaluated on devel"
    figures = out["export"]["keras"]
    assert figures["samples"] > 0 and figures["max_abs_diff"] > 1e-4, figures
    assert out["kept_model"] == "model.unverified.tar.gz" and (artifacts / "model.unverified.tar.gz").exists()


class TwoPhase(Job):
    settings: VialsClassificationSettings


def two_phase(job: TwoPhase):
    """A run step that evaluates devel after a first phase, then trains on and returns the model."""
    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.training import _configured_input_shape

    job.seed_frameworks()
    with job.strategy.scope():
        model = build_model(job, _configured_input_shape(job), job.classes)
    job.fit(model, epochs=1)
    job.evaluate(model, "devel")  # the first phase's devel metrics
    job.fit(model, epochs=2)  # then more training: that evaluation no longer describes the model
    return model


def test_an_evaluation_of_earlier_weights_is_not_the_parity_reference(tmp_path, tiny_vials):
    job = Job.init(job_id="two", overrides=_overrides(
        tmp_path, tiny_vials, "run=tests.deploy.test_export_failures:two_phase", "settings.batch_size=8",
        "settings.filters=2", "export.formats=[keras]"))
    job.start()  # parity against the first phase's predictions failed this valid job
    out = json.loads((tmp_path / "jobs" / "two" / "artifacts" / "output.json").read_text())
    assert out["status"] == "completed" and out["export"]["keras"]["max_abs_diff"] <= 1e-4, out.get("export")
    assert (tmp_path / "jobs" / "two" / "artifacts" / "model.tar.gz").exists()
