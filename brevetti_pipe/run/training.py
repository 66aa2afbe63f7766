"""Run layer: the framework-owned loop: samples -> generators -> build (in the strategy's scope) ->
compile -> fit (resumable) -> evaluate every purpose. Model-builder recipes get all of it; a full
``run(job)`` uses the same blocks through ``job.fit`` and ``job.evaluate``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from brevetti_pipe.errors import ConfigError

if TYPE_CHECKING:
    from brevetti_pipe.data import DataGenerator
    from brevetti_pipe.run.evaluation import Evaluation
    from brevetti_pipe.run.recipe import Recipe

__all__ = ["Task", "dtype_policy", "evaluate", "evaluate_all", "fit", "fit_job", "prepare_model", "task_of", "train_evaluate"]

log = logging.getLogger(__name__)

_DEFAULT_EPOCHS, _DEFAULT_BATCH = 10, 32
_LABEL_STAGES = {"classification": "onehot_encoder", "segmentation": "segmentation_loader"}


@dataclass(frozen=True)
class Task:
    """What the job trains: the task, the ``(input, target)`` element keys and the class names."""

    name: str
    structure: tuple[str, str]
    classes: list[str]
    background: bool = False


def _stage_param(job: Any, stage_type: str, key: str, default: Any) -> Any:
    for spec in job.config.pipeline.values():
        if spec.type == stage_type:
            return spec.params().get(key, default)
    return None


def task_name(job: Any, task: str | None = None) -> str:
    """``task``, else segmentation when the pipeline has a ``segmentation_loader`` stage, else classification."""
    if task is not None:
        return task
    return "segmentation" if any(s.type == "segmentation_loader" for s in job.config.pipeline.values()) else "classification"


def task_of(job: Any, task: str | None = None) -> Task:
    """The job's :class:`Task`: ``task`` (a recipe's), else segmentation when the pipeline has a
    ``segmentation_loader`` stage, else classification.

    Raises:
        ConfigError: the pipeline lacks the stage that makes the task's targets.
    """
    task = task_name(job, task)
    if task not in _LABEL_STAGES:
        raise ConfigError(f"Unknown task {task!r}; the framework trains classification or segmentation")
    stage = _LABEL_STAGES[task]
    x_key = _stage_param(job, "image_pipeline", "output_key", "img") or "img"
    y_key = _stage_param(job, stage, "output_key", "onehot" if task == "classification" else "segmentation")
    if y_key is None:
        raise ConfigError(f"A {task} model needs a '{stage}' stage in the pipeline to make its targets. "
                          f"Received: pipeline={sorted(job.config.pipeline)}")
    if task == "classification":
        classes = list(job.classes)
        for name, spec in job.config.pipeline.items():
            given = spec.params().get("classes") if spec.type == stage else None
            if given and list(given) != classes:
                raise ConfigError(
                    f"pipeline.{name}.classes must list the dataset's classes in the dataset's order (the model's "
                    f"outputs, metrics and metadata follow it). Received: pipeline.{name}.classes={list(given)}; "
                    f"expected {classes} (or leave it unset)")
        return Task(task, (x_key, y_key), classes)
    onehot = _stage_param(job, stage, "mask_mode", "onehot") == "onehot"
    background = not onehot or bool(_stage_param(job, stage, "include_background", True))
    classes = list(_stage_param(job, stage, "classes", []))
    return Task(task, (x_key, y_key), ["background", *classes] if background else classes, background)


def _setting(job: Any, name: str, default: Any) -> Any:
    value = getattr(job.config.training, name)
    return value if value is not None else getattr(job.settings, name, default)


def epochs_of(job: Any) -> int:
    """``training.epochs``, else ``settings.epochs``, else 10."""
    return int(_setting(job, "epochs", _DEFAULT_EPOCHS))


def batch_size_of(job: Any) -> int:
    """``training.batch_size`` (the global batch), else ``settings.batch_size``, else 32."""
    return int(_setting(job, "batch_size", _DEFAULT_BATCH))


@contextlib.contextmanager
def dtype_policy(job: Any) -> Iterator[None]:
    """Keras's global dtype policy ``mixed_float16`` while the block runs (``training.mixed_precision``)."""
    if not job.config.training.mixed_precision:
        yield
        return
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def prepare_model(job: Any, model: Any, task: Task, target_spec: Any = None) -> Any:
    """Float32 outputs under mixed precision; compile an uncompiled model (``training.optimizer``,
    ``training.learning_rate`` else ``settings.learning_rate``; the task's loss; accuracy);
    ``training.jit_compile``. Call it inside ``job.strategy.scope()``."""
    import keras

    training = job.config.training
    if training.jit_compile is True and job.config.job.deterministic:
        raise ConfigError("training.jit_compile=true needs job.deterministic=false: TensorFlow's op determinism "
                          "rules out XLA. Received: training.jit_compile=true, job.deterministic=true")
    if any(str(o.dtype) != "float32" for o in model.outputs):
        casts = [keras.layers.Activation("linear", dtype="float32", name=f"float32_output_{i}")(o)
                 for i, o in enumerate(model.outputs)]
        model = keras.Model(model.inputs, casts[0] if len(casts) == 1 else casts, name=model.name)
    if not getattr(model, "compiled", False):
        rate = _setting(job, "learning_rate", None)
        try:
            optimizer = keras.optimizers.get({"class_name": training.optimizer,
                                              "config": {} if rate is None else {"learning_rate": rate}})
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"Invalid value for 'training.optimizer': {exc}. Received: "
                              f"training.optimizer={training.optimizer!r}; e.g. adam, sgd, rmsprop, adamw") from None
        out = model.outputs[0].shape
        sparse = target_spec is not None and (target_spec.shape.rank < len(out) or (target_spec.shape[-1] == 1 < (out[-1] or 1)))
        loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], jit_compile=training.jit_compile)
    else:
        model.jit_compile = training.jit_compile
    return model


def _verbose(job: Any) -> int:
    verbose = job.config.training.verbose
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return int(verbose)


def generators(job: Any, task: Task, batch_size: int) -> tuple[DataGenerator, DataGenerator | None]:
    """The train generator (shuffled, augmented, repeated; this worker's shard) and the devel one (None without devel samples)."""
    samples = job.get_samples()
    train, devel = samples[samples.purpose == "train"], samples[samples.purpose == "devel"]
    if train.empty:
        raise ConfigError("No train samples: the split assigned none (see split.*); the model cannot be trained")
    train_gen = job.data_generator(train, train=True, batch_size=batch_size, output_structure=task.structure)
    devel_gen = job.data_generator(devel, batch_size=batch_size, output_structure=task.structure) if len(devel) else None
    return train_gen, devel_gen


def fit(job: Any, model: Any, train: DataGenerator, devel: DataGenerator | None = None, *,
        epochs: int | None = None, callbacks: Sequence[Any] = ()) -> list[dict[str, float]]:
    """Train a compiled ``model``: Keras ``fit`` on one worker, the synchronous distributed loop under
    ``multi_worker``; progress reported, ``training.callbacks`` and ``callbacks`` run, a resume
    checkpoint kept (``training.resume``) and restored. Returns the metrics of each epoch run here."""
    from brevetti_pipe.run.checkpoint import ResumeCheckpoint, name_callbacks
    from brevetti_pipe.run.keras_callbacks import keras_callbacks_by_name

    epochs = epochs or epochs_of(job)
    checkpoint = ResumeCheckpoint(job) if job.config.training.resume else None
    with job.strategy.scope():
        initial = checkpoint.restore(model) if checkpoint is not None else 0
    named = name_callbacks(keras_callbacks_by_name(job, job.config.training.callbacks), callbacks)
    extra = list(named.values())
    if checkpoint is not None:
        checkpoint.track(named)
        extra.append(checkpoint.callback(initial))  # last: restores the others' states, then saves after them
    if checkpoint is not None and initial > 0 and (initial >= epochs or checkpoint.stopped):
        log.info("The checkpoint holds a finished training (%d epoch(s)%s): nothing left to train", initial,
                 ", stopped by a callback" if checkpoint.stopped else "")
        checkpoint.finish(model, initial)  # end hooks such as restoring the best weights
        job.remember_model(model)
        return []
    # batches run across the generator's epochs: skip what the finished epochs' steps consumed
    # (each worker feeds batch_size / workers samples per step)
    steps = job.steps_per_epoch(train)
    dataset = train.get_dataset(skip=initial * steps * int(train.batch_size or 1) // job.num_workers)
    if job.num_workers > 1:
        from brevetti_pipe.run.distribute import fit_distributed

        history = fit_distributed(job, model, dataset, steps, epochs,
                                  int(train.batch_size or 1), initial_epoch=initial, callbacks=extra)
    else:
        import keras

        with job.strategy.scope():
            _build_state(model, dataset.element_spec)
        verbose = _verbose(job)
        validation = _validation(devel) if devel is not None and _one_pass_per_step(model, devel) else None
        # the hooks fit would make, the devel evaluation first: every other callback sees val_* in its logs
        handover = _input_handover()
        hooks = keras.callbacks.CallbackList(
            [*([validation] if validation is not None else []), job.get_remote_monitor(), *extra, handover],
            add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs, steps=steps, model=model)
        if validation is not None:
            validation.hooks = hooks
        result = model.fit(
            dataset, steps_per_epoch=steps, epochs=epochs, initial_epoch=initial, callbacks=hooks,
            # Keras's own validation where the kept devel iterator would not read what Keras reads
            validation_data=devel.get_dataset() if devel is not None and validation is None else None,
            validation_steps=len(devel) if devel is not None and validation is None else None,
            shuffle=False,  # the generator draws a seeded order per epoch
            verbose=verbose,
        )
        _release_in_background(handover.take())
        keys = list(result.history)
        history = [{k: float(result.history[k][i]) for k in keys} for i in range(len(result.epoch))]
    job.remember_model(model)  # a failure from here on keeps the trained model
    return history


def _one_pass_per_step(model: Any, devel: DataGenerator) -> bool:
    """Whether :func:`_validation`'s one iterator over ``devel`` repeated reads, for every evaluation,
    the batches Keras's new iterator per evaluation would: one test step per batch, and a generator
    whose every pass is the same single pass over its samples (no shuffle, repeat, sampler or
    epoch size of its own)."""
    return int(getattr(model, "steps_per_execution", 1) or 1) == 1 and devel.in_order_once


def _input_handover() -> Any:
    """A Keras callback (put it last) that takes a reference to the training input's iterator at the
    end of ``fit``, so that the iterator is deleted by :func:`_release_in_background` rather than on
    the main thread when ``fit`` returns: ``take()`` hands it over. Deleting a tf.data iterator stops
    its autotuning thread, and that stop can miss its wake-up and wait out the thread's current
    optimisation period: 2.6 s after a few seconds of training, up to a minute after a long one, in
    about one job of four. Best effort: with a Keras whose ``fit`` keeps its iterator elsewhere, the
    iterator is deleted as before."""
    import keras

    class InputHandover(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._held: Any = None

        def on_train_end(self, logs: Any = None) -> None:
            frame: Any = sys._getframe(1)
            while frame is not None:  # Keras's fit: its local ``epoch_iterator`` holds the input's iterator
                if frame.f_code.co_name == "fit" and "epoch_iterator" in frame.f_code.co_varnames:
                    self._held = getattr(frame.f_locals.get("epoch_iterator"), "_current_iterator", None)
                    return
                frame = frame.f_back

        def take(self) -> Any:
            held, self._held = self._held, None
            return held

    return InputHandover()


_releasing: list[Any] = []  # release threads, joined by a normal interpreter exit
_RELEASE_JOINED_AT_EXIT: list[bool] = []


def _release_in_background(iterator: Any) -> None:
    """Drop the last reference to ``iterator`` on a daemon thread (see :func:`_input_handover`). A
    normal interpreter exit waits for it; the console commands' quick exit (``os._exit``) does not."""
    if iterator is None:
        return
    import threading

    box = [iterator]
    del iterator
    thread = threading.Thread(target=box.clear, name="brevetti-pipe-input-release", daemon=True)
    if not _RELEASE_JOINED_AT_EXIT:
        import atexit

        atexit.register(_join_releases)
        _RELEASE_JOINED_AT_EXIT.append(True)
    _releasing[:] = [t for t in _releasing if t.is_alive()]
    _releasing.append(thread)
    thread.start()


def _join_releases() -> None:
    from brevetti_pipe._util.exit import leaving

    if leaving():
        return
    while _releasing:
        _releasing.pop().join()


def _build_state(model: Any, element_spec: Any) -> None:
    """Create the compiled model's metric, loss and optimizer variables from the data's element spec,
    before ``fit`` traces its train step. Keras does this itself under a distribution strategy; on one
    device it leaves them to the first trace, which then creates variables inside the step and traces
    it a second time (about half a second for a small CNN). Best effort: what fails here is built by
    that trace as before (same variables, same order of creation per kind: the weights stay identical)."""
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return
    from keras import KerasTensor

    try:
        batch = tuple(None if s is None else KerasTensor(s.shape, s.dtype.name)
                      for s in (element_spec if isinstance(element_spec, tuple) else (element_spec,)))
        build(data_batch=batch if isinstance(element_spec, tuple) else batch[0])
    except Exception as exc:  # the first train step builds it as Keras does by default
        log.debug("The model's training state was left to the first train step: %s", exc)


def _logs(logs: Any) -> dict[str, Any]:
    """Keras's epoch logs as Python floats, nested dicts flattened, keys sorted (as Keras hands them on)."""
    out: dict[str, Any] = {}
    for key, value in sorted((logs or {}).items()):
        if isinstance(value, dict):
            out.update(_logs(value))
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _validation(devel: DataGenerator) -> Any:
    """A Keras callback (put it first; set its ``hooks`` to the fit's CallbackList) that evaluates
    ``devel`` after each epoch as ``fit(validation_data=...)`` does (the test step on every devel
    batch, the test hooks, ``val_*`` added to the epoch's logs for the callbacks after it), through one
    iterator over the devel batches repeated, kept for the whole fit. Keras makes a new iterator for
    every evaluation and one more after it, and each costs the input pipeline's set-up (tens of ms)."""
    import keras
    import tensorflow as tf

    # built now (its graph, its cache decision logged) rather than amid the first epoch's output;
    # no autotuning thread: it would take CPU from training, and its stop (when the iterator goes)
    # waits for an optimisation round, up to seconds on a busy machine
    options = tf.data.Options()
    options.autotune.enabled = False
    repeated = devel.get_dataset().repeat().with_options(options)

    class Validation(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.steps = len(devel)
            self.hooks: Any = None
            self._iterator: Any = None
            self._last: dict[str, Any] = {}

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            model, hooks = self.model, self.hooks
            if self._iterator is None:
                self._iterator = iter(model.distribute_strategy.experimental_distribute_dataset(repeated))
            model.make_test_function()
            hooks.on_test_begin()
            model.reset_metrics()
            step_logs: Any = {}
            model.stop_evaluating = False
            for step in range(self.steps):
                hooks.on_test_batch_begin(step)
                step_logs = model.test_function(self._iterator)
                hooks.on_test_batch_end(step, step_logs)
                if model.stop_evaluating:  # a callback ended this evaluation: the next one starts a new pass
                    self._iterator = None
                    break
            metric_logs = model.get_metrics_result()
            # a custom test_step may log other values than the model's metrics (Keras keeps those then)
            if isinstance(step_logs, dict) and set(step_logs) == set(metric_logs):
                step_logs = metric_logs
            values = _logs(step_logs)
            hooks.on_test_end(values)
            self._last = {f"val_{k}": v for k, v in values.items()}
            if logs is not None:
                logs.update(self._last)

        def on_train_end(self, logs: Any = None) -> None:
            self._iterator = None  # its prefetch buffers go with it
            if logs is not None:  # Keras ends with the last epoch's logs, its devel metrics included
                logs.update(self._last)

    return Validation()


def fit_job(job: Any, model: Any, train: DataGenerator | None = None, devel: DataGenerator | None = None, *,
            epochs: int | None = None, callbacks: Sequence[Any] = ()) -> list[dict[str, float]]:
    """``job.fit``: train a Keras ``model`` as a model-builder recipe's is trained (:func:`fit`): Keras
    ``fit`` on one worker, the synchronous loop under ``multi_worker``, ``training.callbacks`` plus
    ``callbacks``, progress reports, the resume checkpoint. ``train``/``devel`` default to generators
    of the train and devel samples (``training.batch_size``); an uncompiled model is compiled in place
    from ``training.*`` (build it under ``training.mixed_precision`` yourself: :func:`dtype_policy`).
    Returns each epoch's metrics (Keras names)."""
    task = task_of(job, job.recipe.task if job.recipe is not None else None)
    if train is None:
        train, devel = generators(job, task, batch_size_of(job))
    if not getattr(model, "compiled", False):
        with job.strategy.scope():
            prepared = prepare_model(job, model, task)
        if prepared is not model:
            raise ConfigError("job.fit got a model with float16 outputs: build it with float32 outputs "
                              "(training.mixed_precision casts them for model builders)")
    return fit(job, model, train, devel, epochs=epochs, callbacks=callbacks)


def evaluate(job: Any, model: Any, purpose: str, task: Task | None = None,
             generator: DataGenerator | None = None) -> Evaluation | None:
    """Evaluate ``model`` on ``purpose`` (see :func:`brevetti_pipe.run.evaluation.evaluate`)."""
    from brevetti_pipe.run import evaluation

    task = task or task_of(job, job.recipe.task if job.recipe is not None else None)
    return evaluation.evaluate(job, model, purpose, task=task.name, structure=task.structure, classes=task.classes,
                               batch_size=batch_size_of(job), background=task.background, generator=generator)


def purposes_of(job: Any) -> list[str]:
    """``evaluation.purposes``, else devel plus test when the split has test samples."""
    if job.config.evaluation.purposes is not None:
        return list(job.config.evaluation.purposes)
    present = set(job.get_samples().purpose)
    return [p for p in ("devel", "test") if p in present]


def evaluate_all(job: Any, model: Any, task: Task, devel: DataGenerator | None = None) -> dict[str, Evaluation]:
    """Evaluate every purpose of :func:`purposes_of` (on every worker; only the chief's artifacts are the job's);
    ``devel``: the training's devel generator, whose in-memory cache is read again."""
    results = {}
    for purpose in purposes_of(job):
        result = evaluate(job, model, purpose, task, devel if purpose == "devel" else None)
        if result is not None:
            results[purpose] = result
    return results


def _check_input(input_shape: tuple[Any, ...], structure: tuple[str, str]) -> None:
    if any(d is None for d in input_shape[:2]):
        raise ConfigError(f"The model needs a fixed input size, but the pipeline's '{structure[0]}' is "
                          f"{list(input_shape)}: set pipeline.<image stage>.target_size (or rois)")


def _configured_input_shape(job: Any) -> tuple[int, int, int] | None:
    """The model input the ``image_pipeline`` stage is configured to make, when the config fixes it."""
    from brevetti_pipe.stages.image_pipeline import ImagePipelineParams

    for spec in job.config.pipeline.values():
        if spec.type == "image_pipeline":
            params = ImagePipelineParams.model_validate(spec.params())
            size, channels = params.output_size(), {"rgb": 3, "greyscale": 1}.get(params.color_mode)
            stacked = params.roi_mode == "stack" and len(params.rois or []) > 1
            return None if size is None or channels is None or stacked else (*size, channels)
    return None


def _check_builder_early(job: Any, recipe: Recipe, task: str) -> None:
    """Build the model once on the configured input size before any data is read, so that a size the
    builder refuses (a ConfigError naming the key) fails at once; other errors wait for the real build."""
    shape = _configured_input_shape(job)
    if shape is None:
        return
    # classification classes come from the data: stand-ins do for a size check
    classes = task_of(job, task).classes if task == "segmentation" else ["class_0", "class_1"]
    import keras

    try:
        recipe.run(job, shape, classes)
    except ConfigError:
        raise
    except Exception as exc:
        log.debug("The early build on %s failed (%s); the real build follows", shape, exc)
    finally:
        if not job.config.job.deterministic:  # else seed_frameworks clears it before the real build
            keras.backend.clear_session()  # the real build gets the layer names a fresh process gives


def _check_init_from(job: Any) -> None:
    """``training.init_from`` names an archive that exists (checked before any data is read)."""
    source = job.config.training.init_from
    if not source:
        return
    from brevetti_pipe._util import secrets
    from brevetti_pipe.run.checkpoint import _archive_url

    url = _archive_url(job, source)
    try:
        found = job.io.exists(url)
    except Exception:  # an unreachable store: the load reports it with its reason
        return
    if not found:
        raise ConfigError(f"training.init_from: no model at {secrets.redact(url)}. Received: "
                          f"training.init_from={secrets.redact(source)}; expected a job id with a model.tar.gz, "
                          "a model archive (.tar.gz) or a .keras file")


def _check_operating_point(job: Any, task: Task) -> None:
    """``evaluation.operating_point.accept_class`` is one of the classes (checked before training)."""
    point = job.config.evaluation.operating_point
    if point is not None and task.name == "classification":
        from brevetti_pipe.run.operating_point import accept_index

        accept_index(task.classes, point.accept_class)


def _output_layer(model: Any) -> Any:
    import keras

    layer = model.layers[-1] if model.layers else None
    while isinstance(layer, keras.Model) and layer.layers:
        layer = layer.layers[-1]
    return layer


def _check_built(job: Any, recipe: Recipe, model: Any, task: Task) -> None:
    """What the builder returned is a single-output keras.Model with one probability per class."""
    import keras

    want = f"a keras.Model with output shape (None, ..., {len(task.classes)}) for classes {task.classes}"
    if not isinstance(model, keras.Model):
        raise ConfigError(f"run={recipe.name!r}: build_model returned {type(model).__name__ if model is not None else None}; "
                          f"expected {want}")
    shapes = [tuple(o.shape) for o in model.outputs]
    if len(shapes) != 1 or not shapes[0] or shapes[0][-1] != len(task.classes):
        raise ConfigError(f"run={recipe.name!r}: build_model returned a model with output shape(s) "
                          f"{shapes[0] if len(shapes) == 1 else shapes}; expected {want}")
    if getattr(model, "compiled", False):
        return  # the builder chose its own loss
    layer = _output_layer(model)
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if not (isinstance(layer, keras.layers.Softmax) or activation in ("softmax", "sigmoid")):
        raise ConfigError(f"run={recipe.name!r}: the model's output layer {getattr(layer, 'name', layer)!r} has "
                          f"activation {activation!r}; expected softmax (or sigmoid) probabilities, e.g. "
                          "keras.layers.Dense(len(classes), activation='softmax'), or compile the model with a "
                          "from_logits loss yourself")


def train_evaluate(job: Any, recipe: Recipe) -> Any:
    """(``job``: the running :class:`~brevetti_pipe.run.job.Job`; typed loosely, the job imports this module.)
    Build the recipe's model in ``job.strategy.scope()``, fit it, evaluate it; returns the model."""
    from brevetti_pipe.run.export import weights_sha256

    _check_init_from(job)
    _check_builder_early(job, recipe, task_name(job, recipe.task))
    task = task_of(job, recipe.task)
    _check_operating_point(job, task)
    batch_size = batch_size_of(job)
    train_gen, devel_gen = generators(job, task, batch_size)
    spec = train_gen.get_dataset().element_spec
    input_shape = tuple(spec[0].shape[1:])
    _check_input(input_shape, task.structure)
    job.seed_frameworks()  # after all I/O: storage retries must not shift the initial weights
    with dtype_policy(job), job.strategy.scope():
        model = recipe.run(job, input_shape, list(task.classes))
        _check_built(job, recipe, model, task)
        if job.config.training.init_from:
            from brevetti_pipe.run.checkpoint import init_weights

            init_weights(job, model)
        model = prepare_model(job, model, task, spec[1])
    if task.name == "segmentation":
        job.metadata["segmentation_classes"] = task.classes
    trained = fit(job, model, train_gen, devel_gen)
    job.weights_sha256 = weights_sha256(model)
    # the devel images this process's validation read (and cached) are not decoded again; without it
    # (a resumed finished training, the multi-worker loop) the evaluation's own one pass streams
    validated = bool(trained) and job.num_workers == 1
    evaluate_all(job, model, task, devel_gen if validated else None)
    return model
