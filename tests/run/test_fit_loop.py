"""The framework's fit loop itself: how often Keras traces the steps, and the devel evaluation after
each epoch (val_* logs and test hooks exactly as Keras's own validation gives them)."""

from __future__ import annotations

import math
from pathlib import Path

from brevetti_pipe import Job
from tests.run.conftest import CLS_ARGS


def test_fit_traces_each_step_once_and_validates_every_epoch_as_keras_does(tmp_path: Path, tiny_vials: Path) -> None:
    import keras

    from brevetti_pipe.recipes.vials_classification import build_model

    job = Job.init(overrides=[*CLS_ARGS, f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
                              "settings.epochs=2", "training.resume=false"])
    traces = {"train": 0, "test": 0}

    class Counting(keras.Model):  # type: ignore[misc]
        # Python code in a step runs when Keras traces it, not when the traced step runs
        def train_step(self, data):  # type: ignore[no-untyped-def]
            traces["train"] += 1
            return super().train_step(data)

        def test_step(self, data):  # type: ignore[no-untyped-def]
            traces["test"] += 1
            return super().test_step(data)

    class Hooks(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []
            self.logs: list[dict[str, float]] = []

        def on_test_begin(self, logs=None):  # type: ignore[no-untyped-def]
            self.events.append("test_begin")

        def on_test_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            self.events.append("batch")

        def on_test_end(self, logs=None):  # type: ignore[no-untyped-def]
            self.events.append("test_end")

        def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
            self.events.append("epoch_end")
            self.logs.append(dict(logs))

        def on_train_end(self, logs=None):  # type: ignore[no-untyped-def]
            self.end = dict(logs)

    job.seed_frameworks()
    built = build_model(job, (16, 16, 1), job.classes)
    model = Counting(built.inputs, built.outputs)
    hooks = Hooks()
    history = job.fit(model, callbacks=[hooks])

    # the training state is built before fit traces its step: no second trace to lift new variables
    assert traces == {"train": 1, "test": 1}, traces
    devel = int((job.get_samples().purpose == "devel").sum())
    batches = math.ceil(devel / 8)
    assert hooks.events == (["test_begin", *["batch"] * batches, "test_end", "epoch_end"]) * 2, hooks.events
    assert [sorted(h) for h in history] == [["accuracy", "loss", "val_accuracy", "val_loss"]] * 2
    assert [h["val_loss"] for h in history] == [logs["val_loss"] for logs in hooks.logs]
    assert hooks.end == history[-1]  # Keras ends the training with the last epoch's logs
    # the last epoch's devel metrics are what Keras's evaluate gives on the devel batches
    from brevetti_pipe.run.training import generators, task_of

    _, devel_gen = generators(job, task_of(job), 8)
    assert devel_gen is not None
    evaluated = model.evaluate(devel_gen.get_dataset(), return_dict=True, verbose=0)
    assert {"val_loss": history[-1]["val_loss"], "val_accuracy": history[-1]["val_accuracy"]} == {
        "val_loss": evaluated["loss"], "val_accuracy": evaluated["accuracy"]}
    assert traces["train"] == 1


def test_fit_leaves_the_training_iterator_to_a_background_thread(tmp_path: Path, tiny_vials: Path) -> None:
    # deleting a tf.data iterator with autotuning can wait seconds for the tuning thread to stop
    import gc
    import threading
    import weakref

    import keras
    from tensorflow.python.data.ops.iterator_ops import OwnedIterator

    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run import training

    job = Job.init(overrides=[*CLS_ARGS, f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
                              "settings.epochs=1", "training.resume=false"])
    deleted_on: list[str] = []

    class Watch(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_end(self, logs=None):  # type: ignore[no-untyped-def]
            for obj in gc.get_objects():
                if isinstance(obj, OwnedIterator):
                    weakref.finalize(obj, lambda: deleted_on.append(threading.current_thread().name))

    job.seed_frameworks()
    job.fit(build_model(job, (16, 16, 1), job.classes), callbacks=[Watch()])
    for thread in list(getattr(training, "_releasing", [])):
        thread.join()
    gc.collect()
    assert "brevetti-pipe-input-release" in deleted_on, deleted_on
    assert "MainThread" not in deleted_on, deleted_on


def test_fit_validates_with_keras_when_a_step_runs_several_batches(tmp_path: Path, tiny_vials: Path) -> None:
    import keras

    from brevetti_pipe.recipes.vials_classification import build_model
    from brevetti_pipe.run.training import generators, task_of

    job = Job.init(overrides=[*CLS_ARGS, f"platform.root={tmp_path}", f"datasets.vials.url={tiny_vials}",
                              "settings.epochs=1", "training.resume=false"])
    ends: list[int] = []

    class Hooks(keras.callbacks.Callback):  # type: ignore[misc]
        def on_test_batch_end(self, batch, logs=None):  # type: ignore[no-untyped-def]
            ends.append(batch)

    job.seed_frameworks()
    model = build_model(job, (16, 16, 1), job.classes)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"], steps_per_execution=2)
    history = job.fit(model, callbacks=[Hooks()])
    _, devel_gen = generators(job, task_of(job), 8)
    assert devel_gen is not None
    batches = math.ceil(len(devel_gen.samples) / 8)
    # a test step reads two batches: Keras calls the batch hooks once per step, with the step's last batch
    assert len(ends) == math.ceil(batches / 2) and ends[0] == 1, ends
    evaluated = model.evaluate(devel_gen.get_dataset(), return_dict=True, verbose=0)
    assert history[-1]["val_loss"] == evaluated["loss"]
