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

RESUME_ARGS = (*CLS_ARGS, "settings.epochs=5")


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
