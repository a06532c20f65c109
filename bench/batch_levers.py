"""Samples/s of the notebook's MLP at its batch (1,024) under each lever on per-step overhead,
measured in one process: each variant a model of its own, the variants alternating round after
round so that the machine's noise falls on all of them alike; the medians are printed, then one
JSON line. docs/experiments.md has the results.

Run from the repository root:   python bench/batch_levers.py [--rounds=5] [--scale=0.2]
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import data  # noqa: E402
import backend  # noqa: E402
import kernels  # noqa: E402
from split import leave_one_out  # noqa: E402

FULL_SIZES = (358_868, 160_112, 17_302_623)   # users, artists, plays at scale 1.0
BATCH = 1024                                  # the notebook's


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.2,
                        help="size of the planted data; 1.0 = the 360K files' 17.3M plays")
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of timing every variant once; the median counts")
    parser.add_argument("--calls", type=int, default=3,
                        help="Keras calls of 256 steps timed in each round")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and weights")
    return parser.parse_args(argv)


def variants():
    """name -> (steps per Keras call, dense step: "keras", "fused", "assign_sub" or "none",
    with Keras' per-step accuracy metric)."""
    return {"16 steps a call, Keras' dense Adam (1.0)": (16, "keras", True),
            "16 steps a call, no accuracy metric": (16, "keras", False),
            "256 steps a call, Keras' dense Adam": (256, "keras", True),
            "256 steps a call, fused dense Adam (1.1)": (256, "fused", True),
            "256, the dense step one assign_sub (a floor)": (256, "assign_sub", True),
            "256, no dense update at all (a floor)": (256, "none", True)}


def build(split, steps, dense, metric, seed):
    import keras
    import models
    import tensorflow as tf

    class Optimizer(models.LazyAdam):
        def _dense_step(self, gradient, variable, learning_rate):
            if dense == "fused":
                return super()._dense_step(gradient, variable, learning_rate)
            if dense == "keras":
                return keras.optimizers.Adam.update_step(self, gradient, variable, learning_rate)
            if dense == "assign_sub":
                variable.assign_sub(tf.cast(learning_rate, variable.dtype) * gradient)

    keras.utils.set_random_seed(seed)
    model = models.build_model("mlp", split.num_users, split.num_items)
    model.compile(Optimizer(1e-3), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy()] if metric else None,
                  steps_per_execution=steps)
    return model


def main(argv=None):
    args = parse_args(argv)
    if error := kernels.environment_error() or backend.environment_error(("tensorflow",)):
        raise SystemExit(f"error: {error}")
    backend.import_quietly()
    import training
    sizes = [max(2, round(n * args.scale)) for n in FULL_SIZES]
    plays = data.frames_to_plays(*data.make_planted(*sizes, seed=args.seed))
    split = leave_one_out(plays, 99, args.seed)
    inputs, labels = training.epoch_data("mlp", split, 4, args.seed, 0)
    rows = training.rows_per_step(labels, BATCH)
    n = min(len(labels), rows * 256 * args.calls)
    inputs, labels = {k: v[:n] for k, v in inputs.items()}, labels[:n]
    models_ = {name: build(split, *options, args.seed) for name, options in variants().items()}
    rates = {name: [] for name in models_}
    for name, model in models_.items():                       # traced, untimed
        model.fit(training.batched_dataset(inputs, labels, rows), epochs=1, verbose=0)
    for _ in range(args.rounds):
        for name, model in models_.items():
            started = time.perf_counter()
            model.fit(training.batched_dataset(inputs, labels, rows), epochs=1, verbose=0)
            rates[name].append(labels.size / (time.perf_counter() - started))
    result = {"scale": args.scale, "rounds": args.rounds, "batch": BATCH,
              "kernels": kernels.kernel_build()}
    for name, values in rates.items():
        result[name] = round(float(np.median(values)))
        print(f"{name:48s} {result[name]:>12,} samples/s   "
              f"({' / '.join(f'{v / 1e3:,.0f}K' for v in values)})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
