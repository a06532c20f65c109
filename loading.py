"""--load: a saved model scored, trained on, or asked for recommendations, on the data it was
trained on.

In:  the run's settings with LOAD, the model file a run saved (`models.save`), and the
     metrics.json beside it (the data settings it was trained with).
Out: the model, and the settings it holds in itself (its sizes, L2, dropout, user input,
     optimizer) merged into the run's, for those not given.
Refuses, each as one `errors.InputError`: a file that is not a .keras zip or not a model this
     script made, a model for other data (its table sizes, the digest of its training plays and
     test artists, its id mapping), a setting that contradicts the model, and writing into the
     folder the model is read from.
"""
import dataclasses
import json
import os
import zipfile

import errors
import files
import model_table
import models
import settings
import split as splitting
import steps

DATA_SETTINGS = ("dataset", "data_dir", "scale", "seed", "split")


def adopt_saved_model(s):
    """--load: the model, and the settings it was trained with where none were given (its
    data, from the metrics.json beside it; its sizes, from the model itself)."""
    s = dataclasses.replace(s, **saved_data_settings(s))
    model = read_saved_model(s.load)
    if model.name not in model_table.TRAINED:   # e.g. bench/speed.py's notebook model
        raise errors.InputError(f"--load={s.load} holds a model named "
                                f"{settings.short(model.name)}; this script loads the models it "
                                f"makes ({', '.join(model_table.TRAINED)})")
    if "model" in s.given and model.name != s.model:
        raise errors.InputError(f"--load={s.load} holds a {model.name} model, not "
                                f"--model={s.model}; drop --model")
    try:
        models.table_sizes(model)
        models.settings_of(model)
    except (KeyError, ValueError, AttributeError, IndexError, TypeError):
        raise errors.InputError(f"--load={s.load} holds a model named {model.name} that this "
                                "script did not make (its layers are not an NCF model's)") from None
    s = dataclasses.replace(settings.for_model(s, model.name), num_epoch=s.num_epoch)
    if os.path.realpath(os.path.dirname(s.load) or ".") == os.path.realpath(
            steps.model_folder(s, model.name)):
        raise errors.InputError(f"--load={s.load} is in {steps.model_folder(s, model.name)}, "
                                "where this run would write; choose another --output_dir")
    return dataclasses.replace(s, **loaded_model_settings(s, model)), model


def saved_data_settings(s):
    """The data settings recorded beside the --load model, for those not given -> {field: value};
    a given one that differs is refused: on another seed's split, say, the model's training
    artists would be among the test artists, and it would score too well."""
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
        raise errors.InputError(f"--load={s.load} was trained with {', '.join(differ)} ({path}); "
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
    own = {key.lower(): value for key, value in models.settings_of(model).items()}
    if s.num_epoch and "optimizer" not in own:
        raise errors.InputError(f"--load={s.load} was saved without an optimizer this script "
                                "makes (lazy_adam, adam, sgd), so it can be scored (--num_epoch=0) "
                                "but not trained on")
    clash = [key for key in own if key in s.given and key != "learning_rate"
             and getattr(s, key) != own[key]]
    if clash:
        key = clash[0]
        raise errors.InputError(f"--load={s.load} holds a model with --{key}={own[key]!r}, which "
                                f"--{key}={getattr(s, key)!r} cannot change; drop --{key}")
    if "learning_rate" in s.given and "optimizer" in own:
        model.optimizer.learning_rate.assign(s.learning_rate)
    return {key: value for key, value in own.items() if key not in s.given}


def read_saved_model(path):
    """A model a run saved, or a one-line InputError."""
    if not os.path.isfile(path):
        raise errors.InputError(f"--load={path}: file not found; give a .keras file a run saved")
    with files.reading(path):
        open(path, "rb").close()
    if not zipfile.is_zipfile(path):   # Keras would say "File not found"
        raise errors.InputError(f"--load={path}: not a .keras file (a .keras file is a zip "
                                "archive); give a .keras file a run saved")
    try:
        return models.load(path)
    except Exception as error:  # not a Keras file, or one made by other code
        raise errors.InputError(f"--load={path}: not a model this script saved "
                                f"({errors.first_sentence(error)})") from None


ID_RECORD = "ncf_ids.json"   # in a saved model: the data's own ids of its table rows


def id_record(plays):
    """The mapping from table rows to the data's own ids, when there is one, for `models.save`."""
    if plays.user_labels is None and plays.artist_labels is None:
        return None
    return {ID_RECORD: {"users": None if plays.user_labels is None else list(plays.user_labels),
                        "artists": None if plays.artist_labels is None
                        else list(plays.artist_labels)}}


def check_fits(model, path, split, plays=None):
    """A one-line InputError unless the model's tables and training data are this split's."""
    users, items = models.table_sizes(model)
    if (users, items) != (split.num_users, split.num_items):
        raise errors.InputError(f"--load={path}: the model has {users:,} users and {items:,} "
                                f"artists, the data {split.num_users:,} and {split.num_items:,}; "
                                "use the data settings it was trained with")
    trained_on, here = models.saved_data_digest(path), splitting.split_digest(split)
    if trained_on and trained_on != here:
        raise errors.InputError(f"--load={path} was trained on other plays or test artists than "
                                f"these (data digest {trained_on}, here {here}); scored here, its "
                                "training artists could be test artists: use the data and --seed "
                                "it was trained with")
    saved = models.saved_record(path, ID_RECORD)
    if plays is not None and saved is not None and (id_record(plays) or {}).get(ID_RECORD) != saved:
        raise errors.InputError(f"--load={path} numbers the users and artists of other ids than "
                                "this data's; use the data it was trained on")
