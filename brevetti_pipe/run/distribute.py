"""Multi-worker training: a distributed training loop for Keras models under MultiWorkerMirroredStrategy.

Keras 3's ``Model.fit`` does not run under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585), so multi-worker jobs train with this loop: every worker feeds its
own shard, gradients are all-reduced by the strategy, and the chief reports progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

    from brevetti_pipe.run.job import Job

__all__ = ["fit_distributed", "predict_local"]


def fit_distributed(
    job: Job, model: Any, dataset: tf.data.Dataset, steps_per_epoch: int, epochs: int, global_batch_size: int,
) -> list[dict[str, float]]:
    """Train a compiled Keras ``model`` on ``dataset`` (``(x, y)`` batches of ``global_batch_size``).

    The model must have been built in ``job.strategy.scope()``; its compiled loss and optimizer
    are used. Reports ``train_loss`` and ``train_accuracy`` per epoch through the job.

    Returns:
        One metrics dict per epoch.
    """
    import keras
    import tensorflow as tf

    strategy = job.strategy
    loss_fn = keras.losses.get(model.loss)
    optimizer = model.optimizer
    dist = iter(strategy.experimental_distribute_dataset(dataset))

    def step(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = loss_fn(y, pred)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(pred, -1), tf.argmax(y, -1)), tf.float32))
        return loss, correct

    @tf.function
    def train_step(batch: Any) -> tuple[tf.Tensor, tf.Tensor]:
        loss, correct = strategy.run(step, args=batch)
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    history = []
    for epoch in range(epochs):
        total_loss, total_correct = 0.0, 0.0
        for _ in range(steps_per_epoch):
            loss, correct = train_step(next(dist))
            total_loss += float(loss)
            total_correct += float(correct)
        metrics = {"train_loss": total_loss / steps_per_epoch,
                   "train_accuracy": total_correct / (steps_per_epoch * global_batch_size)}
        history.append(metrics)
        job.report_progress(epoch + 1, metrics)
    return history


def predict_local(model: Any, dataset: tf.data.Dataset) -> list[tuple[Any, Any]]:
    """``(prediction, target)`` batches computed on this worker alone (no collective ops)."""
    return [(model(x, training=False).numpy(), y) for x, y in dataset.as_numpy_iterator()]
