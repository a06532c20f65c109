"""--export and --tensorboard, through the script itself on tiny data:

- the SavedModel, loaded in a fresh Python process that imports TensorFlow and nothing of this
  repository, recommends what --recommend_user prints (artists, order and scores) for known
  users, the most popular artists for an unknown one (known False), and scores pairs as the
  model does; a request of the wrong type gets TensorFlow's error and the next request works;
- TensorFlow Serving's layout: DIR/1/saved_model.pb, then DIR/2/ from a --load run; a folder
  that is not an export is refused in one line and left as it was; a version is renamed whole;
- ties go to the lower row as --recommend_user's; the history input and BPR export too;
- --tensorboard's event files hold the loss and validation and test HR@10 / NDCG@10 per epoch.
"""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import data
import export
import files
import models
import report
from split import leave_one_out
from test_command_line import one_line_error, run_captured, run_main
from test_contracts import FEW, TINY, hashed

pytestmark = pytest.mark.tensorflow_only   # --export and --tensorboard write with TensorFlow

UNKNOWN = "a user who is not in the data"
# Runs in a fresh process, in an empty folder, isolated (-I: no PYTHONPATH, no script folder):
# TensorFlow is all it can import
CLIENT = r"""
import importlib.util, json, sys
import tensorflow as tf
assert all(importlib.util.find_spec(name) is None for name in ("ncf_lastfm", "models", "export"))
request = json.loads(sys.argv[1])
model = tf.saved_model.load(request["path"])
out = {"signatures": sorted(model.signatures)}
answer = model.signatures["recommend"](user_id=tf.constant(request["users"]),
                                       k=tf.constant(request["k"]))
out["recommend"] = {"artist_id": [[a.decode() for a in row]
                                  for row in answer["artist_id"].numpy()],
                    "score": answer["score"].numpy().tolist(),
                    "known": answer["known"].numpy().tolist()}
pairs = model.signatures["score"](user_id=tf.constant(request["pair_users"]),
                                  artist_id=tf.constant(request["pair_artists"]))
out["score"] = {"score": [None if s != s else s for s in pairs["score"].numpy().tolist()],
                "known": pairs["known"].numpy().tolist()}
try:
    model.signatures["recommend"](user_id=tf.constant([7, 8]), k=tf.constant(3))
    out["wrong_type"] = None
except Exception as error:
    out["wrong_type"] = [type(error).__name__, str(error)]
again = model.signatures["recommend"](user_id=tf.constant(request["users"][:1]), k=tf.constant(3))
out["after_wrong_type"] = [a.decode() for a in again["artist_id"].numpy()[0]]
print(json.dumps(out))
"""


def call_in_fresh_process(path, folder, **request):
    """CLIENT on the export at `path`, from the empty `folder` -> its answers."""
    folder.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", CLIENT,
                           json.dumps({"path": str(path), **request})], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny data with user hashes and MBID-like artist ids, trained one epoch with
    --recommend_user for five users and --export; the export asked, in a fresh process, for
    those users and one unknown user, and for pairs."""
    play_df, artist_df, _ = data.make_planted(*TINY[:3], seed=TINY[3])
    play_df = play_df.sample(frac=1, random_state=1)
    play_df["user_id"] = [hashed("u", u) for u in play_df.user_id]
    artist_ids = {a: f"{hashed('a', a)[:8]}-mbid-{a}" for a in artist_df.artist_id}
    play_df["artist_id"] = play_df.artist_id.map(artist_ids)
    artist_df["artist_id"] = artist_df.artist_id.map(artist_ids)
    base = tmp_path_factory.mktemp("export")
    folder = base / "csv"
    folder.mkdir()
    play_df.to_csv(folder / data.PLAY_FILE, index=False)
    artist_df.to_csv(folder / data.ARTIST_FILE, index=False)
    counts = play_df.user_id.value_counts()
    users = [counts.index[i] for i in (0, 3, 40, 80, -1)]       # heavy to light listeners
    code, out, err = run_captured([f"--data_dir={folder}", f"--output_dir={base / 'out'}",
                                   f"--recommend_user={','.join(users)}", "--num_epoch=1",
                                   f"--export={base / 'exported'}", *FEW])
    assert code == 0, err
    plays = data.load_folder(folder, use_cache=False)
    some = artist_df.artist_id.iloc[3]
    pair_users = [users[0], users[1], users[4], UNKNOWN, users[2]]
    pair_artists = [some, play_df.artist_id[play_df.user_id == users[1]].iloc[0],   # played
                    artist_df.artist_id.iloc[7], some, "no such artist"]
    answers = call_in_fresh_process(base / "exported" / "1", base / "client", users=users
                                    + [UNKNOWN], k=10, pair_users=pair_users,
                                    pair_artists=pair_artists)
    return {"base": base, "out": out, "users": users, "plays": plays, "data_dir": str(folder),
            "answers": answers, "pairs": (pair_users, pair_artists),
            "recommendations": pd.read_csv(base / "out" / "mlp" / "recommendations.csv",
                                           dtype={"user_id": str, "artist_id": str})}


def test_the_export_recommends_what_recommend_user_prints_in_a_fresh_process(exported):
    answer = exported["answers"]["recommend"]
    frame, out = exported["recommendations"], exported["out"]
    names = dict(zip(exported["plays"].artist_labels, exported["plays"].artist_names))
    for index, user in enumerate(exported["users"]):
        mine = frame[frame.user_id == user]
        assert answer["known"][index] is True
        assert answer["artist_id"][index] == list(mine.artist_id), user
        # the scores to the bit: the CSV holds the float32 score as a float64
        np.testing.assert_array_equal(np.float32(answer["score"][index]),
                                      mine.score.to_numpy().astype(np.float32))
        printed = out.split(f"top 10 recommendations for user {user}:\n")[1].splitlines()[:10]
        shown = [line.split(". ", 1)[1].rsplit(" (", 1)[0] for line in printed]
        assert shown == [names[a] for a in answer["artist_id"][index]]
    assert exported["answers"]["signatures"] == ["recommend", "score", "serving_default"]


def test_an_unknown_user_gets_the_most_popular_artists_and_known_false(exported):
    answer = exported["answers"]["recommend"]
    plays = exported["plays"]
    split = leave_one_out(plays, 20, seed=42)        # the run's split: FEW's candidates, SEED
    listeners = np.bincount(split.train_items, minlength=plays.num_artists)
    popular = np.argsort(-listeners, kind="stable")[:10]
    assert answer["known"][-1] is False
    assert answer["artist_id"][-1] == [plays.artist_labels[a] for a in popular]
    assert answer["score"][-1] == listeners[popular].tolist()


def test_the_score_signature_scores_pairs_as_the_model_and_flags_unknown_ids(exported):
    answer = exported["answers"]["score"]
    plays = exported["plays"]
    users, artists = exported["pairs"]
    assert answer["known"] == [True, True, True, False, False]
    assert answer["score"][3:] == [None, None]                  # NaN: an id not in the data
    rows = [list(plays.user_labels).index(u) for u in users[:3]]
    items = [list(plays.artist_labels).index(a) for a in artists[:3]]
    model = models.load(str(exported["base"] / "out" / "mlp" / "mlp.keras"))
    expected = models.make_scorer(model)(np.array(rows), np.array(items)[:, None])[:, 0]
    np.testing.assert_allclose(answer["score"][:3], expected, rtol=1e-6)


def test_a_request_of_the_wrong_type_gets_tensorflows_error_not_a_crash(exported):
    kind, message = exported["answers"]["wrong_type"]
    assert kind in ("InvalidArgumentError", "TypeError", "ValueError"), kind
    assert "string" in message and "int32" in message, message
    assert exported["answers"]["after_wrong_type"] == exported["answers"]["recommend"][
        "artist_id"][0][:3]                                      # and it answers the next one


def test_the_export_is_in_tensorflow_servings_version_layout(exported):
    folder = exported["base"] / "exported"
    assert sorted(os.listdir(folder)) == ["1"]
    assert (folder / "1" / "saved_model.pb").is_file()
    assert (folder / "1" / "variables" / "variables.index").is_file()
    assert files.export_versions(str(folder)) == [1]
    assert not [name for name in os.listdir(exported["base"]) if name.startswith(".tmp-")]


def test_a_load_run_adds_the_next_version_and_leaves_the_first(exported, capsys):
    folder = exported["base"] / "exported"
    first = {path: os.stat(path).st_mtime_ns for path in glob.glob(f"{folder}/1/**",
                                                                   recursive=True)}
    code, out, err = run_main(capsys, f"--load={exported['base'] / 'out' / 'mlp' / 'mlp.keras'}",
                              f"--output_dir={exported['base'] / 'out'}", f"--export={folder}",
                              "--num_eval_negatives=20", "--quiet")
    assert code == 0, err
    assert f"export: {folder / '2'} (SavedModel" in out
    assert sorted(os.listdir(folder)) == ["1", "2"]
    assert {path: os.stat(path).st_mtime_ns for path in first} == first
    users = tf.constant(exported["users"])
    one, two = (tf.saved_model.load(str(folder / version)).signatures["recommend"](
        user_id=users, k=tf.constant(10)) for version in ("1", "2"))
    assert one["artist_id"].numpy().tolist() == two["artist_id"].numpy().tolist()


def snapshot(path):
    """Every file and folder at `path` with its bytes and time of change."""
    paths = [str(path)] + (glob.glob(f"{path}/**", recursive=True) if path.is_dir() else [])
    return sorted((p, os.stat(p).st_mtime_ns, open(p, "rb").read() if os.path.isfile(p) else b"")
                  for p in paths)


@pytest.mark.parametrize("content", ["a file", "a folder", "a version without a model"])
def test_a_folder_that_is_not_an_export_is_refused_in_one_line_and_left_as_it_was(
        tmp_path, capsys, planted_dir, content):
    target = tmp_path / "models"
    if content == "a file":
        target.write_text("mine")
    else:
        (target / "1").mkdir(parents=True)
        (target / ("notes.txt" if content == "a folder" else "1/notes.txt")).write_text("mine")
    before = snapshot(target)
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", f"--export={target}",
                              f"--output_dir={tmp_path / 'out'}", "--num_epoch=1")
    one_line_error(code, err)
    assert f"--export={target} holds other files than an export's version folders" in err
    assert snapshot(target) == before
    assert not (tmp_path / "out").exists()                  # refused before anything ran


@pytest.mark.parametrize("argv, message", [
    (["--export="], "--export= is empty"),
    (["--model=pop", "--export=e"], "--export need one model with embeddings"),
    (["--compare", "--export=e"], "--export need one model with embeddings; --compare"),
    (["--export=e", "--output_dir=e/out"], "--export=e would hold what --output_dir="),
    (["--strategy=parameter_server", "--validation=False", "--tensorboard=t"],
     "drop --tensorboard"),
])
def test_export_and_tensorboard_settings_that_cannot_work_are_one_line(tmp_path, capsys,
                                                                         monkeypatch, argv,
                                                                         message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, "--dataset=sample", *argv)
    one_line_error(code, err)
    assert message in err, err
    assert not os.listdir(tmp_path)


def test_a_version_is_written_beside_the_folder_and_renamed_whole(tmp_path, monkeypatch):
    renames, rename = [], os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: renames.append((a, b)) or rename(a, b))
    folder = tmp_path / "exported"

    def save(path):
        os.makedirs(path)
        open(os.path.join(path, "saved_model.pb"), "w").close()
    assert files.new_version(str(folder), save) == str(folder / "1")
    assert files.new_version(str(folder), save) == str(folder / "2")
    assert [b for _, b in renames] == [str(folder), str(folder / "2")]
    # both written in a new folder beside the export, never inside it
    assert os.path.dirname(renames[0][0]) == str(tmp_path)
    assert os.path.dirname(os.path.dirname(renames[1][0])) == str(tmp_path)

    def fails(path):
        save(path)
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        files.new_version(str(folder), fails)
    assert sorted(os.listdir(tmp_path)) == ["exported"]      # no half version, no leftover
    assert sorted(os.listdir(folder)) == ["1", "2"]


def test_ties_go_to_the_lower_row_as_recommend_user_and_numbered_ids_read_as_there(
        tmp_path, capsys):
    """A model that scores every artist alike: both rankings are the unplayed artists in
    row order. Numbered data: "007" is user 7, as --recommend_user reads it."""
    plays = data.frames_to_plays(*data.make_planted(*TINY[:3], seed=TINY[3]))
    split = leave_one_out(plays, 20, seed=1)
    model = models.build_model("mlp", split.num_users, split.num_items, 8, (8, 4))
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    frame = report.recommend(model, plays, split, ["7", "30"], 10, str(tmp_path))
    capsys.readouterr()
    module = export.recommender(model, plays, split)
    answer = module.recommend(tf.constant(["007", "30"]), tf.constant(10))
    for index, user in enumerate(["7", "30"]):
        expected = list(frame[frame.user_id == int(user)].artist_id.astype(str))
        assert [a.decode() for a in answer["artist_id"].numpy()[index]] == expected
        unplayed = np.setdiff1d(np.arange(plays.num_artists), split.sampler.played_items(
            int(user)))
        assert expected == [str(a) for a in unplayed[:10]]
    assert answer["known"].numpy().tolist() == [True, True]


@pytest.mark.parametrize("model", ["neumf", "bpr"])
def test_the_history_input_and_bpr_export_what_the_script_scores(tmp_path, capsys, model,
                                                                  planted_dir):
    """NeuMF with the history input (both towers' users are their artists) and BPR: the
    export's top 10 is --recommend_user's, and a played pair is scored with the artist left
    out, as the model scores it."""
    plays = data.load_folder(planted_dir, use_cache=False)
    users = ["0", "17"]
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", f"--model={model}",
                              "--num_epoch=1", "--num_factor=8", f"--output_dir={tmp_path}",
                              f"--recommend_user={','.join(users)}",
                              f"--export={tmp_path / 'e'}", *FEW)
    assert code == 0, err
    frame = pd.read_csv(tmp_path / model / "recommendations.csv", dtype=str)
    loaded = tf.saved_model.load(str(tmp_path / "e" / "1"))
    answer = loaded.signatures["recommend"](user_id=tf.constant(users), k=tf.constant(10))
    for index, user in enumerate(users):
        assert ([a.decode() for a in answer["artist_id"].numpy()[index]]
                == list(frame[frame.user_id == user].artist_id))
    played = plays.artist_ids[plays.user_ids == 17][:3]
    scored = loaded.signatures["score"](user_id=tf.constant(["17"] * 3),
                                        artist_id=tf.constant([str(a) for a in played]))
    keras_model = models.load(str(tmp_path / model / f"{model}.keras"))
    expected = models.make_scorer(keras_model)(np.full(3, 17), played[:, None])[:, 0]
    np.testing.assert_allclose(scored["score"].numpy(), expected, rtol=1e-6)


def events(folder):
    """Every scalar in the event files under `folder` -> {(run, tag): {step: value}}."""
    found = {}
    for path in glob.glob(f"{folder}/*/events.out.tfevents.*"):
        run = os.path.basename(os.path.dirname(path))
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault((run, value.tag), {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return found


def test_tensorboard_logs_the_loss_and_validation_and_test_scores_per_epoch(tmp_path, capsys,
                                                                          planted_dir):
    code, out, err = run_main(capsys, f"--data_dir={planted_dir}", "--num_epoch=3",
                              "--validation", f"--tensorboard={tmp_path / 'tb'}",
                              f"--output_dir={tmp_path / 'out'}", *FEW)
    assert code == 0, err
    history = json.loads((tmp_path / "out" / "mlp" / "metrics.json").read_text())["history"]
    assert sorted(os.listdir(tmp_path / "tb")) == ["mlp"]                # a run per model
    found = events(tmp_path / "tb" / "mlp")
    assert found[("train", "epoch_loss")] == pytest.approx(
        {epoch: record["loss"] for epoch, record in enumerate(history)}, rel=1e-6)
    for run, prefix in (("validation", "valid"), ("test", "test")):
        for tag, key in (("epoch_HR@10", "hit_ratio"), ("epoch_NDCG@10", "ndcg")):
            assert found[(run, tag)] == pytest.approx(
                {epoch: record[f"{prefix}_{key}"] for epoch, record in enumerate(history)},
                rel=1e-6), (run, tag)
