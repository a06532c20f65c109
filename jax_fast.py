"""The model code's JAX side (the seam's JAX half; backend.py picks it): the operations that
tf_fast.py does with TensorFlow, here in keras.ops and jax.numpy with the shapes fixed, as XLA
compiles every train step on JAX. Imports neither TensorFlow nor tf.data.

- JAX's gradient of a gathered table is the whole table, zero where the batch did not touch it:
  there are no row-sparse gradients to update alone, and LazyAdam's rule as a masked update was
  slower than Keras' Adam (docs/experiments.md); LazyAdam and LazySGD take Keras' own steps.
- With `--user_input=history`, a batch's users' plays are padded to the most plays of any user
  (no ragged shapes under XLA) and summed under a mask: fast while no user has very many.
  JAX keeps 32-bit integers, so the (user, artist) keys must stay below 2**31 (`check_history`).
"""
import warnings

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import ops

# JAX without x64 holds the history's int64 weights as int32 and warns at each one; the keys fit
# (check_history), so the warning says nothing here
warnings.filterwarnings("ignore", message=r"Explicitly requested dtype .*int64")

LARGEST_KEY = 2**31 - 1


def check_history(num_users, num_items):
    """A one-line reason why --user_input=history cannot run on JAX at this size, or ""."""
    if num_users * num_items > LARGEST_KEY:
        return (f"--user_input=history on JAX needs users x artists below 2**31 (its keys are "
                f"32-bit there); these data have {num_users:,} x {num_items:,}: run it on "
                "TensorFlow (KERAS_BACKEND=tensorflow) or use --user_input=id")
    return ""


def gather_rows(table, ids):
    return ops.take(table, ids, axis=0)


def is_row_sparse(gradient, variable):
    """Never on JAX: its gradient of a gathered table is the whole table. A lazy update there
    (rows with a non-zero gradient, under a mask) was slower than Keras' dense Adam, 335,653
    against 488,012 samples/s (docs/experiments.md), so every weight takes Keras' step, and
    models.py never asks this half for a row update (tf_fast.lazy_adam_rows, lazy_sgd_rows)."""
    return False


def dense_adam_step(optimizer, gradient, variable, learning_rate):
    return False    # Keras' own Adam step


def played(keys, users, items, num_items):
    """(n, c) bool: does user users[k] have artist items[k, j] among the sorted `keys`?"""
    wanted = ops.cast(users, "int32")[:, None] * num_items + ops.cast(items, "int32")
    flat = ops.reshape(wanted, (-1,))
    index = ops.minimum(ops.searchsorted(keys, flat), ops.size(keys) - 1)
    return ops.reshape(ops.take(keys, index) == flat, ops.shape(items))


def history_vectors(layer, users, items):
    """`UserHistory.call` on JAX: (users (n,), items (n, c)) -> (n, c, d). Each user's plays
    padded to the most any user has (`layer.longest`, a fixed shape) and summed under a mask."""
    users, items = ops.cast(users, "int32"), ops.cast(items, "int32")
    keys, starts = ops.cast(layer.keys, "int32"), ops.cast(layer.starts, "int32")
    table = ops.convert_to_tensor(layer.embeddings)
    begin = ops.take(starts, users)
    count = ops.take(starts, users + 1) - begin                               # (n,)
    offsets = ops.arange(layer.longest, dtype="int32")
    present = offsets[None, :] < count[:, None]                               # (n, longest)
    where = ops.minimum(begin[:, None] + offsets[None, :], ops.size(keys) - 1)
    rows = ops.take(table, ops.take(keys, where) % layer.num_items, axis=0)   # (n, longest, d)
    rows = rows * ops.cast(present, rows.dtype)[..., None]
    total, squares = ops.sum(rows, axis=1), ops.sum(rows * rows, axis=(1, 2))
    count = ops.cast(count, "float32")
    if layer.l2:
        layer.add_loss(layer.l2 * ops.mean(squares / ops.maximum(count, 1.0)))
    own = ops.cast(played(keys, users, items, layer.num_items), "float32")
    vector = total[:, None, :] - own[..., None] * ops.take(table, items, axis=0)   # (n, c, d)
    return vector / ops.sqrt(ops.maximum(count[:, None] - own, 1.0))[..., None]


def history_totals(keys, starts, table, num_users, num_items):
    """-> (each user's rows summed (num_users, d), their counts (num_users,)) as NumPy arrays."""
    keys = np.asarray(keys, np.int64)
    total = jax.ops.segment_sum(jnp.asarray(table)[keys % num_items],
                                jnp.asarray(keys // num_items, np.int32), num_users,
                                indices_are_sorted=True)
    return np.asarray(total), np.diff(np.asarray(starts)).astype(np.float32)


def make_scorer(parts, history, gmf_dim):
    """models.make_scorer's arithmetic in jax.numpy, compiled once per shape of request. With a
    history, every pair is also scored with its artist left out of the user's sum, and the
    played pairs take that score (a fixed shape, where TensorFlow's scorer re-scores only them)."""
    parts = jax.tree_util.tree_map(jnp.asarray, parts)
    history = {tower: {name: (value if name == "num_items" else jnp.asarray(value))
                       for name, value in part.items()} for tower, part in history.items()}
    if history:
        part = next(iter(history.values()))
        part["keys"] = part["keys"].astype(jnp.int32)

    def logits(mlp_half, gmf_vector, items):
        """mlp_half (n, c or 1, h1) and gmf_vector (n, c or 1, d); items (n, c) -> (n, c)."""
        logit = jnp.zeros(items.shape, jnp.float32)
        if "stack" in parts:
            hidden = jax.nn.relu(mlp_half + parts["item_half"][items])
            for kernel, bias in parts["stack"]:
                hidden = jax.nn.relu(jnp.tensordot(hidden, kernel, 1) + bias)
            logit += jnp.tensordot(hidden, parts["out_kernel"][gmf_dim:], 1)
        if "gmf_user" in parts:
            gmf_vector = gmf_vector * parts["out_kernel"][:gmf_dim]
            logit += jnp.sum(gmf_vector * parts["gmf_item"][items], -1)
        return logit

    def left_out(tower, users, items):
        """(n,) users' vectors without each of their items (n, c) -> (n, c, d)."""
        part = history[tower]
        vector = part["total"][users][:, None, :] - part["table"][items]
        count = part["count"][users][:, None]
        return vector / jnp.sqrt(jnp.maximum(count - 1.0, 1.0))[..., None]

    @jax.jit
    def score(users, items):
        if "item_bias" in parts:
            user_vector = parts["gmf_user"][users]                            # (n, d)
            return (jnp.einsum("nd,ncd->nc", user_vector, parts["gmf_item"][items])
                    + parts["item_bias"][items])
        logit = logits(parts["user_half"][users][:, None, :] if "stack" in parts else None,
                       parts["gmf_user"][users][:, None, :] if "gmf_user" in parts else None,
                       items)
        if history:
            part = next(iter(history.values()))
            own = played(part["keys"], users, items, part["num_items"])
            mlp_half = (left_out("mlp", users, items) @ parts["user_kernel"]
                        if "mlp" in history else None)
            gmf_vector = left_out("gmf", users, items) if "gmf" in history else None
            logit = jnp.where(own, logits(mlp_half, gmf_vector, items), logit)
        return jax.nn.sigmoid(logit + parts["out_bias"])

    return lambda users, items: np.asarray(score(jnp.asarray(users, jnp.int32),
                                                 jnp.asarray(items, jnp.int32)))


class BatchedRows(keras.utils.PyDataset):
    """tf_fast.batched_dataset's batches without tf.data: batch i is rows [i * n, (i + 1) * n)
    of the arrays, the last one partial."""

    def __init__(self, inputs, labels, batch_size):
        super().__init__()
        self.inputs, self.labels, self.batch_size = inputs, labels, batch_size

    def __len__(self):
        return -(-len(self.labels) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return {name: array[rows] for name, array in self.inputs.items()}, self.labels[rows]


def batched_dataset(inputs, labels, batch_size):
    return BatchedRows(inputs, labels, batch_size)


def sees_gpu():
    return any(device.platform != "cpu" for device in jax.devices())


OUT_OF_MEMORY = ()
