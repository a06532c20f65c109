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

Run `python ncf_lastfm.py --dataset=sample` for a one-minute offline run, `--help` for every
setting. Each UPPER_CASE constant below can be overridden as `--name=value` or `--name value`.
"""
import dataclasses
import errno
import json
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import kernels  # noqa: E402  (no TensorFlow: the environment is checked before it starts)
import settings  # noqa: E402

__version__ = "1.0"

# ---- data ------------------------------------------------------------------------------------
DATASET = "lastfm"      # lastfm (the notebook's CSVs from ROOT_URL, or DATA_DIR) | lastfm-360k
                        # | lastfm-2k (the public originals) | sample (offline) | synthetic
ROOT_URL = "https://craftsangjae.s3.ap-northeast-2.amazonaws.com/data/"  # or a mirror
DATA_DIR = ""           # a folder with the CSVs: no download
SCALE = 1.0             # synthetic data size; 1.0 = the 360K files (358,868 users, 17.3M plays)
SPLIT = ""              # PREFIX of an NCF-paper split (PREFIX.train.rating, .test.rating, ...)
EXPORT_SPLIT = ""       # PREFIX to write this run's split in that format
OUTPUT_DIR = "output"   # a folder per model inside: metrics, model, checkpoints, plots
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
NUM_EPOCH = 10          # passes over the training plays
BATCH_SIZE = 1024       # samples per step
LEARNING_RATE = 1e-3    # the optimizer's step size
OPTIMIZER = "lazy_adam" # lazy_adam (embedding rows in the batch only) | adam (the notebook's)
                        # | sgd (plain; with PRETRAIN, the towers still train with lazy_adam)
VALIDATION = False      # hold out a second artist per user; keep the best epoch's weights
PATIENCE = 3            # epochs without a better validation hit ratio before stopping
RESUME = False          # continue from the model folder's last complete epoch
STRATEGY = "none"       # none (one device) | mirrored (this host's GPUs, or DEVICES logical
                        # CPUs) | parameter_server (TF_CONFIG's cluster, else 2 workers and 2
                        # parameter servers in this process): docs/architecture.md
DEVICES = 2             # mirrored: devices to train on (logical CPUs where there are no GPUs)
# ---- evaluation ------------------------------------------------------------------------------
TOP_K = 10              # a hit: the held-out artist among the K best-scored candidates
NUM_EVAL_NEGATIVES = 99 # unplayed candidates beside each held-out artist
FULL_RANKING_USERS = 0  # also rank against every unplayed artist, for this many test users
COMPARE = False         # train every model on the same split and print one table
REPLACE_PLAYED_NEGATIVES = False  # --split: replace each listed negative the user played (or
                        # their held-out item) by a fresh unplayed one; default: scored as given
# ---- using the model -------------------------------------------------------------------------
LOAD = ""               # a saved .keras model: evaluate / recommend without training
RECOMMEND_USER = ""     # user ids, comma-separated: their artists and top-10 recommendations
SIMILAR_TO = ""         # an artist name: its 10 nearest artists by embedding
QUIET = False           # no progress bars or per-epoch lines

# Defaults per model, chosen on validation artists (docs/experiments.md). They apply when
# --model picks the model and the setting is not given on the command line.
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
DEFAULTS = {name: value for name, value in dict(globals()).items()
            if name.isupper() and name not in ("MODEL_DEFAULTS",)}
Settings = settings.make_settings_class(DEFAULTS)
USAGE = ("usage: python ncf_lastfm.py [--name=value | --name value | --flag] ...\n"
         "NCF on LastFM: trains the notebook's model (or --model) and prints the hit ratio.")


def main(argv=None):
    """Command-line entry: bad input is one line on stderr and exit code 2, never a traceback."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        s = settings.parse(argv, DEFAULTS, MODEL_DEFAULTS, Settings)
        if error := kernels.environment_error():
            raise settings.SettingError(error)
    except settings.HelpRequested:
        print(settings.help_text(settings.constant_docs(__file__), DEFAULTS, MODEL_DEFAULTS,
                                 USAGE))
        return 0
    except settings.SettingError as error:
        report_error(error)
        return 2
    for stream in (sys.stdout, sys.stderr):   # a name the terminal cannot show: "?", not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    if s.quiet:
        os.environ["TQDM_DISABLE"] = "1"   # tqdm >= 4.66 reads it for every bar
    kernels.import_tensorflow_quietly()
    if s.strategy == "mirrored":            # before TensorFlow sets up its devices
        import distribute
        import tensorflow as tf
        if len(tf.config.list_physical_devices("GPU")) < s.devices:
            distribute.logical_cpus(s.devices)
    if s.strategy == "parameter_server":   # connecting resets TensorFlow's context: first
        import distribute
        distribute.CLUSTER = distribute.Cluster()
    return run_reporting_errors(s)


def run_reporting_errors(s):
    """`run(s)`, with each failure as one line and its exit code: 2 bad input, 1 the
    environment (disk, memory, divergence), 130 interrupted."""
    import data
    import files
    import tensorflow
    import training
    try:
        os.makedirs(s.output_dir, exist_ok=True)
        with files.folder_lock(s.output_dir):
            return run(s)
    except data.DataError as error:
        report_error(error)
        return 2
    except training.TrainingError as error:
        report_error(error)
        return error.exit_code
    except OSError as error:  # a full disk, a file we may not read or write: one line
        if error.errno == errno.EPIPE:   # stdout closed: nothing more may be written to it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        report_error(os_error_message(error, s))
        return 1
    except (MemoryError, tensorflow.errors.ResourceExhaustedError) as error:
        detail = f" ({error.args[0]})" if isinstance(error, MemoryError) and error.args else ""
        report_error(f"out of memory{detail}; lower --num_factor, --hidden_units, --neg_ratio "
                     "or --batch_size")
        return 1
    except KeyboardInterrupt:
        print("\n" + interrupted_message(s), file=sys.stderr)
        return 130


def report_error(message):
    """The one line of an error on stderr, with any run of over 120 characters without a
    space (a value from a hostile file or setting) cut to an excerpt."""
    message = " ".join(str(message).split())
    message = re.sub(r"\S{121,}", lambda m: f"{m.group()[:100]}...({len(m.group()):,} "
                     "characters)", message)
    if len(message) > 2000:
        message = message[:1000] + " ... " + message[-500:]
    print(f"error: {message}", file=sys.stderr)


def os_error_message(error, s):
    """Which file failed, and the advice for it: a folder this run writes, or an input."""
    if error.filename is None and error.errno in (errno.EPIPE, errno.ENOSPC, errno.EIO):
        return f"the output could not be written ({error.strerror or error})"
    path = error.filename or s.output_dir
    if getattr(error, "reading", False):
        return f"cannot read {path}: {error.strerror or error}"
    written = [os.path.realpath(p) for p in (s.output_dir, os.path.dirname(s.export_split or "."))
               if p]
    writing = any(os.path.realpath(str(path)).startswith(folder) for folder in written)
    if error.errno == errno.ENOSPC:
        return f"no space left on the device of {path}; free space or choose another folder"
    if writing:
        return (f"{error.strerror or error} ({path}); choose another folder (--output_dir, "
                "--export_split)")
    return f"cannot read {path}: {error.strerror or error}"


def interrupted_message(s):
    import training
    folder = model_folder(s, s.model)
    if s.compare or not training.Checkpoints.any_in(folder):
        return "interrupted" + ("; --resume continues one model's run, not --compare: run it "
                                "again" if s.compare else " before the first epoch ended; "
                                "nothing to resume")
    return (f"interrupted: the last complete epoch's checkpoint is in {folder}/; run the same "
            "command with --resume to continue")


def run(s):
    """The notebook's five steps for one model, or every model with --compare."""
    import files
    import report
    import training
    loaded = None
    if s.load:        # first: the model file decides the model and its own settings
        s, loaded = adopt_saved_model(s)
    announce(s)
    folder = s.output_dir if s.compare else model_folder(s, s.model)
    prepare_folder(folder)
    training.seed_everything(s.seed)
    log = (lambda *a, **k: None) if s.quiet else print

    # 1. Load data: the CSVs -> listened (user, artist) pairs; 2. split: one held-out artist per
    # user with 99 unplayed candidates (the notebook's hit_ratio_df)
    plays, split = load_and_split(s)
    if s.split:       # the candidates are the file's: metrics.json records their count
        s = dataclasses.replace(s, num_eval_negatives=int(split.test_negatives.shape[1]))
    if loaded is not None:
        check_fits(loaded, s.load, split, plays)
    if s.recommend_user:   # checked now, not after an hour of training
        report.user_rows(settings.parse_user_list(s.recommend_user), plays)
    if s.similar_to:
        report.find_artist(plays, s.similar_to)

    # 3-5. Build the model, sample negatives and train, evaluate ---------------------------------
    if s.compare:
        final = next(r for r in compare(s, split, log) if r["model"] == "neumf")
    else:
        pretrained = (pretrain_towers(s, split, log) if s.model == "neumf" and s.pretrain
                      else None)
        model, final = train_and_evaluate(s, split, folder, log, loaded, pretrained)
        final["popularity"] = evaluate_popularity(s, split)
        print(f"popularity: HR@{s.top_k} {final['popularity']['hit_ratio']:.3f}, "
              f"NDCG@{s.top_k} {final['popularity']['ndcg']:.3f}")
        report_run(s, plays, split, model, final, folder)
    files.atomic_write(os.path.join(folder, "environment.json"),   # the CPU, versions
                       lambda path: files.write_json(path, kernels.environment()))
    print(f"hit ratio : {final['hit_ratio']:.3f}")
    print(f"ndcg : {final['ndcg']:.3f}")
    return 0


def model_folder(s, name):
    """Each model's run writes in a folder of its own; a --load run beside, never over, it."""
    return os.path.join(s.output_dir, f"{name}-loaded" if s.load else name)


def announce(s):
    """One short line: what differs from the file's constants, and the per-model defaults."""
    differ = [item for item in settings.changed(s, DEFAULTS)
              if item.split("=")[0] not in s.applied]
    line = "settings: " + (", ".join(differ) if differ else "the file's constants")
    if s.applied:
        applied = ", ".join(f"{k}={getattr(s, k)!r}" for k in s.applied)
        line += f"; {s.model}'s defaults: {applied}"
    print(line)


def prepare_folder(folder):
    """Create the run's folder and fail now, not after training, if it cannot be written."""
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".ncf-write-test-{os.getpid()}")
    with open(probe, "w"):
        pass
    os.remove(probe)


def load_and_split(s):
    """Steps 1 and 2: the plays and their split, from CSVs or from a split's files."""
    import data
    import split as splitting
    if s.split:
        plays, split = splitting.read_ncf_split(s.split, s.seed, s.validation or s.compare,
                                                s.replace_played_negatives)
        candidates = int(split.test_negatives.shape[1])
        if s.top_k > candidates:
            raise data.DataError(f"--top_k={s.top_k} is larger than the {candidates} candidates "
                                 f"per test user in {s.split}.test.negative; use --top_k="
                                 f"{candidates} or less")
        print(f"data: {split.num_users:,} users, "
              f"{data.counted('items', split.num_items, len(split.sampler.items))}"
              + (f" ({plays.num_duplicates:,} repeated training rows merged)"
                 if plays.num_duplicates else "") + f" from {s.split}.*")
        count, users = split.played_negatives
        if count:
            print(f"negatives: {count:,} listed negatives of {users:,} test users are items the "
                  "user played or their held-out item; "
                  + ("replaced by fresh unplayed items (--replace_played_negatives)"
                     if split.replaced_negatives else "scored as given, as the papers did "
                     "(--replace_played_negatives draws fresh unplayed ones)"))
    else:
        plays = data.load(s.dataset, s.data_dir, s.root_url, s.scale, s.seed,
                          explicit_url="root_url" in s.given)
        split = splitting.leave_one_out(plays, s.num_eval_negatives, s.seed,
                                        s.validation or s.compare)
    untrained = splitting.count_untrained(split.test_users, split.train_users, split.num_users)
    print(f"split: {len(split.test_users):,} test users, {len(split.valid_users):,} validation "
          f"users, {len(split.train_users):,} training pairs"
          + (f"; {split.num_untestable:,} users left out of testing (fewer than "
             f"{s.num_eval_negatives} unplayed artists)" if split.num_untestable else "")
          + (f"; {untrained:,} test users have no training pair (the model knows nothing they "
             "played)" if untrained else ""))
    if s.export_split:
        paths = splitting.write_ncf_split(split, s.export_split)
        print(f"exported split: {', '.join(paths)}")
    return plays, split


def model_settings(s, name):
    """The settings model `name` trains with: its validation-chosen defaults (or the file's
    constants), unless given on the command line."""
    tuned = {key for defaults in MODEL_DEFAULTS.values() for key in defaults}
    own = {key.lower(): MODEL_DEFAULTS[name].get(key, DEFAULTS[key]) for key in tuned
           if key.lower() not in s.given}
    applied = tuple(k.lower() for k in MODEL_DEFAULTS[name] if k.lower() not in s.given)
    return dataclasses.replace(s, **own, model=name, applied=applied)


def train_and_evaluate(s, split, folder, log, loaded=None, pretrained=None):
    """Step 3 to 5 for one model: build (or take `loaded`), train, score on the test set ->
    (Keras model or None, result dict)."""
    import evaluate
    import models
    if s.model == "pop":
        return None, {"model": "pop", **evaluate_popularity(s, split), "best_epoch": 0,
                      "train_seconds": 0.0, "history": []}
    model = loaded if loaded is not None else build(s, split, pretrained)
    log(f"model: {s.model}, {model.count_params():,} weights"
        + (f" (loaded from {s.load})" if loaded is not None else "")
        + (f", strategy {s.strategy}" if s.strategy != "none" else ""))
    started = time.time()
    model, history, best_epoch = train(s, model, split, folder, log)
    train_seconds = time.time() - started
    started = time.time()
    scorer = models.make_scorer(model)
    test = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                   split.test_negatives, s.top_k, quiet=s.quiet)
    result = {"model": s.model, "hit_ratio": test["hit_ratio"], "ndcg": test["ndcg"],
              "ranks": test["ranks"], "num_test_users": test["num_users"],
              "best_epoch": best_epoch, "history": history,
              "train_seconds": round(train_seconds, 2),
              "eval_seconds": round(time.time() - started, 2)}
    if s.full_ranking_users:
        result.update(full_ranking(s, split, scorer))
    log(f"{s.model}: HR@{s.top_k} {test['hit_ratio']:.4f}, NDCG@{s.top_k} {test['ndcg']:.4f} "
        f"on {test['num_users']:,} test users (best epoch {best_epoch}, "
        f"train {train_seconds:.1f} s, evaluate {result['eval_seconds']:.1f} s)")
    return model, result


def train(s, model, split, folder, log):
    """Step 4 under the chosen strategy -> (single-device model, history, best epoch)."""
    import training
    checkpoints = training.Checkpoints(folder, s.model)
    fingerprint = settings.fingerprint(s, s.model)
    if s.strategy == "parameter_server":
        import distribute
        trainer = distribute.ParameterServerTrainer(model_spec(s, split), distribute.CLUSTER,
                                                    initial=model)
        model, history = distribute.fit_parameter_server(
            trainer, split, num_epoch=s.num_epoch, batch_size=s.batch_size,
            neg_ratio=s.neg_ratio, seed=s.seed, top_k=s.top_k, checkpoints=checkpoints,
            fingerprint=fingerprint, resume=s.resume, log=log)
        return model, history, len(history)
    if s.strategy == "mirrored":
        import distribute
        spec = model_spec(s, split)
        mirrored = distribute.build_model(distribute.mirrored_strategy(s.devices), spec)
        mirrored.set_weights(model.get_weights())
        model = mirrored
    model, history, best_epoch = training.fit(
        model, split, num_epoch=s.num_epoch, batch_size=s.batch_size, neg_ratio=s.neg_ratio,
        rows=s.rows, seed=s.seed, top_k=s.top_k, validation=s.validation or s.compare,
        patience=s.patience, checkpoints=checkpoints, fingerprint=fingerprint,
        resume=s.resume, learning_rate=s.learning_rate,
        bar=not s.quiet and sys.stdout.isatty(), log=log)
    if s.strategy == "mirrored":   # evaluation and the saved model are one device's, as ever
        model = distribute.single_device_copy(model, spec)
    return model, history, best_epoch


def model_spec(s, split):
    import distribute
    history = ((split.train_users, split.train_items)
               if s.user_input == "history" and s.model != "bpr" else None)
    return distribute.ModelSpec(s.model, split.num_users, split.num_items, s.num_factor,
                                s.hidden_units, s.l2, s.dropout, s.learning_rate, s.optimizer,
                                history)


def build(s, split, pretrained=None):
    """A new compiled model of `s.model`, from the pretrained towers where given."""
    import models
    check_memory(s, split.num_users, split.num_items)
    history = ((split.train_users, split.train_items)
               if s.user_input == "history" and s.model != "bpr" else None)
    model = models.build_model(s.model, split.num_users, split.num_items, s.num_factor,
                               s.hidden_units, s.l2, s.dropout, s.learning_rate, s.optimizer,
                               history)
    if pretrained:
        models.load_pretrained(model, *pretrained)
    return model


def check_memory(s, num_users, num_items):
    """A MemoryError before building a model whose tables, with Adam's two moments and a
    gradient's worth of room, could not fit in this machine's memory."""
    towers = 2 if s.model == "neumf" else 1
    layers = sum(a * b for a, b in zip((2 * s.num_factor,) + s.hidden_units, s.hidden_units))
    needed = 4 * 4 * ((num_users + num_items) * s.num_factor * towers + layers)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # not a POSIX system: let TensorFlow say
        return
    if needed > memory:
        raise MemoryError(f"the model's tables need about {needed / 2**30:,.1f} GiB with "
                          f"Adam's moments, this machine has {memory / 2**30:,.1f} GiB")


def evaluate_popularity(s, split):
    import evaluate
    scorer = evaluate.popularity_scorer(split.train_items, split.num_items)
    result = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                     split.test_negatives, s.top_k)
    if s.full_ranking_users:
        result.update(full_ranking(s, split, scorer))
    return result


def full_ranking(s, split, scorer):
    """HR/NDCG of the held-out artist ranked against every unplayed artist, for a seeded sample
    of FULL_RANKING_USERS test users (the same users for every model)."""
    import evaluate
    import numpy as np
    rng = np.random.default_rng([s.seed, 5])
    rows = np.sort(rng.permutation(len(split.test_users))[:s.full_ranking_users])
    full = evaluate.full_ranking(scorer, split.test_users[rows], split.test_items[rows],
                                 split.sampler, s.top_k)
    return {"full_hit_ratio": full["hit_ratio"], "full_ndcg": full["ndcg"],
            "full_users": full["num_users"]}


def pretrain_towers(s, split, log):
    """NeuMF's pretraining, as the paper: GMF and MLP trained first with NeuMF's own sizes and
    settings (so their weights fit its towers) -> (gmf model, mlp model)."""
    towers = []
    for name in ("gmf", "mlp"):
        log(f"pretraining {name} for neumf")
        # the paper: towers with Adam, NeuMF fine-tuned by SGD
        optimizer = "lazy_adam" if s.optimizer == "sgd" else s.optimizer
        tower = dataclasses.replace(s, model=name, resume=False, optimizer=optimizer)
        folder = os.path.join(model_folder(s, "neumf"), f"pretrain-{name}")
        os.makedirs(folder, exist_ok=True)
        towers.append(train_and_evaluate(tower, split, folder, log)[0])
    return tuple(towers)


def compare(s, split, log):
    """Every model on the same split, validation-chosen epochs -> rows; prints the table and
    writes OUTPUT_DIR/compare.csv."""
    import files
    import training
    results = []
    for name in ("pop", "bpr", "gmf", "mlp", "neumf"):
        own = model_settings(s, name)
        training.seed_everything(s.seed)
        folder = model_folder(own, name)
        os.makedirs(folder, exist_ok=True)
        pretrained = pretrain_towers(own, split, log) if name == "neumf" and own.pretrain else None
        results.append(train_and_evaluate(own, split, folder, log, pretrained=pretrained)[1])
    table, csv = compare_table(results, s.top_k, s.full_ranking_users)
    print(table)
    files.atomic_write(os.path.join(s.output_dir, "compare.csv"),
                       lambda path: files.write_text(path, csv))
    return results


def compare_table(results, top_k, full):
    """The printed table and compare.csv's text of --compare's rows."""
    columns = ["model", "hit_ratio", "ndcg", "best_epoch", "train_seconds"]
    columns += ["full_hit_ratio", "full_ndcg"] if full else []
    lines = [f"{'model':8s} {'HR@' + str(top_k):>8s} {'NDCG@' + str(top_k):>8s} {'epoch':>6s} "
             f"{'train s':>8s}" + (f" {'full HR':>8s} {'full NDCG':>9s}" if full else "")]
    for r in results:
        lines.append(f"{r['model']:8s} {r['hit_ratio']:8.4f} {r['ndcg']:8.4f} "
                     f"{r['best_epoch']:6d} {r['train_seconds']:8.1f}"
                     + (f" {r['full_hit_ratio']:8.4f} {r['full_ndcg']:9.4f}" if full else ""))
    rows = [",".join(str(r.get(c, "")) for c in columns) for r in results]
    return "\n".join(lines), ",".join(columns) + "\n" + "\n".join(rows) + "\n"


def recorded_settings(s):
    """Every setting as metrics.json records it; paths made absolute, so that a --load run from
    another folder finds the data the model was trained on."""
    recorded = {name.lower(): getattr(s, name.lower()) for name in DEFAULTS}
    for key in ("data_dir", "split", "output_dir", "load", "export_split"):
        if recorded[key]:
            recorded[key] = os.path.abspath(recorded[key])
    return recorded


def report_run(s, plays, split, model, result, folder):
    """metrics.json, the saved model, plots, recommendations and similar artists."""
    import files
    import models
    import report
    import split as splitting
    popularity = result["popularity"]
    metrics = {
        "model": result["model"], "hit_ratio": result["hit_ratio"], "ndcg": result["ndcg"],
        "popularity_hit_ratio": popularity["hit_ratio"], "popularity_ndcg": popularity["ndcg"],
        "num_test_users": int(len(split.test_users)), "num_epoch": len(result["history"]),
        "best_epoch": result["best_epoch"], "train_seconds": result["train_seconds"],
        "eval_seconds": result.get("eval_seconds", 0.0), "history": result["history"],
        "played_negatives": split.played_negatives[0],
        "played_negative_users": split.played_negatives[1],
        "settings": recorded_settings(s),
        "version": __version__}
    for key in ("full_hit_ratio", "full_ndcg", "full_users"):
        if key in result:
            metrics[key] = result[key]
            metrics["popularity_" + key] = popularity[key]
    if model is not None and (not s.load or s.num_epoch):   # trained here
        path = os.path.join(folder, f"{result['model']}.keras")
        digest = splitting.split_digest(split)
        ids = id_record(plays)
        files.atomic_write(path, lambda temporary: models.save(model, temporary, digest, ids))
        metrics["saved_model"] = path
        print(f"saved model: {path}")
    files.atomic_write(os.path.join(folder, "metrics.json"),
                       lambda path: files.write_json(path, metrics))
    for path in report.plot_run(result, popularity, s.top_k, folder):
        print(f"plot: {path}")
    if s.recommend_user and model is not None:
        report.recommend(model, plays, split, settings.parse_user_list(s.recommend_user),
                         s.top_k, folder)
    if s.similar_to and model is not None:
        report.similar_artists(model, plays, s.similar_to, 10, folder)


# ---- a saved model (--load) ------------------------------------------------------------------
DATA_SETTINGS = ("dataset", "data_dir", "scale", "seed", "split")


def adopt_saved_model(s):
    """--load: the model, and the settings it was trained with where none were given (its
    data, from the metrics.json beside it; its sizes, from the model itself)."""
    import data
    import models
    s = dataclasses.replace(s, **saved_data_settings(s))
    model = read_saved_model(s.load)
    if model.name not in MODEL_DEFAULTS:   # e.g. bench/speed.py's notebook model
        raise data.DataError(f"--load={s.load} holds a model named {settings.short(model.name)};"
                             " this script loads the models it makes (mlp, gmf, neumf, bpr)")
    if "model" in s.given and model.name != s.model:
        raise data.DataError(f"--load={s.load} holds a {model.name} model, not "
                             f"--model={s.model}; drop --model")
    try:
        models.table_sizes(model)
        models.settings_of(model)
    except (KeyError, ValueError, AttributeError, IndexError, TypeError):
        raise data.DataError(f"--load={s.load} holds a model named {model.name} that this "
                             "script did not make (its layers are not an NCF model's)") from None
    s = dataclasses.replace(model_settings(s, model.name), num_epoch=s.num_epoch)
    if os.path.realpath(os.path.dirname(s.load) or ".") == os.path.realpath(
            model_folder(s, model.name)):
        raise data.DataError(f"--load={s.load} is in {model_folder(s, model.name)}, where this "
                             "run would write; choose another --output_dir")
    return dataclasses.replace(s, **loaded_model_settings(s, model)), model


def saved_data_settings(s):
    """The data settings recorded beside the --load model, for those not given -> {field: value};
    a given one that differs is refused: on another seed's split, say, the model's training
    artists would be among the test artists, and it would score too well."""
    import data
    path = os.path.join(os.path.dirname(s.load) or ".", "metrics.json")
    try:
        with open(path, encoding="utf-8") as stream:
            saved = json.load(stream)["settings"]
        saved = {key: saved[key] for key in DATA_SETTINGS}
    except (OSError, ValueError, KeyError, TypeError):
        return {}                                    # no record: the given settings decide
    if not any(key in s.given for key in DATA_SETTINGS):
        return {key: value for key, value in saved.items()
                if isinstance(value, type(getattr(s, key)))}
    differ = differing_data_settings(s, saved)
    if differ:
        raise data.DataError(f"--load={s.load} was trained with {', '.join(differ)} ({path}); "
                             "scored on other data its training artists could be test artists: "
                             "use those settings")
    return {}


def differing_data_settings(s, saved):
    """The saved run's data settings that this run does not share, as --name=value. A model
    trained on a --split is scored on that split only; one trained on CSVs may be scored on a
    --split (its files decide the test artists, and an exported split read back is the same)."""
    if saved.get("split"):
        same = bool(s.split) and os.path.realpath(s.split) == os.path.realpath(saved["split"])
        return [] if same else [f"--split={saved['split']}"]
    if s.split:
        return []
    real = {"data_dir": lambda path: os.path.realpath(path) if path else ""}
    return [f"--{key}={saved[key]!r}" for key in ("dataset", "data_dir", "scale", "seed")
            if real.get(key, lambda v: v)(saved[key]) != real.get(key, lambda v: v)(
                getattr(s, key))]


def loaded_model_settings(s, model):
    """The settings a --load model holds in itself (its size, L2, dropout, user input,
    optimizer and learning rate) -> {field: value}. Given on the command line, a different
    value is refused, but for --learning_rate, which training on then uses."""
    import data
    import models
    own = {key.lower(): value for key, value in models.settings_of(model).items()}
    if s.num_epoch and "optimizer" not in own:
        raise data.DataError(f"--load={s.load} was saved without an optimizer this script "
                             "makes (lazy_adam, adam, sgd), so it can be scored (--num_epoch=0) "
                             "but not trained on")
    clash = [key for key in own if key in s.given and key != "learning_rate"
             and getattr(s, key) != own[key]]
    if clash:
        key = clash[0]
        raise data.DataError(f"--load={s.load} holds a model with --{key}={own[key]!r}, which "
                             f"--{key}={getattr(s, key)!r} cannot change; drop --{key}")
    if "learning_rate" in s.given and "optimizer" in own:
        model.optimizer.learning_rate.assign(s.learning_rate)
    return {key: value for key, value in own.items() if key not in s.given}


def read_saved_model(path):
    """A model a run saved, or a one-line DataError."""
    import zipfile
    import data
    import files
    import models
    if not os.path.isfile(path):
        raise data.DataError(f"--load={path}: file not found; give a .keras file a run saved")
    with files.reading(path):
        open(path, "rb").close()
    if not zipfile.is_zipfile(path):   # Keras would say "File not found"
        raise data.DataError(f"--load={path}: not a .keras file (a .keras file is a zip archive); "
                             "give a .keras file a run saved")
    try:
        return models.load(path)
    except Exception as error:  # not a Keras file, or one made by other code
        raise data.DataError(f"--load={path}: not a model this script saved "
                             f"({data.first_sentence(error)})") from None


ID_RECORD = "ncf_ids.json"   # in a saved model: the data's own ids of its table rows


def id_record(plays):
    """The mapping from table rows to the data's own ids, when there is one, for `models.save`."""
    if plays.user_labels is None and plays.artist_labels is None:
        return None
    return {ID_RECORD: {"users": None if plays.user_labels is None else list(plays.user_labels),
                        "artists": None if plays.artist_labels is None
                        else list(plays.artist_labels)}}


def check_fits(model, path, split, plays=None):
    """A one-line DataError unless the model's tables and training data are this split's."""
    import data
    import models
    import split as splitting
    users, items = models.table_sizes(model)
    if (users, items) != (split.num_users, split.num_items):
        raise data.DataError(f"--load={path}: the model has {users:,} users and {items:,} "
                             f"artists, the data {split.num_users:,} and {split.num_items:,}; "
                             "use the data settings it was trained with")
    trained_on, here = models.saved_data_digest(path), splitting.split_digest(split)
    if trained_on and trained_on != here:
        raise data.DataError(f"--load={path} was trained on other plays or test artists than "
                             f"these (data digest {trained_on}, here {here}); scored here, its "
                             "training artists could be test artists: use the data and --seed "
                             "it was trained with")
    saved = models.saved_record(path, ID_RECORD)
    if plays is not None and saved is not None and (id_record(plays) or {}).get(ID_RECORD) != saved:
        raise data.DataError(f"--load={path} numbers the users and artists of other ids than "
                             "this data's; use the data it was trained on")


if __name__ == "__main__":
    sys.exit(main())
