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
import errno
import os
import re
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import backend  # noqa: E402  (no TensorFlow nor JAX: the environment is checked before they start)
import errors  # noqa: E402
import kernels  # noqa: E402
import model_table  # noqa: E402
import settings  # noqa: E402

__version__ = "1.2"

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
TENSORBOARD = ""        # a folder for TensorBoard logs, a run per model: loss, validation and
                        # test HR@K and NDCG@K per epoch ("": none)
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
EXPORT = ""             # a folder: the model as a TensorFlow SavedModel that recommends, in
                        # TF Serving's layout (DIR/1/, then DIR/2/ ...): README
QUIET = False           # no progress bars or per-epoch lines

# Defaults per model, chosen on validation artists (docs/experiments.md), are in the table of
# models (model_table.py). They apply when --model picks the model and the setting is not given
# on the command line.
MODEL_DEFAULTS = {name: dict(spec.defaults) for name, spec in model_table.MODELS.items()}
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
        if error := kernels.environment_error() or backend.environment_error():
            raise errors.InputError(error)
    except settings.HelpRequested:
        print(settings.help_text(settings.constant_docs(__file__), DEFAULTS, MODEL_DEFAULTS,
                                 USAGE))
        return 0
    except errors.InputError as error:
        report_error(error)
        return 2
    for stream in (sys.stdout, sys.stderr):   # a name the terminal cannot show: "?", not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    if s.quiet:
        os.environ["TQDM_DISABLE"] = "1"   # tqdm >= 4.66 reads it for every bar
    backend.import_quietly()
    backend.prepare()      # the compiled kernels only where they can run
    cluster = None
    if s.strategy != "none":
        import distribute   # sets up devices or connects to a cluster before TensorFlow starts
        cluster = distribute.prepare(s.strategy, s.devices)
    return run_reporting_errors(s, cluster)


class Terminated(BaseException):
    """SIGTERM, what schedulers and containers send before they stop a job: handled as Ctrl-C
    is, with its own exit code (128 + 15)."""


def on_sigterm(signum, frame):
    raise Terminated()


def run_reporting_errors(s, cluster=None):
    """`run(s)`, with each failure as one line and its exit code: 2 bad input, 1 the
    environment (disk, memory, divergence), 130 interrupted (Ctrl-C), 143 terminated."""
    import files
    main_thread = threading.current_thread() is threading.main_thread()   # may set handlers
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        os.makedirs(s.output_dir, exist_ok=True)
        with files.folder_lock(s.output_dir):
            return run(s, cluster)
    except (errors.InputError, errors.RunError) as error:
        report_error(error)
        return error.exit_code
    except OSError as error:  # a full disk, a file we may not read or write: one line
        if error.errno == errno.EPIPE:   # stdout closed: nothing more may be written to it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        report_error(os_error_message(error, s))
        return 1
    except backend.out_of_memory_errors() as error:
        detail = f" ({error.args[0]})" if isinstance(error, MemoryError) and error.args else ""
        report_error(f"out of memory{detail}; lower --num_factor, --hidden_units, --neg_ratio "
                     "or --batch_size")
        return 1
    except KeyboardInterrupt:
        print("\n" + interrupted_message(s), file=sys.stderr)
        return 130
    except Terminated:
        print(interrupted_message(s, "terminated (SIGTERM)"), file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


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
    written = [os.path.realpath(p) for p in (s.output_dir, os.path.dirname(s.export_split or "."),
                                             s.export, s.tensorboard) if p]
    writing = any(inside(os.path.realpath(str(path)), folder) for folder in written)
    if error.errno == errno.ENOSPC:
        return f"no space left on the device of {path}; free space or choose another folder"
    if writing:
        return (f"{error.strerror or error} ({path}); choose another folder (--output_dir, "
                "--export_split, --export, --tensorboard)")
    return f"cannot read {path}: {error.strerror or error}"


def inside(path, folder):
    """Is `path` the folder or inside it? (/x/output2 is not inside /x/output.)"""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def interrupted_message(s, what="interrupted"):
    import steps
    import training
    folder = steps.model_folder(s, s.model)
    if s.compare or not training.Checkpoints.any_in(folder):
        return what + ("; --resume continues one model's run, not --compare: run it again"
                       if s.compare else " before the first epoch ended; nothing to resume")
    return (f"{what}: the last complete epoch's checkpoint is in {folder}/; run the same "
            "command with --resume to continue")


def run(s, cluster=None):
    """The notebook's five steps for one model; --compare repeats steps 3 to 5 for each.
    `cluster`: --strategy=parameter_server's (distribute.prepare)."""
    import compare
    import files
    import loading
    import report
    import steps
    import training
    loaded = None
    if s.load:        # first: the model file decides the model and its own settings
        s, loaded = loading.adopt_saved_model(s)
    announce(s)
    if s.compare or model_table.spec(s.model).trained:
        kernels.build_in_background()     # a first run's g++ beside steps 1 and 2
    folder = s.output_dir if s.compare else steps.model_folder(s, s.model)
    steps.prepare_folder(folder)
    training.seed_everything(s.seed)
    log = (lambda *a, **k: None) if s.quiet else print

    plays, given_split = steps.load_data(s)                          # 1. load data
    s, split = steps.split_data(s, plays, given_split)               # 2. split
    check_requests(s, plays, split, loaded)
    if s.compare:                    # 3 to 5 for every model, in compare.py
        final = report_compared(compare.every_model(s, split, log))
    else:
        pretrained = compare.pretrain_towers(s, split, log) if s.pretrain else None
        model = steps.build_model(s, split, loaded, pretrained, log)          # 3. build model
        model, *trained = steps.train_model(s, model, split, folder, log,     # 4. sample + train
                                            cluster)
        final = steps.evaluate_model(s, model, split, trained, log)           # 5. evaluate
        print(f"popularity: HR@{s.top_k} {final['popularity']['hit_ratio']:.3f}, "
              f"NDCG@{s.top_k} {final['popularity']['ndcg']:.3f}")
        report.write_run(s, plays, split, model, final, folder, __version__)
    files.atomic_write(os.path.join(folder, "environment.json"),   # the CPU, versions
                       lambda path: files.write_json(path, kernels.environment()))
    print(f"hit ratio : {final['hit_ratio']:.3f}")
    print(f"ndcg : {final['ndcg']:.3f}")
    return 0


def report_compared(results):
    """--compare's closing lines are one model's, said: the table's last, the most complete
    (NeuMF, the paper's own), never the best on the test set, which would choose by it."""
    final = results[-1]
    print(f"the closing lines are {final['model']}'s (every model's figures: the table above)")
    return final


def check_requests(s, plays, split, loaded):
    """What the run will be asked after training, checked now, not after an hour of training:
    a --load model fits this data, the --recommend_user ids and the --similar_to artist exist."""
    import loading
    import report
    if loaded is not None:
        loading.check_fits(loaded, s.load, split, plays)
    if s.recommend_user:
        report.user_rows(settings.parse_user_list(s.recommend_user), plays)
    if s.similar_to:
        report.find_artist(plays, s.similar_to)


def announce(s):
    """One short line: what differs from the file's constants, and the per-model defaults."""
    differ = [item for item in settings.changed(s, DEFAULTS)
              if item.split("=")[0] not in s.applied]
    line = "settings: " + (", ".join(differ) if differ else "the file's constants")
    if s.applied:
        applied = ", ".join(f"{k}={getattr(s, k)!r}" for k in s.applied)
        line += f"; {s.model}'s defaults: {applied}"
    print(line)


if __name__ == "__main__":
    sys.exit(main())
