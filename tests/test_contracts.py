"""The promises a user relies on, each through the script itself (`ncf_lastfm.main`) on tiny
data, written so that a small bug in the place that keeps the promise fails them:

- fresh negatives every epoch, the same for the same (seed, epoch), the same positives;
- an epoch trains exactly NEG_RATIO negatives per play, none of them played;
- early stopping after exactly PATIENCE epochs without a better validation hit ratio, and the
  best epoch's weights scored and saved;
- a float for an integer setting refused in one line;
- the data's own (string) user ids in recommendations.csv and on the terminal, for the right
  user, with the artists a brute-force ranking of the saved model gives.
"""
import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

import data
import models
import ncf_lastfm
import training
from conftest import write_csvs
from split import leave_one_out
from test_command_line import one_line_error, run_main

# users, artists, plays, seed: a run of one epoch takes a few seconds
TINY = (120, 300, 3_000, 11)
FEW = ["--num_eval_negatives=20", "--batch_size=512", "--quiet"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    frames = data.make_planted(*TINY[:3], seed=TINY[3])
    return write_csvs(tmp_path_factory.mktemp("tiny") / "csv", *frames)


class EpochSpy:
    """Records every epoch's training rows as `model.fit` receives them (the arrays given to
    `training.batched_dataset`), so a test sees what training trained on, not what the sampler
    would give if asked."""

    def __init__(self):
        self.epochs, self.original = [], training.batched_dataset

    def __call__(self, inputs, labels, batch_size):
        self.epochs.append(({name: np.array(a) for name, a in inputs.items()}, np.array(labels)))
        return self.original(inputs, labels, batch_size)


def spied_run(capsys, monkeypatch, *argv):
    spy = EpochSpy()
    monkeypatch.setattr(training, "batched_dataset", spy)
    code, out, err = run_main(capsys, *argv)
    assert code == 0, err
    return spy.epochs


def by_play(inputs, labels):
    """An epoch's rows sorted by (user, played artist) -> (users, positives, negatives (n, r))."""
    users, items = inputs["user"], inputs["item"]
    assert (labels[:, 0] == 1).all() and (labels[:, 1:] == 0).all()
    order = np.lexsort((items[:, 0], users))
    return users[order], items[order, 0], items[order, 1:]


@pytest.fixture(scope="module")
def played_pairs(tiny_dir):
    plays = data.load_folder(tiny_dir, use_cache=False)
    return set(zip(plays.user_ids.tolist(), plays.artist_ids.tolist())), plays


# ---- fresh negatives, NEG_RATIO of them, every epoch --------------------------------------------
def test_each_epoch_trains_fresh_unplayed_negatives_exactly_neg_ratio_per_play(
        tiny_dir, tmp_path, capsys, monkeypatch, played_pairs):
    epochs = spied_run(capsys, monkeypatch, f"--data_dir={tiny_dir}", "--num_epoch=3",
                       "--neg_ratio=3", "--seed=5", f"--output_dir={tmp_path / 'a'}", *FEW)
    assert len(epochs) == 3
    played, plays = played_pairs
    rows = [by_play(*epoch) for epoch in epochs]
    first_users, first_positives, _ = rows[0]
    for users, positives, negatives in rows:
        assert negatives.shape == (len(users), 3)            # exactly NEG_RATIO per play
        # every training play once: all plays but one held-out artist per testable user
        assert len(users) == len(plays.user_ids) - len(np.unique(plays.user_ids[np.bincount(
            plays.user_ids)[plays.user_ids] >= 2]))
        assert all((u, p) in played for u, p in zip(users.tolist(), positives.tolist()))
        assert not any((u, n) in played for u, row in zip(users.tolist(), negatives.tolist())
                       for n in row)                          # never a played artist
        np.testing.assert_array_equal(users, first_users)     # the same positives each epoch
        np.testing.assert_array_equal(positives, first_positives)
    for earlier, later in ((0, 1), (1, 2), (0, 2)):           # fresh: most draws differ
        same = (rows[earlier][2] == rows[later][2]).mean()
        assert same < 0.2, f"epochs {earlier + 1} and {later + 1} share {same:.0%} of negatives"
    # The same (seed, epoch) gives the same negatives: a shorter run with the same seed repeats
    # the first two epochs draw for draw; another seed does not.
    again = spied_run(capsys, monkeypatch, f"--data_dir={tiny_dir}", "--num_epoch=2",
                      "--neg_ratio=3", "--seed=5", f"--output_dir={tmp_path / 'b'}", *FEW)
    for epoch in range(2):
        for name in ("user", "item"):
            np.testing.assert_array_equal(again[epoch][0][name], epochs[epoch][0][name])
    other = spied_run(capsys, monkeypatch, f"--data_dir={tiny_dir}", "--num_epoch=1",
                      "--neg_ratio=3", "--seed=6", f"--output_dir={tmp_path / 'c'}", *FEW)
    assert not np.array_equal(other[0][0]["item"], epochs[0][0]["item"])


@pytest.mark.parametrize("model, neg_ratio", [("mlp", 1), ("mlp", 6), ("gmf", 2)])
def test_the_neg_ratio_given_is_the_neg_ratio_trained(tiny_dir, tmp_path, capsys, monkeypatch,
                                                       model, neg_ratio):
    epochs = spied_run(capsys, monkeypatch, f"--data_dir={tiny_dir}", f"--model={model}",
                       "--num_epoch=1", f"--neg_ratio={neg_ratio}", "--num_factor=8",
                       "--user_input=id", f"--output_dir={tmp_path}", *FEW)
    inputs, labels = epochs[0]
    assert inputs["item"].shape[1] == labels.shape[1] == 1 + neg_ratio
    assert labels.sum() == len(labels)                        # one play per row, the rest 0


# ---- early stopping and the best epoch ----------------------------------------------------------
SCRIPTED_VALID = [0.30, 0.50, 0.45, 0.40, 0.35, 0.60, 0.70, 0.80]   # peaks at epoch 2, then 6


class ScriptedValidation:
    """`training.score_sets` with the validation hit ratio replaced by SCRIPTED_VALID (epoch by
    epoch), recording each epoch's weights and real test scores."""

    def __init__(self, script=SCRIPTED_VALID):
        self.script, self.weights, self.test = script, [], []
        self.original = training.score_sets

    def __call__(self, model, split, top_k, with_validation):
        result = self.original(model, split, top_k, with_validation)
        epoch = len(self.weights)
        self.weights.append([np.array(w) for w in model.get_weights()])
        self.test.append(result["test"])
        result["valid"] = {"hit_ratio": self.script[epoch], "ndcg": self.script[epoch] / 2,
                           "num_users": 1}
        return result


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_validation_stops_after_patience_epochs_and_keeps_the_best_epochs_weights(
        tiny_dir, tmp_path, capsys, monkeypatch, patience):
    scripted = ScriptedValidation()
    monkeypatch.setattr(training, "score_sets", scripted)
    code, out, err = run_main(capsys, f"--data_dir={tiny_dir}", "--validation",
                              f"--patience={patience}", "--num_epoch=8",
                              f"--output_dir={tmp_path}", *FEW[:-1])
    assert code == 0, err
    metrics = json.loads((tmp_path / "mlp" / "metrics.json").read_text())
    # best epoch 2, then exactly `patience` epochs without a better validation hit ratio
    assert len(scripted.weights) == 2 + patience
    assert metrics["num_epoch"] == len(metrics["history"]) == 2 + patience
    assert metrics["best_epoch"] == 2
    assert [r["valid_hit_ratio"] for r in metrics["history"]] == SCRIPTED_VALID[:2 + patience]
    # the figures reported are the best epoch's, scored on its weights
    assert metrics["hit_ratio"] == scripted.test[1]["hit_ratio"]
    assert metrics["ndcg"] == pytest.approx(scripted.test[1]["ndcg"], abs=1e-12)
    assert "best validation epoch: 2 (weights restored)" in out
    saved = models.load(str(tmp_path / "mlp" / "mlp.keras")).get_weights()
    for got, best, last in zip(saved, scripted.weights[1], scripted.weights[-1]):
        np.testing.assert_array_equal(got, best)
    assert any(not np.array_equal(b, l) for b, l in zip(scripted.weights[1],
                                                        scripted.weights[-1]))


def test_without_a_better_epoch_after_the_first_training_stops_at_patience_plus_one(
        tiny_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training, "score_sets", ScriptedValidation([0.9] + [0.1] * 7))
    code, out, err = run_main(capsys, f"--data_dir={tiny_dir}", "--validation", "--patience=2",
                              "--num_epoch=8", f"--output_dir={tmp_path}", *FEW)
    assert code == 0, err
    metrics = json.loads((tmp_path / "mlp" / "metrics.json").read_text())
    assert metrics["num_epoch"] == 3 and metrics["best_epoch"] == 1


# ---- settings of the wrong type -----------------------------------------------------------------
INTEGER_SETTINGS = sorted(name.lower() for name, value in ncf_lastfm.DEFAULTS.items()
                          if type(value) is int)


@pytest.mark.parametrize("name", INTEGER_SETTINGS)
def test_a_float_for_an_integer_setting_is_one_line(capsys, tmp_path, name):
    code, out, err = run_main(capsys, f"--{name}=2.5", f"--output_dir={tmp_path}")
    one_line_error(code, err)
    assert f"--{name}='2.5' is a number; expected an integer like --{name}=" in err
    assert not os.listdir(tmp_path)                          # refused before anything ran


def test_integer_settings_are_the_ones_users_tune():
    assert {"num_epoch", "batch_size", "neg_ratio", "top_k", "seed", "patience",
            "num_factor"} <= set(INTEGER_SETTINGS)


# ---- the data's own ids in recommendations ------------------------------------------------------
def hashed(prefix, number):
    return hashlib.sha1(f"{prefix}{number}".encode()).hexdigest()


@pytest.fixture(scope="module")
def string_id_run(tmp_path_factory):
    """The tiny data with 40-character user hashes and MBID-like artist ids, trained for one
    epoch with recommendations for two users whose rows are not their order in the file."""
    play_df, artist_df, _ = data.make_planted(*TINY[:3], seed=TINY[3])
    play_df = play_df.sample(frac=1, random_state=0)          # first appearance != numeric order
    play_df["user_id"] = [hashed("u", u) for u in play_df.user_id]
    artist_ids = {a: f"{hashed('a', a)[:8]}-mbid-{a}" for a in artist_df.artist_id}
    play_df["artist_id"] = play_df.artist_id.map(artist_ids)
    artist_df["artist_id"] = artist_df.artist_id.map(artist_ids)
    base = tmp_path_factory.mktemp("string_ids")
    folder = base / "csv"
    folder.mkdir()
    play_df.to_csv(folder / data.PLAY_FILE, index=False)
    artist_df.to_csv(folder / data.ARTIST_FILE, index=False)
    counts = play_df.user_id.value_counts()
    users = [counts.index[3], counts.index[-5]]               # a heavy and a light listener
    from test_command_line import run_captured
    result = run_captured([f"--data_dir={folder}", f"--output_dir={base / 'out'}",
                           f"--recommend_user={','.join(users)}", "--num_epoch=1", *FEW])
    assert result[0] == 0, result[2]
    return {"plays": play_df, "artists": artist_df, "users": users, "out": result[1],
            "folder": base / "out" / "mlp", "data_dir": str(folder)}


def brute_force_top(model_path, data_dir, user, k=10):
    """The k best unplayed artists of `user` (their own ids) by `predict` on every artist."""
    plays = data.load_folder(data_dir, use_cache=False)
    row = list(plays.user_labels).index(user)
    model = models.load(model_path)
    items = np.arange(plays.num_artists)
    scores = models.predict_scorer(model)(np.array([row]), items[None, :])[0].astype(np.float64)
    scores[plays.artist_ids[plays.user_ids == row]] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return [plays.artist_labels[i] for i in top]


def test_string_user_ids_get_their_own_recommendations_in_the_csv(string_id_run):
    frame = pd.read_csv(string_id_run["folder"] / "recommendations.csv", dtype=str)
    users = string_id_run["users"]
    assert list(frame.user_id) == [users[0]] * 10 + [users[1]] * 10
    plays = string_id_run["plays"]
    for user in users:
        mine = frame[frame.user_id == user]
        assert list(mine["rank"].astype(int)) == list(range(1, 11))
        played = set(plays.artist_id[plays.user_id == user])
        assert not set(mine.artist_id) & played, f"{user} is recommended artists they played"
        expected = brute_force_top(str(string_id_run["folder"] / "mlp.keras"),
                                   string_id_run["data_dir"], user)
        assert list(mine.artist_id) == expected
        names = dict(zip(string_id_run["artists"].artist_id, string_id_run["artists"].artist_name))
        assert list(mine.artist_name) == [names[a] for a in mine.artist_id]


def test_string_user_ids_on_the_terminal_name_each_users_own_plays(string_id_run):
    out, plays = string_id_run["out"], string_id_run["plays"]
    frame = pd.read_csv(string_id_run["folder"] / "recommendations.csv", dtype=str)
    for user in string_id_run["users"]:
        mine = plays[plays.user_id == user]
        assert f"user {user} played {len(mine)} artists" in out
        names = dict(zip(string_id_run["artists"].artist_id, string_id_run["artists"].artist_name))
        most = {names[a] for a in mine.artist_id[mine.plays == mine.plays.max()]}
        block = out.split(f"user {user} played")[1].split("\n")[0]
        assert block.split("most played: ")[1].split(", ")[0] in most
        listing = out.split(f"top 10 recommendations for user {user}:\n")[1].splitlines()[:10]
        shown = [line.split(". ", 1)[1].rsplit(" (", 1)[0] for line in listing]
        assert shown == list(frame[frame.user_id == user].artist_name)


# ---- the next epoch's negatives drawn while this one trains -------------------------------------
@pytest.mark.parametrize("model, rows", [("mlp", "play"), ("mlp", "pair"), ("bpr", "play")])
def test_negatives_drawn_ahead_in_a_thread_are_the_arrays_drawn_when_needed(tiny_dir, model,
                                                                            rows):
    plays = data.load_folder(tiny_dir, use_cache=False)
    split = leave_one_out(plays, 20, seed=3)
    ahead = training.NegativesAhead(model, split, 3, 9, rows, num_epoch=3)
    try:
        for epoch in range(3):
            inputs, labels = ahead.get(epoch)
            if epoch < 2:            # the next epoch is already on its way
                assert ahead.ahead[0] == epoch + 1
            expected_inputs, expected_labels = training.epoch_data(model, split, 3, 9, epoch,
                                                                   rows)
            np.testing.assert_array_equal(labels, expected_labels)
            for name in expected_inputs:
                np.testing.assert_array_equal(inputs[name], expected_inputs[name])
        assert ahead.ahead is None   # nothing drawn past the last epoch
        # out of order (a resumed run starts at its checkpoint's epoch): drawn then
        inputs, _ = ahead.get(1)
        np.testing.assert_array_equal(inputs["item"],
                                      training.epoch_data(model, split, 3, 9, 1, rows)[0]["item"])
    finally:
        ahead.close()
