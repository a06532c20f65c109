"""Scaling check: one small training run under each strategy, side by side.

    python bench/scale.py                     # none, mirrored, parameter_server; gmf
    python bench/scale.py --model mlp --optimizer sgd --learning_rate 0.05 --epochs 6

In:  planted data (data.make_planted: LastFM-like plays with taste groups, so a model that
     learns beats the popularity ranking), split by split.leave_one_out, and the model's
     settings. The same data, model and epochs for every strategy.
Out: one table, a row per strategy: samples/s in total and per worker (per replica under
     mirrored), step time p50/p95, bytes of embedding rows moved per step, peak memory per
     task, and HR@10 after the fixed number of epochs (the popularity ranking's below it).
     --json also writes the rows to a file.
Strategies: `none`, Keras fit on one device (models.STEPS_PER_CALL steps per call: a step's time
     is its call's time over its steps); `mirrored`, distribute.build_model on 2 logical CPUs
     (one step per call); `parameter_server`, distribute.ParameterServerTrainer on a local
     in-process cluster of 2 workers and 2 parameter servers, asynchronous (its step time is a
     worker's, from the step's start to its end; the two workers' steps overlap).
Read it as overhead and correctness, not speed-up: the logical devices and the in-process
     servers share this machine's cores (2 here), so more workers cannot run faster than one;
     what the table shows is what distribution costs per step, and that each strategy still
     learns (HR@10 well above popularity's). Each strategy runs in its own process (logical
     devices must be set before TensorFlow starts; a cluster connects its process for good),
     so peak memory is per process: under parameter_server that one process holds the
     coordinator, both workers and both servers, so its figure is all five tasks' together.
Rows moved per step (an estimate): rows looked up x factor x 4 bytes (float32); a row is a
     user's or an artist's embedding (BPR's artist bias, 1 float). Under parameter_server they
     cross the network twice (the rows to the worker, their gradients back); under mirrored the
     gradient rows are summed between the devices; under none they stay in memory.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import settings  # noqa: E402

STRATEGIES = settings.CHOICES["strategy"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated, of: " + ", ".join(STRATEGIES))
    parser.add_argument("--model", default="gmf", choices=("mlp", "gmf", "neumf", "bpr"))
    parser.add_argument("--optimizer", default="lazy_adam", choices=("lazy_adam", "adam", "sgd"))
    parser.add_argument("--learning_rate", type=float, default=0.01)
    parser.add_argument("--num_factor", type=int, default=16)
    parser.add_argument("--hidden_units", default="32,16,8", help="MLP widths, comma-separated")
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=4, help="the first is a warm-up (tracing), "
                        "left out of the speed figures when there are more")
    parser.add_argument("--batch_size", type=int, default=256, help="samples per step")
    parser.add_argument("--neg_ratio", type=int, default=4)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--artists", type=int, default=400)
    parser.add_argument("--plays", type=int, default=9_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--top_k", type=int, default=10)
    parser.add_argument("--json", default="", help="also write the rows to this file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)   # one strategy's run
    args = parser.parse_args(argv)
    args.hidden_units = tuple(int(units) for units in args.hidden_units.split(",") if units)
    wrong = set(args.strategies.split(",")) - set(STRATEGIES)
    if wrong:
        parser.error(f"--strategies: unknown {', '.join(sorted(wrong))}")
    return args


def load_split(args):
    import data
    import split
    plays = data.frames_to_plays(*data.make_planted(args.users, args.artists, args.plays,
                                                    seed=args.seed))
    return split.leave_one_out(plays, 99, args.seed)


def popularity_hit_ratio(data_split, top_k):
    import evaluate
    scorer = evaluate.popularity_scorer(data_split.train_items, data_split.num_items)
    return evaluate.hit_ratio_at_k(scorer, data_split.test_users, data_split.test_items,
                                   data_split.test_negatives, top_k)["hit_ratio"]


def rows_moved(args, rows_per_step):
    """Bytes of embedding rows one step looks up (rows x factor x 4)."""
    per_row = 1 + args.neg_ratio                  # a play and its negatives share the user
    if args.model == "bpr":
        floats = 3 * args.num_factor + 2          # user, two artists, two artist biases
    else:
        floats = (1 + per_row) * args.num_factor * (2 if args.model == "neumf" else 1)
    return rows_per_step * floats * 4


def keras_epochs(args, model, data_split):
    """Keras fit, epoch by epoch -> (per-epoch (samples, seconds), step seconds, rows/step)."""
    import keras

    import distribute
    import training

    class Timer(keras.callbacks.Callback):
        """Each call's time spread over the steps it ran (steps_per_execution may be > 1)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.last_batch, self.last_time = -1, time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            steps = max(1, batch - self.last_batch)
            step_seconds.extend([(now - self.last_time) / steps] * steps)
            self.last_batch, self.last_time = batch, now

    epochs, step_seconds, rows = [], [], 1
    for epoch in range(args.epochs):
        inputs, labels = training.epoch_data(model.name, data_split, args.neg_ratio, args.seed,
                                             epoch)
        rows = (distribute.rows_per_step(labels, args.batch_size, model.distribute_strategy)
                if model.distribute_strategy.num_replicas_in_sync > 1
                else training.rows_per_step(labels, args.batch_size))
        started, first = time.perf_counter(), len(step_seconds)
        model.fit(training.batched_dataset(inputs, labels, rows), epochs=epoch + 1,
                  initial_epoch=epoch, verbose=0, shuffle=False, callbacks=[Timer()])
        epochs.append((labels.size, time.perf_counter() - started))
        if epoch == 0 and args.epochs > 1:
            del step_seconds[first:]                  # the first epoch traces: a warm-up
    return epochs, step_seconds, rows


def run_keras(args, data_split, strategy_name):
    import distribute
    spec = model_spec(args, data_split)
    if strategy_name == "mirrored":
        strategy = distribute.mirrored_strategy(2)
        model = distribute.build_model(strategy, spec)
        workers = strategy.num_replicas_in_sync
    else:
        model, workers = spec.build(), 1
    epochs, step_seconds, rows = keras_epochs(args, model, data_split)
    final = distribute.single_device_copy(model, spec) if strategy_name == "mirrored" else model
    return final, epochs, step_seconds, rows, [len(step_seconds)] * workers, workers


def run_parameter_server(args, data_split):
    import distribute
    import training
    trainer = distribute.ParameterServerTrainer(model_spec(args, data_split))
    epochs, step_seconds, steps_per_worker = [], [], [0] * trainer.num_workers
    for epoch in range(args.epochs):
        stats = trainer.train_epoch(data_split, epoch, batch_size=args.batch_size,
                                    neg_ratio=args.neg_ratio, seed=args.seed)
        epochs.append((stats["samples"], stats["seconds"]))
        if epoch > 0 or args.epochs == 1:
            step_seconds.extend(stats["step_seconds"])
            steps_per_worker = [a + b for a, b in zip(steps_per_worker,
                                                      stats["steps_per_worker"])]
    shard_labels = distribute.shard_epoch(args.model, data_split, args.neg_ratio, args.seed, 0,
                                          0, trainer.num_workers)[1]
    rows = training.rows_per_step(shard_labels, args.batch_size)
    return trainer.export(), epochs, step_seconds, rows, steps_per_worker, trainer.num_workers


def model_spec(args, data_split):
    import models
    return models.Blueprint(args.model, data_split.num_users, data_split.num_items,
                            args.num_factor, args.hidden_units, args.l2, 0.0,
                            args.learning_rate, args.optimizer)


def child(args):
    """One strategy's run in this process -> its row."""
    if args.child == "mirrored":
        import distribute
        distribute.logical_cpus(2)            # before TensorFlow initialises its devices
    import numpy as np

    import training
    training.seed_everything(args.seed)
    data_split = load_split(args)
    if args.child == "parameter_server":
        model, epochs, step_seconds, rows, steps_per_worker, workers = run_parameter_server(
            args, data_split)
    else:
        model, epochs, step_seconds, rows, steps_per_worker, workers = run_keras(
            args, data_split, args.child)
    timed = epochs[1:] if len(epochs) > 1 else epochs
    samples, seconds = sum(s for s, _ in timed), sum(t for _, t in timed)
    per_step = np.asarray(step_seconds) if step_seconds else np.zeros(1)
    share = np.asarray(steps_per_worker, float) / max(sum(steps_per_worker), 1)
    hit_ratio = training.score_sets(model, data_split, args.top_k, False)["test"]["hit_ratio"]
    return {"strategy": args.child, "workers": workers,
            "samples_per_second": samples / max(seconds, 1e-9),
            "per_worker": [samples * s / max(seconds, 1e-9) for s in share],
            "step_ms_p50": 1000 * float(np.percentile(per_step, 50)),
            "step_ms_p95": 1000 * float(np.percentile(per_step, 95)),
            "row_bytes_per_step": rows_moved(args, rows), "rows_per_step": rows,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "tasks_in_process": 5 if args.child == "parameter_server" else 1,
            "hit_ratio": hit_ratio, "popularity_hit_ratio": popularity_hit_ratio(
                data_split, args.top_k), "steps_per_worker": steps_per_worker,
            "epochs": args.epochs, "model": args.model, "optimizer": args.optimizer}


def run_children(args, argv):
    rows = []
    for strategy in args.strategies.split(","):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "row.json")
            command = [sys.executable, os.path.abspath(__file__), *argv, "--child", strategy,
                       "--json", path]
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, check=False)
            if done.returncode:
                sys.exit(f"{strategy} failed:\n{done.stderr[-3000:]}")
            with open(path) as stream:
                rows.append(json.load(stream))
    return rows


def table(rows, top_k):
    head = (f"{'strategy':<17}{'workers':>8}{'samples/s':>11}{'per worker':>17}"
            f"{'step p50 ms':>13}{'p95 ms':>8}{'row KB/step':>13}{'peak MB':>9}"
            f"{'HR@' + str(top_k):>8}")
    lines = [head, "-" * len(head)]
    for row in rows:
        per_worker = "/".join(f"{value:,.0f}" for value in row["per_worker"])
        peak = f"{row['peak_mb']:,.0f}" + ("*" if row["tasks_in_process"] > 1 else "")
        lines.append(f"{row['strategy']:<17}{row['workers']:>8}{row['samples_per_second']:>11,.0f}"
                     f"{per_worker:>17}{row['step_ms_p50']:>13.2f}{row['step_ms_p95']:>8.2f}"
                     f"{row['row_bytes_per_step'] / 1024:>13.1f}{peak:>9}"
                     f"{row['hit_ratio']:>8.3f}")
    first = rows[0]
    lines.append(f"popularity HR@{top_k}: {first['popularity_hit_ratio']:.3f}; {first['model']}, "
                 f"{first['optimizer']}, {first['epochs']} epochs (speed from epoch 2 on); "
                 "per worker: per replica under mirrored")
    if any(row["tasks_in_process"] > 1 for row in rows):
        lines.append("* one process holding the coordinator, 2 workers and 2 parameter servers")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        row = child(args)
        with open(args.json, "w") as stream:
            json.dump(row, stream)
        return
    rows = run_children(args, [a for a in argv if not a.startswith("--json")
                               and a != args.json])
    print(table(rows, args.top_k))
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"rows": rows}, stream, indent=1)


if __name__ == "__main__":
    main()
