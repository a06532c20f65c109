"""The script end to end: settings, one-line errors, outputs, learning, resume, load."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import data
import models
import ncf_lastfm
import training
from conftest import write_csvs
import kernels
from split import leave_one_out, write_ncf_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(capsys, *argv):
    code = ncf_lastfm.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["--num_epochs=3"], "unknown setting --num_epochs; known settings: "),
    (["--num_epoch=three"], "--num_epoch=three is a str; expected a int"),
    (["--learning_rate=fast"], "--learning_rate=fast is a str; expected a float"),
    (["--learning_rate=nan"], "--learning_rate=nan is not a finite number"),
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
    (["--top_k=200"], "--top_k=200 is out of range; expected an integer from 1 to NUM_EVAL_NEGATIVES=99"),
    (["--dataset=imdb"], "--dataset='imdb' is out of range; expected one of lastfm, sample, synthetic"),
    (["--model=svd"], "--model='svd' is out of range"),
    (["epochs"], "unexpected argument 'epochs'"),
    (["--recommend_user=abc"], "--recommend_user='abc' must be user ids"),
    (["--model=bpr", "--user_input=history"], "--user_input=history is for mlp, gmf and neumf"),
    (["--model=gmf", "--pretrain"], "--pretrain is for --model=neumf"),
    (["--user_input=items"], "--user_input='items' is out of range; expected one of id, history"),
    (["--data_dir=/nowhere/at/all"], "--data_dir '/nowhere/at/all' is not a folder"),
    (["--dataset=sample", "--similar_to=artsit 00042"],
     "--similar_to: no artist named 'artsit 00042' in the data; did you mean: artist 00042"),
    (["--dataset=sample", "--recommend_user=2000"], "user id 2000 is not in the data"),
    (["--num_epoch"], "--num_epoch needs a value, like --num_epoch=10"),
    (["--export_split"], "--export_split needs a value"),
    (["--l2=1e999"], "--l2=1e999 is not a finite number"),
    (["--learning_rate=1e999"], "--learning_rate=1e999 is not a finite number"),
    (["--seed=-1"], "--seed=-1 is out of range; expected an integer from 0 to 2**32 - 1"),
    (["--output_dir="], "--output_dir='' is out of range; expected a folder name"),
    (["--dataset=sample", "--data_dir=/tmp"], "--data_dir is read by --dataset=lastfm"),
    (["--split=/tmp/x", "--num_eval_negatives=50", "--dataset=sample"],
     "--split reads the data and each test user's candidates from its files; drop --dataset, "
     "--num_eval_negatives"),
    (["--model=pop", "--similar_to=x"], "--similar_to need one model with embeddings; "
     "--model=pop has none"),
    (["--compare", "--recommend_user=0"], "--compare trains five"),
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
     "of range; expected a tuple of positive integers below 2**31"),
    (["--load=out/mlp.keras", "--output_dir=out"], "--output_dir is the folder of the --load"),
])
def test_bad_settings_exit_2_with_one_line(capsys, argv, message):
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
    settings, given = ncf_lastfm.parse_settings(
        ["--num_epoch=3", "--learning_rate=1", "--hidden_units=(64,32)", "--validation",
         "--dataset=sample"], {k: getattr(ncf_lastfm, k) for k in ncf_lastfm.SETTINGS})
    assert settings["NUM_EPOCH"] == 3 and settings["LEARNING_RATE"] == 1.0
    assert settings["HIDDEN_UNITS"] == (64, 32) and settings["VALIDATION"] is True
    assert settings["DATASET"] == "sample" and given == {"NUM_EPOCH", "LEARNING_RATE",
                                                        "HIDDEN_UNITS", "VALIDATION", "DATASET"}


def test_num_eval_negatives_beyond_unplayed_artists_is_one_line(capsys, tmp_path):
    folder = tmp_path / "csv"
    from conftest import write_csvs
    write_csvs(folder, *data.make_planted(20, 30, 200, seed=0))
    code, out, err = run_main(capsys, f"--data_dir={folder}", "--num_eval_negatives=50",
                              "--top_k=10", f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and "NUM_EVAL_NEGATIVES=50 is larger than" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on planted data, reused: 8 epochs, recommendations and similar artists."""
    base = tmp_path_factory.mktemp("run")
    from conftest import write_csvs
    frames = data.make_planted(400, 2_000, 12_000, seed=3)
    folder = write_csvs(base / "csv", *frames)
    output = base / "out"
    popular = int(frames[0].artist_id.value_counts().index[0])  # well trained: many plays
    argv = [f"--data_dir={folder}", "--num_epoch=8", "--batch_size=256", f"--output_dir={output}",
            "--quiet", "--recommend_user=0,7", f"--similar_to=artist {popular:05d}"]
    process = subprocess.run([sys.executable, "ncf_lastfm.py", *argv], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    return {"folder": folder, "output": output, "stdout": process.stdout, "argv": argv,
            "popular": popular}


def test_end_to_end_prints_the_notebooks_last_lines_and_writes_metrics(trained):
    lines = trained["stdout"].strip().splitlines()
    assert lines[-2].startswith("hit ratio : 0.") and len(lines[-2]) == len("hit ratio : 0.000")
    assert lines[-1].startswith("ndcg : 0.")
    metrics = json.load(open(trained["output"] / "metrics.json"))
    for key in ("hit_ratio", "ndcg", "popularity_hit_ratio", "popularity_ndcg", "num_test_users",
                "num_epoch", "train_seconds", "eval_seconds", "settings"):
        assert key in metrics
    assert f"{metrics['hit_ratio']:.3f}" == lines[-2].split(" : ")[1]
    assert metrics["num_epoch"] == 8 and metrics["num_test_users"] == 400


def test_environment_json_names_the_cpu_and_the_versions_the_figures_came_from(trained):
    import tensorflow as tf
    environment = json.load(open(trained["output"] / "environment.json"))
    assert environment["tensorflow"] == tf.__version__
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["onednn"] in (True, False, None) and environment["cpu"]
    assert environment["compiled_kernels"] == (kernels.fused_kernel() is not None)
    assert environment["kernel_build"] == kernels.kernel_build()
    assert environment["kernel_build"] in ((None,) if kernels.fused_kernel() is None
                                           else ("native", "portable"))


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
    metrics = json.load(open(trained["output"] / "metrics.json"))
    assert metrics["hit_ratio"] > metrics["popularity_hit_ratio"] + 0.1
    assert metrics["ndcg"] > metrics["popularity_ndcg"] + 0.05


def test_plots_are_valid_images(trained):
    import matplotlib.image
    for name in ("training_curves.png", "hit_ratio_at_k.png"):
        path = trained["output"] / name
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.01


def test_recommendations_are_unplayed_and_sorted(trained):
    frame = pd.read_csv(trained["output"] / "recommendations.csv")
    assert list(frame.columns) == ["user_id", "rank", "artist_id", "artist_name", "score"]
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
    import models
    import report
    plays = data.frames_to_plays(*data.make_planted(2_000, 5_000, 100_000, 42))
    ranked = np.argsort(-np.bincount(plays.artist_ids), kind="stable")[12:20]
    code, out, err = run_main(capsys, "--dataset=sample", "--model=gmf", "--quiet",
                              "--num_factor=32", "--neg_ratio=4", "--l2=0.0", "--num_epoch=10",
                              "--learning_rate=0.001", "--validation=False",
                              f"--output_dir={tmp_path}", f"--similar_to=artist {ranked[0]:05d}")
    assert code == 0, err
    assert f"artists most similar to artist {ranked[0]:05d}" in out
    model = models.load(str(tmp_path / "gmf.keras"))
    _, artist_group = data.planted_groups(2_000, 5_000, seed=42)
    same = [sum(artist_group[a] == artist_group[artist]
                for a, _, _ in report.similar_artists(model, plays, f"artist {artist:05d}"))
            for artist in ranked]
    assert np.mean(same) >= 5   # chance level: 1 in 20 groups, 0.5 of 10


def test_load_reproduces_the_saved_metrics(trained, tmp_path):
    saved = json.load(open(trained["output"] / "metrics.json"))
    argv = [a for a in trained["argv"] if not a.startswith(("--output_dir", "--num_epoch"))]
    argv += [f"--load={trained['output'] / 'mlp.keras'}", "--num_epoch=0",
             f"--output_dir={tmp_path}"]
    process = subprocess.run([sys.executable, "ncf_lastfm.py", *argv], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr
    again = json.load(open(tmp_path / "metrics.json"))
    assert again["hit_ratio"] == saved["hit_ratio"] and again["ndcg"] == saved["ndcg"]


def test_load_scores_without_training_unless_asked_and_names_a_model_mismatch(trained, capsys,
                                                                              tmp_path):
    saved = json.load(open(trained["output"] / "metrics.json"))
    data_args = [f"--data_dir={trained['folder']}", "--quiet",
                 f"--load={trained['output'] / 'mlp.keras'}"]
    assert ncf_lastfm.main(data_args + [f"--output_dir={tmp_path / 'a'}"]) == 0
    again = json.load(open(tmp_path / "a" / "metrics.json"))
    assert again["num_epoch"] == 0 and again["hit_ratio"] == saved["hit_ratio"]
    assert not (tmp_path / "a" / "mlp.keras").exists()          # nothing new to save
    capsys.readouterr()
    code, out, err = run_main(capsys, *data_args, "--model=gmf", f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and "holds a mlp model, not --model=gmf" in err and err.count("\n") == 1


def test_load_on_other_data_settings_than_its_metrics_json_is_one_line(trained, capsys,
                                                                       tmp_path):
    code, out, err = run_main(capsys, f"--data_dir={trained['folder']}", "--seed=1", "--quiet",
                              f"--load={trained['output'] / 'mlp.keras'}",
                              f"--output_dir={tmp_path}")
    assert code == 2 and "was trained with --seed=42" in err and err.count("\n") == 1


def test_load_of_a_model_trained_on_a_split_is_scored_on_that_split_only(tmp_path, capsys):
    frames = data.make_planted(60, 200, 1_500, seed=2)
    folder = write_csvs(tmp_path / "csv", *frames)
    prefix = str(tmp_path / "sp")
    write_ncf_split(leave_one_out(data.frames_to_plays(*frames), 20, seed=0), prefix)
    assert ncf_lastfm.main([f"--split={prefix}", "--num_epoch=1", "--quiet", "--top_k=5",
                            f"--output_dir={tmp_path / 'a'}"]) == 0
    model = f"--load={tmp_path / 'a' / 'mlp.keras'}"
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
    metrics = json.load(open(tmp_path / "o" / "metrics.json"))
    assert metrics["settings"]["num_eval_negatives"] == 150 and metrics["settings"]["top_k"] == 120


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
    assert code == 1 and "the data changed since it was made" in err and err.count("\n") == 1


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
    assert code == 1 and err.count("\n") == 1
    assert "was trained on other plays or test artists than these (data digest " in err


def test_damaged_checkpoint_on_resume_is_one_line(planted_dir, tmp_path, capsys):
    argv = [f"--data_dir={planted_dir}", "--quiet", "--num_epoch=1", f"--output_dir={tmp_path}"]
    assert ncf_lastfm.main(argv) == 0
    state = tmp_path / "checkpoint-mlp.json"
    text = state.read_text()
    for damage, message in [(text[:40], "checkpoint-mlp.json: Expecting"),
                            ('{"epoch": 1}', "checkpoint-mlp.json lacks fingerprint")]:
        state.write_text(damage)
        capsys.readouterr()
        code, out, err = run_main(capsys, *argv[:-2], "--num_epoch=2", argv[-1], "--resume")
        assert code == 1 and "a checkpoint file is damaged" in err and message in err
        assert err.count("\n") == 1
    state.write_text(text)
    model = tmp_path / "checkpoint-mlp.keras"
    model.write_bytes(model.read_bytes()[:1000])             # cut short
    code, out, err = run_main(capsys, *argv[:-2], "--num_epoch=2", argv[-1], "--resume")
    assert code == 1 and "a checkpoint file is damaged" in err and "checkpoint-mlp.keras" in err
    assert "not found" not in err and err.count("\n") == 1    # the file is there
    model.write_bytes(b"not a zip file")
    capsys.readouterr()
    code, out, err = run_main(capsys, *argv[:-2], "--num_epoch=2", argv[-1], "--resume")
    assert code == 1 and "checkpoint-mlp.keras" in err and err.count("\n") == 1


def test_hand_edited_checkpoint_state_on_resume_is_one_line(planted_dir, tmp_path, capsys):
    argv = [f"--data_dir={planted_dir}", "--quiet", "--num_epoch=3", "--validation",
            "--patience=5", f"--output_dir={tmp_path}"]
    assert ncf_lastfm.main(argv) == 0
    state = tmp_path / "checkpoint-mlp.json"
    good = json.loads(state.read_text())
    edits = [("best", {}), ("best", []), ("best", {**good["best"], "epoch": "2"}),
             ("best", {**good["best"], "epoch": 9}), ("epoch", "3"), ("epoch", 3.0),
             ("epoch", -2), ("history", "x"), ("history", good["history"][:1])]
    for key, value in edits:                           # each was a traceback, or ran on
        state.write_text(json.dumps({**good, key: value}))
        capsys.readouterr()
        code, out, err = run_main(capsys, *argv[:2], "--num_epoch=4", *argv[3:], "--resume")
        assert code == 1 and "a checkpoint file is damaged" in err, (key, value, err)
        assert f"'{key}'" in err and err.count("\n") == 1 and "Traceback" not in err
    state.write_text(json.dumps({**good, "best": {**good["best"], "epoch": 1}}))
    (tmp_path / "best-mlp.weights.h5").unlink()        # was: "choose another folder"
    code, out, err = run_main(capsys, *argv[:2], "--num_epoch=4", *argv[3:], "--resume")
    assert code == 1 and "best-mlp.weights.h5, the best epoch's weights, is missing" in err
    assert "choose another folder" not in err and err.count("\n") == 1


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
    metrics = json.load(open(tmp_path / "p" / "metrics.json"))
    assert metrics["settings"]["num_eval_negatives"] == 5          # the file's, not 99


def test_output_dir_that_cannot_be_written_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, out, err = run_main(capsys, "--dataset=sample", "--quiet",
                              f"--output_dir={blocker}")
    assert code == 1 and str(blocker) in err and "choose another folder" in err
    assert "free space" not in err and "data:" not in out and err.count("\n") == 1


def test_load_of_a_model_for_other_data_is_one_line(trained, capsys, tmp_path):
    alone = tmp_path / "alone"            # no metrics.json beside it: the sizes are checked
    alone.mkdir()
    (alone / "mlp.keras").write_bytes((trained["output"] / "mlp.keras").read_bytes())
    code, out, err = run_main(capsys, "--dataset=sample", "--num_epoch=0", "--quiet",
                              f"--load={alone / 'mlp.keras'}", f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and "the model has 400 users" in err and err.count("\n") == 1


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(planted_dir, tmp_path, capsys):
    common = [f"--data_dir={planted_dir}", "--quiet", "--validation", "--model=neumf",
              "--num_factor=16"]
    assert ncf_lastfm.main(common + ["--num_epoch=3", f"--output_dir={tmp_path / 'a'}"]) == 0
    assert ncf_lastfm.main(common + ["--num_epoch=2", f"--output_dir={tmp_path / 'b'}"]) == 0
    assert ncf_lastfm.main(common + ["--num_epoch=3", f"--output_dir={tmp_path / 'b'}",
                                     "--resume"]) == 0
    whole = json.load(open(tmp_path / "a" / "metrics.json"))
    resumed = json.load(open(tmp_path / "b" / "metrics.json"))
    assert resumed["num_epoch"] == 3
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["hit_ratio"] == whole["hit_ratio"] and resumed["ndcg"] == whole["ndcg"]


def test_resume_with_other_settings_is_refused(planted_dir, tmp_path, capsys):
    assert ncf_lastfm.main([f"--data_dir={planted_dir}", "--quiet", "--num_epoch=1",
                            f"--output_dir={tmp_path}"]) == 0
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=2",
                              f"--output_dir={tmp_path}", "--resume", "--neg_ratio=2")
    assert code == 1 and "other settings (neg_ratio)" in err and err.count("\n") == 1
    state = tmp_path / "checkpoint-mlp.json"          # a setting only the checkpoint has
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "fingerprint": {**saved["fingerprint"], "EXTRA": 1}}))
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=2",
                              f"--output_dir={tmp_path}", "--resume")
    assert code == 1 and "other settings (extra)" in err     # was "other settings ()"


def test_diverging_run_stops_naming_the_epoch_and_keeps_the_checkpoint(planted_dir, tmp_path, capsys):
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=4",
                              f"--output_dir={tmp_path}", "--learning_rate=1e38",
                              "--optimizer=adam")
    assert code == 1 and "training diverged in epoch" in err and "--learning_rate" in err
    assert err.count("\n") == 1
    kept = (tmp_path / "checkpoint-mlp.keras").exists()
    assert ("is kept" in err) == kept and ("there is no checkpoint" in err) == (not kept)
    if "diverged in epoch 1 " in err:
        assert not kept                     # nothing completed: no checkpoint to speak of


def test_full_disk_is_one_line_and_no_half_written_metrics(planted_dir, tmp_path, capsys,
                                                           monkeypatch):

    def no_space(path, payload):
        with open(path, "w") as stream:
            stream.write('{"hit_ratio": ')
        raise OSError(28, "No space left on device", path)
    monkeypatch.setattr(training, "write_json", no_space)
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--quiet", "--num_epoch=1",
                              f"--output_dir={tmp_path}")
    assert code == 1 and "No space left on device" in err and err.count("\n") == 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".json")]


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(planted_dir, tmp_path):
    argv = [sys.executable, "ncf_lastfm.py", f"--data_dir={planted_dir}", "--num_epoch=200",
            f"--output_dir={tmp_path}", "--quiet"]
    # A shell's background job starts with SIGINT ignored, and Python then keeps it ignored:
    # restore the default in the child so the test means the same wherever it runs.
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = tmp_path / "checkpoint-mlp.json"
    deadline = time.time() + 300
    while not state.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume" in err and "Traceback" not in err
    epoch = json.load(open(state))["epoch"]
    assert epoch >= 1
    resumed = subprocess.run(argv[:3] + [f"--num_epoch={epoch + 1}", f"--output_dir={tmp_path}",
                                         "--quiet", "--resume"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.load(open(tmp_path / "metrics.json"))["num_epoch"] == epoch + 1


def test_model_defaults_apply_per_model_unless_given():
    defaults = {k: getattr(ncf_lastfm, k) for k in ncf_lastfm.SETTINGS}
    settings, _ = ncf_lastfm.parse_settings(["--model=neumf", "--l2=0.5"], defaults)
    assert settings["L2"] == 0.5
    assert settings["NUM_FACTOR"] == ncf_lastfm.MODEL_DEFAULTS["neumf"]["NUM_FACTOR"]
    notebook = ncf_lastfm.model_settings(settings, "mlp")
    assert notebook["NUM_FACTOR"] == 32 and notebook["NEG_RATIO"] == 4 and notebook["L2"] == 0.5
    inputs = {name: ncf_lastfm.model_settings(settings, name)["USER_INPUT"]
              for name in ("mlp", "gmf", "neumf", "bpr")}
    assert inputs == {"mlp": "id", "gmf": "history", "neumf": "history", "bpr": "id"}
    plain, _ = ncf_lastfm.parse_settings([], defaults)
    assert plain["NUM_EPOCH"] == 10 and plain["VALIDATION"] is False  # the notebook's run


def test_history_neumf_round_trips_through_the_paper_format(planted_dir, tmp_path, capsys):
    """Exported split, saved history model, read back and loaded: the same test metrics."""
    common = ["--quiet", "--model=neumf", "--user_input=history", "--num_factor=16",
              "--num_epoch=2"]
    assert ncf_lastfm.main(common + [f"--data_dir={planted_dir}", f"--output_dir={tmp_path / 'a'}",
                                     f"--export_split={tmp_path / 'split'}"]) == 0
    assert ncf_lastfm.main(common + [f"--split={tmp_path / 'split'}", "--num_epoch=0",
                                     f"--load={tmp_path / 'a' / 'neumf.keras'}",
                                     f"--output_dir={tmp_path / 'b'}"]) == 0
    first = json.load(open(tmp_path / "a" / "metrics.json"))
    again = json.load(open(tmp_path / "b" / "metrics.json"))
    assert first["settings"]["user_input"] == "history"
    assert again["hit_ratio"] == first["hit_ratio"] and again["ndcg"] == first["ndcg"]
    # Trained on, without --model: with the loaded NeuMF's defaults, not the MLP's
    assert ncf_lastfm.main(["--quiet", f"--split={tmp_path / 'split'}", "--num_epoch=1",
                            f"--load={tmp_path / 'a' / 'neumf.keras'}",
                            f"--output_dir={tmp_path / 'c'}"]) == 0
    trained_on = json.load(open(tmp_path / "c" / "metrics.json"))["settings"]
    defaults = ncf_lastfm.MODEL_DEFAULTS["neumf"]
    assert trained_on["model"] == "neumf" and trained_on["num_epoch"] == 1
    for key in ("NEG_RATIO", "LEARNING_RATE", "VALIDATION", "USER_INPUT"):
        assert trained_on[key.lower()] == defaults[key], key
    assert (tmp_path / "c" / "neumf.keras").exists()
    # What the model holds in itself is recorded as it is, not NeuMF's default of 128
    assert trained_on["num_factor"] == 16 and defaults["NUM_FACTOR"] == 128
    assert again["settings"]["num_factor"] == 16 and again["settings"]["l2"] == defaults["L2"]
    code, _, err = run_main(capsys, "--quiet", f"--split={tmp_path / 'split'}",
                            f"--load={tmp_path / 'a' / 'neumf.keras'}", "--num_factor=64",
                            f"--output_dir={tmp_path / 'd'}")
    assert code == 2 and "holds a model with --num_factor=16, which --num_factor=64" in err
    assert ncf_lastfm.main(["--quiet", f"--split={tmp_path / 'split'}", "--num_epoch=1",
                            "--learning_rate=0.0002", f"--load={tmp_path / 'a' / 'neumf.keras'}",
                            f"--output_dir={tmp_path / 'e'}"]) == 0
    saved = models.load(str(tmp_path / "e" / "neumf.keras"))
    assert models.settings_of(saved)["LEARNING_RATE"] == 0.0002   # trained on with it


def test_pretrain_with_sgd_trains_the_towers_with_adam_and_fine_tunes_with_sgd(capsys,
                                                                              monkeypatch,
                                                                              tmp_path):
    import models
    made, make = [], models.make_optimizer
    monkeypatch.setattr(models, "make_optimizer",
                        lambda kind, rate: made.append(kind) or make(kind, rate))
    code, out, _ = run_main(capsys, "--dataset=sample", "--model=neumf", "--pretrain",
                            "--optimizer=sgd", "--num_epoch=1", "--num_factor=8", "--quiet",
                            f"--output_dir={tmp_path}")
    assert code == 0 and "hit ratio : " in out
    assert made == ["lazy_adam", "lazy_adam", "sgd"]                 # gmf, mlp, then neumf


def test_similar_to_names_that_differ_only_in_case_need_the_exact_spelling():
    import report

    class Plays:
        artist_names = np.array(["Michel Teló", "MICHEL TELÓ", "Jason Mraz"], dtype=object)
        artist_known = None                                   # no gaps in the ids
    assert report.find_artist(Plays, "MICHEL TELÓ") == 1
    assert report.find_artist(Plays, "Michel Teló") == 0
    assert report.find_artist(Plays, "jason mraz") == 2
    with pytest.raises(data.DataError, match="2 artists are named 'michel teló' apart from case"):
        report.find_artist(Plays, "michel teló")


def test_out_of_memory_is_one_line(capsys, tmp_path):
    code, out, err = run_main(capsys, "--dataset=sample", "--num_factor=2000000000",
                              "--num_epoch=0", "--quiet", f"--output_dir={tmp_path}")
    assert code == 1 and err.startswith("error: out of memory; lower --num_factor")
    assert err.count("\n") == 1


def test_gaps_in_the_artist_ids_are_never_recommended_similar_or_named(capsys, tmp_path):
    from conftest import write_csvs
    play, artist, user = data.make_planted(80, 120, 1_500, seed=2)
    folder = write_csvs(tmp_path / "csv", play.assign(artist_id=play.artist_id * 2),
                        artist.assign(artist_id=artist.artist_id * 2), user)   # odd ids: gaps
    common = [f"--data_dir={folder}", "--model=gmf", "--num_epoch=1", "--num_factor=8",
              "--quiet"]
    code, out, err = run_main(capsys, *common, "--recommend_user=0,1", "--top_k=60",
                              "--similar_to=artist 00003", f"--output_dir={tmp_path / 'a'}")
    assert code == 0, err
    frame = pd.read_csv(tmp_path / "a" / "recommendations.csv")   # 60 of the ~100 unplayed
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
    from conftest import write_csvs
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
    listed = out[out.index("artists most similar to"):out.index("hit ratio")].splitlines()[1:]
    assert len(listed) == 5 and all(re.fullmatch(r" *\d+\. band [1-5] \(-?[\d.]+\)", line)
                                    for line in listed), listed


def test_bench_scripts_refuse_an_unknown_kernel_choice_before_building_a_model(monkeypatch,
                                                                            tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "bench"))
    import neumf_variants
    import paired
    import speed
    import step_time
    monkeypatch.setenv("NCF_LASTFM_KERNEL", "fast")
    prefix = str(tmp_path / "missing")
    for main, argv in [(step_time.main, ["--scale=0.005"]), (speed.main, ["--scale=0.01"]),
                       (paired.main, [f"--split={prefix}", f"--load={prefix}.keras"]),
                       (neumf_variants.main, [f"--split={prefix}", "--variants=default"])]:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert str(stopped.value) == ("error: NCF_LASTFM_KERNEL='fast' is not a kernel choice; "
                                      "expected 1 (built for this CPU, the default), portable "
                                      "or 0 (TensorFlow ops only)")
    monkeypatch.setenv("NCF_LASTFM_KERNEL", "1")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    for main, argv in [(step_time.main, ["--scale=0.005"]), (speed.main, ["--scale=0.01"])]:
        with pytest.raises(SystemExit, match="error: KERAS_BACKEND='torch': this script runs on "):
            main(argv)
    process = subprocess.run([sys.executable, "bench/neumf_variants.py", f"--split={prefix}"],
                             capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             env={**os.environ, "KERAS_BACKEND": "jax"})
    assert process.returncode == 1 and process.stderr.startswith("error: KERAS_BACKEND='jax'")
    assert process.stderr.count("\n") == 1


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
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    code, out, err = run_main(capsys, "--dataset=sample")
    assert code == 2 and err == ("error: KERAS_BACKEND='jax': this script runs on Keras' "
                                 "TensorFlow backend (its layers and kernels are TensorFlow's); "
                                 "unset it or set KERAS_BACKEND=tensorflow\n")


def test_load_of_a_model_apart_from_its_metrics_is_checked_by_the_data_it_holds(tmp_path,
                                                                                capsys):
    argv = ["--dataset=sample", "--num_epoch=1", "--quiet"]
    assert ncf_lastfm.main(argv + [f"--output_dir={tmp_path / 'a'}"]) == 0
    lone = tmp_path / "lone" / "mlp.keras"           # no metrics.json beside it
    lone.parent.mkdir()
    lone.write_bytes((tmp_path / "a" / "mlp.keras").read_bytes())
    assert models.saved_data_digest(str(lone))
    capsys.readouterr()
    code, out, err = run_main(capsys, "--dataset=sample", "--seed=7", f"--load={lone}",
                              f"--output_dir={tmp_path / 'b'}")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: --load={lone} was trained on other plays or test artists")
    code, out, err = run_main(capsys, "--dataset=sample", f"--load={lone}", "--quiet",
                              f"--output_dir={tmp_path / 'c'}")
    assert code == 0
    assert (json.load(open(tmp_path / "c" / "metrics.json"))["hit_ratio"]
            == json.load(open(tmp_path / "a" / "metrics.json"))["hit_ratio"])


def test_load_of_a_file_that_is_not_a_zip_says_so(tmp_path, capsys):
    path = tmp_path / "model.keras"
    path.write_text("not a model")
    code, out, err = run_main(capsys, "--dataset=sample", f"--load={path}",
                              f"--output_dir={tmp_path / 'o'}")
    assert code == 2 and err == (f"error: --load={path}: not a .keras file (a .keras file is a "
                                 "zip archive); give a .keras file a run saved\n")
