"""A training process for the resume test: ``python -m tests.run._resume_child ROOT DATA JOB_ID [--block]``.

With ``--block`` it stops moving after the first step of epoch 3 and writes ``ROOT/epoch3-started``,
so the test can kill it (-9) in the middle of that epoch.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from tests.run.conftest import CLS_ARGS

#: 5 epochs, cut short by early stopping after epoch 4: nothing improves on epoch 1 by 1e9, so early
#: stopping's counter (patience 3) and reduce_lr's (patience 2, cooldown 1: the rate halves after epoch 3)
#: both run across the kill in epoch 3; the best weights (epoch 1's) are restored at the end
RESUME_ARGS = (
    *CLS_ARGS, "settings.epochs=5",
    "+training.callbacks.early_stopping.patience=3", "+training.callbacks.early_stopping.min_delta=1e9",
    "+training.callbacks.early_stopping.restore_best_weights=true",
    "+training.callbacks.reduce_lr_on_plateau.patience=2", "+training.callbacks.reduce_lr_on_plateau.factor=0.5",
    "+training.callbacks.reduce_lr_on_plateau.cooldown=1", "+training.callbacks.reduce_lr_on_plateau.min_delta=1e9",
    "+training.callbacks.csv_logger.filename=log.csv",
)


def main() -> None:
    root, data, job_id, *flags = sys.argv[1:]
    logging.basicConfig(level=logging.INFO)
    from brevetti_pipe import Job

    overrides = [*RESUME_ARGS, f"platform.root={root}", f"datasets.vials.url={data}", f"job.id={job_id}"]
    if "--block" in flags:
        import keras

        from brevetti_pipe.run.keras_callbacks import keras_callback

        @keras_callback("block_in_epoch_3")
        class Block(keras.callbacks.Callback):
            epoch = 0

            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == 2:  # 0-based: the third epoch, one step in
                    Path(root, "epoch3-started").write_text(str(batch))
                    threading.Event().wait()  # until the test kills this process

        overrides.append("+training.callbacks.block.type=block_in_epoch_3")
    Job.init(overrides=overrides).start()


if __name__ == "__main__":
    main()
