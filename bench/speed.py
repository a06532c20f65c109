"""Speed of the project's pipeline against the notebook-faithful one, measured in one run.

Run from the repository root:   python bench/speed.py [--scale=1.0] [--seed=0]
(`--help` lists the options; docs/results.md has the results.)

Data: the synthetic LastFM-like set of `data.load("synthetic", scale, seed)` (at scale 1.0:
358,868 users, 160,112 artists, 17.3M plays), written by a child process as the three CSV files
into a temporary folder (so that generating it counts neither in the timings nor in this
process' peak memory), read back with `data.load_folder` twice (CSV, then the .npz cache),
split with `leave_one_out(plays, 99, seed)`. The folder is deleted at the end.

Measured (each row of the table says how: timed in full, or a slice timed and extrapolated):
  load_seconds / cached_load_seconds  data.load_folder, first call (parse + cache) and second
  sampling_seconds                    training.epoch_data for one full epoch (neg_ratio 4)
  epoch_seconds[_at_1024]             a whole epoch through training.train_epoch, its negatives
                                      drawn beside the previous epoch's training (NegativesAhead),
                                      at the best batch size (and at 1024): the second of two,
                                      timed in full; epoch_over_training[_at_1024] divides it by
                                      training alone at that batch (epoch_samples / samples/s)
  train_samples_per_s[_<batch>]       build_model("mlp", optimizer="lazy_adam") fed by
                                      training.batched_dataset, model.fit, steady state
                                      (a sample is one (user, artist) pair); the median of
                                      WINDOWS timed windows, at each batch size of TRAIN_PLAN;
                                      train_samples_per_s is the best batch size's
  naive_train_samples_per_s           models.notebook_model(): Keras' Embedding, Dense and Adam, one
                                      pair per sample, from_tensor_slices(...).batch(1024)
  eval_pairs_per_s                    models.make_scorer + evaluate.hit_ratio_at_k, all users
  naive_eval_pairs_per_s              the notebook's loop, two model.predict calls per user, on
                                      models.notebook_model() holding the trained model's weights
  peak_rss_mb                         resource.getrusage(RUSAGE_SELF).ru_maxrss of this process
The last line of output is one JSON object with every number.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import data  # noqa: E402  (pandas and NumPy only: the stages that need TensorFlow import it)
import backend  # noqa: E402
import kernels  # noqa: E402
import sampling  # noqa: E402
from split import leave_one_out  # noqa: E402

FULL_SIZES = (358_868, 160_112, 17_302_623)   # users, artists, plays at scale 1.0
NEG_RATIO = 4                                # the notebook's, the script's default
NUM_EVAL_NEGATIVES = 99
TOP_K = 10
PROJECT_BATCH = 1024                         # the notebook's, the script's default
# batch size -> (warm-up steps, timed steps); both cut to what one epoch holds
TRAIN_PLAN = {1024: (20, 2400), 8192: (10, 450), 65536: (4, 120), 131072: (4, 60)}
NAIVE_PLAN = (20, 240)                       # batch 1024 (the notebook's), Keras' dense Adam
WINDOWS = 3                                  # timed windows per measurement; the median counts
NAIVE_EVAL_USERS = (2, 30)                   # warm-up users, timed users


def log(message):
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# CPU accounting: how much of the machine this process had, and how much others took

def _machine_busy_seconds():
    try:
        with open("/proc/stat") as stream:
            fields = [int(v) for v in stream.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Phase:
    """Times a block: wall seconds, this process' CPU seconds, and the share of the machine's
    CPU that other processes used meanwhile (0 = an idle machine, 1 = every core busy)."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self._wall, self._own, self._busy = time.perf_counter(), _own_cpu_seconds(), \
            _machine_busy_seconds()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = _own_cpu_seconds() - self._own
        others = (_machine_busy_seconds() - self._busy) - self.cpu_seconds
        self.others_share = max(0.0, others) / max(self.seconds * os.cpu_count(), 1e-9)
        return False


# ----------------------------------------------------------------------------------------------
# Writing the CSV files (the child process)

def _digits(values):
    """Non-negative ints -> (n, width) uint8 ASCII digits right-aligned, (n, width) bool mask of
    the digits to keep (no leading zeros)."""
    values = np.asarray(values, np.int64)
    if len(values) and values.min() < 0:
        raise ValueError("negative value")
    width = len(str(int(values.max()))) if len(values) else 1
    text = np.empty((len(values), width), np.uint8)
    rest = values.copy()
    for position in range(width - 1, -1, -1):
        text[:, position] = 48 + rest % 10
        rest //= 10
    length = np.ones(len(values), np.int64)
    for power in range(1, width):
        length += values >= 10 ** power
    keep = np.arange(width)[None, :] >= (width - length)[:, None]
    return text, keep


def write_int_csv(path, columns, chunk=2_000_000):
    """A CSV of integer columns, byte for byte what `DataFrame.to_csv(index=False)` writes, but
    vectorised: pandas' writer, one row at a time, would take most of the child's time."""
    names = list(columns)
    size = len(columns[names[0]])
    with open(path, "wb") as stream:
        stream.write((",".join(names) + "\n").encode())
        for start in range(0, size, chunk):
            texts, keeps = [], []
            for number, name in enumerate(names):
                text, keep = _digits(columns[name][start:start + chunk])
                separator = np.full((len(text), 1), ord("\n" if number == len(names) - 1
                                                         else ","), np.uint8)
                texts += [text, separator]
                keeps += [keep, np.ones((len(text), 1), bool)]
            np.concatenate(texts, axis=1)[np.concatenate(keeps, axis=1)].tofile(stream)


def write_csvs(folder, scale, seed):
    """The synthetic data of data.load("synthetic", scale, seed) as the notebook's three CSVs."""
    started = time.perf_counter()
    sizes = [max(2, round(n * scale)) for n in FULL_SIZES]   # as data.load does
    play_df, artist_df, user_df = data.make_planted(*sizes, seed)
    made = time.perf_counter()
    write_int_csv(os.path.join(folder, data.PLAY_FILE),
                  {c: play_df[c].to_numpy() for c in data.COLUMNS[data.PLAY_FILE]})
    artist_df.to_csv(os.path.join(folder, data.ARTIST_FILE), index=False)
    user_df.to_csv(os.path.join(folder, data.USER_FILE), index=False)
    return {"generate_seconds": made - started, "write_csv_seconds": time.perf_counter() - made,
            "plays": len(play_df),
            "csv_mb": sum(os.path.getsize(os.path.join(folder, n)) for n in data.COLUMNS) / 2**20,
            "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ----------------------------------------------------------------------------------------------
# The measurements

def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python bench/speed.py",
        description="Speed of the project's pipeline against the notebook's, on synthetic data "
                    "the size of the notebook's 360K files.")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="size of the synthetic data; 1.0 = 358,868 users, 160,112 artists, "
                             "17.3M plays (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, the split, the negatives and the weights "
                             "(default: %(default)s)")
    parser.add_argument("--write_csv", default="", metavar="FOLDER",
                        help="for the script's own child process: write the CSVs into FOLDER, "
                             "print their figures and exit (default: %(default)r, measure)")
    args = parser.parse_args(argv)
    if not args.scale > 0:
        parser.error(f"--scale={args.scale}: give a number above 0")
    return args


def slice_of(inputs, labels, start, stop):
    return {name: array[start:stop] for name, array in inputs.items()}, labels[start:stop]


def time_fit(model, dataset_for, warm_steps, timed_steps, samples_per_step, label):
    """A warm-up fit (tracing), then WINDOWS timed fits of timed_steps // WINDOWS steps each,
    back to back -> the median window's rate (on a shared machine one window can lose a core
    to another process), with every window's rate."""
    model.fit(dataset_for(0, warm_steps), verbose=0)
    per_window = max(1, timed_steps // WINDOWS)
    windows = []
    for number in range(WINDOWS):
        start = warm_steps + number * per_window
        dataset = dataset_for(start, start + per_window)
        with Phase(f"{label} {number}") as phase:
            history = model.fit(dataset, verbose=0)
        windows.append((per_window * samples_per_step / phase.seconds, phase, history))
    rate, phase, history = sorted(windows, key=lambda w: w[0])[len(windows) // 2]
    return {"steps": per_window * len(windows), "samples": per_window * len(windows)
            * samples_per_step, "samples_per_s": rate, "ms_per_step": 1000 * samples_per_step
            / rate, "phase": phase, "window_samples_per_s": [round(w[0]) for w in windows],
            "loss": float(history.history["loss"][-1])}


def plan(steps_in_epoch, warm_steps, timed_steps):
    """Warm-up and timed steps cut to what one epoch holds."""
    warm_steps = min(warm_steps, max(1, steps_in_epoch // 10))
    return warm_steps, max(WINDOWS, min(timed_steps, steps_in_epoch - warm_steps))


def time_project_training(split, inputs, labels, batch_size, warm_steps, timed_steps, seed):
    """LazyAdam + batched_dataset, as training.fit feeds it (a step of `batch_size` samples is
    batch_size // 5 rows of a play and its 4 negatives) -> (row, model)."""
    import models
    import training
    rows = training.rows_per_step(labels, batch_size)
    warm_steps, timed_steps = plan(len(labels) // rows, warm_steps, timed_steps)
    training.seed_everything(seed)
    model = models.build_model("mlp", split.num_users, split.num_items, optimizer="lazy_adam")

    def dataset_for(start, stop):
        return training.batched_dataset(*slice_of(inputs, labels, start * rows, stop * rows),
                                        rows)

    measured = time_fit(model, dataset_for, warm_steps, timed_steps, rows * labels.shape[1],
                        f"train {batch_size}")
    return {"batch_size": batch_size, **measured}, model


def time_naive_training(split, inputs, labels, seed):
    """The notebook's way: its model (Keras' Embedding and Adam), one pair per sample,
    from_tensor_slices(...).batch(1024)."""
    import tensorflow as tf
    import models
    import training
    batch_size, (warm_steps, timed_steps) = 1024, NAIVE_PLAN
    rows = (warm_steps + timed_steps) * batch_size // labels.shape[1] + 1
    inputs, labels = sampling.flat_pairs(*slice_of(inputs, labels, 0, rows),
                                         np.random.default_rng(0))
    warm_steps, timed_steps = plan(len(labels) // batch_size, warm_steps, timed_steps)

    def notebook_dataset(start, stop):
        x, y = slice_of(inputs, labels, start * batch_size, stop * batch_size)
        return tf.data.Dataset.from_tensor_slices(({"user": x["user"], "item": x["item"]},
                                                   y)).batch(batch_size)

    training.seed_everything(seed)
    model = models.notebook_model(split.num_users, split.num_items)
    measured = time_fit(model, notebook_dataset, warm_steps, timed_steps, batch_size,
                        "naive train")
    return {"batch_size": batch_size, **measured}


def naive_evaluation(model, split, users):
    """The notebook's loop over `users` (indices into the test set): one predict for the
    held-out artist, one for its 99 negatives -> ranks (candidates scoring >= the held-out)."""
    ranks = []
    for row in users:
        user, item = split.test_users[row], split.test_items[row]
        negatives = split.test_negatives[row]
        positive = model.predict({"user": np.array([user], np.int32),
                                  "item": np.array([item], np.int32)}, verbose=0)
        scores = model.predict({"user": np.full(len(negatives), user, np.int32),
                                "item": negatives.astype(np.int32)}, verbose=0)
        ranks.append(int((scores.ravel() >= positive.ravel()[0]).sum()))
    return np.array(ranks)


class Report:
    """The table's rows (what, value, unit, how, phase) and the JSON result, filled stage by
    stage."""

    def __init__(self, **result):
        self.rows, self.result = [], result

    def row(self, what, value, unit, how, phase=None):
        self.rows.append((what, value, unit, how, phase))


def make_csvs(folder, scale, seed, report):
    """The CSVs, made by a child process (so that generating them counts neither in the timings
    nor in this process' peak memory) -> its figures."""
    log(f"[speed] writing the synthetic CSVs at scale {scale:g} into {folder} ...")
    with Phase("csv") as phase:
        child = subprocess.run([sys.executable, os.path.abspath(__file__),
                                f"--scale={scale}", f"--seed={seed}",
                                f"--write_csv={folder}"],
                               check=True, stdout=subprocess.PIPE, text=True)
    made = json.loads(child.stdout.strip().splitlines()[-1])
    report.result.update(generate_seconds=round(made["generate_seconds"], 2),
                         write_csv_seconds=round(made["write_csv_seconds"], 2),
                         csv_mb=round(made["csv_mb"], 1),
                         child_peak_rss_mb=round(made["child_peak_rss_mb"], 1))
    log(f"[speed] data made in {phase.seconds:.1f} s; loading ...")
    return made


def load_twice(folder, made, report):
    """data.load_folder twice: the CSVs (parsed, checked, cached), then the cache -> plays."""
    with Phase("load") as load:
        first = data.load_folder(folder)
    with Phase("cached load") as cached_load:
        plays = data.load_folder(folder)
    if not (np.array_equal(first.user_ids, plays.user_ids)
            and np.array_equal(first.artist_ids, plays.artist_ids)
            and np.array_equal(first.play_counts, plays.play_counts)):
        raise SystemExit("the cached load differs from the CSV load")
    report.result.update(users=plays.num_users, artists=plays.num_artists,
                         pairs=int(len(plays.user_ids)),
                         load_seconds=round(load.seconds, 3),
                         cached_load_seconds=round(cached_load.seconds, 3))
    report.row("load: data.load_folder, 1st call (read CSV, check, merge, write .npz)",
               load.seconds, "s", f"timed in full; {made['csv_mb']:.0f} MB of CSV, files in the "
               "OS page cache (just written)", load)
    report.row("load: data.load_folder, 2nd call (read .npz cache)", cached_load.seconds, "s",
               "timed in full", cached_load)
    return plays


def split_plays(plays, seed, report):
    log(f"[speed] {plays.num_users:,} users, {plays.num_artists:,} artists, "
        f"{len(plays.user_ids):,} pairs; splitting ...")
    with Phase("split") as phase:
        split = leave_one_out(plays, NUM_EVAL_NEGATIVES, seed)
    report.result["split_seconds"] = round(phase.seconds, 3)
    report.row("split: leave_one_out(plays, 99, seed)", phase.seconds, "s", "timed in full",
               phase)
    return split


def sample_epoch(split, seed, report):
    """One epoch's data: negative sampling + shuffle -> (inputs, labels, phase)."""
    log(f"[speed] importing {backend.name()}; sampling one epoch ...")
    backend.import_quietly()   # here, so that the child process never loads it
    import training
    with Phase("sampling") as phase:
        inputs, labels = training.epoch_data("mlp", split, NEG_RATIO, seed, 0)
    epoch_samples = int(labels.size)
    report.result.update(sampling_seconds=round(phase.seconds, 3),
                         epoch_samples=epoch_samples, train_pairs=int(len(split.train_users)))
    report.row(f"sampling: training.epoch_data, one epoch ({epoch_samples:,} samples)",
               phase.seconds, "s", "timed in full", phase)
    return inputs, labels, phase


def project_training(split, inputs, labels, seed, report):
    """The project's training path at each batch size of TRAIN_PLAN -> ({batch size: figures},
    the model trained at PROJECT_BATCH)."""
    measured, eval_model = {}, None
    for batch_size, (warm_steps, timed_steps) in TRAIN_PLAN.items():
        log(f"[speed] project training, batch {batch_size} ...")
        measured[batch_size], model = time_project_training(
            split, inputs, labels, batch_size, warm_steps, timed_steps, seed)
        m = measured[batch_size]
        log(f"[speed]   {m['samples_per_s']:,.0f} samples/s ({m['ms_per_step']:.1f} ms/step)")
        if batch_size == PROJECT_BATCH:
            eval_model = model
        del model
        report.result[f"train_samples_per_s_{batch_size}"] = round(m["samples_per_s"])
        report.row(f"train: lazy_adam + batched_dataset, batch {batch_size}", m["samples_per_s"],
                   "samples/s", f"median of {WINDOWS} windows ({m['steps']} steps, "
                   f"{m['samples']:,} samples) after a warm-up fit; windows "
                   f"{'/'.join(f'{r / 1e3:,.0f}K' for r in m['window_samples_per_s'])}",
                   m["phase"])
    return measured, eval_model


def time_whole_epochs(split, seed, batch_size):
    """Two epochs through the script's own loop (training.NegativesAhead and train_epoch): the
    first traces and draws its negatives when asked, as a run's first epoch does; the second,
    timed in full, had its negatives drawn while the first trained -> (its seconds, the seconds
    it waited for its negatives)."""
    import models
    import training
    training.seed_everything(seed)
    model = models.build_model("mlp", split.num_users, split.num_items, optimizer="lazy_adam")
    negatives = training.NegativesAhead("mlp", split, NEG_RATIO, seed, "play", num_epoch=3)
    folder = tempfile.mkdtemp(prefix="ncf-speed-")
    try:
        for epoch in range(2):
            log(f"[speed]   whole epoch {epoch + 1} of 2 at batch {batch_size} ...")
            _, seconds, waited, _, _ = training.train_epoch(
                model, split, epoch, batch_size=batch_size, negatives=negatives, bar=False,
                learning_rate=1e-3, checkpoints=training.Checkpoints(folder, "mlp"))
    finally:
        negatives.close()
        shutil.rmtree(folder, ignore_errors=True)
    return seconds, waited


def epoch_time(measured, split, seed, epoch_samples, report):
    """Whole epochs, sampling and training, measured through the script's loop at the best
    batch size and at PROJECT_BATCH, against training alone at the same batch."""
    best = max(measured, key=lambda b: measured[b]["samples_per_s"])
    for batch_size, suffix in ((best, ""), (PROJECT_BATCH, "_at_1024")):
        seconds, waited = time_whole_epochs(split, seed, batch_size)
        alone = epoch_samples / measured[batch_size]["samples_per_s"]
        report.result.update({f"epoch_seconds{suffix}": round(seconds, 1),
                              f"epoch_wait_seconds{suffix}": round(waited, 2),
                              f"epoch_over_training{suffix}": round(seconds / alone, 3)})
        report.row(f"epoch: {epoch_samples:,} samples at batch {batch_size}, sampling beside "
                   "training", seconds, "s", f"the second of two whole epochs of "
                   f"training.train_epoch, timed in full; it waited {waited:.1f} s for its "
                   f"negatives; {seconds / alone:.2f}x training alone "
                   f"(epoch_samples / train_samples_per_s_{batch_size})")
    report.result.update(batch_size=best)


def notebook_training(split, inputs, labels, seed, measured, train_rate, report):
    log("[speed] naive training (Keras Adam, from_tensor_slices.batch(1024)) ...")
    naive = time_naive_training(split, inputs, labels, seed)
    epoch_samples = int(labels.size)
    report.result.update(
        naive_train_samples_per_s=round(naive["samples_per_s"]),
        train_speedup=round(train_rate / naive["samples_per_s"], 1),
        train_speedup_at_1024=round(
            measured[PROJECT_BATCH]["samples_per_s"] / naive["samples_per_s"], 1),
        naive_epoch_seconds=round(epoch_samples / naive["samples_per_s"], 1))
    report.row("train (naive): Adam + from_tensor_slices(...).batch(1024)",
               naive["samples_per_s"], "samples/s", f"median of {WINDOWS} windows "
               f"({naive['steps']} steps, {naive['samples']:,} samples) after a warm-up fit; "
               f"windows {'/'.join(f'{r / 1e3:,.1f}K' for r in naive['window_samples_per_s'])}",
               naive["phase"])
    report.row("naive epoch (training only)", epoch_samples / naive["samples_per_s"], "s",
               "computed: epoch_samples / naive_train_samples_per_s")


def project_evaluation(eval_model, split, report):
    """Every test user, 1 + 99 candidates -> (ranks, pairs/s)."""
    import evaluate
    import models
    num_test = len(split.test_users)
    log(f"[speed] project evaluation over {num_test:,} users ...")
    with Phase("eval") as phase:
        scorer = models.make_scorer(eval_model)
        metrics = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                          split.test_negatives, TOP_K)
    pairs = num_test * (1 + NUM_EVAL_NEGATIVES)
    eval_rate = pairs / phase.seconds
    report.result.update(eval_users=num_test, eval_seconds=round(phase.seconds, 3),
                         eval_pairs_per_s=round(eval_rate),
                         hit_ratio=round(metrics["hit_ratio"], 4))
    report.row(f"eval: make_scorer + hit_ratio_at_k, {num_test:,} users x 100", eval_rate,
               "pairs/s", f"timed in full ({phase.seconds:.1f} s, make_scorer included)", phase)
    return metrics["ranks"], eval_rate


def notebook_evaluation(eval_model, split, ranks, eval_rate, report):
    """Two predict calls per user, on the notebook's model holding eval_model's weights, timed
    on a few users and extrapolated; their ranks checked against the project's."""
    import models
    num_test = len(split.test_users)
    pairs = num_test * (1 + NUM_EVAL_NEGATIVES)
    warm_users, timed_users = NAIVE_EVAL_USERS
    timed_users = min(timed_users, max(1, num_test - warm_users))
    log(f"[speed] naive evaluation on {timed_users} users ...")
    faithful = models.notebook_model(split.num_users, split.num_items)
    for layer in faithful.layers:
        if layer.weights:
            layer.set_weights(eval_model.get_layer(layer.name).get_weights())
    naive_evaluation(faithful, split, range(warm_users))
    chosen = np.arange(warm_users, warm_users + timed_users)
    with Phase("naive eval") as phase:
        naive_ranks = naive_evaluation(faithful, split, chosen)
    naive_eval_rate = timed_users * (1 + NUM_EVAL_NEGATIVES) / phase.seconds
    agree = int((ranks[chosen] == naive_ranks).sum())
    report.result.update(naive_eval_pairs_per_s=round(naive_eval_rate, 1),
                         eval_speedup=round(eval_rate / naive_eval_rate, 1),
                         naive_eval_seconds_all_users=round(pairs / naive_eval_rate),
                         naive_eval_ranks_agree=f"{agree}/{timed_users}")
    report.row(f"eval (naive): 2 x model.predict per user, {timed_users} users", naive_eval_rate,
               "pairs/s", f"timed after {warm_users} warm-up users; extrapolated (ranks agree "
               f"with the scorer's for {agree}/{timed_users})", phase)
    report.row(f"naive eval of all {num_test:,} users", pairs / naive_eval_rate, "s",
               "computed: users x 100 / naive_eval_pairs_per_s")


def measure(folder, scale, seed, report):
    """Every stage, in order, on data made in `folder` -> the child's figures."""
    made = make_csvs(folder, scale, seed, report)
    plays = load_twice(folder, made, report)
    split = split_plays(plays, seed, report)
    del plays
    inputs, labels, _ = sample_epoch(split, seed, report)
    measured, eval_model = project_training(split, inputs, labels, seed, report)
    best = max(measured, key=lambda b: measured[b]["samples_per_s"])
    train_rate = measured[best]["samples_per_s"]
    report.result.update(train_samples_per_s=round(train_rate))
    notebook = not backend.is_jax()   # the notebook's pipeline is TensorFlow's (tf.data)
    if notebook:
        notebook_training(split, inputs, labels, seed, measured, train_rate, report)
    epoch_samples = int(labels.size)
    del inputs, labels
    epoch_time(measured, split, seed, epoch_samples, report)
    ranks, eval_rate = project_evaluation(eval_model, split, report)
    if notebook:
        notebook_evaluation(eval_model, split, ranks, eval_rate, report)
    return made


def device_name():
    """What trained: the backend's first device (a GPU's name on a GPU), else "CPU"."""
    if backend.is_jax():
        import jax
        device = jax.devices()[0]
        return "CPU" if device.platform == "cpu" else str(device.device_kind)
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") \
        if gpus else "CPU"


def finish(report, made, run_phase, run_started, load_average):
    """Peak memory, the machine's load, the versions and the targets, into the result."""
    import keras
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run_phase.__exit__(None, None, None)
    result = report.result
    result.update(peak_rss_mb=round(peak, 1),
                  wall_seconds=round(time.perf_counter() - run_started, 1),
                  others_cpu_share=round(run_phase.others_share, 3),
                  load_average_at_start=[round(v, 2) for v in load_average],
                  load_average_at_end=[round(v, 2) for v in os.getloadavg()],
                  **backend.versions(), keras=keras.__version__, device=device_name())
    report.row("peak RSS of this process (ru_maxrss)", peak, "MB",
               f"CSV generation ran in a child process (its peak: "
               f"{made['child_peak_rss_mb']:,.0f} MB)")
    for key, target, better in (("train_samples_per_s", 1.45e6, "high"),
                                ("eval_pairs_per_s", 3.6e6, "high"),
                                ("train_speedup", 100, "high"), ("eval_speedup", 1000, "high"),
                                ("peak_rss_mb", 6144, "low")):
        if key not in result:   # the notebook's figures: TensorFlow's only
            continue
        result.setdefault("targets_met", {})[key] = bool(
            result[key] >= target if better == "high" else result[key] < target)


def main(argv):
    args = parse_args(argv)
    if error := kernels.environment_error() or backend.environment_error():
        sys.exit(f"error: {error}")
    if args.write_csv:   # the child process
        print(json.dumps(write_csvs(args.write_csv, args.scale, args.seed)))
        return
    warnings.filterwarnings("ignore", message=".*shuffle=True.*")
    warnings.filterwarnings("ignore", message=".*PyDataset.*")
    run_started = time.perf_counter()
    run_phase = Phase("run").__enter__()
    load_average = os.getloadavg()
    report = Report(scale=args.scale, seed=args.seed, cpu_count=os.cpu_count())
    folder = tempfile.mkdtemp(prefix="ncf-speed-")
    try:
        made = measure(folder, args.scale, args.seed, report)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    finish(report, made, run_phase, run_started, load_average)
    print_table(report.rows, report.result, run_phase)
    print(json.dumps(report.result), flush=True)


def _format(value, unit):
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def print_table(rows, result, run_phase):
    print(f"NCF speed bench: scale {result['scale']:g} ({result['users']:,} users, "
          f"{result['artists']:,} artists, {result['pairs']:,} pairs), seed {result['seed']}, "
          f"{result['cpu_count']} CPUs, {result['backend']} {result[result['backend']]} on "
          f"{result['device']}, Keras {result['keras']}")
    print(f"data made in a child process: {result['generate_seconds']:.1f} s make_planted, "
          f"{result['write_csv_seconds']:.1f} s writing CSV (not measured below)")
    head = f"{'measurement':<66} {'value':>20}  {'cpu':>5} {'others':>6}  how"
    print(head)
    print("-" * len(head))
    for what, value, unit, how, phase in rows:
        cpu = others = ""
        if phase is not None and phase.seconds > 0:
            cpu = f"{phase.cpu_seconds / phase.seconds:.2f}"
            others = f"{100 * phase.others_share:.0f}%"
        print(f"{what:<66} {_format(value, unit):>20}  {cpu:>5} {others:>6}  {how}")
    print("-" * len(head))
    print("cpu = this process' CPU seconds per wall second (2 = both cores); others = share of the "
          "machine's CPU other processes used meanwhile")
    if "train_speedup" in result:
        print(f"speed-ups: training x{result['train_speedup']} at batch {result['batch_size']} "
              f"(x{result['train_speedup_at_1024']} at batch 1024), evaluation "
              f"x{result['eval_speedup']}")
    else:
        print("speed-ups: the notebook's pipeline is TensorFlow's; run this under TensorFlow")
    print(f"whole run: {result['wall_seconds']:.0f} s wall; other processes used "
          f"{100 * run_phase.others_share:.0f}% of the machine's CPU (load average "
          f"{result['load_average_at_start'][0]} at start, {result['load_average_at_end'][0]} "
          "at end)")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}"
                                  for k, v in result["targets_met"].items()))


if __name__ == "__main__":
    main(sys.argv[1:])
