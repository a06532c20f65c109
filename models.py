"""The NCF family in Keras 3: the notebook's MLP, GMF, NeuMF, and BPR matrix factorisation.

In:  table sizes and hyper-parameters. Out: a compiled `keras.Model` (functional, named inputs)
     and, for evaluation, `make_scorer(model)`: a function scoring users (n,) against items
     (n, c) -> (n, c), many users at once.
Shapes: the pointwise models (mlp, gmf, neumf) take `user` (n,) and `item` (n, c) and return
     (n, c) probabilities: each user against c artists. Training feeds c = 1 + NEG_RATIO (a
     play and its negatives, which share the user), so a user's embedding row and its half of
     the first Dense layer are computed once for the c artists, and the optimizer sees the row
     once, not c times. The arithmetic per (user, artist) pair is the notebook's. BPR takes
     `user`, `item`, `negative_item`, each (n,).
Speed: Keras 3's Adam updates every row of an Embedding table at every step, even rows the batch
     never touched (358K x 160K rows at the notebook's scale). `LazyAdam` updates only the rows
     in the batch, with their Adam moments, as TensorFlow 1's LazyAdamOptimizer did; every other
     weight gets Keras' Adam unchanged. `--optimizer=adam` restores the notebook's dense Adam.
     The first Dense layer over concat(user, item) is W_u @ user + W_i @ item + b (`PairDense`):
     the scorer computes both halves once per user and once per item, not per pair.
Users: a learned row per user (the paper's input), or with `history` (`--user_input=history`)
     the artists they played (`UserHistory`, FISM): the scorer sums each user's rows once, and
     re-scores only the (user, artist) pairs the user played, which leave that artist out.
"""
import dataclasses
import json
import os
import warnings
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

import backend  # noqa: E402
from errors import InputError  # noqa: E402
from files import json_default  # noqa: E402
import model_table  # noqa: E402

fast = backend.fast()   # this backend's half of the seam: tf_fast or jax_fast

STEPS_PER_CALL = 256  # training steps per Keras call: less per-step overhead (16: about 8%
#                      slower at batch 1,024, docs/experiments.md)


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class PairwiseCrossentropy(keras.losses.BinaryCrossentropy):
    """Binary cross-entropy per sample for outputs of shape (n,) (BPR's). Keras' own averages
    (n,) over its last axis into one scalar, and Keras skips the 1 / replicas scaling of a
    scalar loss (keras/src/losses/loss.py, `reduce_values`): under MirroredStrategy the
    replicas' gradients, summed, would be N times too large. As (n, 1) the loss is (n,) per
    sample, reduced and scaled as every other model's. On one device: the same mean."""

    def call(self, y_true, y_pred):
        return super().call(ops.expand_dims(y_true, -1), ops.expand_dims(y_pred, -1))


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class LazyAdam(keras.optimizers.Adam):
    """Adam whose update of a row-sparse gradient (an Embedding table's) touches only its rows.

    Bias correction uses the global step, as in TensorFlow 1's LazyAdamOptimizer. Dense
    gradients (the Dense layers') get Keras' own Adam step. How a table's rows are updated is
    the backend's (`fast.lazy_adam_rows`): on TensorFlow one fused op (kernels.cc) or
    TensorFlow ops, on rows only; on JAX, whose table gradients are dense, Keras' Adam.
    """

    def update_step(self, gradient, variable, learning_rate):
        if fast.is_row_sparse(gradient, variable):
            return fast.lazy_adam_rows(self, gradient, variable, learning_rate)
        if not fast.dense_adam_step(self, gradient, variable, learning_rate):
            return super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class LazySGD(keras.optimizers.SGD):
    """Plain SGD (the paper's optimizer for fine-tuning a pretrained NeuMF) whose update of a
    row-sparse gradient subtracts from its rows only; Keras' SGD scales the gradient as a dense
    tensor, the whole table at every step. Dense gradients, and momentum, get Keras' own step."""

    def update_step(self, gradient, variable, learning_rate):
        if not fast.is_row_sparse(gradient, variable) or self.momentum:
            return super().update_step(gradient, variable, learning_rate)
        fast.lazy_sgd_rows(self, gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class RowEmbedding(layers.Embedding):
    """An Embedding that gathers its rows as the backend does best (`fast.gather_rows`): on
    TensorFlow straight from the variable, so that its gradient is the rows alone."""

    def call(self, inputs):
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        return ops.cast(fast.gather_rows(self.embeddings, inputs), self.compute_dtype)


def _embedding(num_rows, dim, name, l2, initializer="normal"):
    """An Embedding whose L2 penalty applies to the looked-up rows only (a dense penalty on the
    whole table would make every row's gradient non-zero at every step). `normal` is the
    paper's N(0, 0.01); `uniform` is Keras' default, which the notebook's model uses."""
    if initializer == "normal":
        initializer = keras.initializers.RandomNormal(stddev=0.01)
    return RowEmbedding(num_rows, dim, name=name, embeddings_initializer=initializer,
                        activity_regularizer=keras.regularizers.L2(l2) if l2 else None)


def history_keys(users, items, num_users, num_items):
    """(sorted unique user * num_items + artist keys (int64), row starts (num_users + 1,)):
    user u's training artists are keys[starts[u]:starts[u + 1]] % num_items."""
    keys = np.unique(np.asarray(users, np.int64) * num_items + np.asarray(items, np.int64))
    starts = np.searchsorted(keys, np.arange(num_users + 1, dtype=np.int64) * num_items)
    return keys, starts.astype(np.int64)


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class UserHistory(layers.Layer):
    """A user as the artists they played (FISM, Kabbur et al. KDD 2013; NAIS, He et al. 2018):
    the sum of a learned row per training artist over sqrt(their count), with the scored artist
    left out when the user played it (so a play cannot explain itself). (user (n,), items
    (n, c)) -> (n, c, d). The training plays are weights (not trained), so a saved model scores
    as it was trained. L2: `l2` times the mean squared row over the user's artists, per sample:
    a user's history costs what one looked-up row costs under `_embedding`'s rule."""

    def __init__(self, num_users, num_items, dim, num_keys, l2=0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.num_keys, self.l2 = num_keys, l2
        self.longest = 1       # set with the plays (`note_longest`)
        self.embeddings = self.add_weight(
            shape=(num_items, dim), name="embeddings",
            initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.keys = self.add_weight(shape=(num_keys,), dtype="int64", trainable=False,
                                    initializer="zeros", name="keys")
        self.starts = self.add_weight(shape=(num_users + 1,), dtype="int64", trainable=False,
                                      initializer="zeros", name="starts")

    def set_history(self, keys, starts):
        self.keys.assign(keys)
        self.starts.assign(starts)
        self.note_longest(starts)

    def note_longest(self, starts):
        """The most plays of one user: JAX sums a batch's histories padded to it (jax_fast)."""
        self.longest = max(1, int(np.max(np.diff(np.asarray(starts)), initial=0)))

    def call(self, users, items):
        return fast.history_vectors(self, users, items)

    def compute_output_shape(self, users_shape, items_shape):
        return tuple(items_shape) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "num_users": self.num_users,
                "num_items": self.num_items, "dim": self.dim, "num_keys": self.num_keys,
                "l2": self.l2}


@keras.saving.register_keras_serializable(package="ncf_lastfm")
class PairDense(layers.Layer):
    """The notebook's `Dense(units, relu)` over concat(user vector, item vector), for one user
    (n, d) against c items (n, c, d) -> (n, c, units). Its kernel is the Dense layer's, user rows
    first; the user's half, user @ kernel[:d], is computed once for its c items."""

    def __init__(self, units, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation = units, keras.activations.get(activation)

    def build(self, input_shapes):
        user_shape, item_shape = input_shapes
        self.user_dim = int(user_shape[-1])
        self.kernel = self.add_weight(shape=(self.user_dim + int(item_shape[-1]), self.units),
                                      initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        user_vector, item_vector = inputs
        user_half = ops.matmul(user_vector, self.kernel[:self.user_dim])   # (n, units) or
        if len(user_vector.shape) == 2:                                     # (n, c, units)
            user_half = ops.expand_dims(user_half, 1)
        item_half = ops.matmul(item_vector, self.kernel[self.user_dim:])         # (n, c, units)
        return self.activation(user_half + item_half + self.bias)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[1][:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "activation": keras.activations.serialize(self.activation)}


def _user_vector(user, item, num_users, num_items, embedding_dim, l2, prefix, history,
                 initializer="normal"):
    """A user's row (n, d), or with `history` (keys, starts) their played artists (n, c, d)."""
    if history is None:
        return _embedding(num_users, embedding_dim, f"{prefix}user_embedding", l2,
                          initializer)(user)
    table = UserHistory(num_users, num_items, embedding_dim, len(history[0]), l2,
                        name=f"{prefix}user_history")
    vector = table(user, item)
    table.set_history(*history)
    return vector


def _mlp_tower(user, item, num_users, num_items, embedding_dim, hidden_units, l2, dropout,
               prefix="", initializer="normal", history=None):
    user_vector = _user_vector(user, item, num_users, num_items, embedding_dim, l2, prefix,
                               history, initializer)                      # (n, d) or (n, c, d)
    item_vector = _embedding(num_items, embedding_dim, f"{prefix}item_embedding", l2,
                             initializer)(item)                                   # (n, c, d)
    hidden = None
    for number, units in enumerate(hidden_units, 1):
        name = f"{prefix}hidden_{number}"
        hidden = (PairDense(units, name=name)([user_vector, item_vector]) if number == 1
                  else layers.Dense(units, activation="relu", name=name)(hidden))
        if dropout:
            hidden = layers.Dropout(dropout, name=f"{prefix}dropout_{number}")(hidden)
    return hidden


def _gmf_tower(user, item, num_users, num_items, embedding_dim, l2, prefix="", history=None):
    user_vector = _user_vector(user, item, num_users, num_items, embedding_dim, l2, prefix,
                               history)
    item_vector = _embedding(num_items, embedding_dim, f"{prefix}item_embedding", l2)(item)
    if history is None:
        user_vector = layers.Reshape((1, embedding_dim), name=f"{prefix}user_row")(user_vector)
    return layers.Multiply(name=f"{prefix}product")([user_vector, item_vector])  # (n, c, d)


@dataclasses.dataclass(frozen=True)
class Blueprint:
    """What a model is built from: its name (an entry of model_table.MODELS), its tables' sizes
    and its settings. `build()` makes it, on one device or inside a strategy's scope."""
    name: str
    num_users: int
    num_items: int
    embedding_dim: int = 32
    hidden_units: tuple = (32, 16, 8)
    l2: float = 0.0
    dropout: float = 0.0
    learning_rate: float = 1e-3
    optimizer: str = "lazy_adam"
    history: tuple = None      # (training users, artists) for --user_input=history

    def build(self):
        return build_model(self.name, self.num_users, self.num_items, self.embedding_dim,
                           tuple(self.hidden_units), self.l2, self.dropout, self.learning_rate,
                           self.optimizer, self.history)


def _tower(kind, user, item, num_users, num_items, embedding_dim, hidden_units, l2, dropout,
           prefix, initializer, history):
    """One tower of a pointwise model -> its (n, c, width) output."""
    if kind == "mlp":
        return _mlp_tower(user, item, num_users, num_items, embedding_dim, hidden_units, l2,
                          dropout, prefix, initializer, history)
    return _gmf_tower(user, item, num_users, num_items, embedding_dim, l2, prefix, history)


def build_model(name, num_users, num_items, embedding_dim=32, hidden_units=(32, 16, 8),
                l2=0.0, dropout=0.0, learning_rate=1e-3, optimizer="lazy_adam", history=None):
    """-> compiled keras.Model named `name`, made of the towers model_table gives it. `mlp` with
    l2=0, dropout=0 is the notebook's model, with Keras' default (uniform) embedding
    initialiser as there; the others use the paper's N(0, 0.01). `history` = (training users,
    artists): a model with `history_input` then represents a user by the artists they played
    (`UserHistory`) instead of a row of their own."""
    spec = model_table.spec(name)
    if not spec.trained:
        raise ValueError(f"--model={name} has no weights to build")
    user = keras.Input(shape=(), name="user", dtype="int32")
    if history is not None:
        if not spec.history_input:
            raise ValueError(f"--user_input=history is for "
                             f"{model_table.names(lambda m: m.history_input)}, not {name}")
        if reason := fast.check_history(num_users, num_items):
            raise InputError(reason)
        history = history_keys(*history, num_users, num_items)
    if spec.pairwise:
        item = keras.Input(shape=(), name="item", dtype="int32")
        return _build_bpr(user, item, num_users, num_items, embedding_dim, l2, learning_rate,
                          optimizer)
    item = keras.Input(shape=(None,), name="item", dtype="int32")    # c artists per user
    tops = [_tower(tower, user, item, num_users, num_items, embedding_dim, hidden_units, l2,
                   dropout, spec.layer_name(tower, ""), spec.initializer, history)
            for tower in spec.towers]
    top = tops[0] if len(tops) == 1 else layers.Concatenate(name="fuse")(tops)
    probability = layers.Dense(1, activation="sigmoid", name="prediction")(top)   # (n, c, 1)
    probability = layers.Reshape((-1,), name="score")(probability)               # (n, c)
    model = keras.Model([user, item], probability, name=name)
    model.compile(make_optimizer(optimizer, learning_rate), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy()], steps_per_execution=STEPS_PER_CALL,
                  jit_compile=backend.jit_compile(history is not None))
    return model


def _build_bpr(user, item, num_users, num_items, embedding_dim, l2, learning_rate, optimizer):
    """BPR-MF: score = <p_u, q_i> + b_i; trained on (user, played, unplayed) triples with
    -log sigmoid(score_played - score_unplayed), i.e. binary cross-entropy against label 1."""
    negative = keras.Input(shape=(), name="negative_item", dtype="int32")
    user_table = _embedding(num_users, embedding_dim, "user_embedding", l2)
    item_table = _embedding(num_items, embedding_dim, "item_embedding", l2)
    bias_table = RowEmbedding(num_items, 1, name="item_bias", embeddings_initializer="zeros")
    user_vector = user_table(user)

    def score(items):
        dot = layers.Dot(axes=1)([user_vector, item_table(items)])
        return layers.Add()([dot, bias_table(items)])

    difference = layers.Subtract(name="difference")([score(item), score(negative)])
    probability = layers.Reshape((), name="score")(layers.Activation("sigmoid")(difference))
    model = keras.Model([user, item, negative], probability, name="bpr")
    model.compile(make_optimizer(optimizer, learning_rate), loss=keras.losses.BinaryCrossentropy(),
                  metrics=[keras.metrics.BinaryAccuracy()], steps_per_execution=STEPS_PER_CALL,
                  jit_compile=backend.jit_compile())
    return model


def notebook_model(num_users, num_items, embedding_dim=32, hidden_units=(32, 16, 8)):
    """The notebook's model as it wrote it: Keras' Embedding, Concatenate, Dense layers and
    Adam; one (user, artist) pair per sample. Layer names match build_model("mlp"). The bench
    scripts measure the project's pipeline against it; the product never trains it."""
    user = keras.Input(shape=(), name="user", dtype="int32")
    item = keras.Input(shape=(), name="item", dtype="int32")
    hidden = layers.Concatenate()([layers.Embedding(num_users, embedding_dim,
                                                    name="user_embedding")(user),
                                   layers.Embedding(num_items, embedding_dim,
                                                    name="item_embedding")(item)])
    for number, units in enumerate(hidden_units, 1):
        hidden = layers.Dense(units, activation="relu", name=f"hidden_{number}")(hidden)
    output = layers.Dense(1, activation="sigmoid", name="prediction")(hidden)
    model = keras.Model([user, item], output, name="notebook_mlp")
    model.compile(keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    return model


def make_optimizer(kind, learning_rate):
    if kind == "lazy_adam":
        return LazyAdam(learning_rate)
    if kind == "adam":
        return keras.optimizers.Adam(learning_rate)
    if kind == "sgd":
        return LazySGD(learning_rate)
    raise ValueError(f"--optimizer={kind!r} is unknown; choose lazy_adam, adam or sgd")


def table_sizes(model):
    """-> (users, artists) a saved or built model's tables were made for."""
    sizes = {layer.name: layer.input_dim for layer in model.layers if hasattr(layer, "input_dim")}
    sizes.update({layer.name: layer.num_users for layer in model.layers
                  if isinstance(layer, UserHistory)})
    return (max(v for k, v in sizes.items() if "user" in k),
            max(v for k, v in sizes.items() if "item" in k))


def settings_of(model):
    """The settings a built or saved model holds in itself -> {"NUM_FACTOR", "HIDDEN_UNITS" (for
    models with an MLP), "L2", "DROPOUT", "USER_INPUT", and "OPTIMIZER" and "LEARNING_RATE"
    when it was compiled with an optimizer this script makes}."""
    names = {layer.name: layer for layer in model.layers}
    spec = model_table.spec(model.name)
    item = names[spec.item_table]
    regularizer = item.activity_regularizer
    hidden = [names[spec.layer_name("mlp", f"hidden_{n}")].units
              for n in range(1, len(names) + 1)
              if spec.layer_name("mlp", f"hidden_{n}") in names]
    dropout = [layer.rate for layer in model.layers if isinstance(layer, layers.Dropout)]
    found = {"NUM_FACTOR": int(item.output_dim),
             "L2": float(regularizer.l2) if regularizer is not None else 0.0,
             "DROPOUT": float(dropout[0]) if dropout else 0.0,
             "USER_INPUT": "history" if any(isinstance(layer, UserHistory)
                                            for layer in model.layers) else "id"}
    if hidden:
        found["HIDDEN_UNITS"] = tuple(int(units) for units in hidden)
    optimizer = getattr(model, "optimizer", None)    # None: saved without compiling
    kind = {LazyAdam: "lazy_adam", LazySGD: "sgd", keras.optimizers.Adam: "adam"}.get(
        type(optimizer))
    if kind:   # float32 in the optimizer: its shortest decimal (0.001, not 0.0010000000475)
        found["OPTIMIZER"] = kind
        found["LEARNING_RATE"] = float(str(np.float32(optimizer.learning_rate.numpy())))
    return found


DATA_RECORD = "ncf_lastfm.json"   # beside Keras' own files in a saved model's zip


def save(model, path, data_digest="", records=None):
    """`model.save(path)`, plus (when given) the digest of the data it was trained on
    (split.split_digest) and any other `records` ({member name: JSON-able}), stored as more
    files in the .keras zip, which Keras ignores."""
    model.save(path)
    records = {**({DATA_RECORD: {"data_digest": data_digest}} if data_digest else {}),
               **(records or {})}
    if records:
        with zipfile.ZipFile(path, "a") as archive:
            for name, payload in records.items():
                archive.writestr(name, json.dumps(payload, default=json_default))


def saved_record(path, name):
    """A record `save` stored in a .keras file, or None (none stored, or not readable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read(name))
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def saved_data_digest(path):
    """The data digest `save` stored in a .keras file, or "" (none stored, or not readable)."""
    record = saved_record(path, DATA_RECORD)
    return str(record["data_digest"]) if isinstance(record, dict) and "data_digest" in record \
        else ""


def load(path):
    """A model saved by `model.save(path)`, loaded in Keras' safe mode (no arbitrary code)."""
    with warnings.catch_warnings():
        # A model saved untrained (--num_epoch=0) has an optimizer of 2 variables (its step and
        # learning rate) and no moments: nothing to restore, and Keras would say so on stderr
        warnings.filterwarnings("ignore", message=r"Skipping variable loading for optimizer .* "
                                r"the saved optimizer has 2 variables")
        model = keras.models.load_model(path, safe_mode=True,
                                        custom_objects={"LazyAdam": LazyAdam, "LazySGD": LazySGD,
                                                        "PairwiseCrossentropy":
                                                        PairwiseCrossentropy,
                                                        "PairDense": PairDense,
                                                        "RowEmbedding": RowEmbedding,
                                                        "UserHistory": UserHistory})
    history = [layer for layer in model.layers if isinstance(layer, UserHistory)]
    for layer in history:
        layer.note_longest(keras.ops.convert_to_numpy(layer.starts))
        if reason := fast.check_history(layer.num_users, layer.num_items):
            raise InputError(reason)
    if getattr(model, "optimizer", None) is not None:   # XLA as this machine and backend allow,
        model.jit_compile = backend.jit_compile(bool(history))   # not as where it was saved
    return model


# ----------------------------------------------------------------------------------------------
# Fast scoring

def _weights(model, name):
    return [np.asarray(w) for w in model.get_layer(name).get_weights()]


def _dense_stack(model, prefix, count):
    return [_weights(model, f"{prefix}hidden_{n}") for n in range(2, count + 1)]


def _user_rows(model, prefix):
    """-> (num_users, d) user vectors of a tower: its table, or with `UserHistory` each user's
    artists summed over sqrt(count) (no artist left out), and the history's parts or None."""
    names = {layer.name for layer in model.layers}
    if f"{prefix}user_history" not in names:
        return _weights(model, f"{prefix}user_embedding")[0], None
    layer = model.get_layer(f"{prefix}user_history")
    keys, starts = np.asarray(layer.keys.numpy(), np.int64), np.asarray(layer.starts.numpy())
    table = np.asarray(layer.embeddings.numpy())
    total, count = fast.history_totals(keys, starts, table, layer.num_users, layer.num_items)
    rows = total / np.sqrt(np.maximum(count, 1.0))[:, None]
    return rows, {"keys": keys, "table": table, "total": total, "count": count,
                  "num_items": layer.num_items}


def _scorer_parts(model):
    """The model's weights as the scorer uses them -> (parts, history towers, GMF size): the
    first Dense layer split into a user half per user and an artist half per artist, computed
    once here rather than once per pair."""
    spec = model_table.spec(model.name)
    parts, history = {}, {}
    if "mlp" in spec.towers:
        prefix = spec.layer_name("mlp", "")
        user_table, history["mlp"] = _user_rows(model, prefix)
        item_table = _weights(model, f"{prefix}item_embedding")[0]
        kernel, bias = _weights(model, f"{prefix}hidden_1")
        dim = user_table.shape[1]
        parts["user_kernel"] = kernel[:dim]
        parts["user_half"] = user_table @ kernel[:dim]          # (num_users, h1)
        parts["item_half"] = item_table @ kernel[dim:] + bias   # (num_items, h1)
        count = sum(1 for layer in model.layers if layer.name.startswith(f"{prefix}hidden_"))
        parts["stack"] = _dense_stack(model, prefix, count)
    if "gmf" in spec.towers:
        prefix = spec.layer_name("gmf", "")
        user_table, history["gmf"] = _user_rows(model, prefix)
        parts["gmf_user"] = user_table
        parts["gmf_item"] = _weights(model, f"{prefix}item_embedding")[0]
    if spec.pairwise:   # BPR: a dot product, scored as a GMF tower without its output layer
        parts["gmf_user"] = _weights(model, "user_embedding")[0]
        parts["gmf_item"] = _weights(model, "item_embedding")[0]
        parts["item_bias"] = _weights(model, "item_bias")[0][:, 0]
    else:
        kernel, bias = _weights(model, "prediction")
        parts["out_kernel"], parts["out_bias"] = kernel[:, 0], bias[0]
    gmf_dim = int(parts["gmf_user"].shape[1]) if "gmf_user" in parts else 0
    return parts, {tower: part for tower, part in history.items() if part is not None}, gmf_dim


def make_scorer(model):
    """-> score(users (n,), items (n, c)) -> np.ndarray (n, c), the model's probabilities (or,
    for BPR, its score). Exact up to float rounding: it is the model's own arithmetic, reordered
    (the backend's own, compiled: tf_fast.make_scorer, jax_fast.make_scorer). With
    `UserHistory`, pairs whose artist the user played (never a candidate in evaluation) are
    scored with that artist left out of the user's sum, as the model does."""
    return fast.make_scorer(*_scorer_parts(model))


def predict_scorer(model, batch_size=1024):
    """The slow, obviously-right scorer: `model.predict` on users (n,) and their items (n, c).
    For the pointwise models (BPR's output is a difference of two scores)."""
    def score(users, items):
        inputs = {"user": users.astype(np.int32), "item": items.astype(np.int32)}
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    return score


def load_pretrained(neumf, gmf, mlp, alpha=0.5):
    """Initialises a NeuMF model from trained GMF and MLP models, as the paper does: each tower
    takes its model's weights; the output layer is alpha * GMF's and (1 - alpha) * MLP's."""
    for layer in gmf.layers:
        if layer.weights and layer.name != "prediction":
            neumf.get_layer("gmf_" + layer.name).set_weights(layer.get_weights())
    for layer in mlp.layers:
        if layer.weights and layer.name != "prediction":
            neumf.get_layer("mlp_" + layer.name).set_weights(layer.get_weights())
    gmf_kernel, gmf_bias = gmf.get_layer("prediction").get_weights()
    mlp_kernel, mlp_bias = mlp.get_layer("prediction").get_weights()
    neumf.get_layer("prediction").set_weights([
        np.concatenate([alpha * gmf_kernel, (1 - alpha) * mlp_kernel]),
        alpha * gmf_bias + (1 - alpha) * mlp_bias])
