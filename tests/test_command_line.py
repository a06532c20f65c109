"""The command line as a user meets it: --help, "did you mean", --name value, a folder per model,
the saved-model one-liner, similar_artists.csv, --compare, --full_ranking_users, --rows=pair,
the settings line and one line per epoch.

Runs are in-process (`ncf_lastfm.main(argv)`) on small planted data; the few runs several
tests read are made once per module. Only the terminal test needs a process of its own.
"""
import contextlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import data
import models
import ncf_lastfm
import settings
import training
from conftest import write_csvs
from split import leave_one_out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# users, artists, plays, seed. 2,000 artists, not conftest's 400: there, drawing each test
# user's 99 candidates takes 10 to 50 s (see test_candidates_of_a_user_with_few_plays_...)
PLANTED = (300, 2_000, 9_000, 3)
SIMILAR_TO_RANK = 5                 # --similar_to names the artist with the 6th most plays


def main(argv):
    """ncf_lastfm.main(argv), leaving the environment as it was (--quiet sets TQDM_DISABLE)."""
    saved = os.environ.get("TQDM_DISABLE")
    try:
        return ncf_lastfm.main([str(a) for a in argv])
    finally:
        if saved is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved


def run_main(capsys, *argv):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def run_captured(argv):
    """main(argv) where no capsys is at hand (module fixtures) -> (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def planted_frames():
    return data.make_planted(*PLANTED[:3], seed=PLANTED[3])


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory):
    """The planted data as the three CSVs, written once for the module."""
    return write_csvs(tmp_path_factory.mktemp("planted") / "csv", *planted_frames())


def one_line_error(code, err):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err


# ---- 1. --help -------------------------------------------------------------------------------
def test_help_and_h_exit_0_and_list_every_setting_with_its_default_and_meaning(capsys):
    code, out, err = run_main(capsys, "--help")
    assert code == 0 and err == ""
    code_h, out_h, _ = run_main(capsys, "-h")
    assert code_h == 0 and out_h == out
    lines = out.splitlines()
    flat = "".join(out.split())      # wrapping may break a comment at a space or a hyphen
    docs = dict(entry for _, entries in settings.constant_docs(ncf_lastfm.__file__)
                for entry in entries)
    for name, default in ncf_lastfm.DEFAULTS.items():
        option = re.compile(rf"--{name.lower()}(?![a-z_])")
        shown = [line for line in lines if option.search(line)]
        assert shown, f"--help does not list --{name.lower()}"
        assert any(repr(default) in line or str(default) in line for line in shown), \
            f"--help lists --{name.lower()} without its default {default!r}: {shown}"
        assert "".join(docs[name].split()) in flat, f"--help lacks the meaning of {name}"


def test_every_setting_has_a_non_empty_comment_for_help():
    docs = [entry for _, entries in settings.constant_docs(ncf_lastfm.__file__)
            for entry in entries]
    names = [name for name, _ in docs]
    assert sorted(names) == sorted(ncf_lastfm.DEFAULTS), "constants and --help entries differ"
    assert len(names) == len(set(names))
    empty = [name for name, comment in docs if not comment.strip()]
    assert not empty, f"constants without a comment (no meaning in --help): {empty}"


# ---- 2. README -------------------------------------------------------------------------------
def test_every_setting_is_in_the_readme_settings_table():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        readme = stream.read()
    section = re.search(r"^#+ Settings\s*$(.*?)(?=^#+ |\Z)", readme, re.M | re.S)
    assert section, "README.md has no 'Settings' section"
    first_cells = [row.strip().strip("|").split("|")[0].strip()
                   for row in section.group(1).splitlines() if row.lstrip().startswith("|")]
    assert first_cells, "README.md's Settings section has no table"
    missing = [name for name in ncf_lastfm.DEFAULTS
               if not any(re.search(rf"(--{name.lower()}|\b{name})(?![A-Za-z_])", cell)
                          for cell in first_cells)]
    assert not missing, f"settings not in README.md's settings table: {missing}"


# ---- 3. parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["--num_epochs=3"], "--num_epoch"),
    (["--num-epoch=3"], "--num_epoch"),
    (["--learning_rte", "0.1"], "--learning_rate"),
])
def test_an_unknown_name_is_one_line_with_did_you_mean(capsys, argv, expected):
    code, out, err = run_main(capsys, *argv)
    one_line_error(code, err)
    assert re.search(rf"did you mean {expected}(?![a-z_])", err), err


def parse(argv):
    return settings.parse(argv, ncf_lastfm.DEFAULTS, ncf_lastfm.MODEL_DEFAULTS,
                          ncf_lastfm.Settings)


@pytest.mark.parametrize("spaced, joined", [
    (["--dataset", "sample"], ["--dataset=sample"]),
    (["--num_epoch", "3", "--dataset", "sample"], ["--num_epoch=3", "--dataset=sample"]),
    (["--hidden_units", "(64, 32)", "--validation", "--l2", "0.5"],
     ["--hidden_units=(64, 32)", "--validation", "--l2=0.5"]),
    (["--model", "gmf", "--num_factor", "16"], ["--model=gmf", "--num_factor=16"]),
])
def test_name_space_value_parses_as_name_equals_value(spaced, joined):
    assert parse(spaced) == parse(joined)
    assert parse(spaced) != parse([])           # the values were read, not dropped


def test_name_space_value_is_typed_as_the_constant():
    s = parse(["--dataset", "sample", "--num_epoch", "3", "--learning_rate", "1"])
    assert s.dataset == "sample" and s.num_epoch == 3 and s.learning_rate == 1.0
    assert type(s.learning_rate) is float and s.given == {"dataset", "num_epoch", "learning_rate"}


@pytest.mark.parametrize("argv", [["--num_epoch"], ["--dataset=sample", "--num_epoch"],
                                  ["--num_epoch", "--quiet"]])
def test_a_setting_without_its_value_is_one_line(capsys, argv):
    code, out, err = run_main(capsys, *argv)
    one_line_error(code, err)
    assert "--num_epoch" in err


@pytest.mark.parametrize("argv", [
    ["--data_dir=" + "a" * 5_000],
    ["--data_dir", "a" * 5_000],
    ["--similar_to=" + "x" * 5_000],
    ["--seed=" + "1+" * 3_000 + "1"],
    ["--hidden_units=" + "(" * 2_500 + ")" * 2_500],
])
def test_a_huge_value_is_one_line_without_a_traceback(capsys, argv):
    code, out, err = run_main(capsys, *argv)
    one_line_error(code, err)
    assert len(err) < 500, f"the error line is {len(err):,} characters long"


@pytest.mark.parametrize("argv", [          # under the length limit, beyond a float's range
    ["--learning_rate=" + "1" * 400],
    ["--l2=" + "9" * 999],
    ["--dropout=0x" + "f" * 300],
    ["--scale", "1" + "0" * 310],
])
def test_an_integer_too_large_for_a_float_setting_is_one_line(capsys, argv):
    code, out, err = run_main(capsys, *argv)
    one_line_error(code, err)
    assert len(err) < 500, f"the error line is {len(err):,} characters long"


# ---- 4. a folder per model -------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """mlp, then gmf, into one OUTPUT_DIR (1 epoch each, quiet); mlp also writes
    recommendations for user 0, similar_artists.csv and the full ranking of 50 users."""
    base = tmp_path_factory.mktemp("two_models")
    frames = planted_frames()
    folder = write_csvs(base / "csv", *frames)     # its own copy: the runs record its path
    output = base / "out"
    counts = frames[0].artist_id.value_counts()
    similar = f"artist {int(counts.index[SIMILAR_TO_RANK]):05d}"
    common = [f"--data_dir={folder}", f"--output_dir={output}", "--num_epoch=1", "--quiet"]
    mlp = run_captured(common + ["--recommend_user=0", f"--similar_to={similar}",
                                 "--full_ranking_users=50"])
    assert mlp[0] == 0, mlp[2]
    mlp_metrics = (output / "mlp" / "metrics.json").read_bytes()
    gmf = run_captured(common + ["--model=gmf"])
    assert gmf[0] == 0, gmf[2]
    return {"base": base, "data_dir": folder, "output": output, "frames": frames,
            "similar": similar, "mlp": mlp, "gmf": gmf,
            "mlp_metrics_before_gmf": mlp_metrics}


def test_two_models_in_one_output_dir_each_have_their_own_folder(two_models):
    output = two_models["output"]
    for name in ("mlp", "gmf"):
        metrics = json.loads((output / name / "metrics.json").read_text())
        assert metrics["model"] == name and metrics["settings"]["model"] == name
        assert (output / name / f"{name}.keras").is_file()
        assert (output / name / "environment.json").is_file()
    assert not (output / "gmf" / "mlp.keras").exists()
    assert not (output / "mlp" / "gmf.keras").exists()
    assert not (output / "metrics.json").exists()
    # the second model's run left the first one's record as it was
    assert (output / "mlp" / "metrics.json").read_bytes() == two_models["mlp_metrics_before_gmf"]


# ---- 5. the saved-model one-liner ------------------------------------------------------------
def played_by(frames, user):
    plays = frames[0]
    return set(plays.artist_id[plays.user_id == user].astype(int))


def check_recommendations(path, frames, user=0):
    frame = pd.read_csv(path)
    rows = frame[frame.user_id == user]
    assert len(frame) == 10 and len(rows) == 10, frame
    assert list(rows["rank"]) == list(range(1, 11))
    assert rows.artist_id.is_unique
    assert not set(rows.artist_id.astype(int)) & played_by(frames, user)
    assert (np.diff(rows.score.to_numpy()) <= 0).all()


def test_load_with_no_data_settings_recommends_into_a_folder_of_its_own(two_models, capsys):
    output = two_models["output"]
    saved = {name: (output / "mlp" / name).read_bytes() for name in ("metrics.json", "mlp.keras")}
    code, out, err = run_main(capsys, f"--load={output / 'mlp' / 'mlp.keras'}",
                              "--recommend_user=0", f"--output_dir={output}")
    assert code == 0, err
    check_recommendations(output / "mlp-loaded" / "recommendations.csv", two_models["frames"])
    assert json.loads((output / "mlp-loaded" / "metrics.json").read_text())["model"] == "mlp"
    for name, before in saved.items():        # the trained model's folder is left as it was
        assert (output / "mlp" / name).read_bytes() == before, name


def test_load_from_another_working_directory_finds_the_data_it_was_trained_on(
        plain_run, capsys, monkeypatch):
    """The run that saved the model was given --data_dir=csv, relative to its folder; the
    one-liner is run from elsewhere, without --output_dir (it writes ./output/mlp-loaded)."""
    elsewhere = plain_run["base"] / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_main(capsys, f"--load={plain_run['base'] / 'out' / 'mlp' / 'mlp.keras'}",
                              "--recommend_user=0", "--quiet")
    assert code == 0, err
    check_recommendations(elsewhere / "output" / "mlp-loaded" / "recommendations.csv",
                          plain_run["frames"])


# ---- 6. similar artists ----------------------------------------------------------------------
def test_similar_to_writes_ten_other_artists_by_descending_similarity(two_models):
    import models
    import report
    frame = pd.read_csv(two_models["output"] / "mlp" / "similar_artists.csv")
    name = two_models["similar"]
    target = int(name.split()[-1])
    assert len(frame) == 10, frame
    assert (frame.similar_to == name).all()
    assert list(frame["rank"]) == list(range(1, 11))
    assert target not in set(frame.artist_id) and name not in set(frame.artist_name)
    assert frame.artist_id.is_unique
    assert all(n == f"artist {a:05d}" for a, n in zip(frame.artist_id, frame.artist_name))
    assert (np.diff(frame.similarity.to_numpy()) <= 0).all()
    # the figures are the cosine similarities of the saved model's artist vectors, the 10 best
    model = models.load(str(two_models["output"] / "mlp" / "mlp.keras"))
    table = np.asarray(model.get_layer(report.item_embedding_name(model)).get_weights()[0])
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    cosine = unit @ unit[target]
    np.testing.assert_allclose(frame.similarity, cosine[frame.artist_id], atol=1e-4)
    others = np.delete(cosine, target)
    assert frame.similarity.iloc[-1] >= np.sort(others)[-10] - 1e-4


# ---- 7. --compare, --full_ranking_users, --rows=pair -----------------------------------------
MODELS = ["pop", "bpr", "gmf", "mlp", "neumf"]


@pytest.mark.slow
def test_compare_writes_one_row_per_model_and_a_folder_per_model(csv_dir, tmp_path, capsys):
    output = tmp_path / "out"
    code, out, err = run_main(capsys, f"--data_dir={csv_dir}", "--compare", "--num_epoch=1",
                              "--quiet", f"--output_dir={output}")
    assert code == 0, err
    table = pd.read_csv(output / "compare.csv")
    assert list(table.model) == MODELS
    for column in ("hit_ratio", "ndcg"):
        assert table[column].between(0, 1).all() and table[column].notna().all(), table
    assert table.hit_ratio.nunique() > 1      # five models, not one figure five times
    for name in MODELS:
        assert (output / name).is_dir(), f"no folder for {name}"
    for name in MODELS[1:]:                   # the trained ones: their checkpoints
        assert os.listdir(output / name), f"{output / name} is empty"
    printed = [line.split()[0] for line in out.splitlines() if line.split()]
    assert all(name in printed for name in MODELS), out      # the table, a row per model


def full_ranks(score, plays, users, held_out):
    """Brute force: for each user, how many artists they never played score at least as high
    as their held-out artist (scored one user at a time, every artist)."""
    ranks = []
    for user, artist in zip(users, held_out):
        scores = np.asarray(score(np.array([user]), np.arange(plays.num_artists)[None, :]))[0]
        unplayed = np.ones(plays.num_artists, bool)
        unplayed[plays.artist_ids[plays.user_ids == user]] = False
        ranks.append(int((scores[unplayed] >= scores[artist]).sum()))
    return np.array(ranks)


def test_full_ranking_users_records_the_full_hit_ratio_of_that_many_users(two_models):
    metrics = json.loads((two_models["output"] / "mlp" / "metrics.json").read_text())
    assert metrics["full_users"] == 50 and metrics["popularity_full_users"] == 50
    plays = data.load_folder(two_models["data_dir"], use_cache=False)
    split = leave_one_out(plays, ncf_lastfm.NUM_EVAL_NEGATIVES, ncf_lastfm.SEED)
    rows = np.sort(np.random.default_rng([ncf_lastfm.SEED, 5]).permutation(
        len(split.test_users))[:50])                   # the run's seeded sample of test users
    users, held_out = split.test_users[rows], split.test_items[rows]
    model = models.load(str(two_models["output"] / "mlp" / "mlp.keras"))
    popularity = np.bincount(split.train_items, minlength=plays.num_artists)
    for prefix, score in (("", models.make_scorer(model)),
                          ("popularity_", lambda u, items: popularity[items])):
        ranks = full_ranks(score, plays, users, held_out)
        hits = ranks < ncf_lastfm.TOP_K
        assert 0 < hits.mean() < 1, prefix
        assert metrics[prefix + "full_hit_ratio"] == hits.mean(), prefix
        assert metrics[prefix + "full_ndcg"] == pytest.approx(
            np.where(hits, 1 / np.log2(ranks + 2), 0).mean()), prefix


class RowSpy:
    """The arrays each epoch hands `training.batched_dataset`: what `model.fit` trains on."""

    def __init__(self):
        self.epochs, self.original = [], training.batched_dataset

    def __call__(self, inputs, labels, batch_size):
        self.epochs.append(({k: np.array(v) for k, v in inputs.items()}, np.array(labels)))
        return self.original(inputs, labels, batch_size)


def test_rows_pair_trains_the_same_pairs_as_rows_play_one_pair_per_row_shuffled(
        two_models, tmp_path, capsys, monkeypatch):
    epochs = {}
    for rows in ("play", "pair"):
        spy = RowSpy()
        monkeypatch.setattr(training, "batched_dataset", spy)
        code, out, err = run_main(capsys, f"--data_dir={two_models['data_dir']}",
                                  f"--rows={rows}", "--num_epoch=1", "--quiet",
                                  f"--output_dir={tmp_path / rows}")
        assert code == 0, err
        (epochs[rows],) = spy.epochs
    (play, play_labels), (pair, pair_labels) = epochs["play"], epochs["pair"]
    width = 1 + ncf_lastfm.NEG_RATIO
    assert play["item"].shape[1] == width
    assert pair["item"].shape == pair_labels.shape == (play_labels.size, 1)
    # the same (user, artist, label) samples, drawn alike: one per row instead of one play's
    expanded = np.stack([np.repeat(play["user"], width), play["item"].ravel(),
                         play_labels.ravel()], axis=1)
    flat = np.stack([pair["user"], pair["item"][:, 0], pair_labels[:, 0]], axis=1)
    np.testing.assert_array_equal(expanded[np.lexsort(expanded.T[::-1])],
                                  flat[np.lexsort(flat.T[::-1])])
    # shuffled as the notebook's samples are: a play's negatives do not follow it in a block
    assert (flat[1:, 0] == flat[:-1, 0]).mean() < 0.1
    metrics = json.loads((tmp_path / "pair" / "mlp" / "metrics.json").read_text())
    assert metrics["settings"]["rows"] == "pair" and metrics["num_epoch"] == 1


@pytest.mark.slow
def test_rows_pair_learns_beyond_popularity(tmp_path, capsys):
    folder = write_csvs(tmp_path / "csv", *data.make_planted(400, 2_000, 12_000, seed=3))
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--rows=pair", "--num_epoch=8",
                              "--batch_size=256", "--quiet", f"--output_dir={tmp_path / 'o'}")
    assert code == 0, err
    metrics = json.loads((tmp_path / "o" / "mlp" / "metrics.json").read_text())
    assert metrics["hit_ratio"] > metrics["popularity_hit_ratio"] + 0.05


class BoundedRng:
    """A NumPy Generator that counts its draws and stops the test after `limit` of them."""

    def __init__(self, seed, limit):
        self.rng, self.calls, self.limit = np.random.default_rng(seed), 0, limit

    def __getattr__(self, name):
        method = getattr(self.rng, name)

        def counted(*args, **kwargs):
            self.calls += 1
            if self.calls > self.limit:
                raise RuntimeError(f"more than {self.limit} random draws")
            return method(*args, **kwargs)
        return counted if callable(method) else method


@pytest.mark.parametrize("played", [1, 4])
def test_candidates_of_a_user_with_few_plays_among_400_artists_are_drawn_in_few_rounds(played):
    """Every run splits its data first: 99 distinct unplayed candidates per test user. With 400
    artists (conftest's planted_dir) a user who played a few has 396 or more unplayed ones;
    drawing 99 ranks with replacement and redrawing any row with a repeat needs about 10**5
    rounds for such a user (no repeat among 99 of 400: probability about e**-12): the split
    of 300 users took 11 to 54 s, depending on --seed, of a run of a few seconds."""
    import sampling
    num_items, k = 400, 99
    sampler = sampling.NegativeSampler(np.zeros(played, np.int64), np.arange(played),
                                       1, num_items)
    rng = BoundedRng(0, limit=1_000)
    candidates = sampler.sample_distinct(np.array([0]), k, rng)[0]
    assert len(set(candidates.tolist())) == k
    assert not set(candidates.tolist()) & set(range(played))


# ---- 8. the settings line --------------------------------------------------------------------
def test_settings_line_names_the_model_defaults_applied(csv_dir, tmp_path, capsys):
    # a user id beyond the data stops the run after its settings and data lines: no training
    code, out, err = run_main(capsys, f"--data_dir={csv_dir}", "--model=neumf",
                              "--num_epoch=1", "--recommend_user=100000",
                              f"--output_dir={tmp_path}")
    assert code == 2 and "100000" in err, err
    first = out.splitlines()[0]
    assert first.startswith("settings: ")
    assert "neumf's defaults" in first
    given, applied = first.split("neumf's defaults", 1)
    assert "num_factor=128" in applied
    assert first.count("num_factor=") == 1        # not also among the settings given
    assert "num_epoch=1" in given and "num_epoch" not in applied   # given: not a default


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """A run given nothing but --data_dir=csv and --output_dir=out, relative to its folder."""
    base = tmp_path_factory.mktemp("plain")
    frames = planted_frames()
    write_csvs(base / "csv", *frames)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)
        code, out, err = run_captured(["--data_dir=csv", "--output_dir=out"])
    assert code == 0, err
    return {"base": base, "frames": frames, "stdout": out, "stderr": err}


def test_settings_line_of_a_plain_run_lists_only_what_differs(plain_run):
    first = plain_run["stdout"].splitlines()[0]
    assert first.startswith("settings: ") and len(first) < 200, first
    assert "data_dir=" in first and "output_dir=" in first
    for name in ncf_lastfm.DEFAULTS:
        if name not in ("DATA_DIR", "OUTPUT_DIR"):
            assert f"{name.lower()}=" not in first, first
    assert "defaults" not in first                # mlp has no per-model defaults


# ---- 9. progress -----------------------------------------------------------------------------
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+): ")
KERAS_BAR = re.compile(r"Epoch \d+/|\d(ms|us|µs)/step|━")   # Keras' bar, not tqdm's


def test_one_line_per_epoch_and_no_keras_progress_bar(plain_run):
    out, err = plain_run["stdout"], plain_run["stderr"]
    num_epoch = ncf_lastfm.NUM_EPOCH
    epochs = [line for line in out.splitlines() if line.lstrip().lower().startswith("epoch")]
    assert len(epochs) == num_epoch, epochs
    for k, line in enumerate(epochs, 1):
        assert line.startswith(f"epoch {k}/{num_epoch}:"), line
    assert re.search(r"about \d.* left$", epochs[0]), epochs[0]
    for text in (out, err):
        assert "Epoch 1/" not in text and "/step" not in text


def read_terminal(argv, cwd, timeout=900):
    """Runs the script with a pseudo-terminal as stdout and stderr -> (exit code, text)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "ncf_lastfm.py", *argv], cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    chunks, deadline = [], time.time() + timeout
    try:
        while time.time() < deadline:
            if not select.select([controller], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:          # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
        if process.poll() is None and time.time() >= deadline:
            process.kill()
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def terminal_run(tmp_path_factory):
    import backend
    import kernels
    backend.import_quietly()
    kernels.fused_kernel()       # the kernel library is built (if it can be) before the run
    base = tmp_path_factory.mktemp("terminal")
    folder = write_csvs(base / "csv", *planted_frames())
    return read_terminal([f"--data_dir={folder}", "--num_epoch=2",
                          f"--output_dir={base / 'out'}"], ROOT)


@pytest.mark.slow
def test_on_a_terminal_one_line_per_epoch_and_no_keras_bar(terminal_run):
    code, text = terminal_run
    assert code == 0, text
    lines = [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]
    epochs = [line for line in lines if EPOCH_LINE.match(line)]
    assert [EPOCH_LINE.match(line).groups() for line in epochs] == [("1", "2"), ("2", "2")]
    assert re.search(r"about \d.* left", epochs[0]), epochs[0]
    assert not [line for line in lines if line.lower().startswith("epoch") and
                line not in epochs]
    assert not KERAS_BAR.search(text), KERAS_BAR.search(text)


@pytest.mark.slow
def test_a_second_process_does_not_compile_the_kernels_again(terminal_run):
    """The kernels were built (or their build tried) in this process first: the 'first run
    only' line must not come back in the next one."""
    code, text = terminal_run
    assert code == 0, text
    assert "compiling the kernels" not in text, text
