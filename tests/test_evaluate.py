"""Contracts of evaluate.py and the fast scorer."""
import keras
import numpy as np
import pytest

import data
import evaluate
import models
from split import leave_one_out


def scorer_from(table):
    return lambda users, items: table[users[:, None], items]


def test_hit_miss_and_tie_by_the_notebooks_rule():
    # 3 users, 12 candidates: the held-out item is 0, negatives 1..11.
    table = np.zeros((3, 12))
    table[0] = [20] + list(range(11))         # above all: hit, rank 0
    table[1] = [1.5] + list(range(11))        # 9 negatives above 1.5: rank 9, a hit at 10
    table[2] = [1.0] + list(range(11))        # ties the 10th best (1.0): 9 above + 1 tie = miss
    negatives = np.tile(np.arange(1, 12), (3, 1))
    result = evaluate.hit_ratio_at_k(scorer_from(table), np.arange(3), np.zeros(3, int),
                                     negatives, 10)
    assert list(result["ranks"]) == [0, 9, 10]
    assert result["hit_ratio"] == pytest.approx(2 / 3)
    assert result["ndcg"] == pytest.approx((1 + 1 / np.log2(11)) / 3)



def test_hits_and_ndcg_follow_the_notebooks_rule_on_scores_full_of_ties():
    # 400 users, 21 candidates scored by small integers: ties everywhere, at the 10th best too
    rng = np.random.default_rng(0)
    table = rng.integers(0, 6, (400, 21)).astype(np.float64)
    negatives = np.tile(np.arange(1, 21), (400, 1))
    result = evaluate.hit_ratio_at_k(scorer_from(table), np.arange(400), np.zeros(400, int),
                                     negatives, 10, users_per_batch=64)
    notebook = np.array([table[u, 0] > np.sort(table[u, 1:])[-10] for u in range(400)])
    assert 0.2 < notebook.mean() < 0.8                       # both hits and misses to get right
    np.testing.assert_array_equal(result["ranks"] < 10, notebook)
    assert result["hit_ratio"] == notebook.mean()
    at_least = (table[:, 1:] >= table[:, :1]).sum(axis=1)    # candidates that tie or beat it
    np.testing.assert_array_equal(result["ranks"], at_least)
    assert result["ndcg"] == pytest.approx(np.where(notebook, 1 / np.log2(at_least + 2), 0).mean())


def test_constant_scores_never_hit():
    result = evaluate.hit_ratio_at_k(lambda u, i: np.zeros(i.shape), np.arange(4),
                                     np.zeros(4, int), np.ones((4, 20), int), 10)
    assert result["hit_ratio"] == 0.0


def test_top_k_beyond_candidates_is_refused():
    with pytest.raises(ValueError, match="TOP_K=30"):
        evaluate.hit_ratio_at_k(lambda u, i: np.zeros(i.shape), np.arange(2), np.zeros(2, int),
                                np.ones((2, 20), int), 30)


@pytest.mark.parametrize("name", ["mlp", "gmf", "neumf"])
def test_fast_scorer_equals_model_predict(name):
    model = models.build_model(name, 30, 40, embedding_dim=8, hidden_units=(16, 8, 4))
    # move the weights away from their initial values so every part matters
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    users = np.arange(30)
    items = rng.integers(0, 40, (30, 7))
    fast = models.make_scorer(model)(users, items)
    slow = models.predict_scorer(model)(users, items)
    assert np.allclose(fast, slow, atol=1e-5)


def test_bpr_scorer_is_dot_plus_bias():
    model = models.build_model("bpr", 5, 6, embedding_dim=4)
    user_table = model.get_layer("user_embedding").get_weights()[0]
    item_table = model.get_layer("item_embedding").get_weights()[0]
    bias = np.arange(6, dtype=np.float32)[:, None]
    model.get_layer("item_bias").set_weights([bias])
    items = np.array([[0, 5], [3, 2]])
    scores = models.make_scorer(model)(np.array([1, 4]), items)
    expected = np.einsum("nd,ncd->nc", user_table[[1, 4]], item_table[items]) + bias[items, 0]
    assert np.allclose(scores, expected, atol=1e-6)


def test_full_ranking_masks_played_items():
    plays = data.frames_to_plays(*data.make_planted(20, 30, 200, seed=0))
    split = leave_one_out(plays, 5, seed=0)
    # scores favour played items: masking them must still let the held-out item be ranked
    # against unplayed items only
    played = np.zeros((split.num_users, split.num_items))
    played[plays.user_ids, plays.artist_ids] = 100.0
    table = played + np.arange(split.num_items)[None, :] * 0.001
    result = evaluate.full_ranking(scorer_from(table), split.test_users, split.test_items,
                                   split.sampler, 10)
    assert result["hit_ratio"] == 1.0 and (result["ranks"] == 0).all()


def test_neumf_pretrained_from_gmf_and_mlp_mixes_their_logits():
    rng = np.random.default_rng(1)
    towers = {}
    for name in ("gmf", "mlp"):
        model = models.build_model(name, 20, 25, embedding_dim=8, hidden_units=(16, 8))
        model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype)
                           for w in model.get_weights()])
        towers[name] = model
    neumf = models.build_model("neumf", 20, 25, embedding_dim=8, hidden_units=(16, 8))
    models.load_pretrained(neumf, towers["gmf"], towers["mlp"])
    users, items = np.arange(20), rng.integers(0, 25, (20, 6))

    def logit(p):
        return np.log(p) - np.log1p(-p)
    expected = 0.5 * logit(models.make_scorer(towers["gmf"])(users, items)) + \
        0.5 * logit(models.make_scorer(towers["mlp"])(users, items))
    assert np.allclose(logit(models.make_scorer(neumf)(users, items)), expected, atol=1e-4)


def _history_model(name, rng, num_users=30, num_items=40, plays=300):
    users, items = rng.integers(0, num_users, plays), rng.integers(0, num_items, plays)
    model = models.build_model(name, num_users, num_items, embedding_dim=8,
                               hidden_units=(16, 8, 4), history=(users, items))
    model.set_weights([w + rng.normal(0, 0.3, w.shape).astype(w.dtype) if w.dtype.kind == "f"
                       else w for w in model.get_weights()])
    return model, users, items


@pytest.mark.parametrize("name", ["mlp", "gmf", "neumf"])
def test_history_scorer_equals_model_predict_also_for_played_artists(name):
    rng = np.random.default_rng(2)
    model, users, items = _history_model(name, rng)
    candidates = rng.integers(0, 40, (30, 9))
    candidates[users[:30], 0] = items[:30]          # some candidates the user played
    played = np.isin(np.arange(30)[:, None] * 40 + candidates, users * 40 + items)
    assert 0 < played.sum() < played.size
    fast = models.make_scorer(model)(np.arange(30), candidates)
    slow = models.predict_scorer(model)(np.arange(30), candidates)
    assert np.allclose(fast, slow, atol=1e-5)


def test_history_user_vector_is_the_fism_sum_without_the_scored_artist():
    rng = np.random.default_rng(3)
    model, users, items = _history_model("gmf", rng, num_users=4, num_items=6, plays=12)
    layer = model.get_layer("user_history")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    candidates = np.tile(np.arange(6), (4, 1))
    vectors = keras.ops.convert_to_numpy(layer(np.arange(4, dtype=np.int32),
                                               candidates.astype(np.int32)))
    for user in range(4):
        mine = sorted(set(items[users == user]))
        for artist in range(6):
            rest = [j for j in mine if j != artist]
            expected = table[rest].sum(0) / np.sqrt(max(len(rest), 1))
            assert np.allclose(vectors[user, artist], expected, atol=1e-6)


def test_history_model_saves_and_loads_with_its_plays(tmp_path):
    rng = np.random.default_rng(4)
    model, *_ = _history_model("neumf", rng)
    candidates = rng.integers(0, 40, (30, 5))
    before = models.make_scorer(model)(np.arange(30), candidates)
    model.save(str(tmp_path / "m.keras"))
    loaded = models.load(str(tmp_path / "m.keras"))
    assert np.array_equal(models.make_scorer(loaded)(np.arange(30), candidates), before)


def test_full_ranking_ranks_against_artists_that_exist_not_gaps_in_the_ids():
    play, artist, user = data.make_planted(20, 30, 200, seed=0)
    plays = data.frames_to_plays(play.assign(artist_id=play.artist_id * 3),
                                 artist.assign(artist_id=artist.artist_id * 3), user)
    split = leave_one_out(plays, 5, seed=0)
    # the gaps (ids not divisible by 3) score highest: counted, they would push every held-out
    # artist out of the top 10; the held-out artist scores above every other existing artist
    table = np.where(np.arange(split.num_items) % 3 == 0, 0.0, 50.0)[None, :].repeat(
        split.num_users, 0)
    table[split.test_users, split.test_items] = 10.0
    result = evaluate.full_ranking(scorer_from(table), split.test_users, split.test_items,
                                   split.sampler, 10)
    assert result["hit_ratio"] == 1.0 and (result["ranks"] == 0).all()
