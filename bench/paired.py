"""A trained model against item kNN and EASE on the same test users, paired: is the difference
more than the luck of which users were held out?

Run from the repository root:
    python bench/paired.py --split=PREFIX --load=MODEL.keras [--weights=BEST.weights.h5]
                           [--resamples=10000] [--ease=True] [--seed=0]

PREFIX is a split in the NCF paper's format (`python ncf_lastfm.py --export_split=PREFIX`);
MODEL.keras a model the project saved (`OUTPUT_DIR/neumf.keras`, or with --compare
`OUTPUT_DIR/checkpoint-neumf.keras` and `--weights=OUTPUT_DIR/best-neumf.weights.h5`, the best
validation epoch's weights). Item kNN and EASE(lambda=500) are computed here with
`../shared/tools/peers_bench.py`'s formulas on every row of PREFIX.train.rating, so they print
that tool's HR@10 and NDCG@10; ties count against the held-out artist, as there and in
`evaluate.py`. For each classic method it prints the model's HR@10 and NDCG@10 minus the
method's, with a 95% interval from a paired bootstrap (the same resampled users for both), and
how many users only one of the two hits (`--seed` seeds the bootstrap draws). EASE inverts a
num_items x num_items matrix (about 2 minutes at lastfm-2k's 17,632 artists here);
`--ease=False` skips it.
"""
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import data  # noqa: E402
import evaluate  # noqa: E402

TOP_K, EASE_LAMBDA = 10, 500.0


def parse_args(argv):
    settings = {"split": "", "load": "", "weights": "", "resamples": 10_000, "ease": True,
                "seed": 0}
    for argument in argv:
        key, _, value = argument.lstrip("-").partition("=")
        if key not in settings:
            raise SystemExit(f"unknown option {argument!r}; usage: python bench/paired.py "
                             "--split=PREFIX --load=MODEL.keras [--weights=FILE] "
                             "[--resamples=10000] [--ease=True] [--seed=0]")
        kind = type(settings[key])
        if kind is bool:
            if value not in ("True", "true", "1", "False", "false", "0"):
                raise SystemExit(f"--{key}={value!r}: give True or False")
            settings[key] = value in ("True", "true", "1")
            continue
        try:
            settings[key] = kind(value)
        except ValueError:
            raise SystemExit(f"--{key}={value!r}: give {'an integer' if kind is int else 'text'}")
    if not settings["split"] or not settings["load"]:
        raise SystemExit("--split=PREFIX and --load=MODEL.keras are required")
    if settings["resamples"] < 1 or settings["seed"] < 0:
        raise SystemExit("--resamples must be 1 or more and --seed 0 or more")
    return settings


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


def main(argv):
    settings = parse_args(argv)
    from ncf_lastfm import environment_error, import_tensorflow_quietly
    if error := environment_error():
        sys.exit(f"error: {error}")
    import_tensorflow_quietly()   # TensorFlow's start-up notes would bury a one-line error
    import models
    from ncf_lastfm import check_fits, read_saved_model
    try:
        _, split = data.read_ncf_split(settings["split"], seed=0)
        model = check_fits(read_saved_model(settings["load"]), settings["load"], split)
    except data.DataError as error:
        raise SystemExit(str(error)) from None
    if settings["weights"]:
        if not os.path.isfile(settings["weights"]):
            raise SystemExit(f"--weights={settings['weights']}: file not found")
        try:
            model.load_weights(settings["weights"])
        except Exception as error:  # missing, or another model's weights
            raise SystemExit(f"--weights={settings['weights']}: not this model's weights "
                             f"({data.error_reason(error)})") from None
    score = models.make_scorer(model)
    args = (split.test_users, split.test_items, split.test_negatives, TOP_K)
    model_result = evaluate.hit_ratio_at_k(score, *args)
    played = played_matrix(split)
    classic = {"item kNN": evaluate.hit_ratio_at_k(item_knn(played), *args)["ranks"]}
    if settings["ease"]:
        classic[f"EASE(l={EASE_LAMBDA:g})"] = evaluate.hit_ratio_at_k(ease(played), *args)["ranks"]
    rows = compare(model_result["ranks"], classic, settings["resamples"], settings["seed"])
    users = len(split.test_users)
    print(f"{model.name} ({settings['load']}): HR@{TOP_K} {model_result['hit_ratio']:.4f}, "
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


if __name__ == "__main__":
    main(sys.argv[1:])
