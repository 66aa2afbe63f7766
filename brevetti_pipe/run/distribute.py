"""Multi-worker training: a distributed training loop for Keras models under MultiWorkerMirroredStrategy.

Keras 3's ``Model.fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so multi-worker jobs train with this loop: every worker feeds its
own shard, gradients are all-reduced by the strategy, and the chief reports progress.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["fit_distributed", "predict_local"]


def fit_distributed(
    job: Any, model: Any, dataset: tf.data.Dataset, steps_per_epoch: int, epochs: int, global_batch_size: int,
    *, initial_epoch: int = 0, callbacks: Sequence[Any] = (),
) -> list[dict[str, float]]:
    """Train a compiled Keras ``model`` on ``dataset`` (``(x, y)`` batches of ``global_batch_size``)
    for epochs ``initial_epoch`` .. ``epochs - 1``.

    The model must have been built in ``job.strategy.scope()``; its compiled loss and optimizer
    are used. Reports ``train_loss`` and ``train_accuracy`` per epoch through the job; Keras
    ``callbacks`` get the epoch hooks (``loss``, ``accuracy`` in their logs) and may stop training.
    Works for classification and segmentation (accuracy over every predicted position).
    (``job``: the running :class:`~brevetti_pipe.run.job.Job`; typed loosely, the job imports this module.)

    Returns:
        One metrics dict per epoch run here.
    """
    import keras
    import tensorflow as tf

    strategy = job.strategy
    loss_fn = keras.losses.get(model.loss)
    optimizer = model.optimizer
    dist = iter(strategy.experimental_distribute_dataset(dataset))

    def step(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = loss_fn(y, pred)
            if per_example.shape.rank > 1:  # a loss per pixel: one per example
                per_example = tf.reduce_mean(tf.reshape(per_example, [tf.shape(per_example)[0], -1]), axis=1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        truth = tf.argmax(y, -1) if y.shape[-1] == pred.shape[-1] else tf.cast(tf.reshape(y, tf.shape(pred)[:-1]), tf.int64)
        hits = tf.cast(tf.equal(tf.argmax(pred, -1), truth), tf.float32)
        return loss, tf.reduce_sum(hits), tf.cast(tf.size(hits), tf.float32)

    @tf.function
    def train_step(batch: Any) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        loss, correct, count = strategy.run(step, args=batch)
        return tuple(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in (loss, correct, count))

    hooks = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    hooks.on_train_begin()
    history = []
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        total_loss, total_correct, total_count = 0.0, 0.0, 0.0
        for _ in range(steps_per_epoch):
            loss, correct, count = train_step(next(dist))
            total_loss += float(loss)
            total_correct += float(correct)
            total_count += float(count)
        metrics = {"train_loss": total_loss / steps_per_epoch, "train_accuracy": total_correct / max(total_count, 1.0)}
        history.append(metrics)
        job.report_progress(epoch + 1, metrics, epochs=epochs)
        hooks.on_epoch_end(epoch, {"loss": metrics["train_loss"], "accuracy": metrics["train_accuracy"]})
        if model.stop_training:
            break
    hooks.on_train_end()
    return history


def predict_local(model: Any, dataset: tf.data.Dataset) -> list[tuple[Any, Any]]:
    """``(prediction, target)`` batches computed on this worker alone (no collective ops)."""
    return [(model(x, training=False).numpy(), y) for x, y in dataset.as_numpy_iterator()]
