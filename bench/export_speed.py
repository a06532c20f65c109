"""How large the --export SavedModel is and how fast it recommends, at the notebook's scale,
beside --recommend_user's own path.

Run from the repository root (`--help` lists the options; docs/results.md has the results):
    python bench/export_speed.py [--scale=1.0] [--users=1000] [--repeats=3] [--seed=0]

Data: `data.load("synthetic", scale, seed)` (at scale 1.0: 358,868 users, 160,112 artists,
17.3M plays), split with `leave_one_out(plays, 99, seed)`, so every user's played artists are
the realistic sets the export carries. Model: the notebook's MLP (32 factors, 32/16/8) with
random weights, N(0, 0.5) for the tables and Keras' initialiser for the layers: what is measured
is the arithmetic, not training, and untrained N(0, 0.01) rows would score nearly every artist
alike. Then:
  1. `export.write` into a temporary folder: the seconds it took and its size on disk;
  2. `tf.saved_model.load` of it, then one `recommend` call (k = 10) for 1 user and one for
     --users users, --repeats times each (users drawn at random, the same for both paths);
     the median seconds of each;
  3. --recommend_user's own path for the same users (`report.recommend`: `models.make_scorer`
     on every artist, one user at a time, its lines printed to nowhere), timed the same way,
     and the two paths' artists compared, user by user and rank by rank.
The last line is one JSON object with every figure.
"""
import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import data  # noqa: E402
import kernels  # noqa: E402
from split import leave_one_out  # noqa: E402

TOP_K = 10


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="synthetic data size; 1.0 = 358,868 users, 160,112 artists, 17.3M "
                             "plays")
    parser.add_argument("--users", type=int, default=1000,
                        help="users in the large recommend call")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls of each size; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="data, split, weights and users")
    args = parser.parse_args(argv)
    if not 0 < args.scale <= 10:
        parser.error("--scale must be in (0, 10]")
    if args.users < 1 or args.repeats < 1:
        parser.error("--users and --repeats must be 1 or more")
    return args


def random_model(split, seed):
    """The notebook's MLP on the split's tables, its tables N(0, 0.5)."""
    import models
    model = models.build_model("mlp", split.num_users, split.num_items)
    rng = np.random.default_rng([seed, 7])
    for name in ("user_embedding", "item_embedding"):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32)
                           for w in layer.get_weights()])
    return model


def timed(call, repeats):
    """(median seconds of `repeats` calls, the last call's result)."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def folder_size(folder):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(folder) for name in names)


def main(argv=None):
    args = parse_args(argv)
    if error := kernels.environment_error():
        sys.exit(f"error: {error}")
    import tensorflow as tf
    import export
    import report
    plays = data.load("synthetic", scale=args.scale, seed=args.seed, log=lambda *a: None)
    split = leave_one_out(plays, 99, args.seed)
    model = random_model(split, args.seed)
    rng = np.random.default_rng([args.seed, 8])
    many = rng.choice(split.num_users, min(args.users, split.num_users), replace=False)
    groups = {"1 user": [str(many[0])], f"{len(many):,} users": [str(u) for u in many]}
    work = tempfile.mkdtemp(prefix="export-speed-")
    try:
        started = time.perf_counter()
        path = export.write(model, plays, split, os.path.join(work, "exported"),
                            log=lambda *a: None)
        result = {"scale": args.scale, "users": split.num_users, "artists": split.num_items,
                  "plays": int(len(plays.user_ids)), "k": TOP_K,
                  "export_seconds": round(time.perf_counter() - started, 1),
                  "export_mb": round(folder_size(path) / 2**20, 1), "calls": {}}
        started = time.perf_counter()
        recommend = tf.saved_model.load(path).signatures["recommend"]
        result["load_seconds"] = round(time.perf_counter() - started, 1)
        recommend(user_id=tf.constant(["0"]), k=tf.constant(TOP_K))      # the first call traces
        with open(os.devnull, "w") as nowhere:
            for label, users in groups.items():
                exported, answer = timed(lambda: recommend(user_id=tf.constant(users),
                                                           k=tf.constant(TOP_K)), args.repeats)
                with contextlib.redirect_stdout(nowhere):
                    script, frame = timed(lambda: report.recommend(model, plays, split, users,
                                                                   TOP_K, work),
                                          args.repeats)
                ranked = [[a.decode() for a in row] for row in answer["artist_id"].numpy()]
                expected = [list(frame.artist_id[frame.user_id == int(u)].astype(str))
                            for u in users]
                result["calls"][label] = {
                    "export_seconds": round(exported, 4), "recommend_user_seconds": round(
                        script, 4), "same_artists_and_order": ranked == expected}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["environment"] = kernels.environment()
    print_table(result, args)
    print(json.dumps(result))
    return 0


def print_table(result, args):
    print(f"synthetic data at scale {args.scale:g}: {result['users']:,} users, "
          f"{result['artists']:,} artists, {result['plays']:,} plays; export "
          f"{result['export_mb']:,.1f} MB, written in {result['export_seconds']} s, loaded in "
          f"{result['load_seconds']} s")
    print(f"| one call, k = {TOP_K} | the export's recommend (s) | --recommend_user's path (s) "
          "| same artists, same order |")
    print("| --- | --- | --- | --- |")
    for label, call in result["calls"].items():
        print(f"| {label} | {call['export_seconds']:.3f} | {call['recommend_user_seconds']:.3f} "
              f"| {'yes' if call['same_artists_and_order'] else 'NO'} |")


if __name__ == "__main__":
    sys.exit(main())
