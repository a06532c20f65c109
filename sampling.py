"""Negative sampling: artists a user has never played, drawn exactly and without Python loops.

In:  every listened (user, artist) pair, including the held-out test and validation artists, so
     that a held-out artist is never offered to the model as a negative (that would teach it to
     score the very answer of the test low).
Out: `NegativeSampler.sample` draws one unplayed artist per entry, uniformly, with replacement;
     `sample_distinct` draws k distinct unplayed artists per user (evaluation candidates);
     `training_set` builds one epoch: every training pair (label 1) with `neg_ratio` fresh
     negatives of its user (label 0) in one row, rows shuffled.
How: for a user with sorted played artists s_0 < s_1 < ..., the r-th unplayed artist is
     r + #{j : s_j - j <= r}. One `searchsorted` over all users at once gives that count, so a
     draw is exact (never a played artist, no rejection loop) and costs the same for a user who
     played almost everything. A user who played every artist gets no negatives. Ids that are
     gaps in the numbering (no such artist) are never drawn: the draw is over the artists that
     exist, numbered 0..n-1 among themselves, then mapped back to their ids.
"""
import numpy as np
from tqdm import tqdm


class NegativeSampler:
    def __init__(self, user_ids, item_ids, num_users, num_items, items=None):
        """`user_ids`, `item_ids`: all listened pairs, distinct, any order. `items`: the ids
        that exist, sorted (default: every id below `num_items`); ids between them (gaps in
        the numbering) are never drawn, as negatives or candidates, and never listed."""
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.items = (np.arange(num_items, dtype=np.int32) if items is None
                      else np.asarray(items, np.int32))
        self._dense = len(self.items) == self.num_items   # then a compact id is the id
        if not self._dense:   # draw in 0..len(items)-1 (compact ids), map back to the ids
            self._compact = np.full(self.num_items, -1, np.int64)
            self._compact[self.items] = np.arange(len(self.items))
            item_ids = self._compact[item_ids]
            if (item_ids < 0).any():
                raise ValueError("a listened item is not among `items`")
        self._size = len(self.items)  # the compact ids' range
        keys = np.sort(user_ids.astype(np.int64) * self._size + item_ids)
        counts = np.bincount(user_ids, minlength=num_users)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.num_free = (self._size - counts).astype(np.int64)   # unplayed artists per user
        users = keys // self._size
        # (num_pairs,) sorted: user * size + (s_j - j), non-decreasing within a user
        self._keys = keys - (np.arange(len(keys)) - self.offsets[users])
        self._played_keys = keys

    def _ids(self, compact):
        """Compact ids (int) -> the items' own ids, int32."""
        return (compact if self._dense else self.items[compact]).astype(np.int32)

    def sample(self, users, rng):
        """One unplayed artist for each entry of `users` -> (len(users),) int32.
        Users with no unplayed artist must be filtered out first (`num_free == 0`).
        When `users` is sorted, each user's draws come back in ascending order (the multiset
        is the same uniform draw; callers shuffle), which makes the lookup about twice as fast."""
        if len(users) < 100_000 or (users[1:] < users[:-1]).any():
            users = users.astype(np.int64)
            free = self.num_free[users]
            if (free <= 0).any():
                raise ValueError("sample() was given a user who has played every artist")
            return self._rank_to_item(users, (rng.random(len(users)) * free).astype(np.int64))
        # Sorted: in chunks that start at a user's first entry (draws stay ascending within a
        # user; rng.random in pieces is the same stream), so only a few chunks are in memory.
        if (self.num_free[users] <= 0).any():
            raise ValueError("sample() was given a user who has played every artist")
        bounds = np.append(np.unique(np.searchsorted(users, users[::4_000_000])), len(users))
        result = np.empty(len(users), np.int32)
        spans = list(zip(bounds[:-1], bounds[1:]))
        for start, stop in tqdm(spans, desc="sampling negatives", disable=None, leave=False):
            part = users[start:stop].astype(np.int64)
            ranks = (rng.random(len(part)) * self.num_free[part]).astype(np.int64)
            result[start:stop] = self._sorted_lookup(part * self._size + ranks)
        return result

    def _sorted_lookup(self, queries):
        """Queries sorted here (user * num_items + rank) -> items. Counting, for each query, the
        keys at or below it is one searchsorted of the (fewer) keys into the queries."""
        if len(queries) == 0:
            return queries.astype(np.int32)
        queries = np.sort(queries)
        first_user, last_user = queries[0] // self._size, queries[-1] // self._size
        keys = self._keys[self.offsets[first_user]:self.offsets[last_user + 1]]
        below_each = np.searchsorted(queries, keys, side="left")   # (num_keys,)
        at_or_below = np.bincount(below_each, minlength=len(queries) + 1).cumsum()[:-1]
        users = queries // self._size
        ranks = queries - users * self._size
        return self._ids(ranks + at_or_below - (self.offsets[users] - self.offsets[first_user]))

    def _rank_to_item(self, users, ranks):
        queries = users * self._size + ranks
        below = np.searchsorted(self._keys, queries, side="right") - self.offsets[users]
        return self._ids(ranks + below)

    def is_played(self, users, items):
        """Boolean array: was (users[i], items[i]) a listened pair?"""
        items = np.asarray(items, np.int64)
        exists = np.ones(items.shape, bool)
        if not self._dense:   # an id in a gap, or beyond the ids, is no one's play
            inside = (items >= 0) & (items < self.num_items)
            items = np.where(inside, self._compact[np.where(inside, items, 0)], -1)
            exists = items >= 0
        keys = users.astype(np.int64) * self._size + items
        position = np.minimum(np.searchsorted(self._played_keys, keys), len(self._played_keys) - 1)
        return exists & (self._played_keys[position] == keys)

    def played_items(self, user):
        """The sorted artists `user` has played (test and validation artists included)."""
        start, stop = self.offsets[user], self.offsets[user + 1]
        return self._ids(self._played_keys[start:stop] - user * self._size)

    def sample_distinct(self, users, k, rng):
        """k distinct unplayed artists per user -> (len(users), k) int32, random order.
        Every user must have at least k unplayed artists."""
        users = users.astype(np.int64)
        result = np.empty((len(users), k), np.int64)
        if len(users) == 0 or k == 0:
            return result.astype(np.int32)
        free = self.num_free[users]
        if (free < k).any():
            raise ValueError(f"a user has fewer than {k} unplayed artists")
        # Users with plenty of unplayed artists: draw k ranks with replacement and redraw the
        # rows that repeat one. A row of k draws from `free` has no repeat with probability
        # about exp(-k**2 / (2 * free)): from k**2 / 12 on that is over 1/400, a few hundred
        # cheap rounds at worst. Users with fewer: a random permutation each (bounded by k**2).
        crowded = free < max(4 * k, k * k // 12)
        pending = np.flatnonzero(~crowded)
        while len(pending):
            ranks = (rng.random((len(pending), k)) * free[pending, None]).astype(np.int64)
            ordered = np.sort(ranks, axis=1)
            repeats = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            result[pending[~repeats]] = ranks[~repeats]
            pending = pending[repeats]
        for row in np.flatnonzero(crowded):
            result[row] = rng.permutation(free[row])[:k]
        items = self._rank_to_item(np.repeat(users, k), result.ravel())
        return items.reshape(len(users), k)


def training_set(train_users, train_items, sampler, neg_ratio, rng, shuffle=True):
    """One epoch of pointwise training data -> (users (p,), items (p, 1 + neg_ratio),
    labels (p, 1 + neg_ratio)), one row per training pair, rows shuffled (unless `shuffle` is
    False: `one_pair_per_row` shuffles the pairs anyway).

    Row j is the play (train_users[k], train_items[k]) for some k, label 1, then `neg_ratio`
    fresh unplayed artists of the same user, label 0. A user who played every artist has no
    negatives to learn from: their plays are left out (only possible on tiny data).
    """
    keep = sampler.num_free[train_users] > 0
    users, positives = train_users[keep], train_items[keep]
    if (users[1:] < users[:-1]).any():             # sorted users: the fast sampling path
        order = np.argsort(users, kind="stable")
        users, positives = users[order], positives[order]
    items = np.empty((len(users), 1 + neg_ratio), np.int32)
    items[:, 0] = positives
    items[:, 1:] = sampler.sample(np.repeat(users, neg_ratio), rng).reshape(-1, neg_ratio)
    labels = np.zeros((len(users), 1 + neg_ratio), np.float32)
    labels[:, 0] = 1
    order = rng.permutation(len(users)) if shuffle else slice(None)
    return users[order].astype(np.int32), items[order], labels


def one_pair_per_row(users, items, labels, rng):
    """Rows of a play and its negatives -> one (user, artist) pair per row, (n * c,) users and
    (n * c, 1) items and labels, shuffled: the notebook's order of training samples."""
    per_row = items.shape[1]
    order = rng.permutation(items.size)
    return (np.repeat(users, per_row)[order], items.reshape(-1, 1)[order],
            labels.reshape(-1, 1)[order])


def pairwise_set(train_users, train_items, sampler, rng):
    """One epoch of BPR data -> (users, positive items, negative items), shuffled; one sampled
    negative per training pair (users who played every artist are left out)."""
    keep = sampler.num_free[train_users] > 0
    users, positives = train_users[keep], train_items[keep]
    negatives = sampler.sample(users, rng)
    order = rng.permutation(len(users))
    return users[order].astype(np.int32), positives[order].astype(np.int32), negatives[order]


def flat_pairs(inputs, labels, rng):
    """An epoch's rows of a play and its negatives -> the notebook's one (user, artist) pair per
    sample, shuffled as its model.fit(shuffle=True) would, items and labels flat (n * c,)."""
    users, items, flat = one_pair_per_row(inputs["user"], inputs["item"], labels, rng)
    return {"user": users, "item": items[:, 0]}, flat[:, 0]
