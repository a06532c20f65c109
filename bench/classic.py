"""Classic recommenders on a leave-one-out split: ItemPop, item kNN (cosine) and EASE, as HR@K
and NDCG@K. A measuring tool for comparisons with the neural models, not part of the product or
of its training: nothing here is imported by ncf_lastfm.py.

Run from the repository root:
    python bench/classic.py --split=PREFIX [--methods itempop,itemknn,ease] [--top_k 10]
                            [--ease_lambda 500] [--max_ease_items 20000]

In:  a split in the NCF paper's format, as `python ncf_lastfm.py --export_split=PREFIX` writes:
     PREFIX.train.rating and PREFIX.test.rating (tab-separated user, item, rating, timestamp;
     only user and item are read: every training pair counts once, as an interaction, whatever
     its rating) and PREFIX.test.negative (line n: `(user,item)` of test line n, then its
     negative items, tab-separated).
Out: one table on stdout: for each method HR@K, NDCG@K and the seconds it took (fitting and
     scoring, not reading the files). Refuses in one line, exit code 2: a missing or malformed
     file, a K larger than the negatives, EASE on more items than --max_ease_items.

Definitions: those of peers_bench.py, the external tool (kept outside this repository) the docs' classic figures come
from), so this script reproduces its ItemPop, ItemKNN-cos and EASE rows on the same split.
  X        the binary user x item matrix of the training pairs; users and items are numbered
           0 .. largest id in any of the three files.
  ItemPop  score(u, i) = number of training users of i.
  ItemKNN  score(u, i) = sum over u's training items j of cos(i, j), with
           cos(i, j) = |users(i) & users(j)| / ((sqrt(n_i) + 1e-9) (sqrt(n_j) + 1e-9)):
           the full neighbourhood (every item, no top-k pruning, no shrinkage).
  EASE     (Steck 2019) B = -P / diag(P) column-wise, diag(B) = 0, P = (X'X + lambda I)^-1,
           score(u, i) = (X B)[u, i]. Computed exactly, but through the smaller side: with
           fewer users than items via X P = (lambda I + X X')^-1 X (a users x users inverse),
           else with the items x items inverse; float64 up to 10,000 rows, float32 above.
           Items with the same training users get bit-identical scores, so their exact ties
           count against the held-out item (peers_bench.py's direct inverse leaves ~1e-18 of
           round-off between them, which breaks such ties either way: see Differences).
  Metrics  the project's rule (evaluate.py): rank = number of negatives scoring >= the held-out
           item (ties count against it); a hit is rank < K, i.e. the held-out item's score is
           strictly above the K-th best negative's; NDCG@K = 1 / log2(rank + 2) for a hit, 0
           for a miss; both averaged over the test lines.
Uses numpy and pandas only; computed in float64 (EASE above 10,000 rows in float32).

Differences from peers_bench.py: ItemPop and ItemKNN-cos give its figures to every digit
(lastfm-2k, seed 42: 0.6709 / 0.4597 and 0.8190 / 0.6644). EASE can differ by a user or so:
there 8 (held-out item, negative) pairs are exact ties (the two items have the same one or two
training listeners); this script counts all 8 against the held-out item, peers_bench.py's
round-off (~1e-18) ranks the held-out item above the negative in 5 of them (4 users), which
moves one user into the top 10 and gives it 0.8179 / 0.6704 where this script gives
0.8174 / 0.6700. Its kNN, computed the same way for both items, keeps such ties.
"""
import argparse
import os
import re
import sys
import time

import numpy as np
import pandas as pd

METHODS = ("itempop", "itemknn", "ease")
ALIASES = {"itempop": "itempop", "pop": "itempop", "itemknn": "itemknn", "knn": "itemknn",
           "ease": "ease"}
FLOAT64_EASE_ROWS = 10_000          # above this, EASE's matrix is inverted in float32
CELLS_PER_BATCH = 1 << 22           # dense cells (batch rows x columns) made at once
LINKS_PER_BATCH = 1 << 23           # index pairs expanded at once


class SplitError(ValueError):
    """A split that cannot be read or scored; the message is one line naming the file."""


# ----------------------------------------------------------------------------------- reading

def _read_pairs(path):
    """(users, items) int64 of a tab-separated user, item, rating, timestamp file."""
    if not os.path.isfile(path):
        raise SplitError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1], dtype=np.int64)
    except pd.errors.EmptyDataError:
        raise SplitError(f"{path}: the file is empty") from None
    except (ValueError, pd.errors.ParserError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SplitError(f"{path}: not tab-separated integer user and item ids ({reason})") \
            from None
    users, items = frame[0].to_numpy(), frame[1].to_numpy()
    if len(users) and min(users.min(), items.min()) < 0:
        raise SplitError(f"{path}: negative user or item id")
    return users, items


def _read_negatives(path, test_users, test_items):
    """(num_test, num_negatives) int64; line n must start with `(user,item)` of test line n."""
    if not os.path.isfile(path):
        raise SplitError(f"{path}: file not found")
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            fields = [field for field in line.rstrip("\r\n").split("\t") if field != ""]
            if not fields:
                continue
            head = re.fullmatch(r"\(\s*(-?\d+)\s*,\s*(-?\d+)\s*\)", fields[0])
            row = len(rows)
            if head is None:
                raise SplitError(f"{path}: line {number} does not start with (user,item)")
            if row >= len(test_users):
                raise SplitError(f"{path}: line {number}: more lines than the "
                                 f"{len(test_users)} test pairs")
            if (int(head[1]), int(head[2])) != (test_users[row], test_items[row]):
                raise SplitError(f"{path}: line {number} is for {fields[0]} but test line "
                                 f"{row + 1} is ({test_users[row]},{test_items[row]})")
            try:
                rows.append([int(field) for field in fields[1:]])
            except ValueError:
                raise SplitError(f"{path}: line {number}: a negative that is not an integer") \
                    from None
            if not rows[-1] or len(rows[-1]) != len(rows[0]):
                raise SplitError(f"{path}: line {number} has {len(rows[-1])} negatives, "
                                 f"line 1 has {len(rows[0])}; every line needs the same number")
    if len(rows) != len(test_users):
        raise SplitError(f"{path}: {len(rows)} lines for {len(test_users)} test pairs")
    negatives = np.array(rows, np.int64).reshape(len(rows), -1)
    if negatives.size and negatives.min() < 0:
        raise SplitError(f"{path}: negative item id")
    return negatives


class Data:
    """The training pairs (deduplicated) indexed both ways, and the test lines."""

    def __init__(self, train_users, train_items, test_users, test_items, negatives):
        self.test_users, self.test_items, self.negatives = test_users, test_items, negatives
        self.num_users = int(max(train_users.max(initial=-1), test_users.max(initial=-1))) + 1
        self.num_items = int(max(train_items.max(initial=-1), test_items.max(initial=-1),
                                 negatives.max(initial=-1))) + 1
        keys = np.unique(train_users * self.num_items + train_items)   # sorted by user, item
        self.users, self.items = keys // self.num_items, keys % self.num_items
        self.keys = keys
        self.user_ptr = _pointers(self.users, self.num_users)          # user -> its items
        by_item = np.lexsort((self.users, self.items))
        self.item_users = self.users[by_item]                          # item -> its users
        self.item_ptr = _pointers(self.items[by_item], self.num_items)
        self.user_count = np.diff(self.user_ptr)
        self.item_count = np.diff(self.item_ptr)

    def played(self, users, items):
        """Bool array: is (users, items) a training pair (same shapes, broadcast)."""
        codes = users * self.num_items + items
        at = np.minimum(np.searchsorted(self.keys, codes), max(len(self.keys) - 1, 0))
        return (self.keys[at] == codes) if len(self.keys) else np.zeros(codes.shape, bool)


def read_split(prefix):
    paths = [prefix + suffix for suffix in (".train.rating", ".test.rating", ".test.negative")]
    for path in paths:
        if not os.path.isfile(path):
            raise SplitError(f"{path}: file not found (--split=PREFIX needs "
                             f"{', '.join(os.path.basename(p) for p in paths)})")
    train_users, train_items = _read_pairs(paths[0])
    test_users, test_items = _read_pairs(paths[1])
    negatives = _read_negatives(paths[2], test_users, test_items)
    return Data(train_users, train_items, test_users, test_items, negatives)


# ------------------------------------------------------------------ sparse sums without scipy

def _pointers(sorted_keys, size):
    """CSR row pointers (size + 1,) of an array of keys sorted ascending."""
    return np.concatenate([[0], np.cumsum(np.bincount(sorted_keys, minlength=size))])


def _ranges(ptr, keys):
    """For each key its positions ptr[key] .. ptr[key + 1] - 1, concatenated:
    -> (owner: index into keys of each position, positions)."""
    starts = ptr[keys]
    counts = ptr[keys + 1] - starts
    owner = np.repeat(np.arange(len(keys)), counts)
    offsets = np.cumsum(counts) - counts
    positions = np.arange(counts.sum()) - np.repeat(offsets - starts, counts)
    return owner, positions


def _batches(costs, per_batch):
    """Consecutive slices of range(len(costs)) whose costs add up to about per_batch (>= 1 row)."""
    start, total = 0, np.cumsum(costs)
    while start < len(costs):
        base = total[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(total, base + per_batch, side="right")))
        yield slice(start, stop)
        start = stop


def gather_sums(matrix, rows, ptr, index, keys, transposed=False):
    """out[p] = sum over t in ptr[keys[p]] .. ptr[keys[p] + 1] - 1 of matrix[rows[p], index[t]]
    (of matrix[index[t], rows[p]] if transposed), summed in that order, so two keys with the
    same index lists give bit-identical sums."""
    rows, keys = np.ravel(rows), np.ravel(keys)
    out = np.zeros(len(keys), np.float64)
    cost = ptr[keys + 1] - ptr[keys] + 1
    for part in _batches(cost, LINKS_PER_BATCH):
        owner, positions = _ranges(ptr, keys[part])
        at = (rows[part][owner], index[positions])
        values = matrix[at[::-1] if transposed else at]
        out[part] = np.bincount(owner, values.astype(np.float64), minlength=len(keys[part]))
    return out


def overlap_rows(keys, ptr_a, index_a, ptr_b, index_b, size, weight, dtype=np.float64):
    """Dense (len(keys), size): out[r, k] = sum of weight[m] over the m that keys[r] and k share,
    where ptr_a/index_a list each key's m, and ptr_b/index_b each m's keys (0 .. size - 1).
    With keys = users, m = items: weighted X X' rows; with keys = items: X' X rows."""
    owner, positions = _ranges(ptr_a, keys)
    middle = index_a[positions]
    owner2, positions2 = _ranges(ptr_b, middle)
    cells = owner[owner2] * size + index_b[positions2]
    summed = np.bincount(cells, weight[middle][owner2], minlength=len(keys) * size)
    return summed.reshape(len(keys), size).astype(dtype, copy=False)


def _row_batches(keys, ptr_a, index_a, count_b, size):
    """Slices of keys, each small enough for overlap_rows (cells and expanded pairs)."""
    owner, positions = _ranges(ptr_a, keys)
    links = np.bincount(owner, count_b[index_a[positions]], minlength=len(keys))
    rows_cap = max(1, CELLS_PER_BATCH // max(size, 1))
    for part in _batches(links + 1, LINKS_PER_BATCH):
        for start in range(part.start, part.stop, rows_cap):
            yield slice(start, min(part.stop, start + rows_cap))


# ---------------------------------------------------------------------------------- methods

def item_pop(data):
    popularity = data.item_count.astype(np.float64)
    return lambda users, candidates: popularity[candidates]


def item_knn(data):
    """score(u, c) = sum_{j in I(u)} cos(j, c) = (1 / norm_c) sum_{v in U(c)} W[u, v],
    W[u, v] = sum_{j in I(u) & I(v)} 1 / norm_j: a users x users row per test user."""
    norm = np.sqrt(data.item_count.astype(np.float64)) + 1e-9

    def score(users, candidates):
        out = np.empty(candidates.shape, np.float64)
        for part in _row_batches(users, data.user_ptr, data.items, data.item_count,
                                 data.num_users):
            weights = overlap_rows(users[part], data.user_ptr, data.items, data.item_ptr,
                                   data.item_users, data.num_users, 1.0 / norm)
            cand = candidates[part]
            rows = np.broadcast_to(np.arange(len(cand))[:, None], cand.shape)
            sums = gather_sums(weights, rows, data.item_ptr, data.item_users, cand)
            out[part] = sums.reshape(cand.shape) / norm[cand]
        return out
    return score


def ease(data, lam):
    """EASE, exactly, through the smaller of the users x users and items x items systems."""
    if data.num_users < data.num_items:
        return _ease_by_users(data, lam)
    return _ease_by_items(data, lam)


def _dtype(size):
    return np.float64 if size <= FLOAT64_EASE_ROWS else np.float32


def _gram(data, by_users):
    """X X' (by_users) or X' X, dense."""
    if by_users:
        keys, ptr_a, idx_a, ptr_b, idx_b = (np.arange(data.num_users), data.user_ptr,
                                            data.items, data.item_ptr, data.item_users)
        size, count_b = data.num_users, data.item_count
    else:
        keys, ptr_a, idx_a, ptr_b, idx_b = (np.arange(data.num_items), data.item_ptr,
                                            data.item_users, data.user_ptr, data.items)
        size, count_b = data.num_items, data.user_count
    gram = np.empty((size, size), _dtype(size))
    ones = np.ones(max(data.num_users, data.num_items))
    for part in _row_batches(keys, ptr_a, idx_a, count_b, size):
        gram[part] = overlap_rows(keys[part], ptr_a, idx_a, ptr_b, idx_b, size, ones)
    return gram


def _ease_by_users(data, lam):
    """With P = (X'X + lam I)^-1 and K = X X' + lam I (users x users):
    X P = K^-1 X and lam P_cc = 1 - x_c' K^-1 x_c (Woodbury), so
    score(u, c) = (X P)[u, c] / -P_cc + X[u, c] P_cc / P_cc
                = -lam (K^-1 X)[u, c] / (1 - x_c' K^-1 x_c) + X[u, c]."""
    k = _gram(data, by_users=True)
    k[np.diag_indices_from(k)] += lam
    k_inv = np.linalg.inv(k)
    del k
    items = np.flatnonzero(data.item_count)                 # x_c = 0 elsewhere: q_c = 0
    owner, positions = _ranges(data.item_ptr, items)        # (c, v) for v in U(c)
    per_pair = gather_sums(k_inv, data.item_users[positions], data.item_ptr, data.item_users,
                           items[owner])
    quad = np.zeros(data.num_items)
    quad[items] = np.bincount(owner, per_pair, minlength=len(items))

    def score(users, candidates):
        rows = np.broadcast_to(users[:, None], candidates.shape)
        k_inv_x = gather_sums(k_inv, rows, data.item_ptr, data.item_users, candidates)
        k_inv_x = k_inv_x.reshape(candidates.shape)
        own = data.played(rows, candidates).astype(np.float64)
        return -lam * k_inv_x / (1.0 - quad[candidates]) + own
    return score


def _equalize_identical_items(data, b):
    """Items with the same training users are interchangeable, so their columns of B are equal
    (and B is constant on their off-diagonal block); the inverse leaves round-off of ~1e-16
    there, which would decide their ties. Copies the first item's values to the others."""
    groups = {}
    for item in np.flatnonzero(data.item_count):
        users = data.item_users[data.item_ptr[item]:data.item_ptr[item + 1]]
        groups.setdefault(users.tobytes(), []).append(item)
    for group in groups.values():
        if len(group) < 2:
            continue
        first, others = group[0], np.array(group[1:])
        outside = np.setdiff1d(np.arange(len(b)), group)
        b[np.ix_(outside, others)] = b[outside, first][:, None]
        b[np.ix_(group, group)] = b[group[1], first]
        b[group, group] = 0


def _ease_by_items(data, lam):
    """B = -P / diag(P), diag(B) = 0; score(u, c) = sum over u's items j of B[j, c]."""
    p = _gram(data, by_users=False)
    p[np.diag_indices_from(p)] += lam
    p = np.linalg.inv(p)
    p /= -np.diag(p).copy()
    p[np.diag_indices_from(p)] = 0
    _equalize_identical_items(data, p)

    def score(users, candidates):
        sums = gather_sums(p, candidates, data.user_ptr, data.items,
                           np.broadcast_to(users[:, None], candidates.shape), transposed=True)
        return sums.reshape(candidates.shape)
    return score


# ---------------------------------------------------------------------------------- metrics

def ranks_against(positive, negatives):
    """(n,), (n, c) -> number of negatives scoring >= the held-out item (ties count against)."""
    return (negatives >= positive[:, None]).sum(axis=1)


def hr_ndcg(ranks, top_k):
    """-> (HR@K, NDCG@K): hit = rank < K, gain 1 / log2(rank + 2) for a hit."""
    ranks = np.asarray(ranks)
    hits = ranks < top_k
    gains = np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)
    return (float(hits.mean()), float(gains.mean())) if len(ranks) else (0.0, 0.0)


def evaluate(score, data, top_k, users_per_batch=512):
    ranks = np.empty(len(data.test_users), np.int64)
    for start in range(0, len(ranks), users_per_batch):
        stop = start + users_per_batch
        candidates = np.concatenate([data.test_items[start:stop, None],
                                     data.negatives[start:stop]], axis=1)
        scores = np.asarray(score(data.test_users[start:stop], candidates))
        ranks[start:stop] = ranks_against(scores[:, 0], scores[:, 1:])
    return hr_ndcg(ranks, top_k)


# -------------------------------------------------------------------------------- interface

def _methods(text):
    chosen = []
    for name in re.split(r"[,\s]+", text.strip().lower()):
        if name and name not in ALIASES:
            raise argparse.ArgumentTypeError(
                f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        if name and ALIASES[name] not in chosen:
            chosen.append(ALIASES[name])
    if not chosen:
        raise argparse.ArgumentTypeError("no method given")
    return chosen


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="bench/classic.py",
        description="HR@K and NDCG@K of ItemPop, item kNN (cosine) and EASE on a split in the "
                    "NCF paper's format (peers_bench.py's definitions; ties count against the "
                    "held-out item). A measuring tool, not part of training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--split", required=True, metavar="PREFIX", default=argparse.SUPPRESS,
                        help="required: reads PREFIX.train.rating, PREFIX.test.rating and "
                             "PREFIX.test.negative")
    parser.add_argument("--methods", type=_methods, default=",".join(METHODS),
                        metavar="LIST", help="comma-separated subset of itempop, itemknn, ease")
    parser.add_argument("--top_k", type=int, default=10, help="K of HR@K and NDCG@K")
    parser.add_argument("--ease_lambda", type=float, default=500.0,
                        help="EASE's L2 weight lambda added to the diagonal of X'X")
    parser.add_argument("--max_ease_items", type=int, default=20_000,
                        help="refuse EASE (exit 2) on a split with more items than this")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top_k must be 1 or more")
    if not args.ease_lambda > 0:
        parser.error("--ease_lambda must be above 0")
    return args


def run(args):
    """-> list of (method name, HR, NDCG, seconds). Raises SplitError."""
    data = read_split(args.split)
    if args.top_k > data.negatives.shape[1]:
        raise SplitError(f"--top_k={args.top_k} is larger than the {data.negatives.shape[1]} "
                         f"negatives per test line of {args.split}.test.negative")
    if "ease" in args.methods and data.num_items > args.max_ease_items:
        raise SplitError(f"EASE refused: {data.num_items:,} items is more than "
                         f"--max_ease_items={args.max_ease_items:,} (it inverts a dense "
                         "matrix); raise the limit or leave ease out of --methods")
    print(f"split {args.split}: {data.num_users:,} users, {data.num_items:,} items, "
          f"{len(data.users):,} training pairs, {len(data.test_users):,} test lines, "
          f"{data.negatives.shape[1] + 1} candidates each")
    makers = {"itempop": ("ItemPop", lambda: item_pop(data)),
              "itemknn": ("ItemKNN-cos", lambda: item_knn(data)),
              "ease": (f"EASE(l={args.ease_lambda:g})", lambda: ease(data, args.ease_lambda))}
    results = []
    for method in args.methods:
        name, make = makers[method]
        started = time.perf_counter()
        hr, ndcg = evaluate(make(), data, args.top_k)
        results.append((name, hr, ndcg, time.perf_counter() - started))
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        results = run(args)
    except SplitError as error:
        print(f"bench/classic.py: error: {error}", file=sys.stderr)
        return 2
    k = args.top_k
    print(f"| method | HR@{k} | NDCG@{k} | seconds |")
    print("| --- | --- | --- | --- |")
    for name, hr, ndcg, seconds in results:
        print(f"| {name} | {hr:.4f} | {ndcg:.4f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
