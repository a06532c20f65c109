"""bench/paired.py: the classic methods it rebuilds, and the paired difference it reports."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import paired  # noqa: E402


def random_plays(seed=3, users=12, items=9):
    rng = np.random.default_rng(seed)
    played = (rng.random((users, items)) < 0.4).astype(np.float32)
    played[:, 0] = 1                                    # no empty artist column
    return played


def test_item_knn_is_the_sum_of_cosines_over_the_users_artists():
    played = random_plays()
    users, items = np.array([0, 5]), np.array([[1, 2, 3], [4, 0, 8]])
    scores = paired.item_knn(played)(users, items)
    for row, user in enumerate(users):
        for col, item in enumerate(items[row]):
            expected = sum(
                played[:, item] @ played[:, j]
                / (np.linalg.norm(played[:, item]) * np.linalg.norm(played[:, j]))
                for j in np.flatnonzero(played[user]))
            assert np.isclose(scores[row, col], expected, rtol=1e-5)


def test_ease_column_is_a_ridge_regression_on_the_other_artists():
    played, lam = random_plays(), 2.0
    users = np.arange(played.shape[0])
    items = np.tile(np.arange(played.shape[1]), (len(users), 1))
    scores = paired.ease(played, lam)(users, items)
    for item in range(played.shape[1]):
        others = [j for j in range(played.shape[1]) if j != item]
        x = played[:, others].astype(np.float64)
        weights = np.linalg.solve(x.T @ x + lam * np.eye(len(others)), x.T @ played[:, item])
        assert np.allclose(scores[:, item], x @ weights, atol=1e-8)


def test_paired_difference_counts_each_side_and_brackets_the_mean():
    model = np.array([0, 0, 3, 20, 1, 50, 2, 9])        # ranks: hits where < 10
    method = np.array([0, 15, 3, 2, 30, 50, 2, 9])
    row, = paired.compare(model, {"m": method}, resamples=2000, seed=0)
    assert (row["only_model"], row["only_method"]) == (2, 1)
    mean, low, high = row["hr_diff"]
    assert np.isclose(mean, (6 - 5) / 8) and low <= mean <= high and low < high
    same, = paired.compare(model, {"m": model}, resamples=100, seed=0)
    assert same["hr_diff"] == (0.0, 0.0, 0.0) and same["ndcg_diff"] == (0.0, 0.0, 0.0)


def test_main_scores_a_saved_model_on_the_split_it_reads(tmp_path, capsys):
    import data
    import evaluate
    import models
    plays = data.frames_to_plays(*data.make_planted(60, 40, 900, seed=2))
    split = data.leave_one_out(plays, 20, seed=1)
    prefix = str(tmp_path / "split")
    data.write_ncf_split(split, prefix)
    model = models.build_model("gmf", split.num_users, split.num_items, 8)
    path = str(tmp_path / "gmf.keras")
    model.save(path)
    paired.main([f"--split={prefix}", f"--load={path}", "--resamples=200"])
    out = capsys.readouterr().out
    expected = evaluate.hit_ratio_at_k(models.make_scorer(model), split.test_users,
                                       split.test_items, split.test_negatives, 10)
    assert f"HR@10 {expected['hit_ratio']:.4f}, NDCG@10 {expected['ndcg']:.4f}" in out
    assert "| item kNN |" in out and "| EASE(l=500) |" in out


def test_bad_paths_are_one_line_errors(tmp_path):
    import pytest
    with pytest.raises(SystemExit, match="file not found"):
        paired.main([f"--split={tmp_path / 'none'}", "--load=x.keras"])
    with pytest.raises(SystemExit, match="unknown option"):
        paired.main(["--bogus=1"])


def test_a_late_error_is_one_line_without_tensorflows_start_up_notes(tmp_path):
    import subprocess
    import data
    plays = data.frames_to_plays(*data.make_planted(60, 40, 900, seed=2))
    prefix = str(tmp_path / "split")
    data.write_ncf_split(data.leave_one_out(plays, 20, seed=1), prefix)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.run([sys.executable, "bench/paired.py", f"--split={prefix}",
                              f"--load={tmp_path / 'none.keras'}"], cwd=root,
                             capture_output=True, text=True)
    assert process.returncode == 1
    assert process.stderr.splitlines() == [f"--load={tmp_path / 'none.keras'}: file not found; "
                                           "give a .keras file a run saved"]
