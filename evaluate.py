"""Ranking metrics: hit ratio and NDCG at K, sampled (1 held-out artist among 1 + k candidates)
and over the full catalogue.

In:  a scoring function `score(users, items) -> scores`, with users (n,) and items (n, c), both
     int arrays, returning an (n, c) float array; the held-out items and their candidates.
Out: a dict with `hit_ratio`, `ndcg`, `num_users`, and the per-user ranks.
Rule: the notebook's. A hit needs the held-out artist's score to be strictly greater than the
     K-th best candidate's (`pos > np.sort(neg)[-K]`), so ties count against the held-out
     artist: a model that gives every artist the same score scores 0, not 1. The rank of the
     held-out artist is the number of candidates scoring at least as high, and NDCG at K is
     1 / log2(rank + 2) for a hit, 0 for a miss. Scores are computed for many users at once.
"""
import numpy as np
from tqdm import tqdm


def ranks_against(positive_scores, negative_scores):
    """(n,), (n, c) -> (n,) number of candidates scoring >= the held-out artist."""
    return (negative_scores >= positive_scores[:, None]).sum(axis=1)


def hits_and_gains(ranks, top_k):
    """Per user: (hit at K (bool), NDCG at K term) from the held-out artist's rank."""
    ranks = np.asarray(ranks)
    hits = ranks < top_k
    return hits, np.where(hits, 1.0 / np.log2(ranks + 2.0), 0.0)


def metrics_from_ranks(ranks, top_k):
    hits, ndcg = hits_and_gains(ranks, top_k)
    return {"hit_ratio": float(hits.mean()) if len(ranks) else 0.0,
            "ndcg": float(ndcg.mean()) if len(ranks) else 0.0,
            "num_users": int(len(ranks))}


def hit_ratio_at_k(score, users, items, negatives, top_k, users_per_batch=20_000, quiet=True):
    """Sampled metrics: each user's held-out item against its own negatives."""
    if top_k > negatives.shape[1]:
        raise ValueError(f"TOP_K={top_k} is larger than the {negatives.shape[1]} candidates "
                         "beside the held-out artist; use a smaller --top_k or more "
                         "--num_eval_negatives")
    ranks = np.empty(len(users), np.int64)
    starts = range(0, len(users), users_per_batch)
    for start in tqdm(starts, desc="evaluate", disable=quiet or len(starts) < 3, leave=False):
        stop = start + users_per_batch
        candidates = np.concatenate([items[start:stop, None], negatives[start:stop]], axis=1)
        scores = np.asarray(score(users[start:stop], candidates))   # (batch, 1 + k)
        ranks[start:stop] = ranks_against(scores[:, 0], scores[:, 1:])
    result = metrics_from_ranks(ranks, top_k)
    result["ranks"] = ranks
    return result


def full_ranking(score, users, items, sampler, top_k, users_per_batch=256):
    """Full-catalogue metrics: the held-out item against every artist the user never played
    (every artist that exists: ids that are gaps in the numbering are not artists)."""
    ranks = np.empty(len(users), np.int64)
    all_items = sampler.items                                        # (num_existing,) sorted
    for start in range(0, len(users), users_per_batch):
        batch = users[start:start + users_per_batch]
        scores = np.asarray(score(batch, np.broadcast_to(all_items, (len(batch), len(all_items)))),
                            dtype=np.float64)                       # (batch, num_existing)
        column = np.searchsorted(all_items, items[start:start + len(batch)])
        positive = scores[np.arange(len(batch)), column]
        for row, user in enumerate(batch):  # one row per user: mask what the user has played
            scores[row, np.searchsorted(all_items, sampler.played_items(user))] = -np.inf
        ranks[start:start + len(batch)] = ranks_against(positive, scores)
    result = metrics_from_ranks(ranks, top_k)
    result["ranks"] = ranks
    return result


def popularity_scorer(train_items, num_items):
    """Scores every artist by its number of listeners in the training rows."""
    popularity = np.bincount(train_items, minlength=num_items).astype(np.float32)
    return lambda users, items: popularity[items]


def hit_ratio_curve(ranks, max_k):
    """Hit ratio at K for K = 1..max_k from the per-user ranks -> (max_k,)."""
    ranks = np.asarray(ranks)
    return np.array([(ranks < k).mean() if len(ranks) else 0.0 for k in range(1, max_k + 1)])
