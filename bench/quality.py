"""Quality of the project's fast training against the notebook's own pipeline, same splits.

Run from the repository root (`--help` lists the options; docs/results.md has the results):
    python bench/quality.py --data_dir=lastfm-2k [--seeds=1,2,3] [--num_epoch=10]

For each seed S, on the split `python ncf_lastfm.py --seed=S` makes (leave_one_out):
  notebook   the notebook's model as it wrote it (models.notebook_model: Keras' Embedding,
             Concatenate, Dense, dense Adam 1e-3), one (user, artist) pair per sample,
             shuffled, from_tensor_slices(...).batch(1024), fresh negatives each epoch
             (training.epoch_data, NEG_RATIO 4), scored with evaluate.hit_ratio_at_k.
  project    `python ncf_lastfm.py --data_dir=D --seed=S` with its defaults (lazy Adam, rows of a
             play and its negatives, pre-batched), run as a user runs it; read from metrics.json.
  project, --optimizer=adam   the same with Keras' dense Adam, to separate the optimizer's part.
Prints HR@10 and NDCG@10 per seed, their mean and [min, max], as a Markdown table, and then one
JSON object with every number. Nothing here is tuned: the settings are the notebook's.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import data  # noqa: E402
import sampling  # noqa: E402
from split import leave_one_out  # noqa: E402

NEG_RATIO, BATCH_SIZE, TOP_K, NUM_EVAL_NEGATIVES = 4, 1024, 10, 99   # the notebook's


def seed_list(text):
    """argparse type of --seeds: "1,2,3" -> [1, 2, 3]."""
    try:
        seeds = [int(value) for value in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas, "
                                         "like 1,2,3") from None
    if min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seeds are 0 or more")
    return seeds


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python bench/quality.py",
        description="HR@10 and NDCG@10 of the notebook's pipeline and of the project's, on the "
                    "same splits.")
    parser.add_argument("--data_dir", required=True, metavar="FOLDER",
                        help="a folder with the three LastFM CSVs; required, no default")
    parser.add_argument("--seeds", type=seed_list, default="1,2,3",
                        help="the seeds, one split and one run of each pipeline each "
                             "(default: %(default)s)")
    parser.add_argument("--num_epoch", type=int, default=10,
                        help="epochs of every run (default: %(default)s)")
    return parser.parse_args(argv)


def notebook_run(plays, seed, num_epoch):
    """The notebook's pipeline on the project's split -> {"hit_ratio", "ndcg", "seconds"}."""
    import tensorflow as tf
    import evaluate
    import models
    import training
    split = leave_one_out(plays, NUM_EVAL_NEGATIVES, seed)
    training.seed_everything(seed)
    model = models.notebook_model(split.num_users, split.num_items)
    started = time.time()
    for epoch in range(num_epoch):
        inputs, labels = sampling.flat_pairs(
            *training.epoch_data("mlp", split, NEG_RATIO, seed, epoch),
            rng=np.random.default_rng([seed, 3, epoch]))
        model.fit(tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(BATCH_SIZE),
                  verbose=0)
    seconds = time.time() - started

    def score(users, items):
        pairs = {"user": np.repeat(users, items.shape[1]).astype(np.int32),
                 "item": items.ravel().astype(np.int32)}
        return model.predict(pairs, batch_size=65_536, verbose=0).reshape(items.shape)

    result = evaluate.hit_ratio_at_k(score, split.test_users, split.test_items,
                                     split.test_negatives, TOP_K)
    return {"hit_ratio": result["hit_ratio"], "ndcg": result["ndcg"], "seconds": seconds}


def project_run(data_dir, seed, num_epoch, extra=()):
    """`python ncf_lastfm.py` as a user runs it -> {"hit_ratio", "ndcg", "seconds"}."""
    with tempfile.TemporaryDirectory(prefix="ncf-quality-") as folder:
        subprocess.run([sys.executable, os.path.join(ROOT, "ncf_lastfm.py"),
                        f"--data_dir={data_dir}", f"--seed={seed}", f"--num_epoch={num_epoch}",
                        f"--output_dir={folder}", "--quiet", *extra],
                       check=True, stdout=subprocess.DEVNULL)
        found = glob.glob(os.path.join(folder, "**", "metrics.json"), recursive=True)
        if len(found) != 1:   # one run, one metrics.json, wherever the script puts it
            raise SystemExit(f"error: ncf_lastfm.py wrote {len(found)} metrics.json files; "
                             "expected one")
        with open(found[0]) as stream:
            metrics = json.load(stream)
    return {"hit_ratio": metrics["hit_ratio"], "ndcg": metrics["ndcg"],
            "seconds": metrics["train_seconds"]}


def summary(values):
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def run_all(pipelines, seeds):
    """{name: [result of each seed]}, a line on stderr after each run."""
    results = {}
    for name, run in pipelines.items():
        results[name] = []
        for seed in seeds:
            results[name].append(run(seed))
            r = results[name][-1]
            print(f"[quality] {name}, seed {seed}: HR@10 {r['hit_ratio']:.4f} NDCG@10 "
                  f"{r['ndcg']:.4f} ({r['seconds']:.1f} s training)", file=sys.stderr, flush=True)
    return results


def main(argv):
    import warnings
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    plays = data.load_folder(args.data_dir)
    pipelines = {"notebook (Keras Adam, one pair per sample)": lambda s: notebook_run(
                     plays, s, args.num_epoch),
                 "project --optimizer=adam": lambda s: project_run(
                     args.data_dir, s, args.num_epoch, ["--optimizer=adam"]),
                 "project defaults (lazy_adam)": lambda s: project_run(
                     args.data_dir, s, args.num_epoch)}
    results = run_all(pipelines, args.seeds)
    seeds = " / ".join(str(s) for s in args.seeds)
    print(f"| pipeline | HR@10 seeds {seeds} | mean [min, max] | NDCG@10 seeds {seeds} "
          "| mean [min, max] | training s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        hits, ndcgs = [r["hit_ratio"] for r in runs], [r["ndcg"] for r in runs]
        print(f"| {name} | {' / '.join(f'{v:.3f}' for v in hits)} | {summary(hits)} "
              f"| {' / '.join(f'{v:.3f}' for v in ndcgs)} | {summary(ndcgs)} "
              f"| {' / '.join(str(round(r['seconds'])) for r in runs)} |")
    print(json.dumps({"data_dir": args.data_dir, "seeds": args.seeds,
                      "num_epoch": args.num_epoch, "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
