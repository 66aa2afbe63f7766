"""Training options: Keras callbacks by name (our metric names), best weights restored, mixed precision
and XLA on CPU, warm start from an earlier job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brevetti_pipe import Job
from brevetti_pipe.errors import ConfigError
from tests.run.conftest import CLS_ARGS, QUIET


def _job(tmp_path: Path, data: Path, *overrides: str) -> Job:
    return Job.init(overrides=[*CLS_ARGS, f"platform.root={tmp_path / 'p'}", f"datasets.vials.url={data}", *overrides])


def _progress(job: Job) -> list[dict]:
    return [json.loads(line) for line in Path(job.artifact_path("progress.jsonl")).read_text().splitlines()]


def test_early_stopping_stops_early_and_csv_logger_writes_on_our_metric_names(tmp_path, tiny_vials):
    # min_delta 10: no epoch after the first improves devel_loss, so patience 1 stops after epoch 2
    job = _job(tmp_path, tiny_vials, "settings.epochs=5", "+training.callbacks.early_stopping.monitor=devel_loss",
               "+training.callbacks.early_stopping.patience=1", "+training.callbacks.early_stopping.min_delta=10",
               "+training.callbacks.csv_logger.filename=log.csv")
    job.start()
    assert [p["epoch"] for p in _progress(job)] == [1, 2]
    assert job.status == "completed" and "devel_accuracy" in job.metrics
    lines = Path(job.artifact_path("log.csv")).read_text().splitlines()
    assert lines[0].split(",")[:1] == ["epoch"] and {"train_loss", "devel_loss"} <= set(lines[0].split(","))
    assert len(lines) == 3
    assert not [c for c in lines[0].split(",") if c.startswith("val_")], lines[0]  # no always-NA duplicates
    assert "NA" not in lines[1].split(",")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]  # as progress.jsonl counts


def test_a_training_callback_is_removed_with_tilde_and_a_bad_one_is_named(tmp_path, tiny_vials):
    job = _job(tmp_path, tiny_vials, "+training.callbacks.early_stopping.patience=1", "~training.callbacks.early_stopping")
    assert job.config.training.callbacks == {}
    from brevetti_pipe.run.keras_callbacks import make_keras_callbacks

    job = _job(tmp_path, tiny_vials, "+training.callbacks.early_stopping.patients=1")
    with pytest.raises(ConfigError, match=r"training\.callbacks\.early_stopping.*patients"):
        make_keras_callbacks(job, job.config.training.callbacks)
    job = _job(tmp_path, tiny_vials, "+training.callbacks.stop.type=early_stoping")
    with pytest.raises(ConfigError, match=r"training\.callbacks\.stop\.type.*Did you mean 'early_stopping'"):
        make_keras_callbacks(job, job.config.training.callbacks)


def test_model_checkpoint_restores_the_best_epochs_weights(tmp_path, tiny_vials):
    import keras

    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.export import weights_sha256

    # mode=max picks the epoch with the highest devel loss: an early one, not the last
    job = _job(tmp_path, tiny_vials, "settings.epochs=4", "training.resume=false",
               "+training.callbacks.model_checkpoint.monitor=devel_loss", "+training.callbacks.model_checkpoint.mode=max")
    seen: list[tuple[float, str]] = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], weights_sha256(self.model)))

    job.seed_frameworks()
    model = build_model(job, (16, 16, 1), job.classes)
    job.fit(model, callbacks=[Record()])
    best = int(np.argmax([loss for loss, _ in seen]))
    assert len(seen) == 4 and best != 3, seen
    assert weights_sha256(model) == seen[best][1]
    assert weights_sha256(model) != seen[-1][1]


def test_mixed_precision_trains_on_cpu_with_float32_outputs(tmp_path, tiny_vials):
    import keras

    job = _job(tmp_path, tiny_vials, "settings.epochs=1", "training.mixed_precision=true")
    model = job.start()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.dtype_policy.name == "mixed_float16" for layer in convs)
    assert convs[0].compute_dtype == "float16" and convs[0].kernel.dtype == "float32"
    assert model.outputs[0].dtype == "float32"
    assert np.asarray(model(np.zeros((1, 16, 16, 1), np.float32))).dtype == np.float32
    assert np.isfinite(_progress(job)[0]["train_loss"]) and np.isfinite(job.metrics["devel_loss"])
    assert keras.config.dtype_policy().name == "float32", "the global policy is restored after the run"


def test_jit_compile_trains_on_cpu(tmp_path, tiny_vials):
    job = _job(tmp_path, tiny_vials, "settings.epochs=1", "training.jit_compile=true", "job.id=xla-refused")
    with pytest.raises(ConfigError, match=r"training\.jit_compile=true needs job\.deterministic=false"):
        job.start()  # Keras would silently drop XLA under TensorFlow's op determinism
    job = _job(tmp_path, tiny_vials, "settings.epochs=1", "training.jit_compile=true", "job.deterministic=false")
    model = job.start()
    assert model.jit_compile is True
    assert np.isfinite(_progress(job)[0]["train_loss"]) and np.isfinite(job.metrics["devel_loss"])


def _warm(classification_job, data: Path, *overrides: str) -> Job:
    trained, _ = classification_job
    return Job.init(overrides=[*CLS_ARGS, f"platform.root={trained.config.platform.root}", f"datasets.vials.url={data}",
                               f"training.init_from={trained.id}", *overrides])


def test_init_from_a_job_id_loads_every_weight(classification_job, tiny_vials):
    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.checkpoint import init_weights
    from brevetti_pipe.run.export import weights_sha256

    _, trained = classification_job
    job = _warm(classification_job, tiny_vials)
    job.seed_frameworks()  # as the framework does before building: fresh Keras layer names
    model = build_model(job, (16, 16, 1), job.classes)
    assert weights_sha256(model) != weights_sha256(trained)
    assert init_weights(job, model) == []
    for ours, theirs in zip(model.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_init_from_with_mismatched_layers_is_an_error_unless_partial(classification_job, tiny_vials):
    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.checkpoint import init_weights

    _, trained = classification_job
    job = _warm(classification_job, tiny_vials, "pipeline.image.target_size=[24,24]", "job.id=warm-refused")
    with pytest.raises(ConfigError, match=r"training\.init_from: 1 layer\(s\) do not match.*dense.*init_from_partial"):
        job.start()  # the framework's loop warm-starts the built model
    job = _warm(classification_job, tiny_vials, "pipeline.image.target_size=[24,24]", "training.init_from_partial=true")
    job.seed_frameworks()
    model = build_model(job, (24, 24, 1), job.classes)
    left = init_weights(job, model)
    assert len(left) == 1 and left[0].startswith("dense")
    for layer in model.layers:
        if layer.weights and not layer.name.startswith("dense"):
            for ours, theirs in zip(layer.get_weights(), trained.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(ours, theirs)
    assert model.get_layer(left[0].split(" ")[0]).get_weights()[0].shape != trained.get_layer("dense").get_weights()[0].shape


# -- refused before training: wrong names, wrong classes, wrong models ----------------------------------
def test_a_csv_logger_file_may_not_name_the_jobs_own_artifacts(tmp_path, tiny_vials):
    from brevetti_pipe.run.keras_callbacks import make_keras_callbacks

    for name in ("sample_identification.csv", "output.json", "charts/log.csv"):
        job = _job(tmp_path, tiny_vials, f"+training.callbacks.csv_logger.filename={name}")
        with pytest.raises(ConfigError, match=r"training\.callbacks\.csv_logger\.filename may not name"):
            make_keras_callbacks(job, job.config.training.callbacks)


def test_a_misspelt_monitor_is_a_config_error_listing_the_names(tmp_path, tiny_vials):
    from brevetti_pipe.run.keras_callbacks import make_keras_callbacks

    job = _job(tmp_path, tiny_vials, "+training.callbacks.early_stopping.monitor=devel_acc")
    with pytest.raises(ConfigError, match=r"training\.callbacks\.early_stopping\.monitor must be one of .*devel_loss"
                                          r".*Received.*devel_acc.*Did you mean 'devel_accuracy'"):
        make_keras_callbacks(job, job.config.training.callbacks)
    job = _job(tmp_path, tiny_vials, "+training.callbacks.early_stopping.monitor=val_loss")
    assert make_keras_callbacks(job, job.config.training.callbacks)[0].monitor == "val_loss"


@pytest.mark.parametrize("overrides, match", [
    (("pipeline.onehot.classes=[missing_cap,good,failed_cap]",), r"pipeline\.onehot\.classes must list"),
    (("pipeline.onehot.classes=[good,missing_cap,failed_cap,extra]",), r"pipeline\.onehot\.classes must list"),
    (("+evaluation.operating_point.accept_class=goood",), r"evaluation\.operating_point\.accept_class must be one of"),
    (("training.init_from=no-such-job",), r"training\.init_from: no model at .*no-such-job"),
])
def test_config_mistakes_are_refused_before_training(tmp_path, tiny_vials, overrides, match):
    job = _job(tmp_path, tiny_vials, "job.id=refused", *overrides)
    with pytest.raises(ConfigError, match=match):
        job.start()
    assert not Path(job.artifact_path("progress.jsonl")).exists(), "refused before the first epoch"


def _none(job, input_shape, classes):
    return None


def _text(job, input_shape, classes):
    return "a model"


def _head(job, input_shape, classes, units=None, activation="softmax"):
    import keras

    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(units or len(classes), activation=activation)])


def _five(job, input_shape, classes):
    return _head(job, input_shape, classes, units=5)


def _logits(job, input_shape, classes):
    return _head(job, input_shape, classes, activation=None)


@pytest.mark.parametrize("builder, match", [
    (_none, r"run='b:x': build_model returned None; expected a keras\.Model with output shape \(None, \.\.\., 3\) "
            r"for classes \['failed_cap', 'good', 'missing_cap'\]"),
    (_text, r"run='b:x': build_model returned str; expected a keras\.Model"),
    (_five, r"run='b:x': build_model returned a model with output shape\(s\) \(None, 5\); expected"),
    (_logits, r"run='b:x': the model's output layer .* has activation 'linear'; expected softmax"),
])
def test_a_builder_returning_the_wrong_thing_is_named_before_fit(tmp_path, tiny_vials, builder, match):
    from brevetti_pipe.run.recipe import Recipe
    from brevetti_pipe.run.training import train_evaluate

    job = _job(tmp_path, tiny_vials, "job.id=bad-builder")
    with pytest.raises(ConfigError, match=match):
        train_evaluate(job, Recipe("b:x", builder, kind="builder"))
    assert not Path(job.artifact_path("progress.jsonl")).exists()
