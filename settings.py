"""Settings: the UPPER_CASE constants of ncf_lastfm.py, overridden from the command line.

In:  the constants (name -> default value), the file that defines them (their comments are the
     help text), the per-model defaults, and the command line: `--name=value`, `--name value`,
     `--flag` for a True/False setting, `-h`/`--help`.
Out: one frozen `Settings` with a lower-case field per constant, plus `given` (the names set on
     the command line) and `applied` (the per-model defaults that filled the rest). `help_text`
     and `changed` are derived from the same constants, so code, --help and README agree.
Refuses: an unknown name (with the closest known one), a value of another type than the
     constant's, a value out of range, settings that contradict each other or that the chosen
     model would not use, each as a one-line `InputError`.
"""
import ast
import dataclasses
import difflib
import importlib.util
import io
import math
import os
import re
import textwrap
import tokenize

import backend
from errors import InputError
import files
import model_table
from model_table import MODELS

MAX_VALUE_LENGTH = 1000   # characters: a longer value is refused before it is parsed
SIZE = "an integer from 1 to 2**31 - 1"   # a size beyond int32 fails inside TensorFlow

# Settings that say how to run and report, not what is trained: every other field is part of
# the checkpoint's fingerprint, so a new setting is in it unless it is declared here
RUN_ONLY = ("root_url", "export_split", "output_dir", "num_epoch", "patience", "resume",
            "top_k", "full_ranking_users", "load", "recommend_user", "similar_to", "quiet",
            "compare", "replace_played_negatives", "export", "tensorboard")


class HelpRequested(Exception):
    """-h or --help on the command line."""


def constant_docs(path):
    """The constants block of `path` -> [(group, [(NAME, comment), ...]), ...]. A constant's
    comment is the one on its line plus the comment-only lines indented under it; a group is
    a `# ---- name ----` line. Reading the file keeps --help and the comments one text."""
    with open(path, encoding="utf-8") as stream:
        source = stream.read()
    groups, name, statement_start = [], None, True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        kind, text, (_, column) = token.type, token.string, token.start
        if kind == tokenize.COMMENT and (match := re.match(r"# -+ (.+?) -+$", text)):
            groups.append((match.group(1), []))
            name = None
        elif kind == tokenize.COMMENT and name and (not statement_start or column > 0):
            entries = groups[-1][1]
            entries[-1] = (name, (entries[-1][1] + " " + text.lstrip("# ")).strip())
        elif kind == tokenize.NAME and statement_start and column == 0:
            name = text if text.isupper() and groups and text != "MODEL_DEFAULTS" else None
            if text == "MODEL_DEFAULTS":
                break
            if name:
                groups[-1][1].append((name, ""))
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.COMMENT):
            statement_start = kind != tokenize.COMMENT or statement_start
        else:
            statement_start = False
        if kind == tokenize.NEWLINE:
            statement_start = True
    return groups


def help_text(groups, defaults, model_defaults, usage):
    """--help: every setting with its default and meaning, grouped as in the file."""
    lines = [usage, ""]
    for group, entries in groups:
        lines.append(f"{group}:")
        for name, comment in entries:
            option = f"  --{name.lower()}={defaults[name]!r}"
            wrapped = textwrap.wrap(comment, 70) or [""]
            lines.append(f"{option:28s} {wrapped[0]}" if len(option) < 28
                         else f"{option}\n{'':28s} {wrapped[0]}")
            lines += [f"{'':28s} {more}" for more in wrapped[1:]]
        lines.append("")
    lines.append("per-model defaults (used when --model picks the model and the setting is not "
                 "given):")
    for model, values in model_defaults.items():
        shown = ", ".join(f"{k.lower()}={v!r}" for k, v in values.items()) or "the file's values"
        lines.append(f"  {model}: {shown}")
    return "\n".join(lines)


def make_settings_class(defaults):
    """A frozen dataclass with one lower-case field per constant, `given` and `applied`."""
    fields = [(name.lower(), type(value), dataclasses.field(default=value))
              for name, value in defaults.items()]
    fields += [("given", frozenset, dataclasses.field(default=frozenset())),
               ("applied", tuple, dataclasses.field(default=()))]
    return dataclasses.make_dataclass("Settings", fields, frozen=True)


def fingerprint(settings, model):
    """What a checkpoint must share with the run that resumes it: every setting but RUN_ONLY."""
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)
              if field.name not in RUN_ONLY + ("given", "applied")}
    return {**values, "model": model}


def for_model(settings, name):
    """The settings model `name` trains with: its validation-chosen defaults (model_table), or
    the file's constants, unless given on the command line."""
    file_values = {field.name: field.default for field in dataclasses.fields(settings)}
    tuned = {key.lower() for spec in MODELS.values() for key in spec.defaults}
    own = {key: MODELS[name].defaults.get(key.upper(), file_values[key]) for key in tuned
           if key not in settings.given}
    applied = tuple(k.lower() for k in MODELS[name].defaults if k.lower() not in settings.given)
    return dataclasses.replace(settings, **own, model=name, applied=applied)


def recorded(settings):
    """Every setting as metrics.json records it; paths made absolute, so that a --load run from
    another folder finds the data the model was trained on."""
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)
              if field.name not in ("given", "applied")}
    for key in ("data_dir", "split", "output_dir", "load", "export_split", "export",
                "tensorboard"):
        if values[key]:
            values[key] = os.path.abspath(values[key])
    return values


def changed(settings, defaults):
    """The settings that differ from the file's constants, as name=value."""
    return [f"{name.lower()}={short(getattr(settings, name.lower()))}" for name in defaults
            if getattr(settings, name.lower()) != defaults[name]]


def split_arguments(argv, defaults):
    """The command line -> [(name, text or None)]: `--name=value`, `--name value`, `--flag`."""
    pairs, index = [], 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if argument in ("-h", "--help"):
            raise HelpRequested()
        if not argument.startswith("--") or argument == "--":
            raise InputError(f"unexpected argument {short(argument)}; settings are "
                             "--name=value (--help lists them)")
        name, equals, text = argument[2:].partition("=")
        key = name.upper()
        if key not in defaults:
            raise InputError(unknown_message(name, defaults))
        if not equals and not isinstance(defaults[key], bool):
            if index >= len(argv) or argv[index].startswith("--"):
                raise InputError(f"--{name} needs a value, like --{name}={defaults[key]!r}")
            text, index = argv[index], index + 1
        pairs.append((key, text if (equals or not isinstance(defaults[key], bool)) else None))
    return pairs


def unknown_message(name, defaults):
    known = [n.lower() for n in defaults]
    close = difflib.get_close_matches(name.lower().replace("-", "_"), known, n=1, cutoff=0.6)
    hint = f"did you mean --{close[0]}? " if close else ""
    shown = name if len(name) <= 60 else name[:55] + "..."
    return f"unknown setting --{shown}; {hint}(--help lists every setting)"


def short(text, limit=80):
    """A value as it is quoted in a message: at most `limit` characters."""
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 5] + "...'" + f" ({len(text):,} chars)"


KINDS = {int: "an integer", float: "a number", str: "text",
         tuple: "a tuple", bool: "True or False", list: "a list", dict: "a dict",
         set: "a set", complex: "a complex number", bytes: "bytes", type(None): "None"}


def typed_value(key, text, default):
    """The text of --key=text as a value of the default's type, or a InputError."""
    if len(text) > MAX_VALUE_LENGTH:
        raise InputError(f"--{key.lower()} is {len(text):,} characters long; at most "
                         f"{MAX_VALUE_LENGTH:,} are read")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # --recommend_user=0,7 and --similar_to=1349 are text
    if isinstance(default, float) and isinstance(value, str):
        try:
            value = float(value)   # nan, inf: numbers, refused below as not finite
        except ValueError:
            pass
    if isinstance(default, float) and type(value) is int:
        try:
            value = float(value)
        except OverflowError:      # an integer beyond any float
            value = math.inf
    if isinstance(default, tuple) and isinstance(value, (int, list)):
        value = tuple(value) if isinstance(value, list) else (value,)
    if type(value) is not type(default):   # 2.5 for an integer is refused, never truncated
        raise InputError(f"--{key.lower()}={short(text)} is {KINDS.get(type(value), 'text')}; "
                         f"expected {KINDS[type(default)]} like --{key.lower()}={default!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"--{key.lower()}={short(text)} is not a finite number")
    return value


def parse(argv, defaults, model_defaults, settings_class):
    """The command line -> Settings, checked (InputError), or HelpRequested."""
    values, given = dict(defaults), set()
    for key, text in split_arguments(argv, defaults):
        values[key] = True if text is None else typed_value(key, text, defaults[key])
        given.add(key)
    applied = {k: v for k, v in model_defaults.get(values["MODEL"], {}).items()
               if k not in given}
    values.update(applied)
    if values["LOAD"] and "NUM_EPOCH" not in given:
        values["NUM_EPOCH"] = 0       # a saved model is scored as it is, unless asked
    settings = settings_class(**{k.lower(): v for k, v in values.items()},
                              given=frozenset(k.lower() for k in given),
                              applied=tuple(k.lower() for k in applied))
    check(settings)
    return settings


def check(s):
    """Every rule on one Settings, in one place: ranges, then combinations."""
    check_ranges(s)
    check_combinations(s)
    check_paths(s)
    if not (s.compare or s.load):
        check_unused(s.model, s.given)
    if s.recommend_user:
        parse_user_list(s.recommend_user)


CHOICES = {"strategy": ("none", "mirrored", "parameter_server"),
           "dataset": ("lastfm", "lastfm-360k", "lastfm-2k", "sample", "synthetic"),
           "optimizer": ("lazy_adam", "adam", "sgd"),
           "rows": ("play", "pair"), "user_input": ("id", "history"),
           "model": tuple(MODELS)}


def check_ranges(s):
    rules = [
        ("neg_ratio", 1 <= s.neg_ratio < 2 ** 31, SIZE),
        ("batch_size", 1 <= s.batch_size < 2 ** 31, SIZE),
        ("num_epoch", s.num_epoch >= 0, "an integer of 0 or more"),
        ("num_factor", 1 <= s.num_factor < 2 ** 31, SIZE),
        ("hidden_units", all(type(u) is int and 1 <= u < 2 ** 31 for u in s.hidden_units)
         and 1 <= len(s.hidden_units) <= 100,
         "a tuple of 1 to 100 positive integers below 2**31 like (32,16,8)"),
        ("learning_rate", s.learning_rate > 0, "a number above 0"),
        ("l2", s.l2 >= 0, "a number of 0 or more"),
        ("dropout", 0 <= s.dropout < 1, "a number in [0, 1)"),
        ("patience", s.patience >= 1, "an integer of 1 or more"),
        ("num_eval_negatives", s.num_eval_negatives >= 1, "an integer of 1 or more"),
        ("top_k", s.top_k >= 1 and (s.split or s.top_k <= s.num_eval_negatives),
         f"an integer from 1 to NUM_EVAL_NEGATIVES={s.num_eval_negatives} (a hit needs the "
         "held-out artist above the K-th best candidate)"),
        ("scale", 0 < s.scale <= 10, "a number in (0, 10]"),
        ("full_ranking_users", s.full_ranking_users >= 0, "an integer of 0 or more"),
        ("seed", 0 <= s.seed < 2 ** 32, "an integer from 0 to 2**32 - 1"),
        ("devices", 1 <= s.devices <= 64, "an integer from 1 to 64"),
        ("output_dir", s.output_dir.strip() != "", "a folder name"),
    ]
    rules += [(key, getattr(s, key) in options, "one of " + ", ".join(options))
              for key, options in CHOICES.items()]
    for key, ok, accepted in rules:
        if not ok:
            raise InputError(f"--{key}={short(getattr(s, key))} is out of range; expected "
                             f"{accepted}")


def check_combinations(s):
    """Settings that contradict each other, or that the run would silently ignore."""
    given, spec = s.given, MODELS[s.model]
    refusals = [
        (bool(s.export or s.tensorboard) and backend.is_jax(),
         f"--{'export' if s.export else 'tensorboard'} writes with TensorFlow (a SavedModel, "
         "TensorBoard's logs); run it with KERAS_BACKEND=tensorflow (a model saved on JAX loads "
         "there with --load)"),
        (s.user_input == "history" and not spec.history_input and not s.compare,
         f"--user_input=history is for {model_table.names(lambda m: m.history_input)}; "
         f"--model={s.model} has no such input (use --user_input=id)"),
        (s.pretrain and not spec.pretrainable and not s.compare,
         f"--pretrain is for --model={model_table.names(lambda m: m.pretrainable)} (its towers "
         f"are trained first); --model={s.model} has nothing to pretrain"),
        (bool(s.data_dir) and s.dataset != "lastfm",
         f"--data_dir is read by --dataset=lastfm; --dataset={s.dataset} brings its own data "
         "(drop one of them)"),
        (s.compare and "model" in given,
         f"--compare trains every model ({', '.join(MODELS)}); drop --model={s.model}"),
        ("patience" in given and not (s.validation or s.compare or s.load),
         f"--patience counts epochs without a better validation hit ratio; --model={s.model} "
         "trains without validation unless --validation is given"),
        ("scale" in given and s.dataset != "synthetic",
         "--scale sizes --dataset=synthetic only; drop it or add --dataset=synthetic"),
        ("root_url" in given and (bool(s.data_dir) or s.dataset in ("sample", "synthetic")),
         "--root_url is where --dataset=lastfm, lastfm-360k or lastfm-2k download from; with "
         "--data_dir or made data nothing is downloaded (drop one of them)"),
        (bool(s.load) and (s.compare or s.pretrain),
         "--load scores one saved model; --compare and --pretrain train new ones (drop one of "
         "them)"),
    ]
    refusals += strategy_refusals(s)
    wants_model = [f"--{k}" for k in ("recommend_user", "similar_to", "export")
                   if getattr(s, k)]
    refusals.append((bool(wants_model) and (s.compare or (not spec.trained and not s.load)),
                     f"{' and '.join(wants_model)} need one model with embeddings; "
                     + (f"--compare trains {len(MODELS)} models" if s.compare
                        else f"--model={s.model} has none")
                     + f": choose it with --model="
                       f"{model_table.names(lambda m: m.trained, last='or')}"))
    refusals.append(("replace_played_negatives" in given and not s.split,
                     "--replace_played_negatives replaces negatives listed in a --split's "
                     ".test.negative file; without --split the candidates are drawn unplayed"))
    if s.split:
        ignored = [f"--{k}" for k in ("dataset", "data_dir", "scale", "root_url",
                                      "num_eval_negatives") if k in given]
        refusals.append((bool(ignored), "--split reads the data and each test user's candidates "
                         f"from its files; drop {', '.join(ignored)}"))
    for refused, message in refusals:
        if refused:
            raise InputError(message)


def strategy_refusals(s):
    """What a strategy cannot do, as (refused, message) rows."""
    server = s.strategy == "parameter_server"
    return [
        (s.strategy != "none" and backend.is_jax(),
         f"--strategy={s.strategy} is TensorFlow's (tf.distribute); on JAX train without it, or "
         "run with KERAS_BACKEND=tensorflow"),
        ("devices" in s.given and s.strategy != "mirrored",
         "--devices is the number of devices --strategy=mirrored trains on; add it or drop "
         "--devices"),
        (s.strategy != "none" and (s.compare or s.pretrain),
         f"--strategy={s.strategy} trains one model; --compare and --pretrain train several "
         "(drop one of them)"),
        (server and not MODELS[s.model].trained,
         f"--model={s.model} trains nothing to distribute"),
        (server and s.user_input == "history",
         "--strategy=parameter_server shards the tables by rows, and the history input sums "
         "whole tables: add --user_input=id"),
        (server and bool(s.tensorboard),
         "--strategy=parameter_server trains with its own loop, without Keras' callbacks: drop "
         "--tensorboard"),
        (server and s.validation,
         "--strategy=parameter_server trains without validation (its updates are "
         "asynchronous, so epochs are not compared): add --validation=False"),
    ]


def check_paths(s):
    for key in ("split", "export_split", "data_dir", "load", "recommend_user", "similar_to",
                "root_url", "export", "tensorboard"):
        if key in s.given and not getattr(s, key).strip():
            raise InputError(f"--{key}= is empty; give it a value or leave it out")
    check_export_paths(s)
    if s.split and s.export_split and (os.path.realpath(s.split)
                                       == os.path.realpath(s.export_split)):
        raise InputError(f"--export_split={s.export_split} would overwrite the --split files "
                         "it reads (their ratings and timestamps become 1 and 0); export to "
                         "another prefix")
    for key in ("split", "export_split"):
        if getattr(s, key).endswith(("/", os.sep)):
            raise InputError(f"--{key}={getattr(s, key)} ends with a folder; it is a prefix of "
                             "three files, like out/lastfm for out/lastfm.train.rating, "
                             "out/lastfm.test.rating and out/lastfm.test.negative")


def export_refusal(folder):
    """The one line of a refused --export folder."""
    return (f"--export={folder} holds other files than an export's version folders (1/, 2/, "
            "...); give a new or empty folder, or a previous export (it gets the next version)")


def check_export_paths(s):
    """--export: a new or empty folder or a previous export, which nothing else of the run
    writes into; --tensorboard: a folder, and the package that writes its logs."""
    if s.export:
        if files.export_versions(s.export) is None:
            raise InputError(export_refusal(s.export))
        export = os.path.realpath(s.export)
        written = {"--output_dir": s.output_dir, "--export_split": s.export_split,
                   "--tensorboard": s.tensorboard}
        for key, path in written.items():
            path = os.path.realpath(path) if path else ""
            if path and (path == export or path.startswith(export.rstrip(os.sep) + os.sep)):
                raise InputError(f"--export={s.export} would hold what {key}={path} writes; "
                                 "give the export a folder of its own")
    if s.tensorboard:
        if os.path.exists(s.tensorboard) and not os.path.isdir(s.tensorboard):
            raise InputError(f"--tensorboard={s.tensorboard} is a file; give a folder")
        if importlib.util.find_spec("tensorboard") is None:
            raise InputError("--tensorboard writes its logs with the tensorboard package, which "
                             "is not installed: pip install tensorboard (or drop --tensorboard)")


def check_unused(model, given):
    """A one-line InputError for a setting `model` would silently not use."""
    no_mlp, unused, why = model_table.unused_settings(model)
    mlp_only = [key for key in no_mlp if key in given]
    if mlp_only:
        raise InputError(f"--{mlp_only[0]} sizes the MLP of "
                         f"{model_table.names(lambda m: 'mlp' in m.towers)}; --model={model} "
                         "has none (drop it)")
    unused = [f"--{key}" for key in unused if key in given]
    if unused:
        raise InputError(f"--model={model} {why}; drop {', '.join(unused)}")


def parse_user_list(text):
    """--recommend_user's text -> the user ids as written, each once, in the order given; which
    rows they are is known only once the data is read (`report.user_rows`)."""
    users = [part.strip() for part in str(text).split(",") if part.strip()]
    if not users:
        raise InputError(f"--recommend_user={short(text)} must be user ids like 0 or 0,12,300")
    return list(dict.fromkeys(users))
