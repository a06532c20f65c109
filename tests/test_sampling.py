"""Contracts of sampling.py: negatives are exact (never played) and their ratio is exact."""
import numpy as np
from hypothesis import given, settings, strategies as st

import data
import sampling
from split import leave_one_out


def sampler_for(pairs, num_users, num_items):
    users = np.array([u for u, _ in pairs], np.int32)
    items = np.array([i for _, i in pairs], np.int32)
    return sampling.NegativeSampler(users, items, num_users, num_items), users, items


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 30).flatmap(lambda num_items: st.tuples(
    st.just(num_items),
    st.sets(st.tuples(st.integers(0, 5), st.integers(0, num_items - 1)), min_size=1, max_size=80))),
    st.integers(0, 2**31))
def test_negatives_are_never_played_and_cover_every_unplayed_artist(case, seed):
    num_items, pairs = case
    sampler, users, items = sampler_for(sorted(pairs), 6, num_items)
    played = set(pairs)
    rng = np.random.default_rng(seed)
    candidates = np.array([u for u in range(6) if sampler.num_free[u] > 0])
    if len(candidates) == 0:
        return
    for query_users in (np.repeat(candidates, 200), rng.permutation(np.repeat(candidates, 200))):
        drawn = sampler.sample(query_users, rng)
        assert not any((u, i) in played for u, i in zip(query_users, drawn))
        assert ((drawn >= 0) & (drawn < num_items)).all()
        for user in candidates:  # 200 draws reach every unplayed artist of a small catalogue
            unplayed = {i for i in range(num_items) if (user, i) not in played}
            if len(unplayed) <= 5:
                assert set(drawn[query_users == user]) == unplayed


def test_sorted_and_unsorted_paths_draw_uniformly():
    sampler, _, _ = sampler_for([(0, 1), (0, 3), (1, 0)], 2, 6)
    rng = np.random.default_rng(0)
    many = sampler.sample(np.zeros(200_000, np.int64), rng)   # sorted path
    counts = np.bincount(many, minlength=6)
    assert counts[1] == counts[3] == 0
    assert np.allclose(counts[[0, 2, 4, 5]] / 200_000, 0.25, atol=0.01)
    few = sampler.sample(np.array([0, 1, 0, 1] * 1000), rng)  # unsorted path
    assert not np.isin(few[::2], [1, 3]).any() and not (few[1::2] == 0).any()


def test_training_set_has_exact_ratio_and_no_played_or_held_out_negative():
    plays = data.frames_to_plays(*data.make_planted(200, 300, 5_000, seed=1))
    split = leave_one_out(plays, 20, seed=0, validation=True)
    rng = np.random.default_rng(0)
    users, items, labels = sampling.training_set(split.train_users, split.train_items,
                                                 split.sampler, 4, rng)
    assert items.shape == labels.shape == (len(split.train_users), 5)
    assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
    # each row is one training pair: the plays come back once each, shuffled
    rows = sorted(zip(users.tolist(), items[:, 0].tolist()))
    assert rows == sorted(zip(split.train_users.tolist(), split.train_items.tolist()))
    assert not (np.diff(users) >= 0).all()
    negatives = set(zip(np.repeat(users, 4), items[:, 1:].ravel()))
    assert negatives.isdisjoint(zip(plays.user_ids, plays.artist_ids))
    assert negatives.isdisjoint(zip(split.test_users, split.test_items))
    assert negatives.isdisjoint(zip(split.valid_users, split.valid_items))


def test_same_seed_same_epoch():
    plays = data.frames_to_plays(*data.make_planted(100, 200, 2_000, seed=1))
    split = leave_one_out(plays, 10, seed=0)
    one = sampling.training_set(split.train_users, split.train_items, split.sampler, 3,
                                np.random.default_rng([7, 1]))
    two = sampling.training_set(split.train_users, split.train_items, split.sampler, 3,
                                np.random.default_rng([7, 1]))
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_user_who_played_everything_is_left_out_of_training():
    sampler, users, items = sampler_for([(0, 0), (0, 1), (0, 2), (1, 0)], 2, 3)
    u, i, labels = sampling.training_set(users, items, sampler, 2, np.random.default_rng(0))
    assert u.tolist() == [1] and i[0, 0] == 0 and set(i[0, 1:]) <= {1, 2}
    assert labels.tolist() == [[1, 0, 0]]


def test_distinct_candidates_for_crowded_users():
    pairs = [(0, i) for i in range(90)] + [(1, 0)]
    sampler, _, _ = sampler_for(pairs, 2, 100)
    rows = sampler.sample_distinct(np.array([0, 1]), 10, np.random.default_rng(0))
    assert sorted(rows[0]) == list(range(90, 100))
    assert len(set(rows[1])) == 10 and 0 not in rows[1]


def test_one_pair_per_row_keeps_every_pair_and_shuffles():
    plays = data.frames_to_plays(*data.make_planted(100, 200, 2_000, seed=1))
    split = leave_one_out(plays, 10, seed=0)
    rng = np.random.default_rng(0)
    users, items, labels = sampling.training_set(split.train_users, split.train_items,
                                                 split.sampler, 3, rng)
    flat_users, flat_items, flat_labels = sampling.one_pair_per_row(users, items, labels, rng)
    assert flat_items.shape == flat_labels.shape == (items.size, 1)
    want = sorted(zip(np.repeat(users, 4).tolist(), items.ravel().tolist(), labels.ravel().tolist()))
    assert sorted(zip(flat_users.tolist(), flat_items[:, 0].tolist(),
                      flat_labels[:, 0].tolist())) == want
    assert not np.array_equal(flat_labels[:len(users) // 4, 0], labels[:len(users) // 4, 0])


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 30).flatmap(lambda size: st.tuples(
    st.sets(st.integers(0, size - 1), min_size=2, max_size=size).map(sorted),
    st.just(size))), st.data())
def test_ids_that_are_gaps_in_the_numbering_are_never_drawn_nor_played(case, draw):
    existing, num_items = case
    existing = np.array(existing, np.int32)
    pairs = draw.draw(st.sets(st.tuples(st.integers(0, 4), st.sampled_from(existing.tolist())),
                              min_size=1, max_size=40))
    users = np.array([u for u, _ in sorted(pairs)], np.int32)
    items = np.array([i for _, i in sorted(pairs)], np.int32)
    sampler = sampling.NegativeSampler(users, items, 5, num_items, existing)
    sorted_calls, lookup = [], sampler._sorted_lookup
    sampler._sorted_lookup = lambda queries: sorted_calls.append(len(queries)) or lookup(queries)
    gaps = np.setdiff1d(np.arange(num_items), existing)
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**31)))
    for user in range(5):
        unplayed = set(existing) - {i for u, i in pairs if u == user}
        assert sampler.num_free[user] == len(unplayed)
        assert set(sampler.played_items(user)) == {i for u, i in pairs if u == user}
        assert not sampler.is_played(np.full(len(gaps), user), gaps).any()
        if not unplayed:
            continue
        # the unsorted path, and the sorted one (from 100,000 sorted users on)
        for query, path in ((np.full(300, user), "unsorted"), (np.full(100_000, user), "sorted")):
            del sorted_calls[:]
            drawn = sampler.sample(query, rng)
            assert bool(sorted_calls) == (path == "sorted")
            assert set(drawn) <= unplayed
            if len(unplayed) <= 5:
                assert set(drawn) == unplayed
        k = min(len(unplayed), 3)
        distinct = sampler.sample_distinct(np.array([user]), k, rng)[0]
        assert len(set(distinct)) == k and set(distinct) <= unplayed


def test_with_no_gaps_naming_the_ids_draws_exactly_what_the_default_draws():
    users = np.array([0, 0, 1, 2, 2, 2], np.int32)
    items = np.array([1, 4, 0, 2, 3, 7], np.int32)
    plain = sampling.NegativeSampler(users, items, 3, 9)
    named = sampling.NegativeSampler(users, items, 3, 9, np.arange(9))
    query = np.array([2, 0, 1, 1, 0, 2] * 50)
    assert np.array_equal(plain.sample(query, np.random.default_rng(3)),
                          named.sample(query, np.random.default_rng(3)))
