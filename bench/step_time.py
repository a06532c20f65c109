"""Seconds a training step of one model with its defaults, at a synthetic data set's scale: an
epoch's time at the notebook's 17.3M plays without running a whole epoch.

Run from the repository root (`--help` lists the options; docs/results.md has the results):
    python bench/step_time.py [--scale=1.0] [--model=neumf] [--user_input=history|id] [--seed=0]

Data: `data.load("synthetic", scale, seed)` (at scale 1.0: 358,868 users, 160,112 artists,
17.3M plays), split with `leave_one_out(plays, 99, seed)`. Model: `--model` with the settings of
MODEL_SETTINGS below, the script's defaults for that model (NeuMF: 128 factors, 8 negatives per
play, L2 0.001, lazy Adam at 1e-3, batch 1,024), and the user input given. One epoch's rows are
drawn as training draws them; `fit` runs --warmup steps (tracing), then --windows windows of
--window steps each, timed. The last line is one JSON object: the seconds a step of each window,
their median, the steps an epoch and the epoch's training time they imply (sampling, scoring
and checkpoints not counted).
"""
import argparse
import json
import os
import sys
import textwrap
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import data  # noqa: E402
import backend  # noqa: E402
import kernels  # noqa: E402
from split import leave_one_out  # noqa: E402

WARMUP, WINDOW, WINDOWS = 64, 256, 3

# What each model trains with when ncf_lastfm.py is given only --model: its constants, and its
# MODEL_DEFAULTS over them (tests/test_bench_step_time.py checks that the two agree)
_FILE = {"NUM_FACTOR": 32, "HIDDEN_UNITS": (32, 16, 8), "L2": 0.0, "DROPOUT": 0.0,
         "LEARNING_RATE": 1e-3, "OPTIMIZER": "lazy_adam", "NEG_RATIO": 4, "BATCH_SIZE": 1024,
         "USER_INPUT": "id"}
MODEL_SETTINGS = {
    "mlp": dict(_FILE),
    "gmf": {**_FILE, "NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.0005,
            "USER_INPUT": "history"},
    "neumf": {**_FILE, "NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.001,
              "USER_INPUT": "history"},
    "bpr": {**_FILE, "NUM_FACTOR": 128, "L2": 0.01, "LEARNING_RATE": 0.003},
}


def positive(kind):
    """argparse type: a number of `kind` above 0."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
        return value
    return parse


def parse_args(argv):
    epilog = "each model's settings:\n" + "\n".join(
        textwrap.fill(", ".join(f"{key.lower()}={value!r}" for key, value in s.items()),
                      width=79, initial_indent=f"  {name}: ", subsequent_indent="    ")
        for name, s in MODEL_SETTINGS.items())
    parser = argparse.ArgumentParser(
        prog="python bench/step_time.py", description=__doc__.split("\n\n")[0], epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=positive(float), default=1.0,
                        help="size of the synthetic data; 1.0 = 17.3M plays (default: "
                             "%(default)s)")
    parser.add_argument("--model", default="neumf", choices=tuple(MODEL_SETTINGS),
                        help="the model timed, with its settings below (default: %(default)s)")
    parser.add_argument("--user_input", default="", choices=("", "history", "id"),
                        help="how a user is represented (default: %(default)r, the model's own)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, the split, the negatives and the weights "
                             "(default: %(default)s)")
    parser.add_argument("--warmup", type=positive(int), default=WARMUP,
                        help="untimed steps first, while TensorFlow traces (default: "
                             "%(default)s)")
    parser.add_argument("--window", type=positive(int), default=WINDOW,
                        help="steps in a timed window (default: %(default)s)")
    parser.add_argument("--windows", type=positive(int), default=WINDOWS,
                        help="timed windows; their median counts (default: %(default)s)")
    return parser.parse_args(argv)


def build(args, s, user_input):
    """The synthetic data's split and the model -> (split, model, history or None)."""
    import models
    plays = data.load("synthetic", scale=args.scale, seed=args.seed, log=lambda *a, **k: None)
    split = leave_one_out(plays, 99, args.seed)
    history = ((split.train_users, split.train_items)
               if user_input == "history" and args.model != "bpr" else None)
    model = models.build_model(args.model, split.num_users, split.num_items, s["NUM_FACTOR"],
                               s["HIDDEN_UNITS"], s["L2"], s["DROPOUT"], s["LEARNING_RATE"],
                               s["OPTIMIZER"], history)
    return split, model, history


def time_steps(args, model, inputs, labels, rows):
    """Seconds a step in each timed window, after the warm-up steps."""
    import training

    def fit(first, steps):
        part = slice(first * rows, (first + steps) * rows)
        dataset = training.batched_dataset({k: v[part] for k, v in inputs.items()},
                                           labels[part], rows)
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - started

    fit(0, args.warmup)
    return [fit(args.warmup + k * args.window, args.window) / args.window
            for k in range(args.windows)]


def main(argv=None):
    args = parse_args(argv)
    if error := kernels.environment_error() or backend.environment_error(("tensorflow",)):
        sys.exit(f"error: {error}")
    import training
    s = MODEL_SETTINGS[args.model]
    user_input = args.user_input or s["USER_INPUT"]
    split, model, history = build(args, s, user_input)
    training.seed_everything(args.seed)
    inputs, labels = training.epoch_data(args.model, split, s["NEG_RATIO"], args.seed, 0)
    rows = training.rows_per_step(labels, s["BATCH_SIZE"])
    steps_per_epoch = -(-len(labels) // rows)
    needed = args.warmup + args.window * args.windows
    if needed > steps_per_epoch:
        sys.exit(f"error: {needed} steps asked for, an epoch has {steps_per_epoch}; use a "
                 "larger --scale or fewer --warmup/--window/--windows steps")
    seconds = time_steps(args, model, inputs, labels, rows)
    median = float(np.median(seconds))
    result = {"model": args.model, "user_input": user_input if history is not None else "id",
              "scale": args.scale, "users": split.num_users, "artists": split.num_items,
              "training_plays": len(split.train_users), "rows_a_step": rows,
              "steps_an_epoch": steps_per_epoch,
              "seconds_a_step": [round(x, 5) for x in seconds],
              "median_seconds_a_step": round(median, 5),
              "epoch_minutes": round(median * steps_per_epoch / 60, 1),
              "environment": kernels.environment()}
    print(f"{args.model} ({result['user_input']} input), scale {args.scale}: "
          f"{median * 1e3:.1f} ms a step (windows: "
          + " / ".join(f"{x * 1e3:.1f}" for x in seconds)
          + f"), {steps_per_epoch:,} steps an epoch: about {result['epoch_minutes']} minutes")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
