"""Training: fresh negatives every epoch, `model.fit`, validation, checkpoints, resume.

In:  a compiled model from `models.build_model`, a `split.Split`, and plain arguments.
Out: the trained model (the best validation epoch's weights when validation is on) and its
     per-epoch history (loss, seconds, validation and test HR/NDCG).
Guarantees: each epoch's negatives depend only on (seed, epoch), and after every epoch the
     model, its optimizer state, the epoch and the history are written atomically, so a run
     stopped after epoch k and resumed continues exactly where it stopped. A NaN or infinite
     loss stops training with `RunError`, keeping the last good checkpoint. The test set is
     scored every epoch for the curves only: nothing is chosen with it.
"""
import concurrent.futures
import functools
import json
import math
import os
import time

import keras
import numpy as np
from tqdm import tqdm

import backend
import evaluate
from errors import InputError, RunError, first_sentence
from files import atomic_write, json_default
import model_table
import models
import sampling
from split import split_digest


def seed_everything(seed):
    """Python, NumPy and Keras (TensorFlow) seeded in one place."""
    keras.utils.set_random_seed(seed)


def rows_per_step(labels, batch_size, replicas=1):
    """BATCH_SIZE counts samples, (user, artist) pairs; a pointwise row holds 1 + NEG_RATIO of
    them -> how many rows make one step (at least one, no more than the data), a multiple of
    `replicas`: Keras' mirrored fit needs a first batch that splits evenly (distribute.py)."""
    per_row = labels.shape[1] if labels.ndim == 2 else 1
    rows = max(1, min(len(labels), batch_size // per_row))   # no batch larger than the data
    return max(replicas, rows - rows % replicas)


def batched_dataset(inputs, labels, batch_size):
    """What `model.fit` trains on: the arrays in batches of `batch_size` rows, in order, the
    last one partial (tf_fast: a tf.data pipeline of pre-batched arrays; jax_fast: a
    keras.utils.PyDataset of slices)."""
    return backend.fast().batched_dataset(inputs, labels, batch_size)


def epoch_data(model_name, split, neg_ratio, seed, epoch, rows="play"):
    """One epoch's training inputs and labels; depends only on (seed, epoch). Pointwise rows
    are a play and its negatives (`rows="play"`) or single pairs (`rows="pair"`)."""
    rng = np.random.default_rng([seed, 2, epoch])
    if model_table.spec(model_name).pairwise:
        users, positives, negatives = sampling.pairwise_set(
            split.train_users, split.train_items, split.sampler, rng)
        inputs = {"user": users, "item": positives, "negative_item": negatives}
        return inputs, np.ones(len(users), np.float32)
    users, items, labels = sampling.training_set(
        split.train_users, split.train_items, split.sampler, neg_ratio, rng,
        shuffle=rows == "play")
    if rows == "pair":
        users, items, labels = sampling.one_pair_per_row(users, items, labels, rng)
    return {"user": users, "item": items}, labels


def score_sets(model, split, top_k, with_validation):
    """Test (and validation) HR/NDCG of `model` on `split` with one scorer."""
    scorer = models.make_scorer(model)
    result = {"test": evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                              split.test_negatives, top_k)}
    if with_validation and len(split.valid_users):
        result["valid"] = evaluate.hit_ratio_at_k(scorer, split.valid_users, split.valid_items,
                                                  split.valid_negatives, top_k)
    return result


STATE_RECORD = "ncf_state.json"   # inside the checkpoint's zip, beside Keras' own files


class Checkpoints:
    """One model's checkpoint in `folder`: one file, committed by one rename, holding the model,
    its optimizer state and (in the same zip) the epoch, history, best epoch, fingerprint and
    data digest, so a kill at any instant leaves the previous checkpoint or the new one, whole.
    The best epoch's weights are written first, under that epoch's name, which the state names;
    older ones are removed only once a checkpoint naming a newer one is in place."""

    def __init__(self, folder, label):
        self.folder, self.label = folder, label
        self.model_path = os.path.join(folder, f"checkpoint-{label}.keras")

    def best_path(self, epoch):
        return os.path.join(self.folder, f"best-{self.label}-epoch{epoch}.weights.h5")

    @staticmethod
    def any_in(folder):
        """Is there a checkpoint of any model's run in `folder`?"""
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return any(name.startswith("checkpoint-") and name.endswith(".keras") for name in names)

    def save(self, model, state):
        atomic_write(self.model_path, lambda path: models.save(
            model, path, state["data_digest"], {STATE_RECORD: state}))
        keep = os.path.basename(self.best_path(state["best"]["epoch"]))
        for name in os.listdir(self.folder):
            if name.startswith(f"best-{self.label}-epoch") and name != keep:
                os.remove(os.path.join(self.folder, name))

    def save_best(self, model, epoch):
        atomic_write(self.best_path(epoch), model.save_weights)

    def load(self, fingerprint):
        """The checkpoint's model and state, or a one-line InputError."""
        if not os.path.isfile(self.model_path):
            raise InputError(f"--resume: no checkpoint at {self.model_path}; run without "
                             "--resume to start")
        damaged = "--resume: a checkpoint file is damaged ({}); run without --resume to start again"
        state = models.saved_record(self.model_path, STATE_RECORD)
        where = f"{self.model_path}, {STATE_RECORD}"
        fields = ("fingerprint", "history", "best", "epoch", "data_digest")
        if (not isinstance(state, dict) or not all(field in state for field in fields)
                or not isinstance(state["fingerprint"], dict)):
            raise InputError(damaged.format(f"{where} is missing or lacks "
                                               + ", ".join(fields)))
        if wrong := _state_problem(state):
            raise InputError(damaged.format(f"{where}: {wrong}"))
        best = self.best_path(state["best"]["epoch"])
        if state["best"]["epoch"] > 0 and not os.path.isfile(best):
            raise InputError(damaged.format(f"{best}, the best epoch's weights, is missing"))
        if state["fingerprint"] != fingerprint:
            saved = state["fingerprint"]
            changed = sorted(k for k in set(fingerprint) | set(saved)
                             if saved.get(k) != fingerprint.get(k))
            raise InputError(f"--resume: the checkpoint {self.model_path} was made with "
                             f"other settings ({', '.join(changed)}); use the same "
                             "settings, or run without --resume")
        try:
            return models.load(self.model_path), state
        except Exception as error:  # a truncated or foreign file
            reason = first_sentence(error)
            if "file not found" in reason.lower():    # Keras' words for a file it cannot open
                reason = "not a readable Keras file (cut short, or not one this script saved)"
            raise InputError(damaged.format(f"{self.model_path}: {reason}")) from None


def _is_number(value, integer=False):
    kinds = (int,) if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _state_problem(state):
    """What is wrong with a checkpoint's state (a hand-edited one), or None."""
    epoch, history, best = state["epoch"], state["history"], state["best"]
    if not _is_number(epoch, integer=True) or epoch < 0:
        return f"'epoch' is {epoch!r}, not a count of epochs"
    if not isinstance(history, list) or len(history) != epoch or not all(
            isinstance(record, dict) for record in history):
        return f"'history' is not a list of the {epoch} epochs' records"
    if (not isinstance(best, dict) or not _is_number(best.get("epoch"), integer=True)
            or not 0 <= best["epoch"] <= epoch
            or not all(_is_number(best.get(key)) for key in ("hit_ratio", "ndcg"))):
        return f"'best' is {best!r}, not the best epoch (0 to {epoch}) and its two scores"
    return None


class Progress(keras.callbacks.Callback):
    """Times an epoch's steady steps: the first call of an epoch traces the step function (tens
    of seconds on the first epoch), so an estimate that counted it would be wrong from the start.
    With `bar`, a progress bar from the second call on, over the rest of the epoch's steps."""

    def __init__(self, steps, bar):
        super().__init__()
        self.steps, self.bar = steps, bar
        self.first_step, self.first_time, self.progress = None, None, None

    def on_train_batch_end(self, batch, logs=None):
        if self.first_step is None:
            self.first_step, self.first_time = batch + 1, time.time()
            if self.bar and self.steps > self.first_step:
                self.progress = tqdm(total=self.steps, initial=self.first_step, unit="step",
                                     leave=False, dynamic_ncols=True)
        elif self.progress is not None:
            self.progress.update(batch + 1 - self.progress.n)

    def on_epoch_end(self, epoch, logs=None):
        if self.progress is not None:
            self.progress.close()

    def steady_seconds(self, measured):
        """The epoch's training time without the first call's tracing, scaled to every step."""
        if self.first_step is None or self.first_step >= self.steps:
            return measured
        return (time.time() - self.first_time) * self.steps / (self.steps - self.first_step)


def resume_from(checkpoints, fingerprint, split, digest, log):
    """The checkpoint's model and state, if they fit this data -> (model, history, best, epoch)."""
    model, state = checkpoints.load(fingerprint)
    users, items = models.table_sizes(model)
    if (users, items) != (split.num_users, split.num_items):
        raise InputError(f"--resume: the checkpoint in {checkpoints.model_path} has "
                         f"{users:,} users and {items:,} artists, the data now "
                         f"{split.num_users:,} and {split.num_items:,}; the data changed "
                         "since it was made, so run without --resume")
    if state["data_digest"] != digest:
        raise InputError(f"--resume: the checkpoint in {checkpoints.model_path} was "
                         f"trained on other plays or test artists than these (data "
                         f"digest {state['data_digest']}, here {digest}); the data "
                         "changed since it was made, so run without --resume")
    log(f"resumed from {checkpoints.model_path} after epoch {state['epoch']}")
    return model, state["history"], state["best"], state["epoch"]


class NegativesAhead:
    """Each epoch's training rows, the next epoch's drawn in a thread while this one trains
    (NumPy releases the GIL in its sorts, searches and draws). The arrays are the ones
    `epoch_data` gives when called then: they depend only on (seed, epoch). Two epochs' rows are
    in memory at once."""

    def __init__(self, model_name, split, neg_ratio, seed, rows, num_epoch):
        self.draw = functools.partial(epoch_data, model_name, split, neg_ratio, seed, rows=rows)
        self.num_epoch, self.ahead = num_epoch, None          # (epoch, its future)
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="negatives")

    def get(self, epoch):
        """Epoch `epoch`'s (inputs, labels), then the next epoch's started."""
        if self.ahead is not None and self.ahead[0] == epoch:
            drawn = self.ahead[1].result()
        else:
            drawn = self.draw(epoch)
        self.ahead = ((epoch + 1, self.pool.submit(self.draw, epoch + 1))
                      if epoch + 1 < self.num_epoch else None)
        return drawn

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def train_epoch(model, split, epoch, *, batch_size, negatives, bar, learning_rate, checkpoints,
                callbacks=()):
    """One epoch of fresh negatives (from `negatives`, a NegativesAhead) and `model.fit` ->
    (loss, seconds, seconds waited for the negatives, samples, steady seconds: the epoch's time
    without the first call's tracing)."""
    started = time.time()
    inputs, labels = negatives.get(epoch)
    sample_seconds = time.time() - started
    if len(labels) == 0:
        raise InputError("no training pairs: every user with plays to train on has "
                         "played every artist")
    strategy = getattr(model, "distribute_strategy", None)      # TensorFlow's only
    per_step = rows_per_step(labels, batch_size, strategy.num_replicas_in_sync if strategy else 1)
    progress = Progress(-(-len(labels) // per_step), bar)
    fitted = model.fit(batched_dataset(inputs, labels, per_step), epochs=epoch + 1,
                       initial_epoch=epoch, verbose=0, shuffle=False,
                       callbacks=[keras.callbacks.TerminateOnNaN(), progress, *callbacks])
    loss = float(fitted.history["loss"][-1])
    if not math.isfinite(loss):
        kept = (f"the last good checkpoint ({checkpoints.model_path}, epoch {epoch}) is kept"
                if epoch > 0 else "no epoch completed, so there is no checkpoint")
        raise RunError(f"training diverged in epoch {epoch + 1} (loss {loss}); lower "
                       f"--learning_rate (now {learning_rate}) or --batch_size; {kept}")
    seconds = time.time() - started
    steady = sample_seconds + progress.steady_seconds(seconds - sample_seconds)
    return loss, seconds, sample_seconds, labels.size, steady


def epoch_line(record, num_epoch, top_k, samples, seconds_left):
    valid = (f", valid HR@{top_k} {record['valid_hit_ratio']:.3f} NDCG {record['valid_ndcg']:.3f}"
             if "valid_hit_ratio" in record else "")
    left = f", about {format_duration(seconds_left)} left" if record["epoch"] < num_epoch else ""
    return (f"epoch {record['epoch']}/{num_epoch}: loss {record['loss']:.4f}{valid}, "
            f"{record['seconds']:.1f} s incl. {record['sample_seconds']:.1f} s sampling "
            f"({samples / max(record['seconds'], 1e-9):,.0f} samples/s){left}")


def format_duration(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def fit(model, split, *, num_epoch, batch_size, neg_ratio, seed, top_k, validation, patience,
        checkpoints, fingerprint, rows="play", resume=False, learning_rate=None, bar=False,
        log=print, tensorboard=None):
    """Trains `model` for up to `num_epoch` epochs -> (model, history list, best epoch).
    `tensorboard`: a summaries.TensorBoardLog that logs each epoch, or None."""
    history, best, start = [], {"epoch": 0, "hit_ratio": -1.0, "ndcg": -1.0}, 0
    fingerprint = json.loads(json.dumps(fingerprint, default=json_default))  # as stored
    digest = split_digest(split)     # the data itself: the fingerprint names only its source
    if resume:
        model, history, best, start = resume_from(checkpoints, fingerprint, split, digest, log)
    negatives = NegativesAhead(model.name, split, neg_ratio, seed, rows, num_epoch)
    try:
        history, best = train_epochs(model, split, range(start, num_epoch), history, best,
                                     negatives, batch_size=batch_size, top_k=top_k,
                                     validation=validation, patience=patience,
                                     checkpoints=checkpoints, fingerprint=fingerprint,
                                     digest=digest, learning_rate=learning_rate, bar=bar, log=log,
                                     tensorboard=tensorboard)
    finally:
        negatives.close()
    return restore_best(model, checkpoints, best, history, validation, log)


def train_epochs(model, split, epochs, history, best, negatives, *, batch_size, top_k,
                 validation, patience, checkpoints, fingerprint, digest, learning_rate, bar,
                 log, tensorboard=None):
    """The epochs of `fit`, each checkpointed, until the last or early stopping ->
    (history, best)."""
    num_epoch = epochs.stop
    for epoch in epochs:
        if validation and epoch - best["epoch"] >= patience and best["epoch"] > 0:
            break
        loss, seconds, sample_seconds, samples, steady = train_epoch(
            model, split, epoch, batch_size=batch_size, negatives=negatives, bar=bar,
            learning_rate=learning_rate, checkpoints=checkpoints,
            callbacks=[tensorboard.callback] if tensorboard else [])
        scoring = time.time()
        scores = score_sets(model, split, top_k, validation)
        record = {"epoch": epoch + 1, "loss": loss, "sample_seconds": round(sample_seconds, 2),
                  "seconds": round(seconds, 2), "test_hit_ratio": scores["test"]["hit_ratio"],
                  "test_ndcg": scores["test"]["ndcg"]}
        if "valid" in scores:
            record.update(valid_hit_ratio=scores["valid"]["hit_ratio"],
                          valid_ndcg=scores["valid"]["ndcg"])
            key = (record["valid_hit_ratio"], record["valid_ndcg"])
            if key > (best["hit_ratio"], best["ndcg"]):
                best = {"epoch": epoch + 1, "hit_ratio": key[0], "ndcg": key[1]}
                checkpoints.save_best(model, epoch + 1)
        history.append(record)
        if tensorboard:
            tensorboard.write_scores(record)
        checkpoints.save(model, {"epoch": epoch + 1, "history": history, "best": best,
                                 "fingerprint": fingerprint, "data_digest": digest})
        per_epoch = steady + time.time() - scoring
        log(epoch_line(record, num_epoch, top_k, samples, per_epoch * (num_epoch - epoch - 1)))
    return history, best


def restore_best(model, checkpoints, best, history, validation, log):
    """With validation, the best epoch's weights -> (model, history, best epoch)."""
    if validation and best["epoch"] > 0 and best["epoch"] != len(history):
        path = checkpoints.best_path(best["epoch"])
        try:
            model.load_weights(path)
        except Exception as error:   # cut short, or replaced by hand, since it was written
            raise InputError(f"the best epoch's weights ({path}) cannot "
                             f"be read ({first_sentence(error)}); run again without "
                             "--resume") from None
        log(f"best validation epoch: {best['epoch']} (weights restored)")
    return model, history, best["epoch"] or len(history)
