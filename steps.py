"""The notebook's five steps, each a function of the run's settings: `ncf_lastfm.run` calls them
by name, and --compare and pretraining (compare.py) repeat steps 3 to 5 for each model.

  1. load_data       the plays: made, read from a folder, or downloaded (data.py, sources.py)
  2. split_data      one held-out artist per user, with its unplayed candidates (split.py)
  3. build_model     a new compiled model, or the --load one (models.py, model_table.py)
  4. train_model     fresh negatives every epoch, under the chosen strategy (training.py),
                     logged for TensorBoard with --tensorboard (summaries.py)
  5. evaluate_model  HR@K and NDCG@K on the test users, beside popularity's (evaluate.py)

Each step prints one short line of what it did; what it refuses is an `errors.InputError`.
"""
import dataclasses
import os
import sys
import time

import numpy as np

import data
import errors
import evaluate
import model_table
import models
import settings
import sources
import split as splitting
import training


def model_folder(s, name):
    """Each model's run writes in a folder of its own; a --load run beside, never over, it."""
    return os.path.join(s.output_dir, f"{name}-loaded" if s.load else name)


def prepare_folder(folder):
    """Create the run's folder and fail now, not after training, if it cannot be written."""
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".ncf-write-test-{os.getpid()}")
    with open(probe, "w"):
        pass
    os.remove(probe)


# ---- 1. load data ----------------------------------------------------------------------------
def load_data(s):
    """Step 1 -> (Plays, the split a --split's files bring, or None)."""
    if s.split:
        return read_split_files(s)
    if s.dataset in sources.DATASETS and not s.data_dir:   # the public originals, converted once
        folder = sources.fetch(s.dataset, s.root_url if "root_url" in s.given else "", None,
                               print)
        return data.load("lastfm", folder, source=f"{s.dataset} ({folder})"), None
    return data.load(s.dataset, s.data_dir, s.root_url, s.scale, s.seed,
                     explicit_url="root_url" in s.given), None


def read_split_files(s):
    """A split in the NCF paper's files holds the data and the split -> (Plays, Split)."""
    plays, split = splitting.read_ncf_split(s.split, s.seed, s.validation or s.compare,
                                            s.replace_played_negatives)
    candidates = int(split.test_negatives.shape[1])
    if s.top_k > candidates:
        raise errors.InputError(f"--top_k={s.top_k} is larger than the {candidates} candidates "
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
    return plays, split


# ---- 2. split --------------------------------------------------------------------------------
def split_data(s, plays, given=None):
    """Step 2: one held-out artist per user with NUM_EVAL_NEGATIVES unplayed candidates (or the
    split `given` by a --split's files) -> (settings, Split). With --split the settings take
    the files' candidate count, which metrics.json records."""
    if given is not None:
        split = given
        s = dataclasses.replace(s, num_eval_negatives=int(split.test_negatives.shape[1]))
    else:
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
    return s, split


# ---- 3. build model --------------------------------------------------------------------------
def blueprint(s, split):
    """What the settings' model is built from, on this split."""
    history = ((split.train_users, split.train_items)
               if s.user_input == "history" and model_table.spec(s.model).history_input
               else None)
    return models.Blueprint(s.model, split.num_users, split.num_items, s.num_factor,
                            s.hidden_units, s.l2, s.dropout, s.learning_rate, s.optimizer,
                            history)


def build_model(s, split, loaded=None, pretrained=None, log=print):
    """Step 3: a new compiled model of `s.model` (from the `pretrained` towers where given), or
    the `loaded` one; None for a model with nothing to learn (popularity)."""
    if not model_table.spec(s.model).trained:
        return None
    if loaded is not None:
        model = loaded
    else:
        check_memory(s, split.num_users, split.num_items)
        model = blueprint(s, split).build()
        if pretrained:
            models.load_pretrained(model, *pretrained)
    log(f"model: {s.model}, {model.count_params():,} weights"
        + (f" (loaded from {s.load})" if loaded is not None else "")
        + (f", strategy {s.strategy}" if s.strategy != "none" else ""))
    return model


def check_memory(s, num_users, num_items):
    """A MemoryError before building a model whose tables, with Adam's two moments and a
    gradient's worth of room, could not fit in this machine's memory."""
    towers = max(1, len(model_table.spec(s.model).towers))
    layers = sum(a * b for a, b in zip((2 * s.num_factor,) + s.hidden_units, s.hidden_units))
    needed = 4 * 4 * ((num_users + num_items) * s.num_factor * towers + layers)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # not a POSIX system: let TensorFlow say
        return
    if needed > memory:
        raise MemoryError(f"the model's tables need about {needed / 2**30:,.1f} GiB with "
                          f"Adam's moments, this machine has {memory / 2**30:,.1f} GiB")


# ---- 4. sample negatives and train -----------------------------------------------------------
def train_model(s, model, split, folder, log=print, cluster=None):
    """Step 4 under the chosen strategy -> (single-device model, history, best epoch, seconds).
    A model with nothing to learn is returned as it is. `cluster`: the parameter servers'."""
    if model is None:
        return None, [], 0, 0.0
    started = time.time()
    checkpoints = training.Checkpoints(folder, s.model)
    fingerprint = settings.fingerprint(s, s.model)
    if s.strategy == "parameter_server":
        import distribute   # TensorFlow's distribution, only when asked for
        trainer = distribute.ParameterServerTrainer(blueprint(s, split), cluster,
                                                    initial=model)
        model, history = distribute.fit_parameter_server(
            trainer, split, num_epoch=s.num_epoch, batch_size=s.batch_size,
            neg_ratio=s.neg_ratio, seed=s.seed, top_k=s.top_k, checkpoints=checkpoints,
            fingerprint=fingerprint, resume=s.resume, log=log)
        return model, history, len(history), time.time() - started
    if s.strategy == "mirrored":
        import distribute
        mirrored = distribute.build_model(distribute.mirrored_strategy(s.devices),
                                          blueprint(s, split))
        mirrored.set_weights(model.get_weights())
        model = mirrored
    if s.tensorboard:
        import summaries   # TensorFlow's (settings refuse --tensorboard on JAX)
    board = (summaries.TensorBoardLog(os.path.join(s.tensorboard, os.path.basename(folder)),
                                      s.top_k) if s.tensorboard else None)   # a run per model
    model, history, best_epoch = training.fit(
        model, split, num_epoch=s.num_epoch, batch_size=s.batch_size, neg_ratio=s.neg_ratio,
        rows=s.rows, seed=s.seed, top_k=s.top_k, validation=s.validation or s.compare,
        patience=s.patience, checkpoints=checkpoints, fingerprint=fingerprint,
        resume=s.resume, learning_rate=s.learning_rate,
        bar=not s.quiet and sys.stdout.isatty(), log=log, tensorboard=board)
    if board:
        board.close()
    if s.strategy == "mirrored":   # evaluation and the saved model are one device's, as ever
        model = distribute.single_device_copy(model, blueprint(s, split))
    return model, history, best_epoch, time.time() - started


# ---- 5. evaluate -----------------------------------------------------------------------------
def evaluate_model(s, model, split, trained, log=print, popularity=True):
    """Step 5: the model's HR@K and NDCG@K on the test users, and (with `popularity`) the
    baseline's, with `trained` = (history, best epoch, seconds) from step 4 -> the result."""
    history, best_epoch, train_seconds = trained
    started = time.time()
    scorer = (models.make_scorer(model) if model is not None
              else evaluate.popularity_scorer(split.train_items, split.num_items))
    test = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                   split.test_negatives, s.top_k, quiet=s.quiet)
    result = {"model": s.model, "hit_ratio": test["hit_ratio"], "ndcg": test["ndcg"],
              "ranks": test["ranks"], "num_test_users": test["num_users"],
              "best_epoch": best_epoch, "history": history,
              "train_seconds": round(train_seconds, 2)}
    if s.full_ranking_users:
        result.update(full_ranking(s, split, scorer))
    result["eval_seconds"] = round(time.time() - started, 2)
    if popularity:
        result["popularity"] = evaluate_popularity(s, split)
    if model is not None:
        log(f"{s.model}: HR@{s.top_k} {test['hit_ratio']:.4f}, NDCG@{s.top_k} "
            f"{test['ndcg']:.4f} on {test['num_users']:,} test users (best epoch {best_epoch}, "
            f"train {train_seconds:.1f} s, evaluate {result['eval_seconds']:.1f} s)")
    return result


def evaluate_popularity(s, split):
    """The baseline every model is read against: artists ranked by their training listeners."""
    scorer = evaluate.popularity_scorer(split.train_items, split.num_items)
    result = evaluate.hit_ratio_at_k(scorer, split.test_users, split.test_items,
                                     split.test_negatives, s.top_k)
    if s.full_ranking_users:
        result.update(full_ranking(s, split, scorer))
    return result


def full_ranking(s, split, scorer):
    """HR/NDCG of the held-out artist ranked against every unplayed artist, for a seeded sample
    of FULL_RANKING_USERS test users (the same users for every model)."""
    rng = np.random.default_rng([s.seed, 5])
    rows = np.sort(rng.permutation(len(split.test_users))[:s.full_ranking_users])
    full = evaluate.full_ranking(scorer, split.test_users[rows], split.test_items[rows],
                                 split.sampler, s.top_k)
    return {"full_hit_ratio": full["hit_ratio"], "full_ndcg": full["ndcg"],
            "full_users": full["num_users"]}


def train_and_evaluate(s, split, folder, log=print, loaded=None, pretrained=None):
    """Steps 3 to 5 for one model of several (--compare, pretraining: the baseline is not
    scored again for each) -> (Keras model or None, result dict)."""
    model = build_model(s, split, loaded, pretrained, log)
    model, history, best_epoch, seconds = train_model(s, model, split, folder, log)
    return model, evaluate_model(s, model, split, (history, best_epoch, seconds), log,
                                 popularity=False)
