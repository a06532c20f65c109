"""The script end to end: settings, one-line errors, outputs, learning, resume, load."""
import contextlib
import errors
import dataclasses
import errno
import importlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pandas as pd
import pytest

import data
import files
import kernels
import models
import ncf_lastfm
import settings
from conftest import write_csvs
from split import leave_one_out, write_ncf_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(capsys, *argv):
    code = ncf_lastfm.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def parse(*argv):
    return settings.parse(list(argv), ncf_lastfm.DEFAULTS, ncf_lastfm.MODEL_DEFAULTS,
                          ncf_lastfm.Settings)


def listed(folder):
    """The names in `folder` but the run's lock file (.lock)."""
    return sorted(name for name in os.listdir(folder) if name != ".lock")


def metrics_of(folder):
    with open(os.path.join(folder, "metrics.json"), encoding="utf-8") as stream:
        return json.load(stream)


BAD_SETTINGS = [   # (argv, a part of the one-line message)
    (["--num_epochs=3"], "unknown setting --num_epochs; did you mean --num_epoch? (--help lists "
                         "every setting)"),
    (["--num_epoch=three"], "--num_epoch='three' is text; expected an integer like --num_epoch=10"),
    (["--learning_rate=fast"], "--learning_rate='fast' is text; expected a number like "
                               "--learning_rate=0.001"),
    (["--learning_rate=nan"], "--learning_rate='nan' is not a finite number"),
    (["--compare", "--model=gmf"], "--compare trains every model (pop, bpr, gmf, mlp, neumf); "
                                   "drop --model=gmf"),
    (["--patience=5"], "--patience counts epochs without a better validation hit ratio; "
                       "--model=mlp trains without validation unless --validation is given"),
    (["--model=gmf", "--hidden_units=(8,4)"], "--hidden_units sizes the MLP of mlp and neumf; "
                                              "--model=gmf has none (drop it)"),
    (["--model=pop", "--num_epoch=5", "--resume"], "--model=pop ranks artists by their training "
                                                   "listeners and trains nothing; drop "
                                                   "--num_epoch, --resume"),
    (["--model=pop", "--validation", "--patience=2"], "--model=pop ranks artists by their "
     "training listeners and trains nothing; drop --validation, --patience"),
    (["--model=bpr", "--neg_ratio=4"], "--model=bpr trains on (user, played, unplayed) triples, "
                                       "one negative a play in a row of its own; drop --neg_ratio"),
    (["--model=bpr", "--rows=pair"], "--model=bpr trains on (user, played, unplayed) triples"),
    (["--split="], "--split= is empty; give it a value or leave it out"),
    (["--data_dir= "], "--data_dir= is empty; give it a value or leave it out"),
    (["--neg_ratio=0"], "--neg_ratio=0 is out of range"),
    (["--batch_size=0"], "--batch_size=0 is out of range"),
    (["--top_k=200"], "--top_k=200 is out of range; expected an integer from 1 to "
                      "NUM_EVAL_NEGATIVES=99"),
    (["--dataset=imdb"], "--dataset='imdb' is out of range; expected one of lastfm, "),
    (["--model=svd"], "--model='svd' is out of range"),
    (["epochs"], "unexpected argument 'epochs'"),
    (["--recommend_user=,"], "--recommend_user=',' must be user ids like 0 or 0,12,300"),
    (["--dataset=sample", "--recommend_user=abc"], "--recommend_user: user id 'abc' is not in "
                                                   "the data (ids run from 0 to 1999)"),
    (["--model=bpr", "--user_input=history"], "--user_input=history is for gmf, mlp and neumf"),
    (["--model=gmf", "--pretrain"], "--pretrain is for --model=neumf"),
    (["--user_input=items"], "--user_input='items' is out of range; expected one of id, history"),
    (["--data_dir=/nowhere/at/all"], "--data_dir '/nowhere/at/all' is not a folder"),
    (["--dataset=sample", "--similar_to=artsit 00042"],
     "--similar_to: no artist named 'artsit 00042' in the data; did you mean: artist 00042"),
    (["--dataset=sample", "--recommend_user=0,2000"], "user id '2000' is not in the data"),
    (["--num_epoch"], "--num_epoch needs a value, like --num_epoch=10"),
    (["--export_split"], "--export_split needs a value"),
    (["--l2=1e999"], "--l2='1e999' is not a finite number"),
    (["--learning_rate=1e999"], "--learning_rate='1e999' is not a finite number"),
    (["--seed=-1"], "--seed=-1 is out of range; expected an integer from 0 to 2**32 - 1"),
    (["--output_dir="], "--output_dir='' is out of range; expected a folder name"),
    (["--dataset=sample", "--data_dir=/tmp"], "--data_dir is read by --dataset=lastfm"),
    (["--split=/tmp/x", "--num_eval_negatives=50", "--dataset=sample"],
     "--split reads the data and each test user's candidates from its files; drop --dataset, "
     "--num_eval_negatives"),
    (["--model=pop", "--similar_to=x"], "--similar_to need one model with embeddings; "
     "--model=pop has none"),
    (["--compare", "--recommend_user=0"], "--compare trains 5 models"),
    (["--load=x.keras", "--compare"], "--load scores one saved model"),
    (["--dataset=sample", "--scale=0.5"], "--scale sizes --dataset=synthetic only"),
    (["--data_dir=/tmp", "--root_url=https://example.org/"], "--root_url is where"),
    (["--hidden_units=(True,)"], "--hidden_units=(True,) is out of range"),
    (["--dataset=sample", "--export_split=/tmp/x/"], "--export_split=/tmp/x/ ends with a folder; "
     "it is a prefix of three files"),                           # was a "No such file" error
    (["--split=/tmp/x/"], "--split=/tmp/x/ ends with a folder"),
    (["--num_factor=10000000000000000000"],                      # these four were tracebacks
     "--num_factor=10000000000000000000 is out of range; expected an integer from 1 to 2**31 - 1"),
    (["--neg_ratio=10000000000000000000"], "--neg_ratio=10000000000000000000 is out of range"),
    (["--batch_size=10000000000000000000"], "--batch_size=10000000000000000000 is out of range"),
    (["--hidden_units=(10000000000000000000,)"], "--hidden_units=(10000000000000000000,) is out "
     "of range; expected a tuple of 1 to 100 positive integers below 2**31"),
    (["--load=nowhere/mlp.keras"], "--load=nowhere/mlp.keras: file not found; give a .keras "
                                   "file a run saved"),
]


@pytest.mark.parametrize("argv, message", BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_settings_exit_2_with_one_line(capsys, tmp_path, argv, message):
    if not any(a.startswith("--output_dir") for a in argv):
        argv = argv + [f"--output_dir={tmp_path}"]      # nothing written beside the tests
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_an_unknown_kernel_choice_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("NCF_LASTFM_KERNEL", "native")
    code, out, err = run_main(capsys, "--dataset=sample")
    assert code == 2
    assert err == ("error: NCF_LASTFM_KERNEL='native' is not a kernel choice; expected 1 (built "
                   "for this CPU, the default), portable or 0 (TensorFlow ops only)\n")


def test_settings_are_typed():
    s = parse("--num_epoch=3", "--learning_rate=1", "--hidden_units=(64,32)", "--validation",
              "--dataset", "sample")
    assert isinstance(s, ncf_lastfm.Settings)
    assert s.num_epoch == 3 and s.learning_rate == 1.0 and type(s.learning_rate) is float
    assert s.hidden_units == (64, 32) and s.validation is True and s.dataset == "sample"
    assert s.given == {"num_epoch", "learning_rate", "hidden_units", "validation", "dataset"}
    assert s.applied == () and s.num_factor == ncf_lastfm.NUM_FACTOR   # mlp: the file's values
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.num_epoch = 4


def test_model_defaults_apply_per_model_unless_given():
    s = parse("--model=neumf", "--l2=0.5")
    assert s.l2 == 0.5
    assert s.num_factor == ncf_lastfm.MODEL_DEFAULTS["neumf"]["NUM_FACTOR"]
    assert "num_factor" in s.applied and "l2" not in s.applied
    notebook = settings.for_model(s, "mlp")
    assert notebook.model == "mlp" and notebook.applied == ()
    assert notebook.num_factor == 32 and notebook.neg_ratio == 4 and notebook.l2 == 0.5
    inputs = {name: settings.for_model(s, name).user_input
              for name in ("mlp", "gmf", "neumf", "bpr")}
    assert inputs == {"mlp": "id", "gmf": "history", "neumf": "history", "bpr": "id"}
    plain = parse()
    assert plain.num_epoch == 10 and plain.validation is False  # the notebook's run
    assert plain.given == frozenset() and plain.applied == ()


def test_num_eval_negatives_beyond_unplayed_artists_is_one_line(capsys, tmp_path):
    folder = tmp_path / "csv"
    write_csvs(folder, *data.make_planted(20, 30, 200, seed=0))
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--num_eval_negatives=50",
                              "--top_k=10", f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and "NUM_EVAL_NEGATIVES=50 is larger than" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on planted data, reused: 8 epochs, recommendations and similar artists."""
    base = tmp_path_factory.mktemp("run")
    frames = data.make_planted(400, 2_000, 12_000, seed=3)
    folder = write_csvs(base / "csv", *frames)
    output = base / "out"
    popular = int(frames[0].artist_id.value_counts().index[0])  # well trained: many plays
    argv = [f"--data_dir={folder}", "--num_epoch=8", "--batch_size=256", f"--output_dir={output}",
            "--quiet", "--recommend_user=0,7", f"--similar_to=artist {popular:05d}"]
    out, err = io.StringIO(), io.StringIO()     # in this process: `python ncf_lastfm.py` is
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):   # run as a process
        code = ncf_lastfm.main(argv)            # by the Ctrl-C test and the one without g++
    assert code == 0, err.getvalue()
    return {"folder": folder, "output": output, "run": output / "mlp", "stdout": out.getvalue(),
            "argv": argv, "popular": popular}


def test_end_to_end_prints_the_notebooks_last_lines_and_writes_metrics(trained):
    lines = trained["stdout"].strip().splitlines()
    assert lines[-2].startswith("hit ratio : 0.") and len(lines[-2]) == len("hit ratio : 0.000")
    assert lines[-1].startswith("ndcg : 0.")
    metrics = metrics_of(trained["run"])
    for key in ("hit_ratio", "ndcg", "popularity_hit_ratio", "popularity_ndcg", "num_test_users",
                "num_epoch", "train_seconds", "eval_seconds", "settings"):
        assert key in metrics
    assert f"{metrics['hit_ratio']:.3f}" == lines[-2].split(" : ")[1]
    assert metrics["num_epoch"] == 8 and metrics["num_test_users"] == 400
    assert metrics["settings"]["num_epoch"] == 8 and metrics["settings"]["model"] == "mlp"
    assert metrics["saved_model"] == str(trained["run"] / "mlp.keras")


def test_a_run_writes_everything_into_the_folder_of_its_model(trained):
    assert listed(trained["output"]) == ["mlp"]
    assert listed(trained["run"]) == sorted([
        "metrics.json", "mlp.keras", "checkpoint-mlp.keras", "training_curves.png",
        "hit_ratio_at_k.png", "recommendations.csv", "similar_artists.csv", "environment.json"])


def test_environment_json_names_the_cpu_and_the_versions_the_figures_came_from(trained):
    import importlib
    import backend
    with open(trained["run"] / "environment.json") as stream:
        environment = json.load(stream)
    name = environment["backend"]
    assert name == backend.name() and environment[name] == importlib.import_module(name).__version__
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["onednn"] in (True, False, None) and environment["cpu"]
    if backend.is_jax():     # the kernels are TensorFlow ops: never built or loaded on JAX
        assert environment["compiled_kernels"] is False and environment["kernel_build"] is None
        return
    assert environment["compiled_kernels"] == (kernels.fused_kernel() is not None)
    assert environment["kernel_build"] == kernels.kernel_build()
    assert environment["kernel_build"] in ((None,) if kernels.fused_kernel() is None
                                           else ("native", *kernels.cpu_levels(), "portable"))


def test_cpu_name_reads_the_first_processor_with_its_numbers_and_vector_extensions(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
                       "model\t\t: 17\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 "
                       "avx512f\n\nprocessor\t: 1\nmodel name\t: Other\n")
    assert kernels.cpu_name(str(cpuinfo)) == "AMD EPYC (cpu family 25, model 17; avx avx2 avx512f)"
    assert kernels.cpu_name(str(tmp_path / "missing"))   # not Linux: what platform knows
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\n")  # ARM
    assert "(" not in kernels.cpu_name(str(cpuinfo)) and kernels.cpu_name(str(cpuinfo))


def test_learning_beats_popularity_on_planted_data(trained):
    metrics = metrics_of(trained["run"])
    assert metrics["hit_ratio"] > metrics["popularity_hit_ratio"] + 0.1
    assert metrics["ndcg"] > metrics["popularity_ndcg"] + 0.05


def test_plots_are_valid_images(trained):
    import matplotlib.image
    for name in ("training_curves.png", "hit_ratio_at_k.png"):
        path = trained["run"] / name
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01


def test_recommendations_are_unplayed_and_sorted(trained):
    frame = pd.read_csv(trained["run"] / "recommendations.csv")
    assert list(frame.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
    assert sorted(set(frame.user_id)) == [0, 7]
    plays = data.load_folder(trained["folder"], use_cache=False)
    played = set(zip(plays.user_ids, plays.artist_ids))
    for user, rows in frame.groupby("user_id"):
        assert len(rows) == 10 and list(rows["rank"]) == list(range(1, 11))
        assert (np.diff(rows["score"].to_numpy()) <= 0).all()
        assert not any((user, a) in played for a in rows["artist_id"])
        assert all(name == f"artist {a:05d}" for a, name in zip(rows["artist_id"], rows["artist_name"]))
    assert "top 10 recommendations for user 7:" in trained["stdout"]


def test_similar_artists_come_from_the_planted_group(tmp_path, capsys):
    # GMF's item vectors meet in a dot product during training, so cosine similarity on them is
    # meaningful; the MLP's are not (README, "Similar artists"). The very most played artists
    # are played by every group, so the check uses artists ranked 13th to 20th by listeners.
    # Half the sample's size: 4 epochs reach about 5.6 of 10 here, 8 about 9.9; untrained, 0.5.
    import report
    frames = data.make_planted(1_000, 2_000, 40_000, 42)
    folder = write_csvs(tmp_path / "csv", *frames)
    plays = data.frames_to_plays(*frames)
    ranked = np.argsort(-np.bincount(plays.artist_ids), kind="stable")[12:20]
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--model=gmf", "--quiet",
                              "--num_factor=32", "--neg_ratio=4", "--l2=0.0", "--num_epoch=8",
                              "--learning_rate=0.001", "--validation=False",
                              f"--output_dir={tmp_path}", f"--similar_to=artist {ranked[0]:05d}")
    assert code == 0, err
    assert f"artists most similar to artist {ranked[0]:05d}" in out
    model = models.load(str(tmp_path / "gmf" / "gmf.keras"))
    _, artist_group = data.planted_groups(1_000, 2_000, seed=42)
    same = [sum(artist_group[a] == artist_group[artist]
                for a, _, _ in report.similar_artists(model, plays, f"artist {artist:05d}"))
            for artist in ranked]
    assert np.mean(same) >= 5   # chance level: 1 in 20 groups, 0.5 of 10


def test_load_reproduces_the_saved_metrics_beside_not_over_the_run(trained, capsys):
    """No data setting given: they come from the metrics.json beside the model; the scores
    go to OUTPUT_DIR/mlp-loaded, and the trained run's folder is left as it was."""
    before = {name: (trained["run"] / name).read_bytes()
              for name in ("metrics.json", "mlp.keras")}
    code, out, err = run_main(capsys, f"--load={trained['run'] / 'mlp.keras'}", "--quiet",
                              f"--output_dir={trained['output']}")
    try:
        assert code == 0, err
        again = metrics_of(trained["output"] / "mlp-loaded")
    finally:
        shutil.rmtree(trained["output"] / "mlp-loaded", ignore_errors=True)
    saved = metrics_of(trained["run"])
    assert again["hit_ratio"] == saved["hit_ratio"] and again["ndcg"] == saved["ndcg"]
    assert again["num_epoch"] == 0
    assert again["settings"]["data_dir"] == trained["folder"]     # from the metrics.json
    assert {name: (trained["run"] / name).read_bytes() for name in before} == before


def test_load_scores_without_training_unless_asked_and_names_a_model_mismatch(trained, capsys,
                                                                              tmp_path):
    saved = metrics_of(trained["run"])
    data_args = [f"--data_dir={trained['folder']}", "--quiet",
                 f"--load={trained['run'] / 'mlp.keras'}"]
    assert ncf_lastfm.main(data_args + [f"--output_dir={tmp_path / 'a'}"]) == 0
    assert listed(tmp_path / "a") == ["mlp-loaded"]
    again = metrics_of(tmp_path / "a" / "mlp-loaded")
    assert again["num_epoch"] == 0 and again["hit_ratio"] == saved["hit_ratio"]
    assert not (tmp_path / "a" / "mlp-loaded" / "mlp.keras").exists()   # nothing new to save
    capsys.readouterr()
    code, out, err = run_main(capsys, *data_args, "--model=gmf", f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and "holds a mlp model, not --model=gmf" in err and err.count("\n") == 1


def test_load_from_the_folder_the_run_would_write_is_refused(trained, capsys, tmp_path):
    inside = tmp_path / "mlp-loaded"
    inside.mkdir()
    shutil.copy(trained["run"] / "mlp.keras", inside / "mlp.keras")
    code, out, err = run_main(capsys, f"--load={inside / 'mlp.keras'}", "--quiet",
                              f"--data_dir={trained['folder']}", f"--output_dir={tmp_path}")
    assert code == 2 and err.count("\n") == 1
    assert err == (f"error: --load={inside / 'mlp.keras'} is in {inside}, where this run would "
                   "write; choose another --output_dir\n")
    assert os.listdir(inside) == ["mlp.keras"]


def test_load_on_other_data_settings_than_its_metrics_json_is_one_line(trained, capsys,
                                                                       tmp_path):
    code, out, err = run_main(capsys, f"--data_dir={trained['folder']}", "--seed=1", "--quiet",
                              f"--load={trained['run'] / 'mlp.keras'}",
                              f"--output_dir={tmp_path}")
    assert code == 2 and "was trained with --seed=42" in err and err.count("\n") == 1


def test_load_of_a_model_for_other_data_is_one_line(trained, capsys, tmp_path):
    alone = tmp_path / "alone"            # no metrics.json beside it: the sizes are checked
    alone.mkdir()
    (alone / "mlp.keras").write_bytes((trained["run"] / "mlp.keras").read_bytes())
    code, out, err = run_main(capsys, "--dataset=sample", "--num_epoch=0", "--quiet",
                              f"--load={alone / 'mlp.keras'}", f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and "the model has 400 users" in err and err.count("\n") == 1


def test_load_of_a_model_trained_on_a_split_is_scored_on_that_split_only(tmp_path, capsys):
    frames = data.make_planted(60, 200, 1_500, seed=2)
    folder = write_csvs(tmp_path / "csv", *frames)
    prefix = str(tmp_path / "sp")
    write_ncf_split(leave_one_out(data.frames_to_plays(*frames), 20, seed=0), prefix)
    assert ncf_lastfm.main([f"--split={prefix}", "--num_epoch=1", "--quiet", "--top_k=5",
                            f"--output_dir={tmp_path / 'a'}"]) == 0
    model = f"--load={tmp_path / 'a' / 'mlp' / 'mlp.keras'}"
    assert ncf_lastfm.main([f"--split={prefix}", model, "--quiet", "--top_k=5",
                            f"--output_dir={tmp_path / 'b'}"]) == 0         # the same split
    capsys.readouterr()
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--seed=1", model, "--quiet",
                              f"--output_dir={tmp_path / 'c'}")        # was scored, silently
    assert code == 2 and f"was trained with --split={prefix}" in err and err.count("\n") == 1


def test_split_candidates_beyond_99_allow_a_top_k_beyond_99(tmp_path, capsys):
    plays = data.frames_to_plays(*data.make_planted(40, 400, 1_200, seed=2))
    prefix = str(tmp_path / "wide")
    write_ncf_split(leave_one_out(plays, 150, seed=1), prefix)
    assert ncf_lastfm.main([f"--split={prefix}", "--num_epoch=0", "--quiet", "--top_k=120",
                            f"--output_dir={tmp_path / 'o'}"]) == 0
    metrics = metrics_of(tmp_path / "o" / "mlp")
    assert metrics["settings"]["top_k"] == 120 and metrics["num_test_users"] == 40


@pytest.mark.parametrize("candidates", [150, 5])
def test_metrics_record_the_candidates_the_split_lists(tmp_path, capsys, candidates):
    plays = data.frames_to_plays(*data.make_planted(40, 400, 1_200, seed=2))
    prefix = str(tmp_path / "s")
    write_ncf_split(leave_one_out(plays, candidates, seed=1), prefix)
    assert ncf_lastfm.main([f"--split={prefix}", "--num_epoch=0", "--quiet", "--top_k=5",
                            f"--output_dir={tmp_path / 'o'}"]) == 0
    metrics = metrics_of(tmp_path / "o" / "mlp")
    assert metrics["settings"]["num_eval_negatives"] == candidates    # the file's, not 99


def test_resume_after_the_data_changed_size_is_one_line(planted_dir, tmp_path, capsys):
    argv = [f"--data_dir={planted_dir}", "--quiet", f"--output_dir={tmp_path}"]
    assert ncf_lastfm.main(argv + ["--num_epoch=1"]) == 0
    plays = pd.read_csv(os.path.join(planted_dir, data.PLAY_FILE))
    users = pd.read_csv(os.path.join(planted_dir, data.USER_FILE))
    newcomer = int(users.user_id.max()) + 1
    extra = plays.head(3).assign(user_id=newcomer)
    pd.concat([plays, extra]).to_csv(os.path.join(planted_dir, data.PLAY_FILE), index=False)
    pd.concat([users, users.tail(1).assign(user_id=newcomer)]).to_csv(
        os.path.join(planted_dir, data.USER_FILE), index=False)
    capsys.readouterr()
    code, out, err = run_main(capsys, *argv, "--num_epoch=2", "--resume")
    assert code == 2 and "the data changed since it was made" in err and err.count("\n") == 1


def test_resume_after_the_plays_changed_but_not_their_size_is_one_line(planted_dir, tmp_path,
                                                                       capsys):
    argv = [f"--data_dir={planted_dir}", "--quiet", f"--output_dir={tmp_path}"]
    assert ncf_lastfm.main(argv + ["--num_epoch=1"]) == 0
    path = os.path.join(planted_dir, data.PLAY_FILE)
    plays = pd.read_csv(path)
    first = plays.iloc[0]
    unplayed = sorted(set(range(400)) - set(plays.artist_id[plays.user_id == first.user_id]))
    plays.loc[0, "artist_id"] = unplayed[0]          # one play moves: same users, same artists
    plays.to_csv(path, index=False)
    capsys.readouterr()
    code, out, err = run_main(capsys, *argv, "--num_epoch=2", "--resume")
    assert code == 2 and err.count("\n") == 1
    assert "was trained on other plays or test artists than these (data digest " in err


# One run's checkpoint (3 epochs with validation), copied for each test that damages it
CHECKPOINTED = ["--quiet", "--validation", "--patience=5"]
STATE = "ncf_state.json"           # the checkpoint's state, inside its .keras zip


def state_of(checkpoint):
    return models.saved_record(str(checkpoint), STATE)


def rewrite_member(archive_path, name, payload):
    """The zip at `archive_path` with member `name` replaced by `payload` (bytes or text), or
    left out when `payload` is None; every other member as it was."""
    with zipfile.ZipFile(archive_path) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()
                   if info.filename != name]
    with zipfile.ZipFile(archive_path, "w") as archive:
        for info, data_ in members:
            archive.writestr(info, data_)
        if payload is not None:
            archive.writestr(name, payload)


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    base = tmp_path_factory.mktemp("checkpointed")
    folder = write_csvs(base / "csv", *data.make_planted(300, 400, 9_000, seed=3))
    assert ncf_lastfm.main([f"--data_dir={folder}", *CHECKPOINTED, "--num_epoch=3",
                            f"--output_dir={base / 'out'}"]) == 0
    return {"data_dir": folder, "run": base / "out" / "mlp"}


@pytest.fixture
def resume(checkpointed, tmp_path, capsys):
    """A copy of the checkpointed run in tmp_path/mlp, and a function that resumes it for a 4th
    epoch with more settings -> (exit code, stdout, stderr)."""
    shutil.copytree(checkpointed["run"], tmp_path / "mlp")
    capsys.readouterr()

    def run(*more):
        return run_main(capsys, f"--data_dir={checkpointed['data_dir']}", *CHECKPOINTED,
                        "--num_epoch=4", f"--output_dir={tmp_path}", "--resume", *more)
    return run


def test_a_checkpoint_is_one_file_with_its_state_and_the_best_epochs_weights(checkpointed):
    names = sorted(os.listdir(checkpointed["run"]))
    state = state_of(checkpointed["run"] / "checkpoint-mlp.keras")
    assert state["epoch"] == 3 and [r["epoch"] for r in state["history"]] == [1, 2, 3]
    assert state["data_digest"] == models.saved_data_digest(
        str(checkpointed["run"] / "checkpoint-mlp.keras"))
    assert state["fingerprint"]["model"] == "mlp" and "output_dir" not in state["fingerprint"]
    best = [name for name in names if name.startswith("best-")]
    assert best == [f"best-mlp-epoch{state['best']['epoch']}.weights.h5"]   # the older removed
    assert not [name for name in names if name.startswith(".tmp-")]


def test_resume_continues_the_checkpointed_run(resume, tmp_path):
    code, out, err = resume()
    assert code == 0, err
    history = metrics_of(tmp_path / "mlp")["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    assert state_of(tmp_path / "mlp" / "checkpoint-mlp.keras")["epoch"] == 4


def cut_short(path):
    path.write_bytes(path.read_bytes()[:1000])


DAMAGES = {   # what happened to the checkpoint: (damage, a part of the message)
    "state cut short": (lambda path: rewrite_member(path, STATE, json.dumps(state_of(path))[:40]),
                        f"checkpoint-mlp.keras, {STATE} is missing or lacks fingerprint"),
    "state without fields": (lambda path: rewrite_member(path, STATE, '{"epoch": 1}'),
                             f"checkpoint-mlp.keras, {STATE} is missing or lacks fingerprint"),
    "state removed": (lambda path: rewrite_member(path, STATE, None),
                      f"checkpoint-mlp.keras, {STATE} is missing"),
    "weights damaged": (lambda path: rewrite_member(path, "model.weights.h5", b"not weights"),
                        "checkpoint-mlp.keras: "),
    "file cut short": (cut_short, "checkpoint-mlp.keras"),
    "not a zip": (lambda path: path.write_bytes(b"not a zip file"), "checkpoint-mlp.keras"),
}


@pytest.mark.parametrize("damage, message", list(DAMAGES.values()), ids=list(DAMAGES))
def test_damaged_checkpoint_on_resume_is_one_line(resume, tmp_path, damage, message):
    damage(tmp_path / "mlp" / "checkpoint-mlp.keras")
    code, out, err = resume()
    assert code == 2 and "a checkpoint file is damaged" in err and message in err, err
    assert "file not found" not in err.lower()    # the file is there
    assert err.count("\n") == 1 and "Traceback" not in err


EDITS = {   # what a hand-edited state holds: (key, its value from the good state's)
    "best={}": ("best", lambda good: {}),
    "best=[]": ("best", lambda good: []),
    "best epoch '2'": ("best", lambda good: {**good["best"], "epoch": "2"}),
    "best epoch 9 of 3": ("best", lambda good: {**good["best"], "epoch": 9}),
    "epoch '3'": ("epoch", lambda good: "3"),
    "epoch 3.0": ("epoch", lambda good: 3.0),
    "epoch -2": ("epoch", lambda good: -2),
    "history 'x'": ("history", lambda good: "x"),
    "history of 1 epoch": ("history", lambda good: good["history"][:1]),
}


@pytest.mark.parametrize("key, edit", list(EDITS.values()), ids=list(EDITS))
def test_hand_edited_checkpoint_state_on_resume_is_one_line(resume, tmp_path, key, edit):
    checkpoint = tmp_path / "mlp" / "checkpoint-mlp.keras"   # each edit was a traceback, or ran on
    good = state_of(checkpoint)
    rewrite_member(checkpoint, STATE, json.dumps({**good, key: edit(good)}))
    code, out, err = resume()
    assert code == 2 and "a checkpoint file is damaged" in err, err
    assert f"'{key}'" in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_best_weights_on_resume_is_one_line(resume, tmp_path):
    best = state_of(tmp_path / "mlp" / "checkpoint-mlp.keras")["best"]["epoch"]
    (tmp_path / "mlp" / f"best-mlp-epoch{best}.weights.h5").unlink()   # was: "choose another
    code, out, err = resume()                                           # folder"
    assert code == 2
    assert f"best-mlp-epoch{best}.weights.h5, the best epoch's weights, is missing" in err
    assert "choose another folder" not in err and err.count("\n") == 1


def test_resume_with_other_settings_is_refused(resume, tmp_path):
    code, out, err = resume("--neg_ratio=2")
    assert code == 2 and "other settings (neg_ratio)" in err and err.count("\n") == 1
    checkpoint = tmp_path / "mlp" / "checkpoint-mlp.keras"   # a setting only the checkpoint has
    saved = state_of(checkpoint)
    rewrite_member(checkpoint, STATE, json.dumps(
        {**saved, "fingerprint": {**saved["fingerprint"], "extra": 1}}))
    code, out, err = resume()
    assert code == 2 and "other settings (extra)" in err     # was "other settings ()"


def test_resume_without_a_checkpoint_is_one_line(checkpointed, tmp_path, capsys):
    code, out, err = run_main(capsys, f"--data_dir={checkpointed['data_dir']}", *CHECKPOINTED,
                              "--num_epoch=4", f"--output_dir={tmp_path}", "--resume")
    assert code == 2 and err == (f"error: --resume: no checkpoint at "
                                 f"{tmp_path / 'mlp' / 'checkpoint-mlp.keras'}; run without "
                                 "--resume to start\n")


def test_split_with_fewer_candidates_than_top_k_is_one_line(tmp_path, capsys):
    plays = data.frames_to_plays(*data.make_planted(50, 80, 1_000, seed=1))
    prefix = str(tmp_path / "few")
    write_ncf_split(leave_one_out(plays, 5, seed=1), prefix)
    code, out, err = run_main(capsys, f"--split={prefix}", "--num_epoch=0", "--quiet",
                              f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and "--top_k=10 is larger than the 5 candidates" in err
    assert err.count("\n") == 1
    assert ncf_lastfm.main([f"--split={prefix}", "--num_epoch=0", "--quiet", "--top_k=5",
                            f"--output_dir={tmp_path / 'p'}"]) == 0
    assert metrics_of(tmp_path / "p" / "mlp")["settings"]["top_k"] == 5


def test_output_dir_that_cannot_be_written_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out, err = run_main(capsys, "--dataset=sample", "--quiet",
                              f"--output_dir={blocker}")
    assert code == 1 and str(blocker) in err and "choose another folder" in err
    assert "free space" not in err and "data:" not in out and err.count("\n") == 1


@pytest.mark.slow                     # three NeuMF runs with validation
def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(planted_dir, tmp_path, capsys):
    common = [f"--data_dir={planted_dir}", "--quiet", "--validation", "--model=neumf",
              "--num_factor=16"]
    assert ncf_lastfm.main(common + ["--num_epoch=2", f"--output_dir={tmp_path / 'a'}"]) == 0
    assert ncf_lastfm.main(common + ["--num_epoch=1", f"--output_dir={tmp_path / 'b'}"]) == 0
    assert ncf_lastfm.main(common + ["--num_epoch=2", f"--output_dir={tmp_path / 'b'}",
                                     "--resume"]) == 0
    whole = metrics_of(tmp_path / "a" / "neumf")
    resumed = metrics_of(tmp_path / "b" / "neumf")
    assert resumed["num_epoch"] == 2
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["hit_ratio"] == whole["hit_ratio"] and resumed["ndcg"] == whole["ndcg"]


def test_diverging_run_stops_naming_the_epoch_and_keeps_the_checkpoint(planted_dir, tmp_path, capsys):
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=4",
                              f"--output_dir={tmp_path}", "--learning_rate=1e38",
                              "--optimizer=adam")
    assert code == 1 and "training diverged in epoch" in err and "--learning_rate" in err
    assert err.count("\n") == 1
    kept = (tmp_path / "mlp" / "checkpoint-mlp.keras").exists()
    assert ("is kept" in err) == kept and ("there is no checkpoint" in err) == (not kept)
    if "diverged in epoch 1 " in err:
        assert not kept                     # nothing completed: no checkpoint to speak of


def test_full_disk_is_one_line_and_no_half_written_metrics(planted_dir, tmp_path, capsys,
                                                           monkeypatch):

    def no_space(path, payload):
        with open(path, "w") as stream:
            stream.write('{"hit_ratio": ')
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(files, "write_json", no_space)
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=1",
                              f"--output_dir={tmp_path}")
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: no space left on the device of {tmp_path / 'mlp'}")
    assert err.endswith("; free space or choose another folder\n")
    assert not [n for n in os.listdir(tmp_path / "mlp") if n.endswith(".json")]
    assert not [n for n in os.listdir(tmp_path / "mlp") if n.startswith(".tmp-")]


@pytest.mark.slow                     # a run in a new process, stopped by SIGINT, then resumed
@pytest.mark.parametrize("sent, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_stop_keeps_the_last_checkpoint_and_says_how_to_resume(planted_dir, tmp_path, capsys,
                                                                 sent, code):
    argv = [sys.executable, "ncf_lastfm.py", f"--data_dir={planted_dir}", "--num_epoch=200",
            f"--output_dir={tmp_path}", "--quiet"]
    # A shell's background job starts with SIGINT ignored, and Python then keeps it ignored:
    # restore the default in the child so the test means the same wherever it runs.
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    checkpoint = tmp_path / "mlp" / "checkpoint-mlp.keras"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(sent)
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert "--resume" in err and "Traceback" not in err
    assert f"checkpoint is in {tmp_path / 'mlp'}/" in err
    epoch = state_of(checkpoint)["epoch"]
    assert epoch >= 1
    capsys.readouterr()
    code, out, err = run_main(capsys, *argv[2:3], f"--num_epoch={epoch + 1}",
                              f"--output_dir={tmp_path}", "--quiet", "--resume")
    assert code == 0, err
    assert metrics_of(tmp_path / "mlp")["num_epoch"] == epoch + 1


@pytest.mark.slow                     # five NeuMF runs: train, score, train on, refuse, train on
def test_history_neumf_round_trips_through_the_paper_format(planted_dir, tmp_path, capsys):
    """Exported split, saved history model, read back and loaded: the same test metrics."""
    common = ["--quiet", "--model=neumf", "--user_input=history", "--num_factor=16",
              "--num_epoch=1"]
    saved_model = tmp_path / "a" / "neumf" / "neumf.keras"
    assert ncf_lastfm.main(common + [f"--data_dir={planted_dir}", f"--output_dir={tmp_path / 'a'}",
                                     f"--export_split={tmp_path / 'split'}"]) == 0
    assert ncf_lastfm.main(common + [f"--split={tmp_path / 'split'}", "--num_epoch=0",
                                     f"--load={saved_model}",
                                     f"--output_dir={tmp_path / 'b'}"]) == 0
    first = metrics_of(tmp_path / "a" / "neumf")
    again = metrics_of(tmp_path / "b" / "neumf-loaded")
    assert first["settings"]["user_input"] == "history"
    assert again["hit_ratio"] == first["hit_ratio"] and again["ndcg"] == first["ndcg"]
    # Trained on, without --model: with the loaded NeuMF's defaults, not the MLP's
    assert ncf_lastfm.main(["--quiet", f"--split={tmp_path / 'split'}", "--num_epoch=1",
                            f"--load={saved_model}", f"--output_dir={tmp_path / 'c'}"]) == 0
    trained_on = metrics_of(tmp_path / "c" / "neumf-loaded")["settings"]
    defaults = ncf_lastfm.MODEL_DEFAULTS["neumf"]
    assert trained_on["model"] == "neumf" and trained_on["num_epoch"] == 1
    for key in ("NEG_RATIO", "LEARNING_RATE", "VALIDATION", "USER_INPUT"):
        assert trained_on[key.lower()] == defaults[key], key
    assert (tmp_path / "c" / "neumf-loaded" / "neumf.keras").exists()
    # What the model holds in itself is recorded as it is, not NeuMF's default of 128
    assert trained_on["num_factor"] == 16 and defaults["NUM_FACTOR"] == 128
    assert again["settings"]["num_factor"] == 16 and again["settings"]["l2"] == defaults["L2"]
    code, _, err = run_main(capsys, "--quiet", f"--split={tmp_path / 'split'}",
                            f"--load={saved_model}", "--num_factor=64",
                            f"--output_dir={tmp_path / 'd'}")
    assert code == 2 and "holds a model with --num_factor=16, which --num_factor=64" in err
    assert ncf_lastfm.main(["--quiet", f"--split={tmp_path / 'split'}", "--num_epoch=1",
                            "--learning_rate=0.0002", f"--load={saved_model}",
                            f"--output_dir={tmp_path / 'e'}"]) == 0
    saved = models.load(str(tmp_path / "e" / "neumf-loaded" / "neumf.keras"))
    assert models.settings_of(saved)["LEARNING_RATE"] == 0.0002   # trained on with it


def test_pretrain_with_sgd_trains_the_towers_with_adam_and_fine_tunes_with_sgd(capsys,
                                                                              monkeypatch,
                                                                              planted_dir,
                                                                              tmp_path):
    made, make = [], models.make_optimizer
    monkeypatch.setattr(models, "make_optimizer",
                        lambda kind, rate: made.append(kind) or make(kind, rate))
    code, out, _ = run_main(capsys, f"--data_dir={planted_dir}", "--model=neumf", "--pretrain",
                            "--optimizer=sgd", "--num_epoch=1", "--num_factor=8", "--quiet",
                            f"--output_dir={tmp_path / 'out'}")
    assert code == 0 and "hit ratio : " in out
    assert made == ["lazy_adam", "lazy_adam", "sgd"]                 # gmf, mlp, then neumf
    for tower in ("gmf", "mlp"):                  # inside NeuMF's folder, not a run of their own
        assert (tmp_path / "out" / "neumf" / f"pretrain-{tower}" /
                f"checkpoint-{tower}.keras").exists()
    assert listed(tmp_path / "out") == ["neumf"]


def test_similar_to_names_that_differ_only_in_case_need_the_exact_spelling():
    import report

    class Plays:
        artist_names = np.array(["Michel Teló", "MICHEL TELÓ", "Jason Mraz"], dtype=object)
        artist_known = None                                   # no gaps in the ids
    assert report.find_artist(Plays, "MICHEL TELÓ") == 1
    assert report.find_artist(Plays, "Michel Teló") == 0
    assert report.find_artist(Plays, "jason mraz") == 2
    with pytest.raises(errors.InputError, match="2 artists are named 'michel teló' apart from case"):
        report.find_artist(Plays, "michel teló")


def test_out_of_memory_is_one_line(capsys, tmp_path):
    code, out, err = run_main(capsys, "--dataset=sample", "--num_factor=2000000000",
                              "--num_epoch=0", "--quiet", f"--output_dir={tmp_path}")
    assert code == 1 and err.startswith("error: out of memory")
    assert "; lower --num_factor, --hidden_units, --neg_ratio or --batch_size" in err
    assert err.count("\n") == 1


def test_gaps_in_the_artist_ids_are_never_recommended_similar_or_named(capsys, tmp_path):
    play, artist, user = data.make_planted(80, 120, 1_500, seed=2)
    folder = write_csvs(tmp_path / "csv", play.assign(artist_id=play.artist_id * 2),
                        artist.assign(artist_id=artist.artist_id * 2), user)   # odd ids: gaps
    common = [f"--data_dir={folder}", "--model=gmf", "--num_epoch=1", "--num_factor=8",
              "--quiet"]
    code, out, err = run_main(capsys, *common, "--recommend_user=0,1", "--top_k=60",
                              "--similar_to=artist 00003", f"--output_dir={tmp_path / 'a'}")
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "a" / "gmf" / "recommendations.csv")   # 60 of the ~100 unplayed
    assert len(frame) == 120 and (frame.artist_id % 2 == 0).all()
    assert frame.artist_name.str.fullmatch(r"artist \d{5}").all()   # a gap is "artist 7"
    similar = out[out.index("artists most similar to"):].splitlines()[1:11]
    assert all(re.fullmatch(r" *\d+\. artist \d{5} \(-?[\d.]+\)", line) for line in similar)
    assert "data: 80 users, 120 artists (ids up to 238; 119 gaps)" in out
    code, out, err = run_main(capsys, *common, "--similar_to=artist 7",
                              f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and err.startswith("error: --similar_to: no artist named 'artist 7'")


def test_load_of_an_uncompiled_or_foreign_model_is_scored_or_refused_in_one_line(
        planted_dir, capsys, tmp_path):
    import keras
    built = models.build_model("mlp", 300, 400, 8)
    keras.Model(built.inputs, built.outputs, name="mlp").save(tmp_path / "bare.keras")
    keras.Model(built.inputs, built.outputs, name="notebook_mlp").save(tmp_path / "other.keras")
    common = [f"--data_dir={planted_dir}", "--quiet"]
    code, out, err = run_main(capsys, *common, f"--load={tmp_path / 'bare.keras'}",
                              f"--output_dir={tmp_path / 'a'}")
    assert code == 0 and "hit ratio : " in out, err
    code, _, err = run_main(capsys, *common, f"--load={tmp_path / 'bare.keras'}",
                            "--num_epoch=1", f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and "saved without an optimizer this script makes" in err
    assert err.count("\n") == 1
    code, _, err = run_main(capsys, *common, f"--load={tmp_path / 'other.keras'}",
                            f"--output_dir={tmp_path / 'c'}")
    assert code == 2 and "holds a model named 'notebook_mlp'" in err and err.count("\n") == 1


def test_similar_to_lists_only_real_artists_when_fewer_than_ten(capsys, tmp_path):
    play = pd.DataFrame({"user_id": [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5],
                         "artist_id": [0, 2, 4, 2, 6, 0, 8, 4, 10, 6, 8, 10],
                         "plays": 1})
    artist = pd.DataFrame({"artist_id": range(0, 12, 2), "artist_name": [f"band {i}"
                                                                         for i in range(6)]})
    user = pd.DataFrame({"user_id": range(6), "gender": "", "age": -1, "country": ""})
    folder = write_csvs(tmp_path / "csv", play, artist, user)           # odd ids: gaps
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--model=gmf", "--num_epoch=1",
                              "--num_factor=4", "--num_eval_negatives=2", "--top_k=1", "--quiet",
                              "--similar_to=band 0", f"--output_dir={tmp_path / 'o'}")
    assert code == 0, err
    lines = out[out.index("artists most similar to"):].splitlines()[1:]
    shown = [line for line in lines if re.match(r" *\d+\. ", line)]
    assert len(shown) == 5 and all(re.fullmatch(r" *\d+\. band [1-5] \(-?[\d.]+\)", line)
                                   for line in shown), shown
    assert len(pd.read_csv(tmp_path / "o" / "gmf" / "similar_artists.csv")) == 5


def bench_script(name):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    return importlib.import_module(name)


BENCH_RUNS = [("step_time", lambda prefix: ["--scale=0.005"]),
              ("speed", lambda prefix: ["--scale=0.01"]),
              ("paired", lambda prefix: [f"--split={prefix}", f"--load={prefix}.keras"])]
KERNEL_REFUSAL = ("error: NCF_LASTFM_KERNEL='fast' is not a kernel choice; expected 1 (built for "
                  "this CPU, the default), portable or 0 (TensorFlow ops only)")


@pytest.mark.parametrize("name, argv", BENCH_RUNS, ids=[name for name, _ in BENCH_RUNS])
def test_bench_scripts_refuse_an_unknown_kernel_choice_before_building_a_model(
        monkeypatch, tmp_path, name, argv):
    main = bench_script(name).main
    monkeypatch.setenv("NCF_LASTFM_KERNEL", "fast")
    with pytest.raises(SystemExit) as stopped:
        main(argv(str(tmp_path / "missing")))
    assert str(stopped.value) == KERNEL_REFUSAL


@pytest.mark.parametrize("name, argv", BENCH_RUNS[:2], ids=[name for name, _ in BENCH_RUNS[:2]])
def test_bench_scripts_refuse_another_keras_backend(monkeypatch, tmp_path, name, argv):
    main = bench_script(name).main
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(SystemExit, match="error: KERAS_BACKEND='torch': this script runs on "):
        main(argv(str(tmp_path / "missing")))


def test_a_bench_script_refuses_another_keras_backend_in_one_line_before_keras_starts():
    process = subprocess.run([sys.executable, "bench/step_time.py", "--scale=0.005"],
                             capture_output=True, text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, "KERAS_BACKEND": "jax"})
    assert process.returncode == 1 and process.stderr == (
        "error: KERAS_BACKEND='jax': this script runs on Keras' TensorFlow backend; set "
        "KERAS_BACKEND=tensorflow\n")


def test_split_line_counts_test_users_without_training_pairs(tmp_path, capsys):
    plays = data.frames_to_plays(*data.make_planted(40, 60, 600, seed=2))
    prefix = str(tmp_path / "s")
    write_ncf_split(leave_one_out(plays, 20, seed=1), prefix)
    train = open(prefix + ".train.rating").read().splitlines()
    gone = {line.split("\t")[0] for line in open(prefix + ".test.rating").read().splitlines()[:3]}
    with open(prefix + ".train.rating", "w") as stream:
        stream.write("\n".join(l for l in train if l.split("\t")[0] not in gone) + "\n")
    code, out, err = run_main(capsys, f"--split={prefix}", "--num_epoch=0",
                              f"--output_dir={tmp_path / 'o'}")
    assert code == 0
    assert "; 3 test users have no training pair (the model knows nothing they played)" in out


def test_export_over_the_split_read_is_refused(tmp_path, capsys):
    prefix = str(tmp_path / "s")
    code, out, err = run_main(capsys, f"--split={prefix}", f"--export_split={tmp_path}/./s")
    assert code == 2 and err.startswith(f"error: --export_split={tmp_path}/./s would overwrite "
                                        "the --split files it reads") and err.count("\n") == 1


def test_another_keras_backend_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    code, out, err = run_main(capsys, "--dataset=sample")
    assert code == 2 and err == ("error: KERAS_BACKEND='torch': this script runs on Keras' "
                                 "TensorFlow or JAX backend; set KERAS_BACKEND=tensorflow or "
                                 "KERAS_BACKEND=jax\n")


def test_load_of_a_model_apart_from_its_metrics_is_checked_by_the_data_it_holds(
        trained, tmp_path, capsys):
    lone = tmp_path / "lone" / "mlp.keras"           # no metrics.json beside it
    lone.parent.mkdir()
    lone.write_bytes((trained["run"] / "mlp.keras").read_bytes())
    assert models.saved_data_digest(str(lone))
    code, out, err = run_main(capsys, f"--data_dir={trained['folder']}", "--seed=7",
                              f"--load={lone}", f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --load={lone} was trained on other plays or test artists")
    code, out, err = run_main(capsys, f"--data_dir={trained['folder']}", f"--load={lone}",
                              "--quiet", f"--output_dir={tmp_path / 'c'}")
    assert code == 0, err
    assert (metrics_of(tmp_path / "c" / "mlp-loaded")["hit_ratio"]
            == metrics_of(trained["run"])["hit_ratio"])


def test_load_of_a_file_that_is_not_a_zip_says_so(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_text("not a model")
    code, out, err = run_main(capsys, "--dataset=sample", f"--load={path}",
                              f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and err == (f"error: --load={path}: not a .keras file (a .keras file is a "
                                 "zip archive); give a .keras file a run saved\n")


@pytest.mark.tensorflow_only
def test_trains_on_tensorflow_ops_where_there_is_no_cpp_compiler(tmp_path):
    """No g++ on PATH and an empty kernel cache: the run says the compiled kernels are not
    available and trains with TensorFlow ops (the same arithmetic)."""
    path = os.pathsep.join(folder for folder in os.environ.get("PATH", "").split(os.pathsep)
                           if folder and shutil.which("g++", path=folder) is None)
    assert shutil.which("g++", path=path) is None
    cache = tmp_path / "cache"
    cache.mkdir()
    process = subprocess.run(
        [sys.executable, "ncf_lastfm.py", "--dataset=sample", "--num_epoch=1", "--quiet",
         f"--output_dir={tmp_path / 'out'}"], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PATH": path, "XDG_CACHE_HOME": str(cache),
                          "NCF_LASTFM_KERNEL": "1"})
    assert process.returncode == 0, process.stderr
    assert "hit ratio :" in process.stdout
    assert "note: the compiled kernels (kernels.cc) are not available" in process.stderr
    assert "Traceback" not in process.stderr
    with open(tmp_path / "out" / "mlp" / "environment.json") as stream:
        environment = json.load(stream)
    assert environment["compiled_kernels"] is False and environment["kernel_build"] is None
    assert not [name for name in os.listdir(cache / "ncf_lastfm") if name.endswith(".so")]
