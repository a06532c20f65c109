"""Guards for promises no other test held, or held only by chance (a mutation round found a
small bug in each place that the rest of the suite let pass, or caught only through an unrelated
accident of its data): each test is small, on data made here, and computes what it expects
apart from the code it checks."""
import os

import numpy as np
import pandas as pd
import pytest

import data
import errors
import evaluate
import models
import ncf_lastfm
import settings
import training
from conftest import write_csvs
from split import leave_one_out


def table_scorer(table):
    return lambda users, items: table[np.asarray(users)[:, None], np.asarray(items)]


# ---- the split ------------------------------------------------------------------------------

# guards: the test set (artists and candidates) is the same with validation on or off
def test_test_candidates_are_the_same_with_validation_on_or_off():
    plays = data.frames_to_plays(*data.make_planted(100, 200, 2_000, seed=2))
    plain = leave_one_out(plays, 10, seed=0)
    valid = leave_one_out(plays, 10, seed=0, validation=True)
    assert len(valid.valid_users) > 0
    np.testing.assert_array_equal(plain.test_users, valid.test_users)
    np.testing.assert_array_equal(plain.test_items, valid.test_items)
    np.testing.assert_array_equal(plain.test_negatives, valid.test_negatives)


# ---- evaluation -----------------------------------------------------------------------------

# guards: full ranking masks each user's own plays, for a sample of users in any order
def test_full_ranking_of_a_sample_of_users_masks_each_users_own_plays():
    plays = data.frames_to_plays(*data.make_planted(40, 60, 600, seed=4))
    split = leave_one_out(plays, 5, seed=0)
    rng = np.random.default_rng(0)
    table = rng.random((split.num_users, split.num_items))
    played = np.zeros(table.shape, bool)
    played[plays.user_ids, plays.artist_ids] = True
    trained = played.copy()
    trained[split.test_users, split.test_items] = False
    table[trained] += 1.0          # played artists outscore every unplayed one, unless masked
    rows = rng.permutation(len(split.test_users))[:15]        # a sample, not rows 0, 1, 2, ...
    users, items = split.test_users[rows], split.test_items[rows]
    assert (users != np.arange(len(users))).any()
    result = evaluate.full_ranking(table_scorer(table), users, items, split.sampler, 10,
                                   users_per_batch=4)
    # brute force: the unplayed artists scoring at least as high as the held-out one
    expected = [int((table[u][~played[u]] >= table[u, i]).sum()) for u, i in zip(users, items)]
    assert result["ranks"].tolist() == expected
    assert result["hit_ratio"] == pytest.approx(np.mean(np.array(expected) < 10))


# guards: the HR@K curve (the plot) is the notebook's hit ratio at each K, ties missing
def test_hit_ratio_curve_is_the_notebooks_hit_ratio_at_every_k():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 8, (300, 11)).astype(float)     # small integers: many ties
    users, negatives = np.arange(300), np.tile(np.arange(1, 11), (300, 1))
    result = evaluate.hit_ratio_at_k(table_scorer(scores), users, np.zeros(300, int), negatives,
                                     10)
    curve = evaluate.hit_ratio_curve(result["ranks"], 10)
    for k in range(1, 11):
        notebook = np.mean([scores[u, 0] > np.sort(scores[u, 1:])[-k] for u in users])
        assert curve[k - 1] == pytest.approx(notebook), k


# ---- checkpoints and resume -----------------------------------------------------------------

def checkpoint_state(epoch, best):
    return {"epoch": epoch, "history": [{"epoch": e + 1} for e in range(epoch)],
            "best": {"epoch": best, "hit_ratio": 0.5, "ndcg": 0.25},
            "fingerprint": {"model": "gmf"}, "data_digest": "digest"}


# guards: a checkpoint write that fails (a kill, a full disk) leaves the previous one resumable
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_its_best_weights(
        tmp_path, monkeypatch):
    model = models.build_model("gmf", 6, 8, embedding_dim=2)
    checkpoints = training.Checkpoints(str(tmp_path), "gmf")
    checkpoints.save_best(model, 1)
    checkpoints.save(model, checkpoint_state(1, 1))
    checkpoints.save_best(model, 2)                          # epoch 2 is better, but ...

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as patch:                     # ... its checkpoint never lands
        patch.setattr(models, "save", full_disk)
        with pytest.raises(OSError):
            checkpoints.save(model, checkpoint_state(2, 2))
    _, state = checkpoints.load({"model": "gmf"})
    assert state["epoch"] == 1 and state["best"]["epoch"] == 1
    assert os.path.isfile(checkpoints.best_path(1))


class ScriptedScores:
    """`training.score_sets` replaced: the n-th call (epoch n, counted across a run and its
    resumption) scores valid[n - 1] and test[n - 1]; each epoch's weights are kept."""

    def __init__(self, valid, test):
        self.valid, self.test, self.weights = valid, test, {}

    def __call__(self, model, split, top_k, with_validation):
        epoch = len(self.weights) + 1
        self.weights[epoch] = [np.array(w) for w in model.get_weights()]
        result = {"test": {"hit_ratio": self.test[epoch - 1], "ndcg": self.test[epoch - 1] / 2}}
        if with_validation:
            result["valid"] = {"hit_ratio": self.valid[epoch - 1],
                               "ndcg": self.valid[epoch - 1] / 2}
        return result


@pytest.fixture(scope="module")
def tiny_split():
    plays = data.frames_to_plays(*data.make_planted(30, 40, 400, seed=6))
    return leave_one_out(plays, 5, seed=0, validation=True)


def fit_tiny(split, folder, num_epoch, resume=False, log=None):
    model = models.build_model("gmf", split.num_users, split.num_items, embedding_dim=4)
    return training.fit(model, split, num_epoch=num_epoch, batch_size=512, neg_ratio=2, seed=0,
                        top_k=3, validation=True, patience=5,
                        checkpoints=training.Checkpoints(str(folder), "gmf"),
                        fingerprint={"model": "gmf"}, resume=resume,
                        log=log if log is not None else (lambda line: None))


# guards: the best epoch is chosen by the validation scores, never by the test scores
def test_the_best_epoch_is_the_best_validation_epoch_not_the_best_test_epoch(
        tiny_split, tmp_path, monkeypatch):
    scripted = ScriptedScores(valid=[0.2, 0.6, 0.4], test=[0.9, 0.1, 0.8])
    monkeypatch.setattr(training, "score_sets", scripted)
    model, history, best = fit_tiny(tiny_split, tmp_path, 3)
    assert best == 2 and len(history) == 3
    for got, want in zip(model.get_weights(), scripted.weights[2]):
        np.testing.assert_array_equal(got, want)


# guards: a resumed run keeps the checkpoint's best epoch (and its weights) as the one to beat
def test_a_resumed_run_keeps_the_checkpoints_best_epoch(tiny_split, tmp_path, monkeypatch):
    scripted = ScriptedScores(valid=[0.2, 0.6, 0.4], test=[0.5, 0.5, 0.5])
    monkeypatch.setattr(training, "score_sets", scripted)
    fit_tiny(tiny_split, tmp_path, 2)                         # best: epoch 2
    lines = []
    model, history, best = fit_tiny(tiny_split, tmp_path, 3, resume=True, log=lines.append)
    assert [record["epoch"] for record in history] == [1, 2, 3]
    assert best == 2, lines
    assert "best validation epoch: 2 (weights restored)" in lines
    for got, want in zip(model.get_weights(), scripted.weights[2]):
        np.testing.assert_array_equal(got, want)


# ---- the data's own ids -----------------------------------------------------------------------

# guards: string ids read back from the cache are the file's own ids, as on the first read
def test_string_ids_read_back_from_the_cache_are_the_files_own(tmp_path, monkeypatch):
    play = pd.DataFrame({"user_id": ["ann", "bob", "ann", "cy", "bob", "cy"],
                         "artist_id": ["x9", "a1", "a1", "x9", "q-7", "zz"],
                         "plays": [3, 1, 2, 5, 4, 6]})
    artist = pd.DataFrame({"artist_id": ["a1", "q-7", "x9", "zz", "only-listed"],
                           "artist_name": ["One", "Seven", "Nine", "Zed", "Lonely"]})
    user = pd.DataFrame({"user_id": ["ann", "bob", "cy"], "gender": "", "age": -1,
                         "country": ""})
    folder = write_csvs(tmp_path, play, artist, user)
    first = data.load_folder(folder)
    assert os.path.isfile(os.path.join(folder, data.CACHE_FILE))
    with monkeypatch.context() as patch:                     # the second read is the cache's
        patch.setattr(data, "_read_frames", lambda frames: pytest.fail("cache not used"))
        second = data.load_folder(folder)
    pairs = set(zip(play.user_id, play.artist_id))
    names = dict(zip(artist.artist_id, artist.artist_name))
    for plays in (first, second):
        assert {(plays.user_label(u), plays.artist_label(a))
                for u, a in zip(plays.user_ids, plays.artist_ids)} == pairs
        assert {plays.artist_label(a): plays.artist_names[a]
                for a in range(plays.num_artists)} == names


# ---- settings -------------------------------------------------------------------------------

def parse(*argv):
    return settings.parse(list(argv), ncf_lastfm.DEFAULTS, ncf_lastfm.MODEL_DEFAULTS,
                          ncf_lastfm.Settings)


# guards: --top_k may be as large as --num_eval_negatives (what evaluation scores), not larger
@pytest.mark.parametrize("negatives", [1, 10, 99])
def test_top_k_up_to_the_number_of_candidates_is_accepted_and_beyond_refused(negatives):
    given = parse(f"--top_k={negatives}", f"--num_eval_negatives={negatives}")
    assert given.top_k == given.num_eval_negatives == negatives
    with pytest.raises(errors.InputError, match="--top_k"):
        parse(f"--top_k={negatives + 1}", f"--num_eval_negatives={negatives}")
    # evaluation scores that K: the held-out artist above all its candidates is a hit
    scores = np.arange(negatives + 1, 0, -1, dtype=float)[None, :]
    result = evaluate.hit_ratio_at_k(lambda u, i: scores, np.zeros(1, int), np.zeros(1, int),
                                     np.ones((1, negatives), int), negatives)
    assert result["hit_ratio"] == 1.0


# ---- the fast scorer ------------------------------------------------------------------------

# guards: the scorer made after the weights change scores the new weights (never a cached copy)
@pytest.mark.parametrize("name", ["mlp", "neumf", "bpr"])
def test_a_scorer_made_after_the_weights_change_scores_the_new_weights(name):
    model = models.build_model(name, 20, 30, embedding_dim=4, hidden_units=(8, 4))
    users, items = np.arange(20), np.random.default_rng(1).integers(0, 30, (20, 6))
    models.make_scorer(model)(users, items)                  # a first scorer, as epoch 1's
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    fresh = models.make_scorer(model)(users, items)
    if name == "bpr":    # BPR's scorer: the dot product plus the artist's bias
        user = model.get_layer("user_embedding").get_weights()[0]
        item = model.get_layer("item_embedding").get_weights()[0]
        bias = model.get_layer("item_bias").get_weights()[0][:, 0]
        expected = np.einsum("nd,ncd->nc", user[users], item[items]) + bias[items]
    else:
        expected = models.predict_scorer(model)(users, items)
    np.testing.assert_allclose(fresh, expected, atol=1e-5)
