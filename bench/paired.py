"""A trained model against item kNN and EASE on the same test users, paired: is the difference
more than the luck of which users were held out?

Run from the repository root (`--help` lists the options):
    python bench/paired.py --split=PREFIX --load=MODEL.keras [--weights=BEST.weights.h5]

PREFIX is a split in the NCF paper's format (`python ncf_lastfm.py --export_split=PREFIX`);
MODEL.keras a model the project saved (`OUTPUT_DIR/neumf.keras`, or with --compare
`OUTPUT_DIR/checkpoint-neumf.keras` and `--weights=OUTPUT_DIR/best-neumf.weights.h5`, the best
validation epoch's weights). Item kNN and EASE(lambda=500) are computed here with the formulas
of peers_bench.py (the measuring tool of docs/results.md, kept outside this repository) on every
row of PREFIX.train.rating, so they print that tool's HR@10 and NDCG@10; ties count against the
held-out artist, as there and in `evaluate.py`. For each classic method it prints the model's
HR@10 and NDCG@10 minus the method's, with a 95% interval from a paired bootstrap (the same
resampled users for both), and how many users only one of the two hits (`--seed` seeds the
bootstrap draws). EASE inverts a num_items x num_items matrix, the slow part with thousands of
artists; `--ease=False` skips it.
Refuses, in one line: a split or model file that is missing or unreadable, a model whose tables
or training data are not the split's, weights of another model.
"""
import argparse
import os
import sys
import zipfile

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import errors  # noqa: E402
import evaluate  # noqa: E402
import backend  # noqa: E402
import kernels  # noqa: E402
from split import read_ncf_split, split_digest  # noqa: E402

TOP_K, EASE_LAMBDA = 10, 500.0


def true_or_false(text):
    """argparse type of --ease: bool("False") would be True."""
    if text not in ("True", "true", "1", "False", "false", "0"):
        raise argparse.ArgumentTypeError(f"{text!r}: give True or False")
    return text in ("True", "true", "1")


def at_least(minimum):
    """argparse type: an integer of `minimum` or more."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give {minimum} or more")
        return value
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python bench/paired.py",
        description="A saved model against item kNN and EASE on a split's test users, with "
                    "paired bootstrap intervals of the differences.")
    parser.add_argument("--split", required=True, metavar="PREFIX",
                        help="a split in the NCF paper's format (PREFIX.train.rating, "
                             ".test.rating, .test.negative); required, no default")
    parser.add_argument("--load", required=True, metavar="MODEL.keras",
                        help="a model the project saved; required, no default")
    parser.add_argument("--weights", default="", metavar="FILE",
                        help="weights to load into the model, e.g. the best validation epoch's "
                             "(default: %(default)r, the model's own)")
    parser.add_argument("--resamples", type=at_least(1), default=10_000,
                        help="bootstrap draws of the test users (default: %(default)s)")
    parser.add_argument("--ease", type=true_or_false, default=True, metavar="True|False",
                        help="also score EASE, the slow part (default: %(default)s)")
    parser.add_argument("--seed", type=at_least(0), default=0,
                        help="seed of the bootstrap draws (default: %(default)s)")
    return parser.parse_args(argv)


def played_matrix(split):
    """(num_users, num_items) float32 of 1 for every training pair of `split`."""
    played = np.zeros((split.num_users, split.num_items), np.float32)
    played[split.train_users, split.train_items] = 1
    return played


def item_knn(played):
    """peers_bench's item kNN: score(u, i) = sum over u's artists j of cos(i, j)."""
    normed = played / (np.sqrt(played.sum(0)) + 1e-9)
    return lambda users, items: np.take_along_axis(
        (played[users] @ normed.T) @ normed, items, 1)


def ease(played, lam=EASE_LAMBDA):
    """peers_bench's EASE (Steck 2019): B = -P / diag(P), diag(B) = 0, P = (X'X + lam I)^-1."""
    gram = (played.T @ played).astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    weights[np.diag_indices_from(weights)] = 0
    return lambda users, items: np.take_along_axis(played[users].astype(np.float64) @ weights,
                                                   items, 1)


def paired_interval(ours, theirs, draws):
    """Mean of ours - theirs per user, and the 2.5% and 97.5% quantiles of that mean over the
    bootstrap `draws` (resamples, users) of user indices (the same draws for both: paired)."""
    difference = np.asarray(ours, np.float64) - np.asarray(theirs, np.float64)
    low, high = np.quantile(difference[draws].mean(axis=1), [0.025, 0.975])
    return float(difference.mean()), float(low), float(high)


def compare(model_ranks, classic_ranks, resamples, seed):
    """-> rows: {method, HR, NDCG, HR diff + interval, NDCG diff + interval, only_model,
    only_method} for every classic method against the model, all on the same draws of users."""
    ours_hits, ours_gains = evaluate.hits_and_gains(model_ranks, TOP_K)
    draws = np.random.default_rng(seed).integers(0, len(ours_hits),
                                                 size=(resamples, len(ours_hits)))
    rows = []
    for method, ranks in classic_ranks.items():
        hits, gains = evaluate.hits_and_gains(ranks, TOP_K)
        rows.append({"method": method, "hit_ratio": hits.mean(), "ndcg": gains.mean(),
                     "hr_diff": paired_interval(ours_hits, hits, draws),
                     "ndcg_diff": paired_interval(ours_gains, gains, draws),
                     "only_model": int((ours_hits & ~hits).sum()),
                     "only_method": int((~ours_hits & hits).sum())})
    return rows


def read_model(path, split):
    """The saved model at `path`, if its tables and training data are `split`'s; else a
    one-line InputError."""
    import models
    if not os.path.isfile(path):
        raise errors.InputError(f"--load={path}: file not found; give a .keras file a run saved")
    if not zipfile.is_zipfile(path):   # Keras would say "File not found"
        raise errors.InputError(f"--load={path}: not a .keras file (a .keras file is a zip "
                                "archive); give a .keras file a run saved")
    try:
        model = models.load(path)
    except Exception as error:  # not a Keras file, or one made by other code
        raise errors.InputError(f"--load={path}: not a model this script saved "
                                f"({errors.first_sentence(error)})") from None
    users, items = models.table_sizes(model)
    if (users, items) != (split.num_users, split.num_items):
        raise errors.InputError(f"--load={path}: the model has {users:,} users and {items:,} "
                                f"artists, the data {split.num_users:,} and {split.num_items:,}; "
                                "use the data settings it was trained with")
    trained_on, here = models.saved_data_digest(path), split_digest(split)
    if trained_on and trained_on != here:
        raise errors.InputError(f"--load={path} was trained on other plays or test artists than "
                                f"these (data digest {trained_on}, here {here}); scored here, its "
                                "training artists could be test artists: use the data and --seed "
                                "it was trained with")
    return model


def load_weights(model, path):
    """`model` with the weights at `path`, or a one-line SystemExit."""
    if not os.path.isfile(path):
        raise SystemExit(f"--weights={path}: file not found")
    try:
        model.load_weights(path)
    except Exception as error:  # another model's weights, or not a weights file
        raise SystemExit(f"--weights={path}: not this model's weights "
                         f"({errors.error_reason(error)})") from None
    return model


def print_table(model, path, model_result, rows, users):
    """The model's line, then one Markdown row per classic method."""
    print(f"{model.name} ({path}): HR@{TOP_K} {model_result['hit_ratio']:.4f}, "
          f"NDCG@{TOP_K} {model_result['ndcg']:.4f}, {users:,} test users")
    print(f"| method | HR@{TOP_K} | NDCG@{TOP_K} | {model.name} - method, HR@{TOP_K} (95% paired "
          f"interval) | NDCG@{TOP_K} (95%) | users only {model.name} hits | only the method hits |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        hr, nd = row["hr_diff"], row["ndcg_diff"]
        print(f"| {row['method']} | {row['hit_ratio']:.4f} | {row['ndcg']:.4f} "
              f"| {hr[0]:+.4f} [{hr[1]:+.4f}, {hr[2]:+.4f}] "
              f"| {nd[0]:+.4f} [{nd[1]:+.4f}, {nd[2]:+.4f}] "
              f"| {row['only_model']} | {row['only_method']} |")


def main(argv):
    args = parse_args(argv)
    if error := kernels.environment_error() or backend.environment_error(("tensorflow",)):
        sys.exit(f"error: {error}")
    backend.import_quietly()   # TensorFlow's start-up notes would bury a one-line error
    import models
    try:
        _, split = read_ncf_split(args.split, seed=0)
        model = read_model(args.load, split)
    except errors.InputError as error:
        raise SystemExit(str(error)) from None
    if args.weights:
        load_weights(model, args.weights)
    test = (split.test_users, split.test_items, split.test_negatives, TOP_K)
    model_result = evaluate.hit_ratio_at_k(models.make_scorer(model), *test)
    played = played_matrix(split)
    classic = {"item kNN": evaluate.hit_ratio_at_k(item_knn(played), *test)["ranks"]}
    if args.ease:
        classic[f"EASE(l={EASE_LAMBDA:g})"] = evaluate.hit_ratio_at_k(ease(played), *test)["ranks"]
    rows = compare(model_result["ranks"], classic, args.resamples, args.seed)
    print_table(model, args.load, model_result, rows, len(split.test_users))


if __name__ == "__main__":
    main(sys.argv[1:])
