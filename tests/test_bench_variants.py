"""bench/neumf_variants.py: the parts whose mistakes would silently change its numbers."""
import itertools
import os
import sys

import numpy as np
import keras
import tensorflow as tf

import data

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import neumf_variants  # noqa: E402


def test_history_vector_leaves_the_scored_artist_out():
    history = tf.constant([[0, 1, 2], [3, 5, 5]])          # user 1 played artist 3 only (5: pad)
    layer = neumf_variants.UserVector(2, 5, 4, history)
    rows, bag = layer.rows.numpy(), layer.bag.numpy()
    vectors = layer(tf.constant([0, 1]), tf.constant([[1, 4], [3, 0]])).numpy()   # (2, 2, 4)
    assert np.allclose(vectors[0, 0], rows[0] + (bag[0] + bag[2]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(vectors[0, 1], rows[0] + (bag[0] + bag[1] + bag[2]) / np.sqrt(3), atol=1e-6)
    assert np.allclose(vectors[1, 0], rows[1], atol=1e-6)          # nothing left: the row alone
    assert np.allclose(vectors[1, 1], rows[1] + bag[3], atol=1e-6)


def test_exported_validation_split_holds_out_the_validation_artists(tmp_path):
    plays = data.frames_to_plays(*data.make_planted(120, 150, 2_500, seed=5))
    split = data.leave_one_out(plays, 20, seed=1, validation=True)
    prefix = str(tmp_path / "valid")
    neumf_variants.export_validation(split, prefix)
    _, back = data.read_ncf_split(prefix, seed=1)
    assert np.array_equal(back.test_users, split.valid_users)
    assert np.array_equal(back.test_items, split.valid_items)
    assert np.array_equal(back.test_negatives, split.valid_negatives)
    test_pairs = set(zip(split.test_users, split.test_items))
    back_pairs = set(zip(back.train_users, back.train_items))
    assert back_pairs == set(zip(split.train_users, split.train_items))
    assert not back_pairs & test_pairs


def test_popular_negatives_are_unplayed_and_favour_popular_artists():
    plays = data.frames_to_plays(*data.make_planted(200, 300, 6_000, seed=6))
    split = data.leave_one_out(plays, 20, seed=2, validation=True)
    users = np.repeat(np.arange(200, dtype=np.int32), 20)
    drawn = neumf_variants.popular_negatives(split, users, 4, np.random.default_rng(0))
    assert drawn.shape == (len(users), 4)
    assert not split.sampler.is_played(np.repeat(users, 4), drawn.ravel()).any()
    listeners = np.bincount(split.train_items, minlength=split.num_items)
    uniform = split.sampler.sample(np.repeat(users, 4), np.random.default_rng(0))
    assert listeners[drawn.ravel()].mean() > 1.2 * listeners[uniform].mean()   # 14.8 vs 11.2


def test_weighted_plays_loss_scales_only_the_play_term():
    logits = tf.constant([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]])
    plain = tf.constant([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert np.allclose(neumf_variants._weighted_plays(plain, logits),
                       neumf_variants._bce(plain, logits), atol=1e-6)
    weighted = neumf_variants._weighted_plays(plain * [[2.0], [0.5]], logits).numpy()
    pair = tf.nn.sigmoid_cross_entropy_with_logits(labels=plain, logits=logits).numpy()
    assert np.allclose(weighted, (pair * [[2.0, 1, 1], [0.5, 1, 1]]).sum(1) / 3, atol=1e-6)


def test_history_only_vector_has_no_row_of_its_own():
    history = tf.constant([[0, 1, 2]])
    layer = neumf_variants.UserVector(1, 5, 4, history, own_row=False)
    bag = layer.bag.numpy()
    vectors = layer(tf.constant([0]), tf.constant([[1, 4]])).numpy()
    assert np.allclose(vectors[0, 0], (bag[0] + bag[2]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(vectors[0, 1], (bag[0] + bag[1] + bag[2]) / np.sqrt(3), atol=1e-6)


def test_play_count_weights_follow_each_play_and_average_one_per_user(tmp_path, monkeypatch):
    plays = data.frames_to_plays(*data.make_planted(50, 80, 600, seed=7))
    split = data.leave_one_out(plays, 10, seed=3, validation=True)
    path = tmp_path / "plays.csv"
    import pandas as pd
    pd.DataFrame({"user_id": plays.user_ids, "artist_id": plays.artist_ids,
                  "plays": plays.play_counts}).to_csv(path, index=False)
    monkeypatch.setattr(neumf_variants, "PLAYS_CSV", str(path))
    table = neumf_variants.play_count_weights(split)
    counts = dict(zip(zip(plays.user_ids.tolist(), plays.artist_ids.tolist()),
                      plays.play_counts.tolist()))
    raw = np.log1p([counts[pair] for pair in zip(split.train_users.tolist(),
                                                split.train_items.tolist())])
    looked_up = neumf_variants.weights_of_plays(table, split.train_users, split.train_items)
    for user in np.unique(split.train_users)[:10]:
        mine = split.train_users == user
        assert np.allclose(looked_up[mine], raw[mine] / raw[mine].mean(), atol=1e-5)


def test_nais_starts_as_the_history_sum_and_its_weights_follow_the_scored_artist():
    history = tf.constant([[0, 1, 2, 5]])                  # 5: pad
    layer = neumf_variants.UserVector(1, 5, 4, history, own_row=False, attention=3)
    bag = layer.bag.numpy()
    items = tf.constant([[1, 4]])
    item_vectors = tf.constant(np.random.default_rng(0).normal(size=(1, 2, 4)), tf.float32)
    vectors = layer(tf.constant([0]), items, item_vectors).numpy()
    assert np.allclose(vectors[0, 0], (bag[0] + bag[2]) / np.sqrt(2), atol=1e-6)   # h = 0
    assert np.allclose(vectors[0, 1], (bag[0] + bag[1] + bag[2]) / np.sqrt(3), atol=1e-6)
    layer.attention_out.assign([1.0, -2.0, 0.5])
    kernel, bias = layer.attention_kernel.numpy(), layer.attention_bias.numpy()
    vectors = layer(tf.constant([0]), items, item_vectors).numpy()
    for column, kept in ((0, [0, 2]), (1, [0, 1, 2])):
        product = bag[kept] * item_vectors.numpy()[0, column]
        weight = np.exp(np.maximum(product @ kernel + bias, 0) @ [1.0, -2.0, 0.5])
        expected = (weight[:, None] * bag[kept]).sum(0) / np.sqrt(weight.sum())
        assert np.allclose(vectors[0, column], expected, atol=1e-5)


def test_nais_user_with_no_other_artist_gets_a_zero_vector_not_nan():
    layer = neumf_variants.UserVector(1, 5, 4, tf.constant([[3, 5]]), own_row=False,
                                      attention=2)
    vectors = layer(tf.constant([0]), tf.constant([[3]]), tf.ones((1, 1, 4))).numpy()
    assert np.array_equal(vectors, np.zeros((1, 1, 4), np.float32))


def test_mixed_softmax_rows_are_a_play_then_unplayed_artists_labelled_log_q():
    plays = data.frames_to_plays(*data.make_planted(100, 200, 4_000, seed=8))
    split = data.leave_one_out(plays, 20, seed=4, validation=True)
    inputs, log_q = neumf_variants.mixed_softmax_rows(split, seed=0, epoch=0)
    items, users = inputs["item"], inputs["user"]
    assert items.shape == (len(users), 1 + neumf_variants.SOFTMAX_NEGATIVES)
    assert split.sampler.is_played(users, items[:, 0]).all()
    negatives = items[:, 1:]
    assert not split.sampler.is_played(np.repeat(users, negatives.shape[1]),
                                       negatives.ravel()).any()
    listeners = np.bincount(split.train_items, minlength=split.num_items)
    share = 0.5 / split.num_items + 0.5 * listeners / listeners.sum()
    assert np.allclose(np.exp(log_q), share[items], rtol=1e-5)
    loss = neumf_variants.LOSSES["softmax_mix"](tf.constant(log_q[:2]),
                                                tf.zeros(log_q[:2].shape))
    corrected = -log_q[:2]
    expected = -(corrected[:, 0] - np.log(np.exp(corrected).sum(1)))
    assert np.allclose(loss.numpy(), expected, atol=1e-4)


def test_shared_bag_scores_with_the_history_table():
    history = tf.constant([[0, 1, 2]])
    owner = neumf_variants.UserVector(1, 5, 4, history, own_row=False)
    rows = neumf_variants.BagRows(owner)(tf.constant([[2, 4]])).numpy()
    assert np.array_equal(rows[0], owner.bag.numpy()[[2, 4]])


def test_item_listeners_sum_leaves_the_scoring_user_out():
    class Split:                      # users 0, 1, 2; artist 0 played by 0 and 1, artist 1 by 2
        train_users = np.array([0, 1, 2, 0], np.int32)
        train_items = np.array([0, 0, 1, 0], np.int32)          # a repeated play counts once
        num_users, num_items = 3, 3
    history = tf.constant([[0], [0], [1]])
    layer = neumf_variants.ItemListeners(Split, 4, history)
    rows = layer.rows.numpy()
    vectors = layer(tf.constant([0, 2]), tf.constant([[0, 1, 2], [0, 1, 2]])).numpy()
    assert np.allclose(vectors[0, 0], rows[1], atol=1e-6)          # user 0 left out of artist 0
    assert np.allclose(vectors[0, 1], rows[2], atol=1e-6)
    assert np.allclose(vectors[0, 2], 0.0)                          # no listener: zero, not NaN
    assert np.allclose(vectors[1, 0], (rows[0] + rows[1]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(vectors[1, 1], 0.0, atol=1e-6)               # user 2 was its only one
    squares = (rows ** 2).sum(1)
    expected = (squares[1] + squares[2] + (squares[0] + squares[1]) / 2) / 2
    assert np.isclose(float(sum(layer.losses)), neumf_variants.L2 * expected, rtol=1e-5)


def test_pairwise_loss_is_bpr_over_the_plays_negatives():
    logits = tf.constant([[2.0, 0.5, -1.0], [-0.3, 0.4, 0.0]])
    labels = tf.constant([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    got = neumf_variants.LOSSES["pairwise"](labels, logits).numpy()
    x = logits.numpy()
    want = [np.mean([-np.log(1 / (1 + np.exp(-(row[0] - n)))) for n in row[1:]]) for row in x]
    assert np.allclose(got, want, atol=1e-6)


def test_log_loss_weighs_each_negative_by_neg_weight_over_the_rows_total(monkeypatch):
    logits = tf.constant([[2.0, 0.5, -1.0], [-0.3, 0.4, 0.0]])
    labels = tf.constant([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    x = logits.numpy()
    play, negatives = np.log1p(np.exp(-x[:, 0])), np.log1p(np.exp(x[:, 1:])).sum(1)
    assert np.allclose(neumf_variants.LOSSES["bce"](labels, logits).numpy(),
                       (play + negatives) / 3, atol=1e-6)
    monkeypatch.setattr(neumf_variants, "NEG_WEIGHT", 0.5)
    assert np.allclose(neumf_variants.LOSSES["bce"](labels, logits).numpy(),
                       (play + 0.5 * negatives) / 2, atol=1e-6)


def test_column_l2_is_the_row_l2_when_equal_and_weights_the_negatives_apart():
    rows = tf.constant(np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 10)
    square = np.square(rows.numpy()).sum((0, 2))
    embedding_like = keras.regularizers.L2(0.01)(rows).numpy() / 2
    layer = neumf_variants.ColumnL2(0.01, 0.01)
    assert np.array_equal(layer(rows).numpy(), rows.numpy())
    assert np.isclose(float(sum(layer.losses)), embedding_like, rtol=1e-6)
    layer = neumf_variants.ColumnL2(0.01, 0.002)
    layer(rows)
    assert np.isclose(float(sum(layer.losses)), (0.01 * square[0] + 0.002 * square[1:].sum()) / 2,
                      rtol=1e-6)


def test_play_gradient_scales_only_the_plays_column_and_keeps_the_values():
    rows = tf.Variable(np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4))
    with tf.GradientTape() as tape:
        out = neumf_variants.PlayGradient(0.125)(rows)
        loss = tf.reduce_sum(out * out)
    assert np.array_equal(out.numpy(), rows.numpy())
    want = 2 * rows.numpy()
    want[:, 0] *= 0.125
    assert np.allclose(tape.gradient(loss, rows).numpy(), want)


def test_scored_weights_are_the_moving_average_and_training_keeps_its_own():
    plays = data.frames_to_plays(*data.make_planted(60, 80, 1_200, seed=7))
    split = data.leave_one_out(plays, 20, seed=1, validation=True)
    model = neumf_variants.build(split, "ema")
    inputs, labels = neumf_variants.training.epoch_data("neumf", split, 8, 1, 0)
    model.fit(neumf_variants.training.batched_dataset(inputs, labels, 30), epochs=1, verbose=0)
    weights = model.get_weights()
    averaged = [v.numpy() for v in model.optimizer._model_variables_moving_average]
    scored, _ = neumf_variants.scored_weights(model, "ema", weights, [])
    trainable = {id(v) for v in model.trainable_variables}
    scored_trainable = [w for w, v in zip(scored, model.weights) if id(v) in trainable]
    assert all(np.allclose(s, a) for s, a in zip(scored_trainable, averaged))
    assert not all(np.allclose(s, w) for s, w in zip(scored, weights))   # not the raw weights
    assert all(np.array_equal(w, v) for w, v in zip(weights, model.get_weights()))
    mean, kept = neumf_variants.scored_weights(model, "average", [np.ones(2)],
                                               [[np.zeros(2)], [np.full(2, 5.0)]])
    assert np.allclose(mean[0], 2.0) and len(kept) == 3


def test_row_out_leaves_the_rows_play_out_for_every_column(monkeypatch):
    monkeypatch.setattr(neumf_variants, "ROW_OUT", True)
    history = tf.constant([[0, 1, 2]])
    layer = neumf_variants.UserVector(1, 5, 4, history, own_row=False)
    bag = layer.bag.numpy()
    vectors = layer(tf.constant([0, 0]), tf.constant([[1, 3, 4], [3, 1, 4]])).numpy()
    without_1 = (bag[0] + bag[2]) / np.sqrt(2)
    for column in range(3):                      # the play (artist 1) and both negatives
        assert np.allclose(vectors[0, column], without_1, atol=1e-6)
    everything = (bag[0] + bag[1] + bag[2]) / np.sqrt(3)       # column 0 unplayed: nothing out
    for column in range(3):
        assert np.allclose(vectors[1, column], everything, atol=1e-6)


def test_history_dropout_sums_a_random_part_in_training_and_everything_when_scoring():
    history = tf.constant([[0, 1, 2, 3, 4, 5, 6, 7]])
    layer = neumf_variants.UserVector(1, 9, 4, history, own_row=False, drop=0.5)
    bag = layer.bag.numpy()
    items = tf.constant([[8, 0]])        # an unplayed artist, then a played one
    scored = layer(tf.constant([0]), items, training=False).numpy()
    assert np.allclose(scored[0, 0], bag[:8].sum(0) / np.sqrt(8), atol=1e-6)
    subsets = [np.array(s) for s in itertools.product([0, 1], repeat=8)]
    kept_counts = set()
    for _ in range(20):
        vectors = layer(tf.constant([0]), items, training=True).numpy()[0]
        match = [s for s in subsets if np.allclose(
            vectors[0], (s[:, None] * bag[:8]).sum(0) / np.sqrt(max(s.sum(), 1)), atol=1e-6)]
        assert len(match) == 1                      # the sum over one subset of the artists
        kept = match[0]
        rest = kept.copy()
        rest[0] = 0                                 # the scored artist 0 left out, same subset
        expected = ((rest[:, None] * bag[:8]).sum(0) / np.sqrt(max(rest.sum(), 1)))
        assert np.allclose(vectors[1], expected, atol=1e-6)
        kept_counts.add(int(kept.sum()))
    assert len(kept_counts) > 1 and min(kept_counts) < 8     # drawn afresh, some dropped


def test_idf_history_weights_each_played_artist_and_the_scored_one_leaves_with_its_weight():
    history = tf.constant([[0, 1, 2]])
    weights = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    layer = neumf_variants.UserVector(1, 4, 4, history, own_row=False, played_weights=weights)
    bag = layer.bag.numpy()
    vectors = layer(tf.constant([0]), tf.constant([[1, 3]])).numpy()
    assert np.allclose(vectors[0, 0], (bag[0] + 0.5 * bag[2]) / np.sqrt(2), atol=1e-6)
    assert np.allclose(vectors[0, 1], (bag[0] + 2 * bag[1] + 0.5 * bag[2]) / np.sqrt(3), atol=1e-6)


def test_idf_weights_fall_with_listeners_and_average_one_over_the_plays(monkeypatch):
    monkeypatch.setattr(neumf_variants, "IDF_POWER", 0.5)
    split = type("Split", (), {"num_items": 4, "train_items": np.array([0, 0, 0, 0, 1, 2])})()
    weights = neumf_variants.idf_weights(split)
    assert np.isclose(weights[split.train_items].mean(), 1.0)
    assert np.isclose(weights[1] / weights[0], 2.0) and weights[3] == weights[1]   # 4 vs 1, 0 -> 1


def test_popularity_adjusted_lowers_each_logit_by_beta_log_listeners(monkeypatch, capsys):
    plays = data.frames_to_plays(*data.make_planted(60, 80, 600, seed=5))
    split = data.leave_one_out(plays, 20, seed=0, validation=True)
    prior = np.log1p(neumf_variants.artist_listeners(split))
    # A "model" that ranks by the same prior: beta 1 takes all of it out (every logit 0: ties,
    # which count against the held-out artist), beta 0 leaves the popularity ranking
    monkeypatch.setattr(neumf_variants, "train",
                        lambda *a: (3, 0, 0, 0, lambda users, items: prior[items]))
    neumf_variants.popularity_adjusted(split, 0, print, "history_only", [0, 1])
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    items = np.concatenate([split.valid_items[:, None], split.valid_negatives], 1)
    popularity = (prior[items][:, 1:] >= prior[items][:, :1]).sum(1) < 10
    assert float(rows[0][2]) == round(popularity.mean(), 4) and popularity.mean() > 0.2
    assert float(rows[1][2]) == 0.0 and float(rows[1][3]) == 0.0


def test_adamw_has_no_l2_in_the_loss_and_decays_every_row_in_the_optimizer():
    plays = data.frames_to_plays(*data.make_planted(60, 80, 600, seed=5))
    split = data.leave_one_out(plays, 20, seed=0, validation=True)
    model = neumf_variants.build(split, "adamw")
    users = np.array([0, 1], np.int32)
    items = np.array([[1, 2], [3, 4]], np.int32)
    model({"user": users, "item": items})
    assert not model.losses                               # no L2 penalty term
    table = next(v for v in model.trainable_variables if v.path.endswith("gmf_user/bag"))
    seen = set(split.train_items[np.isin(split.train_users, users)]) | set(items.ravel())
    row = next(i for i in range(split.num_items) if i not in seen)   # no step looks it up
    untouched = table.numpy()[row].copy()
    assert np.abs(untouched).sum() > 0
    dataset = [({"user": users, "item": items}, np.array([[1, 0], [1, 0]], np.float32))]
    model.fit(dataset[0][0], dataset[0][1], epochs=1, verbose=0, batch_size=2)
    decay = 1 - neumf_variants.LEARNING_RATE * neumf_variants.WEIGHT_DECAY
    assert np.allclose(table.numpy()[row], untouched * decay, rtol=1e-5)


def test_one_variant_is_the_only_one_given_or_default_and_refuses_several():
    import pytest
    everything = {"variants": ",".join(neumf_variants.VARIANTS)}
    assert neumf_variants.one_variant(everything, "--adjust") == "default"
    assert neumf_variants.one_variant({"variants": "ema"}, "--adjust") == "ema"
    for bad in ("ema,default", "ensemble"):
        with pytest.raises(SystemExit, match="--adjust trains one NeuMF"):
            neumf_variants.one_variant({"variants": bad}, "--adjust")


def test_repeated_epoch_data_has_every_play_r_times_with_fresh_negatives():
    plays = data.frames_to_plays(*data.make_planted(60, 90, 1_200, seed=7))
    split = data.leave_one_out(plays, 20, seed=3, validation=True)
    once, once_labels = neumf_variants.repeated_epoch_data(split, 1, 4, 2, 1)
    inputs, labels = neumf_variants.repeated_epoch_data(split, 1, 4, 2, 3)
    assert len(labels) == 3 * len(once_labels) and (labels[:, 0] == 1).all()
    plays_of = lambda x: sorted(zip(x["user"], x["item"][:, 0]))                  # noqa: E731
    assert plays_of(inputs) == sorted(plays_of(once) * 3)        # each play three times
    rows = sorted(zip(inputs["user"], inputs["item"][:, 0], inputs["item"][:, 1]))
    assert len(set(rows)) > 2 * len(once_labels)                 # mostly other negatives
    assert not split.sampler.is_played(inputs["user"], inputs["item"][:, 1]).any()
    assert not np.array_equal(inputs["user"][:len(once_labels)], once["user"])   # shuffled


def test_a_bad_setting_in_the_environment_is_one_line():
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name, value, message in (("NEG_WEIGHT", "-1", "NEG_WEIGHT=-1.0 is not a positive number"),
                                 ("NEG_WEIGHT", "x", "NEG_WEIGHT='x' is not a number")):
        process = subprocess.run([sys.executable, "bench/neumf_variants.py"], cwd=root,
                                 env={**os.environ, name: value}, capture_output=True, text=True)
        assert process.returncode == 1
        assert process.stderr.splitlines() == [f"error: {message}"]
