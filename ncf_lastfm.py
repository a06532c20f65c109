"""Neural Collaborative Filtering on LastFM listening data, from a Keras notebook to one script.

Matrix factorisation trained with BPR captures only a linear (dot-product) relation between a
user's taste and an artist's features. Neural Collaborative Filtering (He et al., WWW 2017,
https://arxiv.org/abs/1708.05031; code: https://github.com/hexiangnan/neural_collaborative_filtering)
replaces it with a neural network. The notebook this script ports trains the paper's MLP variant
on the LastFM 360K plays (17.3M user-artist pairs) and reports the top-10 hit ratio:

  1. load data      three CSVs (plays, artists, users), downloaded, read from a folder or made
  2. split          one listened artist per user held out, with 99 unplayed artists as candidates
  3. build model    user and item embeddings -> concat -> Dense 32/16/8 relu -> sigmoid
  4. sample + train every epoch, each play (label 1) plus NEG_RATIO unplayed artists (label 0)
  5. evaluate       hit ratio at 10: is the held-out artist scored above the 10th best candidate?

Run `python ncf_lastfm.py --dataset=sample` for a one-minute offline run. Every UPPER_CASE
constant below can be overridden as `--name=value` (lower case): `--num_epoch=3`.
"""
import ast
import errno
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# ---- data ------------------------------------------------------------------------------------
DATASET = "lastfm"      # lastfm (download ROOT_URL, or DATA_DIR) | sample (offline) | synthetic
ROOT_URL = "https://craftsangjae.s3.ap-northeast-2.amazonaws.com/data/"
DATA_DIR = ""           # a folder with the three CSVs: no download
SCALE = 1.0             # synthetic data size; 1.0 = the 360K files (358,868 users, 17.3M plays)
SPLIT = ""              # PREFIX of an NCF-paper split (PREFIX.train.rating, .test.rating, ...)
EXPORT_SPLIT = ""       # PREFIX to write this run's split in that format
OUTPUT_DIR = "output"   # metrics.json, checkpoints, plots, recommendations
SEED = 42               # one seed: split, negatives, candidates, weights
# ---- model -----------------------------------------------------------------------------------
MODEL = "mlp"           # mlp (the notebook's) | gmf | neumf | bpr | pop
NUM_FACTOR = 32         # embedding size
HIDDEN_UNITS = (32, 16, 8)  # MLP layer widths
L2 = 0.0                # L2 penalty on the looked-up embedding rows, per sample
DROPOUT = 0.0           # dropout after each hidden layer
PRETRAIN = False        # neumf: start from trained gmf and mlp weights, as the paper
USER_INPUT = "id"       # id: a user is a learned row (the paper's) | history: the sum of a
                        # learned row per artist they played, the scored one left out (FISM)
# ---- training --------------------------------------------------------------------------------
NEG_RATIO = 4           # unplayed artists sampled per play, fresh every epoch
ROWS = "play"           # play: a play and its NEG_RATIO negatives per training row (fast);
                        # pair: one (user, artist) pair per row, as the notebook shuffles them
NUM_EPOCH = 10
BATCH_SIZE = 1024       # samples per step
LEARNING_RATE = 1e-3
OPTIMIZER = "lazy_adam" # lazy_adam (embedding rows in the batch only) | adam (the notebook's)
                        # | sgd (plain; with PRETRAIN, the towers still train with lazy_adam)
VALIDATION = False      # hold out a second artist per user; keep the best epoch's weights
PATIENCE = 3            # epochs without a better validation hit ratio before stopping
RESUME = False          # continue from OUTPUT_DIR's last complete epoch
# ---- evaluation ------------------------------------------------------------------------------
TOP_K = 10
NUM_EVAL_NEGATIVES = 99 # unplayed candidates beside each held-out artist
FULL_RANKING_USERS = 0  # also rank against every unplayed artist, for this many test users
COMPARE = False         # train every model on the same split and print one table
# ---- using the model -------------------------------------------------------------------------
LOAD = ""               # a saved .keras model: evaluate / recommend without training
RECOMMEND_USER = ""     # user ids, comma-separated: their artists and top-10 recommendations
SIMILAR_TO = ""         # an artist name: its 10 nearest artists by embedding
QUIET = False           # no progress bars or per-epoch lines

# Defaults per model, chosen on validation data (README, "Choosing the defaults"). They apply
# when --model picks the model and the setting is not given on the command line.
MODEL_DEFAULTS = {
    "mlp": {},   # the notebook's model keeps the notebook's settings
    "gmf": {"NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.0005,
            "NUM_EPOCH": 30, "VALIDATION": True, "USER_INPUT": "history"},
    "neumf": {"NUM_FACTOR": 128, "NEG_RATIO": 8, "L2": 0.001, "LEARNING_RATE": 0.001,
              "NUM_EPOCH": 30, "VALIDATION": True, "USER_INPUT": "history"},
    "bpr": {"NUM_FACTOR": 128, "L2": 0.01, "LEARNING_RATE": 0.003, "NUM_EPOCH": 30,
            "VALIDATION": True},
    "pop": {},
}
CHOICES = {"DATASET": ("lastfm", "sample", "synthetic"), "OPTIMIZER": ("lazy_adam", "adam", "sgd"),
           "ROWS": ("play", "pair"), "USER_INPUT": ("id", "history"),
           "MODEL": ("mlp", "gmf", "neumf", "bpr", "pop")}
SETTINGS = [name for name in dir() if name.isupper() and name not in ("MODEL_DEFAULTS", "CHOICES")]


class SettingError(ValueError):
    """A bad --name=value: the message is meant for the user as it is."""


# NCF_LASTFM_KERNEL's values (models.py reads it; checked here, before TensorFlow is imported,
# by check_settings and by the bench scripts that build models, with KERAS_BACKEND)
KERNEL_CHOICES = ("1", "portable", "0")


def environment_error():
    """A one-line error if NCF_LASTFM_KERNEL is set to something else than KERNEL_CHOICES or
    KERAS_BACKEND to another backend than TensorFlow's, else an empty string."""
    kernel = os.environ.get("NCF_LASTFM_KERNEL", "1")
    if kernel not in KERNEL_CHOICES:
        return (f"NCF_LASTFM_KERNEL={kernel!r} is not a kernel choice; expected 1 (built for "
                "this CPU, the default), portable or 0 (TensorFlow ops only)")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        return (f"KERAS_BACKEND={backend!r}: this script runs on Keras' TensorFlow backend (its "
                "layers and kernels are TensorFlow's); unset it or set KERAS_BACKEND=tensorflow")
    return ""


def parse_settings(argv, defaults):
    """`--name=value` pairs -> (settings dict, names given). Values are Python literals of the
    constant's type (`--hidden_units=(64,32,16)`); a bare word is a string; `--flag` is True."""
    settings, given = dict(defaults), set()
    for argument in argv:
        if not argument.startswith("--"):
            raise SettingError(f"unexpected argument {argument!r}; settings are --name=value")
        name, _, text = argument[2:].partition("=")
        key = name.upper()
        if key not in defaults:
            known = ", ".join(f"--{n.lower()}" for n in sorted(defaults))
            raise SettingError(f"unknown setting --{name}; known settings: {known}")
        if "=" not in argument and not isinstance(defaults[key], bool):
            raise SettingError(f"--{name} needs a value, like --{name}={defaults[key]!r}")
        settings[key] = _typed_value(key, text if "=" in argument else "True", defaults[key])
        given.add(key)
    model_defaults = MODEL_DEFAULTS.get(settings["MODEL"], {})
    settings.update({k: v for k, v in model_defaults.items() if k not in given})
    if settings["LOAD"] and "NUM_EPOCH" not in given:
        settings["NUM_EPOCH"] = 0       # a saved model is scored as it is, unless asked
    settings["_given"] = given
    check_settings(settings)
    return settings, given


def _typed_value(key, text, default):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # --recommend_user=0,7 and --similar_to=1349 are text
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, float) and isinstance(value, str):
        try:
            value = float(value)   # nan, inf: numbers, refused below as not finite
        except ValueError:
            pass
    if isinstance(default, tuple) and isinstance(value, (int, list)):
        value = tuple(value) if isinstance(value, list) else (value,)
    if type(value) is not type(default):
        raise SettingError(f"--{key.lower()}={text} is a {type(value).__name__}; expected a "
                           f"{type(default).__name__} like --{key.lower()}={default!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingError(f"--{key.lower()}={text} is not a finite number")
    return value


def check_settings(s):
    size = "an integer from 1 to 2**31 - 1"   # a size beyond int32 fails inside TensorFlow
    rules = [
        ("NEG_RATIO", 1 <= s["NEG_RATIO"] < 2 ** 31, size),
        ("BATCH_SIZE", 1 <= s["BATCH_SIZE"] < 2 ** 31, size),
        ("NUM_EPOCH", s["NUM_EPOCH"] >= 0, "an integer of 0 or more"),
        ("NUM_FACTOR", 1 <= s["NUM_FACTOR"] < 2 ** 31, size),
        ("HIDDEN_UNITS", all(type(u) is int and 1 <= u < 2 ** 31 for u in s["HIDDEN_UNITS"])
         and len(s["HIDDEN_UNITS"]) >= 1,
         "a tuple of positive integers below 2**31 like (32,16,8)"),
        ("LEARNING_RATE", s["LEARNING_RATE"] > 0, "a number above 0"),
        ("L2", s["L2"] >= 0, "a number of 0 or more"),
        ("DROPOUT", 0 <= s["DROPOUT"] < 1, "a number in [0, 1)"),
        ("PATIENCE", s["PATIENCE"] >= 1, "an integer of 1 or more"),
        ("NUM_EVAL_NEGATIVES", s["NUM_EVAL_NEGATIVES"] >= 1, "an integer of 1 or more"),
        ("TOP_K", s["TOP_K"] >= 1 and (s["SPLIT"] or s["TOP_K"] <= s["NUM_EVAL_NEGATIVES"]),
         f"an integer from 1 to NUM_EVAL_NEGATIVES={s['NUM_EVAL_NEGATIVES']} (a hit needs the "
         "held-out artist above the K-th best candidate)"),
        ("SCALE", 0 < s["SCALE"] <= 10, "a number in (0, 10]"),
        ("FULL_RANKING_USERS", s["FULL_RANKING_USERS"] >= 0, "an integer of 0 or more"),
        ("SEED", 0 <= s["SEED"] < 2 ** 32, "an integer from 0 to 2**32 - 1"),
        ("OUTPUT_DIR", s["OUTPUT_DIR"].strip() != "", "a folder name"),
    ]
    rules += [(key, s[key] in options, "one of " + ", ".join(options))
              for key, options in CHOICES.items()]
    for key, ok, accepted in rules:
        if not ok:
            raise SettingError(f"--{key.lower()}={s[key]!r} is out of range; expected {accepted}")
    if error := environment_error():
        raise SettingError(error)
    if s["USER_INPUT"] == "history" and s["MODEL"] in ("bpr", "pop") and not s["COMPARE"]:
        raise SettingError(f"--user_input=history is for mlp, gmf and neumf; --model="
                           f"{s['MODEL']} has no such input (use --user_input=id)")
    if s["PRETRAIN"] and s["MODEL"] != "neumf" and not s["COMPARE"]:
        raise SettingError(f"--pretrain is for --model=neumf (its GMF and MLP towers are "
                           f"trained first); --model={s['MODEL']} has nothing to pretrain")
    given = s.get("_given", set())
    if s["DATA_DIR"] and s["DATASET"] != "lastfm":
        raise SettingError(f"--data_dir is read by --dataset=lastfm; --dataset={s['DATASET']} "
                           "makes its data in code (drop one of them)")
    if s["COMPARE"] and "MODEL" in given:
        raise SettingError(f"--compare trains every model (pop, bpr, gmf, mlp, neumf); drop "
                           f"--model={s['MODEL']}")
    if not (s["COMPARE"] or s["LOAD"]):
        check_unused(s["MODEL"], given)
    if "PATIENCE" in given and not (s["VALIDATION"] or s["COMPARE"] or s["LOAD"]):
        raise SettingError(f"--patience counts epochs without a better validation hit ratio; "
                           f"--model={s['MODEL']} trains without validation unless --validation "
                           "is given")
    if "SCALE" in given and s["DATASET"] != "synthetic":
        raise SettingError("--scale sizes --dataset=synthetic only; drop it or add "
                           "--dataset=synthetic")
    if "ROOT_URL" in given and (s["DATA_DIR"] or s["DATASET"] != "lastfm"):
        raise SettingError("--root_url is where --dataset=lastfm downloads from; with --data_dir "
                           "or another --dataset nothing is downloaded (drop one of them)")
    for key in ("SPLIT", "EXPORT_SPLIT", "DATA_DIR", "LOAD", "RECOMMEND_USER", "SIMILAR_TO",
                "ROOT_URL"):
        if key in given and not s[key].strip():
            raise SettingError(f"--{key.lower()}= is empty; give it a value or leave it out")
    if s["SPLIT"] and s["EXPORT_SPLIT"] and (os.path.realpath(s["SPLIT"])
                                             == os.path.realpath(s["EXPORT_SPLIT"])):
        raise SettingError(f"--export_split={s['EXPORT_SPLIT']} would overwrite the --split files "
                           "it reads (their ratings and timestamps become 1 and 0); export to "
                           "another prefix")
    for key in ("SPLIT", "EXPORT_SPLIT"):
        if s[key] and s[key].endswith(("/", os.sep)):
            raise SettingError(f"--{key.lower()}={s[key]} ends with a folder; it is a prefix of "
                               "three files, like out/lastfm for out/lastfm.train.rating, "
                               "out/lastfm.test.rating and out/lastfm.test.negative")
    if s["SPLIT"]:
        ignored = [f"--{k.lower()}" for k in ("DATASET", "DATA_DIR", "SCALE", "ROOT_URL",
                                               "NUM_EVAL_NEGATIVES") if k in given]
        if ignored:
            raise SettingError(f"--split reads the data and each test user's candidates from its "
                               f"files; drop {', '.join(ignored)}")
    if s["LOAD"] and os.path.realpath(os.path.dirname(s["LOAD"]) or ".") == os.path.realpath(
            s["OUTPUT_DIR"]):
        raise SettingError("--output_dir is the folder of the --load model, whose metrics.json "
                           "records how it was trained; choose another --output_dir")
    if s["LOAD"] and (s["COMPARE"] or s["PRETRAIN"]):
        raise SettingError("--load scores one saved model; --compare and --pretrain train new "
                           "ones (drop one of them)")
    wants_model = [f"--{k.lower()}" for k in ("RECOMMEND_USER", "SIMILAR_TO") if s[k]]
    if wants_model and (s["COMPARE"] or (s["MODEL"] == "pop" and not s["LOAD"])):
        raise SettingError(f"{' and '.join(wants_model)} need one model with embeddings; "
                           + ("--compare trains five" if s["COMPARE"] else "--model=pop has none")
                           + ": choose it with --model=mlp, gmf, neumf or bpr")
    if s["RECOMMEND_USER"]:
        parse_user_list(s["RECOMMEND_USER"])


# What pop and bpr do not read (with --compare or --load these apply where they can)
POP_UNUSED = ("NUM_EPOCH", "VALIDATION", "PATIENCE", "RESUME", "NUM_FACTOR", "L2",
              "LEARNING_RATE", "OPTIMIZER", "BATCH_SIZE", "NEG_RATIO", "ROWS")
BPR_UNUSED = ("NEG_RATIO", "ROWS")


def check_unused(model, given):
    """A one-line SettingError for a setting `model` would silently not use."""
    mlp_only = [key for key in ("HIDDEN_UNITS", "DROPOUT") if key in given]
    if mlp_only and model in ("gmf", "bpr", "pop"):
        raise SettingError(f"--{mlp_only[0].lower()} sizes the MLP of mlp and neumf; --model="
                           f"{model} has none (drop it)")
    unused = [f"--{key.lower()}" for key in POP_UNUSED if key in given]
    if unused and model == "pop":
        raise SettingError(f"--model=pop ranks artists by their training listeners and trains "
                           f"nothing; drop {', '.join(unused)}")
    unused = [f"--{key.lower()}" for key in BPR_UNUSED if key in given]
    if unused and model == "bpr":
        raise SettingError(f"--model=bpr trains on (user, played, unplayed) triples, one "
                           f"negative a play in a row of its own; drop {', '.join(unused)}")


def parse_user_list(text):
    try:
        users = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise SettingError(f"--recommend_user={text!r} must be user ids like 0 or 0,12,300")
    if not users or min(users) < 0:
        raise SettingError(f"--recommend_user={text!r} must be user ids of 0 or more")
    return list(dict.fromkeys(users))    # each once, in the order given


def import_tensorflow_quietly():
    """TensorFlow's C++ start-up notes (oneDNN, CUDA) go to file descriptor 2 whatever
    TF_CPP_MIN_LOG_LEVEL says; they would bury a one-line error. Silence them at import only."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv=None):
    """Command-line entry: bad input is one line on stderr and exit code 2, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings, given = parse_settings(argv, {name: globals()[name] for name in SETTINGS})
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if settings["QUIET"]:
        os.environ["TQDM_DISABLE"] = "1"   # tqdm >= 4.66 reads it for every bar
    import_tensorflow_quietly()
    import data
    import tensorflow
    import training
    try:
        return run(settings, given)
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except training.TrainingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder we may not write: one line, no traceback
        advice = "free space or choose" if error.errno == errno.ENOSPC else "choose"
        print(f"error: {error.strerror or error} ({error.filename or settings['OUTPUT_DIR']}); "
              f"{advice} another folder (--output_dir, --export_split)", file=sys.stderr)
        return 1
    except (MemoryError, tensorflow.errors.ResourceExhaustedError):
        print("error: out of memory; lower --num_factor, --hidden_units, --neg_ratio or "
              "--batch_size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        folder = settings["OUTPUT_DIR"]
        saved = training.Checkpoints.any_in(folder)
        if settings["COMPARE"] or not saved:
            print("\ninterrupted" + (" before the first epoch ended; nothing to resume" if not saved
                  else "; --resume continues one model's run, not --compare: run it again"),
                  file=sys.stderr)
        else:
            print(f"\ninterrupted: the last complete epoch's checkpoint is in {folder}/; run the "
                  "same command with --resume to continue", file=sys.stderr)
        return 130


def run(s, given):
    import data
    import report
    import training
    loaded = None
    if s["LOAD"]:     # first, so that a trained model gets its own model's defaults
        check_load_data(s)
        loaded = read_saved_model(s["LOAD"])
        if loaded.name not in MODEL_DEFAULTS:   # e.g. bench/speed.py's notebook model
            raise data.DataError(f"--load={s['LOAD']} holds a model named {loaded.name!r}; this "
                                 f"script loads the models it makes (mlp, gmf, neumf, bpr)")
        if "MODEL" in given and loaded.name != s["MODEL"]:
            raise data.DataError(f"--load={s['LOAD']} holds a {loaded.name} model, not "
                                 f"--model={s['MODEL']}; drop --model")
        s.update(model_settings(s, loaded.name), NUM_EPOCH=s["NUM_EPOCH"])
        s.update(loaded_model_settings(s, loaded, given))
    print("settings: " + ", ".join(f"{k.lower()}={s[k]!r}" for k in SETTINGS))
    os.makedirs(s["OUTPUT_DIR"], exist_ok=True)
    probe = os.path.join(s["OUTPUT_DIR"], ".ncf-write-test")   # fail now, not after training
    with open(probe, "w"):
        pass
    os.remove(probe)
    training.seed_everything(s["SEED"])
    log = (lambda *a, **k: None) if s["QUIET"] else print
    with_validation = s["VALIDATION"] or s["COMPARE"]

    # 1. Load data: three CSVs -> listened (user, artist) pairs --------------------------------
    # 2. Split: one held-out artist per user, 99 unplayed candidates (the notebook's hit_ratio_df)
    if s["SPLIT"]:
        plays, split = data.read_ncf_split(s["SPLIT"], s["SEED"], validation=with_validation)
        s["NUM_EVAL_NEGATIVES"] = int(split.test_negatives.shape[1])   # the file's, recorded
        if s["TOP_K"] > s["NUM_EVAL_NEGATIVES"]:
            raise data.DataError(f"--top_k={s['TOP_K']} is larger than the "
                                 f"{s['NUM_EVAL_NEGATIVES']} candidates per test user in "
                                 f"{s['SPLIT']}.test.negative; use --top_k="
                                 f"{s['NUM_EVAL_NEGATIVES']} or less")
        print(f"data: {split.num_users:,} users, "
              f"{data.counted('items', split.num_items, len(split.sampler.items))}"
              + (f" ({plays.num_duplicates:,} repeated training rows merged)"
                 if plays.num_duplicates else "") + f" from {s['SPLIT']}.*")
    else:
        plays = data.load(s["DATASET"], s["DATA_DIR"], s["ROOT_URL"], s["SCALE"], s["SEED"],
                          explicit_url="ROOT_URL" in given)
        split = data.leave_one_out(plays, s["NUM_EVAL_NEGATIVES"], s["SEED"], with_validation)
    untrained = data.count_untrained(split.test_users, split.train_users, split.num_users)
    print(f"split: {len(split.test_users):,} test users, {len(split.valid_users):,} validation "
          f"users, {len(split.train_users):,} training pairs"
          + (f"; {split.num_untestable:,} users left out of testing (fewer than "
             f"{s['NUM_EVAL_NEGATIVES']} unplayed artists)" if split.num_untestable else "")
          + (f"; {untrained:,} test users have no training pair (the model knows nothing they "
             "played)" if untrained else ""))
    if s["RECOMMEND_USER"]:   # checked now, not after an hour of training
        report.check_user_ids(parse_user_list(s["RECOMMEND_USER"]), split.num_users)
    if s["SIMILAR_TO"]:
        report.find_artist(plays, s["SIMILAR_TO"])
    if s["EXPORT_SPLIT"]:
        print(f"exported split: {', '.join(data.write_ncf_split(split, s['EXPORT_SPLIT']))}")

    # 3-5. Build the model, sample negatives and train, evaluate ---------------------------------
    if s["COMPARE"]:
        results = compare(s, split, log)
        final = next(r for r in results if r["model"] == "neumf")
    else:
        pretrained = pretrain_towers(s, split, log) if s["MODEL"] == "neumf" and s["PRETRAIN"] else None
        final = train_and_evaluate(s, s["MODEL"], split, log, pretrained, loaded)
        popularity = evaluate_popularity(s, split)
        print(f"popularity: HR@{s['TOP_K']} {popularity['hit_ratio']:.3f}, "
              f"NDCG@{s['TOP_K']} {popularity['ndcg']:.3f}")
        final["popularity"] = popularity
        report_run(s, plays, split, final)
    data.atomic_write(os.path.join(s["OUTPUT_DIR"], "environment.json"),   # the CPU, versions
                      lambda path: training.write_json(path, training.environment()))

    print(f"hit ratio : {final['hit_ratio']:.3f}")
    print(f"ndcg : {final['ndcg']:.3f}")
    return 0


def model_settings(s, name):
    """The settings one model trains with: its validation-chosen defaults (or the constants'
    values), unless given on the command line."""
    given = s.get("_given", set())
    tuned = {key for defaults in MODEL_DEFAULTS.values() for key in defaults}
    own = {key: MODEL_DEFAULTS[name].get(key, globals()[key]) for key in tuned - given}
    return {**s, **own, "MODEL": name}


def train_and_evaluate(s, name, split, log, pretrained=None, loaded=None):
    """Builds (or takes the `loaded` model) and trains one model, then scores it on the test
    set -> result dict."""
    import evaluate
    import models
    import training
    if loaded is not None:
        model = check_fits(loaded, s["LOAD"], split)
        log(f"model: loaded {s['LOAD']} ({name}, {model.count_params():,} weights)")
    elif name == "pop":
        return {"model": "pop", **evaluate_popularity(s, split), "best_epoch": 0,
                "train_seconds": 0.0, "history": []}
    else:
        history = ((split.train_users, split.train_items)
                   if s["USER_INPUT"] == "history" and name != "bpr" else None)
        model = models.build_model(name, split.num_users, split.num_items, s["NUM_FACTOR"],
                                   s["HIDDEN_UNITS"], s["L2"], s["DROPOUT"], s["LEARNING_RATE"],
                                   s["OPTIMIZER"], history)
        if pretrained:
            models.load_pretrained(model, *pretrained)
        log(f"model: {name}, {model.count_params():,} weights")
    fingerprint = {k: s[k] for k in ("DATASET", "DATA_DIR", "SCALE", "SPLIT", "SEED", "NUM_FACTOR",
                                     "HIDDEN_UNITS", "L2", "DROPOUT", "NEG_RATIO", "ROWS",
                                     "BATCH_SIZE", "LEARNING_RATE", "OPTIMIZER", "VALIDATION",
                                     "PRETRAIN", "USER_INPUT", "NUM_EVAL_NEGATIVES", "LOAD",
                                     "COMPARE")}
    fingerprint["MODEL"] = name
    started = time.time()
    model, history, best_epoch = training.fit(
        model, split, num_epoch=s["NUM_EPOCH"], batch_size=s["BATCH_SIZE"],
        neg_ratio=s["NEG_RATIO"], rows=s["ROWS"], seed=s["SEED"], top_k=s["TOP_K"],
        validation=s["VALIDATION"] or s["COMPARE"], patience=s["PATIENCE"],
        checkpoints=training.Checkpoints(s["OUTPUT_DIR"], name), fingerprint=fingerprint,
        resume=s["RESUME"], learning_rate=s["LEARNING_RATE"],
        verbose=0 if s["QUIET"] else (1 if sys.stdout.isatty() else 2), log=log)
    train_seconds = time.time() - started
    started = time.time()
    scorer = models.make_scorer(model)
    test = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                   split.test_negatives, s["TOP_K"], quiet=s["QUIET"])
    result = {"model": name, "hit_ratio": test["hit_ratio"], "ndcg": test["ndcg"],
              "ranks": test["ranks"], "num_test_users": test["num_users"],
              "best_epoch": best_epoch, "history": history,
              "train_seconds": round(train_seconds, 2),
              "eval_seconds": round(time.time() - started, 2), "keras_model": model}
    if s["FULL_RANKING_USERS"]:
        result.update(full_ranking(s, split, scorer))
    log(f"{name}: HR@{s['TOP_K']} {test['hit_ratio']:.4f}, NDCG@{s['TOP_K']} {test['ndcg']:.4f} "
        f"on {test['num_users']:,} test users (best epoch {best_epoch}, "
        f"train {train_seconds:.1f} s, evaluate {result['eval_seconds']:.1f} s)")
    return result


def check_load_data(s):
    """With --load, the data settings in the metrics.json beside the model (when there is one)
    must be this run's: on another seed's split, say, the model's training artists would be
    among the test artists, and it would score too well. A model trained on a --split is
    scored on that split only; one trained on CSVs may be scored on a --split (its files decide
    the test artists, and an exported split read back is the same)."""
    import data
    path = os.path.join(os.path.dirname(s["LOAD"]) or ".", "metrics.json")
    try:
        with open(path) as stream:
            saved = json.load(stream)["settings"]
        differ = _differing_data_settings(s, saved)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return                                      # no record to check against
    if differ:
        raise data.DataError(f"--load={s['LOAD']} was trained with {', '.join(differ)} ({path}); "
                             "scored on other data its training artists could be test artists: "
                             "use those settings")


def _differing_data_settings(s, saved):
    """The saved run's data settings that this run does not share, as --name=value."""
    trained_on = saved.get("split")
    if trained_on:
        same = bool(s["SPLIT"]) and (os.path.realpath(s["SPLIT"])
                                     == os.path.realpath(str(trained_on)))
        return [] if same else [f"--split={trained_on}"]
    if s["SPLIT"]:
        return []
    now = {**s, "DATA_DIR": os.path.realpath(s["DATA_DIR"]) if s["DATA_DIR"] else ""}
    saved = {**saved, "data_dir": os.path.realpath(saved["data_dir"]) if saved["data_dir"] else ""}
    return [f"--{k.lower()}={saved[k.lower()]!r}" for k in ("DATASET", "DATA_DIR", "SCALE", "SEED")
            if saved[k.lower()] != now[k]]


def loaded_model_settings(s, model, given):
    """The settings a --load model holds in itself (its size, L2, dropout, user input,
    optimizer and learning rate): what metrics.json records and what it trains on with.
    Given on the command line, a different value is refused, but for --learning_rate, which
    training on then uses."""
    import data
    import models
    own = models.settings_of(model)
    if s["NUM_EPOCH"] and "OPTIMIZER" not in own:
        raise data.DataError(f"--load={s['LOAD']} was saved without an optimizer this script "
                             "makes (lazy_adam, adam, sgd), so it can be scored (--num_epoch=0) "
                             "but not trained on")
    clash = [key for key in own if key in given and key != "LEARNING_RATE" and s[key] != own[key]]
    if clash:
        key = clash[0]
        raise data.DataError(f"--load={s['LOAD']} holds a model with --{key.lower()}="
                             f"{own[key]!r}, which --{key.lower()}={s[key]!r} cannot change; "
                             f"drop --{key.lower()}")
    if "LEARNING_RATE" in given and "OPTIMIZER" in own:
        model.optimizer.learning_rate.assign(s["LEARNING_RATE"])
    return {key: value for key, value in own.items() if key not in given}


def read_saved_model(path):
    """A model a run saved, or a one-line DataError."""
    import data
    import models
    if not os.path.isfile(path):
        raise data.DataError(f"--load={path}: file not found; give a .keras file a run saved")
    import zipfile
    if not zipfile.is_zipfile(path):   # Keras would say "File not found"
        raise data.DataError(f"--load={path}: not a .keras file (a .keras file is a zip archive); "
                             "give a .keras file a run saved")
    try:
        return models.load(path)
    except Exception as error:  # not a Keras file, or one made by other code
        raise data.DataError(f"--load={path}: not a model this script saved "
                             f"({data.first_sentence(error)})") from None


def check_fits(model, path, split):
    """The model, if its tables fit this data; else a one-line DataError."""
    import data
    import models
    users, items = models.table_sizes(model)
    if (users, items) != (split.num_users, split.num_items):
        raise data.DataError(f"--load={path}: the model has {users:,} users and {items:,} "
                             f"artists, the data {split.num_users:,} and {split.num_items:,}; "
                             "use the data settings it was trained with")
    trained_on, here = models.saved_data_digest(path), data.split_digest(split)
    if trained_on and trained_on != here:
        raise data.DataError(f"--load={path} was trained on other plays or test artists than "
                             f"these (data digest {trained_on}, here {here}); "
                             "scored here, its training artists could be test artists: use the "
                             "data and --seed it was trained with")
    return model


def evaluate_popularity(s, split):
    import evaluate
    scorer = evaluate.popularity_scorer(split.train_items, split.num_items)
    result = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                     split.test_negatives, s["TOP_K"])
    if s["FULL_RANKING_USERS"]:
        result.update(full_ranking(s, split, scorer))
    return result


def full_ranking(s, split, scorer):
    """HR/NDCG of the held-out artist ranked against every unplayed artist, for a seeded sample
    of FULL_RANKING_USERS test users (the same users for every model)."""
    import evaluate
    import numpy as np
    rng = np.random.default_rng([s["SEED"], 5])
    rows = np.sort(rng.permutation(len(split.test_users))[:s["FULL_RANKING_USERS"]])
    full = evaluate.full_ranking(scorer, split.test_users[rows], split.test_items[rows],
                                 split.sampler, s["TOP_K"])
    return {"full_hit_ratio": full["hit_ratio"], "full_ndcg": full["ndcg"],
            "full_users": full["num_users"]}


def pretrain_towers(s, split, log):
    """NeuMF's pretraining, as the paper: GMF and MLP trained first with NeuMF's own sizes and
    settings (so their weights fit its towers) -> (gmf model, mlp model)."""
    towers = []
    for name in ("gmf", "mlp"):
        log(f"pretraining {name} for neumf")
        tower = {**s, "MODEL": name, "RESUME": False}
        if s["OPTIMIZER"] == "sgd":       # the paper: towers with Adam, NeuMF fine-tuned by SGD
            tower["OPTIMIZER"] = "lazy_adam"
        towers.append(train_and_evaluate(tower, name, split, log)["keras_model"])
    return tuple(towers)


def compare(s, split, log):
    """Every model on the same split, validation-chosen epochs -> rows; prints the table and
    writes OUTPUT_DIR/compare.csv."""
    import data
    import training
    results = []
    for name in ("pop", "bpr", "gmf", "mlp", "neumf"):
        settings = model_settings(s, name)
        training.seed_everything(s["SEED"])
        pretrained = None
        if name == "neumf" and settings["PRETRAIN"]:
            pretrained = pretrain_towers(settings, split, log)
        result = train_and_evaluate(settings, name, split, log, pretrained)
        results.append(result)
    k = s["TOP_K"]
    columns = ["model", "hit_ratio", "ndcg", "best_epoch", "train_seconds"]
    if s["FULL_RANKING_USERS"]:
        columns += ["full_hit_ratio", "full_ndcg"]
    lines = [f"{'model':8s} {'HR@' + str(k):>8s} {'NDCG@' + str(k):>8s} {'epoch':>6s} "
             f"{'train s':>8s}" + (f" {'full HR':>8s} {'full NDCG':>9s}"
                                   if s["FULL_RANKING_USERS"] else "")]
    for r in results:
        lines.append(f"{r['model']:8s} {r['hit_ratio']:8.4f} {r['ndcg']:8.4f} "
                     f"{r['best_epoch']:6d} {r['train_seconds']:8.1f}"
                     + (f" {r['full_hit_ratio']:8.4f} {r['full_ndcg']:9.4f}"
                        if s["FULL_RANKING_USERS"] else ""))
    print("\n".join(lines))
    csv = "\n".join(",".join(str(r.get(c, "")) for c in columns) for r in results)
    data.atomic_write(os.path.join(s["OUTPUT_DIR"], "compare.csv"),
                      lambda path: data.write_text(path, ",".join(columns) + "\n" + csv + "\n"))
    return results


def report_run(s, plays, split, result):
    """metrics.json, the saved model, plots, recommendations and similar artists."""
    import data
    import models
    import report
    import training
    folder = s["OUTPUT_DIR"]
    model = result.get("keras_model")
    popularity = result["popularity"]
    metrics = {
        "model": result["model"], "hit_ratio": result["hit_ratio"], "ndcg": result["ndcg"],
        "popularity_hit_ratio": popularity["hit_ratio"], "popularity_ndcg": popularity["ndcg"],
        "num_test_users": int(len(split.test_users)), "num_epoch": len(result["history"]),
        "best_epoch": result["best_epoch"], "train_seconds": result["train_seconds"],
        "eval_seconds": result.get("eval_seconds", 0.0), "history": result["history"],
        "settings": {k.lower(): s[k] for k in SETTINGS}}
    for key in ("full_hit_ratio", "full_ndcg", "full_users"):
        if key in result:
            metrics[key] = result[key]
            metrics["popularity_" + key] = popularity[key]
    if model is not None and (not s["LOAD"] or s["NUM_EPOCH"]):   # trained here
        path = os.path.join(folder, f"{result['model']}.keras")
        data.atomic_write(path, lambda temporary: models.save(model, temporary,
                                                              data.split_digest(split)))
        metrics["saved_model"] = path
        print(f"saved model: {path}")
    data.atomic_write(os.path.join(folder, "metrics.json"),
                      lambda path: training.write_json(path, metrics))
    for path in report.plot_run(result, popularity, s["TOP_K"], folder):
        print(f"plot: {path}")
    if s["RECOMMEND_USER"] and model is not None:
        report.recommend(model, plays, split, parse_user_list(s["RECOMMEND_USER"]), s["TOP_K"],
                         folder)
    if s["SIMILAR_TO"] and model is not None:
        report.similar_artists(model, plays, s["SIMILAR_TO"], 10)


if __name__ == "__main__":
    sys.exit(main())
