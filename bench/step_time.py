"""Seconds a training step of one model with its defaults, at a synthetic data set's scale: an
epoch's time at the notebook's 17.3M plays without running a whole epoch.

Run from the repository root:
    python bench/step_time.py [--scale=1.0] [--model=neumf] [--user_input=history|id] [--seed=0]

Data: `data.load("synthetic", scale, seed)` (at scale 1.0: 358,868 users, 160,112 artists,
17.3M plays), split with `data.leave_one_out(plays, 99, seed)`. Model: `--model` with
ncf_lastfm's MODEL_DEFAULTS (NeuMF: 128 factors, 8 negatives per play, L2 0.001, lazy Adam at
1e-3, batch 1,024) and the user input given. One epoch's rows are drawn as training draws them;
`fit` runs WARMUP steps (tracing), then WINDOWS windows of WINDOW steps each, timed. The last
line is one JSON object: the seconds a step of each window, their median, the steps an epoch
and the epoch's training time they imply (sampling, scoring and checkpoints not counted).
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import data  # noqa: E402

WARMUP, WINDOW, WINDOWS = 64, 256, 3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--model", default="neumf", choices=("mlp", "gmf", "neumf", "bpr"))
    parser.add_argument("--user_input", default="", choices=("", "history", "id"),
                        help="default: the model's own default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=WARMUP)
    parser.add_argument("--window", type=int, default=WINDOW)
    parser.add_argument("--windows", type=int, default=WINDOWS)
    args = parser.parse_args(argv)
    import ncf_lastfm
    if error := ncf_lastfm.environment_error():
        sys.exit(f"error: {error}")
    import models
    import training
    s = ncf_lastfm.model_settings({name: getattr(ncf_lastfm, name)
                                   for name in ncf_lastfm.SETTINGS}, args.model)
    user_input = args.user_input or s["USER_INPUT"]
    plays = data.load("synthetic", scale=args.scale, seed=args.seed, log=lambda *a, **k: None)
    split = data.leave_one_out(plays, 99, args.seed)
    history = ((split.train_users, split.train_items)
               if user_input == "history" and args.model != "bpr" else None)
    model = models.build_model(args.model, split.num_users, split.num_items, s["NUM_FACTOR"],
                               s["HIDDEN_UNITS"], s["L2"], s["DROPOUT"], s["LEARNING_RATE"],
                               s["OPTIMIZER"], history)
    training.seed_everything(args.seed)
    inputs, labels = training.epoch_data(args.model, split, s["NEG_RATIO"], args.seed, 0)
    rows = training.rows_per_step(labels, s["BATCH_SIZE"])
    steps_per_epoch = -(-len(labels) // rows)
    needed = args.warmup + args.window * args.windows
    if needed > steps_per_epoch:
        sys.exit(f"error: {needed} steps asked for, an epoch has {steps_per_epoch}; use a "
                 "larger --scale or fewer --warmup/--window/--windows steps")

    def fit(first, steps):
        part = slice(first * rows, (first + steps) * rows)
        dataset = training.batched_dataset({k: v[part] for k, v in inputs.items()},
                                           labels[part], rows)
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        return time.perf_counter() - started

    fit(0, args.warmup)
    seconds = [fit(args.warmup + k * args.window, args.window) / args.window
               for k in range(args.windows)]
    median = float(np.median(seconds))
    result = {"model": args.model, "user_input": user_input if history is not None else "id",
              "scale": args.scale, "users": split.num_users, "artists": split.num_items,
              "training_plays": len(split.train_users), "rows_a_step": rows,
              "steps_an_epoch": steps_per_epoch,
              "seconds_a_step": [round(x, 5) for x in seconds],
              "median_seconds_a_step": round(median, 5),
              "epoch_minutes": round(median * steps_per_epoch / 60, 1),
              "environment": training.environment()}
    print(f"{args.model} ({result['user_input']} input), scale {args.scale}: "
          f"{median * 1e3:.1f} ms a step (windows: "
          + " / ".join(f"{x * 1e3:.1f}" for x in seconds)
          + f"), {steps_per_epoch:,} steps an epoch: about {result['epoch_minutes']} minutes")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
