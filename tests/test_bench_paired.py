"""bench/paired.py: the classic methods it rebuilds, and the paired difference it reports;
bench/quality.py's command line (its runs take minutes, so they run as a benchmark)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import help_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import paired  # noqa: E402
import quality  # noqa: E402
from split import leave_one_out, write_ncf_split  # noqa: E402



def saved_model(folder, split, num_users=None):
    """A GMF built for `split` (or for `num_users` users), saved -> its path."""
    import models
    model = models.build_model("gmf", num_users or split.num_users, split.num_items, 8)
    path = os.path.join(folder, f"gmf-{num_users or split.num_users}.keras")
    model.save(path)
    return model, path


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


@pytest.mark.slow
def test_main_scores_a_saved_model_on_the_split_it_reads(tmp_path, capsys):
    import data
    import evaluate
    import models
    plays = data.frames_to_plays(*data.make_planted(60, 40, 900, seed=2))
    split = leave_one_out(plays, 20, seed=1)
    prefix = str(tmp_path / "split")
    write_ncf_split(split, prefix)
    model, path = saved_model(tmp_path, split)
    paired.main([f"--split={prefix}", f"--load={path}", "--resamples=200"])
    out = capsys.readouterr().out
    expected = evaluate.hit_ratio_at_k(models.make_scorer(model), split.test_users,
                                       split.test_items, split.test_negatives, 10)
    assert f"HR@10 {expected['hit_ratio']:.4f}, NDCG@10 {expected['ndcg']:.4f}" in out
    assert "| item kNN |" in out and "| EASE(l=500) |" in out
    paired.main([f"--split={prefix}", f"--load={path}", "--resamples=200", "--ease=False"])
    out = capsys.readouterr().out
    assert "| item kNN |" in out and "EASE" not in out
    with pytest.raises(SystemExit, match=r"--weights=.*none\.h5: file not found"):
        paired.main([f"--split={prefix}", f"--load={path}", f"--weights={tmp_path / 'none.h5'}"])
    _, other = saved_model(tmp_path, split, num_users=split.num_users + 1)
    with pytest.raises(SystemExit, match=f"the model has {split.num_users + 1} users"):
        paired.main([f"--split={prefix}", f"--load={other}"])


@pytest.mark.tensorflow_only
def test_bad_paths_and_options_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="file not found"):
        paired.main([f"--split={tmp_path / 'none'}", "--load=x.keras"])
    for arguments, message in ((["--split=s", "--load=m", "--bogus=1"],
                                "unrecognized arguments: --bogus=1"),
                               (["--split=s"], "the following arguments are required: --load"),
                               (["--split=s", "--load=m", "--ease=maybe"], "give True or False"),
                               (["--split=s", "--load=m", "--resamples=0"], "give 1 or more")):
        with pytest.raises(SystemExit) as exit_:
            paired.main(arguments)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_paired_help_lists_every_option_with_its_default():
    options = help_of("paired.py")
    assert set(options) == {"-h", "--split", "--load", "--weights", "--resamples", "--ease",
                            "--seed"}
    assert "required" in options["--split"] and "required" in options["--load"]
    for option, default in (("--weights", "''"), ("--resamples", "10000"), ("--ease", "True"),
                            ("--seed", "0")):
        assert f"(default: {default}" in options[option], option


def test_quality_help_lists_every_option_with_its_default():
    options = help_of("quality.py")
    assert set(options) == {"-h", "--data_dir", "--seeds", "--num_epoch"}
    assert "required, no default" in options["--data_dir"]
    assert "(default: 1,2,3)" in options["--seeds"]
    assert "(default: 10)" in options["--num_epoch"]


def test_quality_needs_a_data_folder_and_reads_its_seeds(capsys):
    assert quality.parse_args(["--data_dir=d", "--seeds=4,5"]).seeds == [4, 5]
    assert quality.parse_args(["--data_dir=d"]).seeds == [1, 2, 3]
    for arguments, message in (([], "the following arguments are required: --data_dir"),
                               (["--data_dir=d", "--seeds=1,x"], "give integers separated")):
        with pytest.raises(SystemExit) as exit_:
            quality.parse_args(arguments)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_a_late_error_is_one_line_without_tensorflows_start_up_notes(tmp_path):
    import data
    plays = data.frames_to_plays(*data.make_planted(60, 40, 900, seed=2))
    prefix = str(tmp_path / "split")
    write_ncf_split(leave_one_out(plays, 20, seed=1), prefix)
    process = subprocess.run([sys.executable, "bench/paired.py", f"--split={prefix}",
                              f"--load={tmp_path / 'none.keras'}"], cwd=ROOT,
                             capture_output=True, text=True)
    assert process.returncode == 1
    assert process.stderr.splitlines() == [f"--load={tmp_path / 'none.keras'}: file not found; "
                                           "give a .keras file a run saved"]
