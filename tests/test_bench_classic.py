"""bench/classic.py: the hit rule, the methods against naive formulas and each other on planted
data, and its command line (--help, one-line refusals with exit code 2)."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "classic.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import classic  # noqa: E402


def write_split(prefix, train, test, negatives):
    """train, test: lists of (user, item); negatives: one list per test pair."""
    with open(prefix + ".train.rating", "w") as out:
        out.writelines(f"{u}\t{i}\t1\t0\n" for u, i in train)
    with open(prefix + ".test.rating", "w") as out:
        out.writelines(f"{u}\t{i}\t1\t0\n" for u, i in test)
    with open(prefix + ".test.negative", "w") as out:
        for (u, i), negs in zip(test, negatives):
            out.write(f"({u},{i})\t" + "\t".join(map(str, negs)) + "\n")
    return str(prefix)


def planted_split(folder, seed=0, block_a_users=18, num_users=30, num_negatives=10):
    """30 users, 40 items. Users 0..17 play 10 of items 0..15 (block A), users 18..29 play 10 of
    items 16..31 (block B), items 32..39 are noise with a couple of listeners. Each user's test
    item is one of its own block's; its negatives are unplayed items outside its block. Block
    A's items have more listeners, so popularity ranks them above block B's held-out items."""
    rng = np.random.default_rng(seed)
    played = np.zeros((num_users, 40), bool)
    for user in range(num_users):
        block = np.arange(0, 16) if user < block_a_users else np.arange(16, 32)
        played[user, rng.choice(block, 10, replace=False)] = True
    for item in range(32, 40):
        played[rng.choice(num_users, 2, replace=False), item] = True
    train, test, negatives = [], [], []
    for user in range(num_users):
        own = np.arange(0, 16) if user < block_a_users else np.arange(16, 32)
        held = int(rng.choice(np.intersect1d(np.flatnonzero(played[user]), own)))
        test.append((user, held))
        train += [(user, int(i)) for i in np.flatnonzero(played[user]) if i != held]
        outside = np.setdiff1d(np.flatnonzero(~played[user]), own)
        negatives.append(sorted(int(i) for i in rng.choice(outside, num_negatives, replace=False)))
    return write_split(os.path.join(folder, "planted"), train, test, negatives)


def run(prefix, *options):
    return {name: (hr, ndcg) for name, hr, ndcg, _ in
            classic.run(classic.parse_args(["--split", prefix, *options]))}


def command(*arguments):
    return subprocess.run([sys.executable, SCRIPT, *arguments], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


# ------------------------------------------------------------------------------ the hit rule

def test_a_clear_winner_is_a_hit_at_rank_0():
    ranks = classic.ranks_against(np.array([5.0]), np.array([[1.0, 2.0, 3.0]]))
    assert ranks.tolist() == [0]
    assert classic.hr_ndcg(ranks, 2) == (1.0, 1.0)


def test_below_k_negatives_is_a_miss():
    ranks = classic.ranks_against(np.array([1.5]), np.array([[3.0, 2.0, 1.0, 0.0]]))
    assert ranks.tolist() == [2]
    assert classic.hr_ndcg(ranks, 2) == (0.0, 0.0)
    assert classic.hr_ndcg(ranks, 3) == (1.0, pytest.approx(1 / np.log2(4)))


def test_a_tie_counts_against_the_held_out_item():
    # equal to the 2nd best negative: rank 2, a miss at K=2 (a hit if ties counted for it)
    ranks = classic.ranks_against(np.array([5.0]), np.array([[5.0, 5.0, 1.0]]))
    assert ranks.tolist() == [2]
    assert classic.hr_ndcg(ranks, 2) == (0.0, 0.0)
    # one tie above K: still a hit, but at rank 1
    ranks = classic.ranks_against(np.array([5.0]), np.array([[5.0, 1.0, 1.0]]))
    assert classic.hr_ndcg(ranks, 2) == (1.0, pytest.approx(1 / np.log2(3)))


def test_equal_scores_everywhere_score_zero():
    ranks = classic.ranks_against(np.zeros(4), np.zeros((4, 20)))
    assert classic.hr_ndcg(ranks, 10) == (0.0, 0.0)


# --------------------------------------------------------------------------------- methods

def naive_scores(data, lam):
    """peers_bench.py's formulas on a dense X: (ItemPop, ItemKNN-cos, EASE) candidate scores."""
    x = np.zeros((data.num_users, data.num_items))
    x[data.users, data.items] = 1
    candidates = np.concatenate([data.test_items[:, None], data.negatives], axis=1)
    rows = x[data.test_users]
    normed = x / (np.sqrt(x.sum(0)) + 1e-9)
    gram = x.T @ x + lam * np.eye(data.num_items)
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0
    take = lambda full: np.take_along_axis(full, candidates, 1)  # noqa: E731
    return (take(np.broadcast_to(x.sum(0), rows.shape)), take(rows @ normed.T @ normed),
            take(rows @ b)), candidates


@pytest.mark.parametrize("num_users", [30, 60])   # 30 < 40 items: users x users EASE; 60: items
def test_methods_equal_the_naive_formulas(tmp_path, num_users):
    prefix = planted_split(tmp_path, seed=1, num_users=num_users, block_a_users=num_users // 2)
    data = classic.read_split(prefix)
    assert (data.num_users < data.num_items) == (num_users == 30)
    (pop, knn, ease), candidates = naive_scores(data, lam=7.0)
    users = data.test_users
    np.testing.assert_allclose(classic.item_pop(data)(users, candidates), pop)
    np.testing.assert_allclose(classic.item_knn(data)(users, candidates), knn, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(classic.ease(data, 7.0)(users, candidates), ease, rtol=1e-8,
                               atol=1e-10)
    assert np.abs(ease).max() > 0.1 and np.abs(knn).max() > 0.1   # not trivially zero


def test_ease_counts_a_candidate_the_user_played_without_its_diagonal(tmp_path):
    # a negative that is a training item of the user: B's diagonal is 0, so its own entry
    # must not add to its score (both EASE forms, against the naive formula)
    prefix = planted_split(tmp_path, seed=2)
    data = classic.read_split(prefix)
    candidates = np.concatenate([data.test_items[:, None], data.negatives], axis=1)
    candidates[:, -1] = data.items[data.user_ptr[data.test_users]]      # each user's 1st item
    (_, _, ease), _ = naive_scores(data, lam=3.0)
    x = np.zeros((data.num_users, data.num_items))
    x[data.users, data.items] = 1
    p = np.linalg.inv(x.T @ x + 3.0 * np.eye(data.num_items))
    b = -p / np.diag(p)
    b[np.diag_indices_from(b)] = 0
    expected = np.take_along_axis(x[data.test_users] @ b, candidates, 1)
    np.testing.assert_allclose(classic._ease_by_users(data, 3.0)(data.test_users, candidates),
                               expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(classic._ease_by_items(data, 3.0)(data.test_users, candidates),
                               expected, rtol=1e-8, atol=1e-10)


def test_knn_and_ease_beat_popularity_on_planted_blocks(tmp_path):
    results = run(planted_split(tmp_path), "--top_k", "3", "--ease_lambda", "5")
    pop_hr, pop_ndcg = results["ItemPop"]
    assert pop_hr <= 0.7                                # block B's users miss under popularity
    for name in ("ItemKNN-cos", "EASE(l=5)"):
        hr, ndcg = results[name]
        assert hr >= pop_hr + 0.25 and ndcg > pop_ndcg + 0.2, (name, results)


@pytest.mark.parametrize("extra_users", [0, 6])   # 0: users x users EASE; 6: items x items
def test_items_with_the_same_listeners_tie_and_the_tie_counts_against(tmp_path, extra_users):
    # items 1, 2 and 5 have the same listeners (users 1, 2, 3, who also play user 0's item 0):
    # user 0's held-out 2 ties with its negatives 1 and 5 and is above 3 and 4 (users 4 and 5
    # only) for every method, so it is at rank 2: a miss at K = 2, a hit with NDCG 0.5 at K = 3
    train = [(0, 0), (4, 3), (4, 4), (5, 3), (5, 4), (5, 6)]
    train += [(user, item) for user in (1, 2, 3) for item in (0, 1, 2, 5)]
    train += [(6 + user, 6) for user in range(extra_users)]
    prefix = write_split(str(tmp_path / "tie"), train, [(0, 2)], [[1, 5, 3, 4]])
    data = classic.read_split(prefix)
    assert (data.num_users < data.num_items) == (extra_users == 0)
    # lambda 3: the items x items inverse leaves round-off between the three at this lambda
    for name, (hr, _) in run(prefix, "--top_k", "2", "--ease_lambda", "3").items():
        assert hr == 0.0, name
    for name, (hr, ndcg) in run(prefix, "--top_k", "3", "--ease_lambda", "3").items():
        assert hr == 1.0 and ndcg == 0.5, name


# ---------------------------------------------------------------------------- command line

def test_help_lists_every_option_with_its_default():
    done = command("--help")
    assert done.returncode == 0, done.stderr
    for option, default in (("--split", None), ("--methods", "itempop"), ("--top_k", "10"),
                            ("--ease_lambda", "500"), ("--max_ease_items", "20000")):
        assert option in done.stdout
        if default:
            assert f"(default: {default}" in " ".join(done.stdout.split()), option


def test_the_command_prints_one_row_per_chosen_method(tmp_path):
    done = command("--split", planted_split(tmp_path), "--methods", "itempop,ease", "--top_k", "3")
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| method | HR@3 | NDCG@3 | seconds |"
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| ItemPop", "| EASE(l=500)"]


def test_a_missing_file_is_one_line_and_exit_code_2(tmp_path):
    prefix = planted_split(tmp_path)
    os.remove(prefix + ".test.negative")
    done = command("--split", prefix)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "planted.test.negative: file not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_ease_over_max_items_is_refused_in_one_line(tmp_path):
    prefix = planted_split(tmp_path)
    done = command("--split", prefix, "--max_ease_items", "39")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--max_ease_items=39" in done.stderr
    assert command("--split", prefix, "--max_ease_items", "40").returncode == 0
    assert command("--split", prefix, "--max_ease_items", "39",
                   "--methods", "itempop,itemknn").returncode == 0


@pytest.mark.parametrize("damage, message", [
    (lambda lines: [lines[1]] + lines[:1] + lines[2:], "is for (1,"),   # lines swapped
    (lambda lines: lines[:-1], "29 lines for 30 test pairs"),
    (lambda lines: [lines[0] + "\t7"] + lines[1:], "line 2 has 10 negatives, line 1 has 11"),
])
def test_a_malformed_negative_file_is_one_line_and_exit_code_2(tmp_path, damage, message):
    prefix = planted_split(tmp_path)
    with open(prefix + ".test.negative") as handle:
        lines = handle.read().splitlines()
    with open(prefix + ".test.negative", "w") as handle:
        handle.write("\n".join(damage(lines)) + "\n")
    done = command("--split", prefix)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr
