"""--tensorboard: a model's training as TensorBoard logs, beside the PNG curves.

In:  a folder for one model's run (TENSORBOARD/<the model folder's name>: mlp, mlp-loaded,
     pretrain-gmf, ...), the K of HR@K, and each epoch's record (`training.train_epochs`).
Out: Keras' own `keras.callbacks.TensorBoard` logs in FOLDER/train (the loss and the model's
     metrics per epoch), and HR@K and NDCG@K per epoch as scalars in FOLDER/validation and
     FOLDER/test, tagged `epoch_HR@K` and `epoch_NDCG@K`, so TensorBoard draws validation and
     test on one chart. Steps count epochs from 0, as Keras' callback does. Each epoch is
     flushed when it ends: TensorBoard shows a run as it trains.
"""
import os

import keras
import tensorflow as tf


class TensorBoardLog:
    """One model's TensorBoard run: `callback` for `model.fit`, `write_scores` per epoch."""

    def __init__(self, folder, top_k):
        self.folder, self.top_k, self.writers = folder, top_k, {}
        self.callback = keras.callbacks.TensorBoard(folder, write_graph=False, profile_batch=0,
                                                    update_freq="epoch")

    def write_scores(self, record):
        """An epoch's validation and test HR@K and NDCG@K (a record of `training.fit`'s
        history) as scalars at step epoch - 1."""
        for prefix, run in (("valid", "validation"), ("test", "test")):
            if f"{prefix}_hit_ratio" not in record:
                continue
            if run not in self.writers:
                self.writers[run] = tf.summary.create_file_writer(os.path.join(self.folder, run))
            with self.writers[run].as_default(step=record["epoch"] - 1):
                tf.summary.scalar(f"epoch_HR@{self.top_k}", record[f"{prefix}_hit_ratio"])
                tf.summary.scalar(f"epoch_NDCG@{self.top_k}", record[f"{prefix}_ndcg"])
            self.writers[run].flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()
