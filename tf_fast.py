"""The model code's TensorFlow side (the seam's TensorFlow half; backend.py picks it): the few
operations whose fast form is TensorFlow's own, each with the arithmetic of models.py's layers.

- Tables are read row by row from the variable (`gather_rows`), so their gradients are row-sparse
  (`tf.IndexedSlices`) and LazyAdam and LazySGD update only the batch's rows (`lazy_adam_rows`).
- On a CPU, the compiled kernels (kernels.cc) do LazyAdam's and Keras' Adam's updates and the
  history sums in one op each; where they cannot run (no g++, a GPU, XLA) TensorFlow ops do the
  same arithmetic. `kernels.USE_KERNEL` is read when a step is traced.
- The scorer is one `tf.function` of fixed signature; the training rows are a `tf.data` pipeline
  of pre-batched arrays.
"""
import keras
import numpy as np
import tensorflow as tf

import kernels

tf.get_logger().setLevel("ERROR")  # one traced scorer per epoch is expected, not a warning


def gather_rows(table, ids):
    """table[ids] read from the variable itself: its gradient is the rows (IndexedSlices). Keras 3's
    Embedding reads the whole table as a tensor first (`ops.take`), which makes every sparse update
    copy the table: about 20 ms a step at 358,868 x 32, whatever the batch size."""
    table = table.value if isinstance(table, keras.Variable) else table
    return tf.gather(table, ids)


def is_row_sparse(gradient, variable):
    return isinstance(gradient, tf.IndexedSlices)


def lazy_adam_rows(optimizer, gradient, variable, learning_rate):
    """LazyAdam's update of a table's rows in the batch: one fused op (kernels.cc) when it can
    be built, else the TensorFlow ops below (same arithmetic)."""
    self = optimizer
    dtype = variable.dtype
    step = tf.cast(self.iterations + 1, dtype)
    beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
    alpha = (tf.cast(learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
             / (1 - tf.pow(beta_1, step)))
    index = self._get_variable_index(variable)
    momentum, velocity = self._momentums[index].value, self._velocities[index].value
    target = variable.value if isinstance(variable, keras.Variable) else variable
    kernel = kernels.fused_kernel() if kernels.USE_KERNEL and dtype == "float32" else None
    if kernel is not None and len(variable.shape) == 2:
        kernel.ncf_lazy_adam_apply(
            var=target.handle, m=momentum.handle, v=velocity.handle,
            indices=tf.cast(gradient.indices, tf.int32),
            grad=tf.reshape(gradient.values, [-1, variable.shape[1]]), alpha=alpha,
            beta1=beta_1, beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype))
        return
    rows, position = tf.unique(gradient.indices)
    grad = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
    new_m = beta_1 * tf.gather(momentum, rows) + (1 - beta_1) * grad
    # ((1 - beta_2) * grad) * grad, in the kernel's order: (1 - beta_2) * grad**2 rounds
    # differently, and the two paths would drift apart in the last bits
    new_v = beta_2 * tf.gather(velocity, rows) + (1 - beta_2) * grad * grad
    momentum.scatter_update(tf.IndexedSlices(new_m, rows))
    velocity.scatter_update(tf.IndexedSlices(new_v, rows))
    step_rows = alpha * new_m / (tf.sqrt(new_v) + self.epsilon)
    # gather + scatter_update: the same values as scatter_sub, 2.5 times faster here
    target.scatter_update(tf.IndexedSlices(tf.gather(target, rows) - step_rows, rows))


def dense_adam_step(optimizer, gradient, variable, learning_rate):
    """Keras' own Adam step as one fused op (kernels.cc): the same arithmetic in Keras' order,
    alpha computed by Keras' own ops (docs/experiments.md) -> False where it cannot run."""
    self = optimizer
    kernel = (kernels.fused_kernel() if kernels.USE_KERNEL and variable.dtype == "float32"
              else None)
    if kernel is None or self.amsgrad:
        return False
    ops = keras.ops
    dtype = variable.dtype
    local_step = ops.cast(self.iterations + 1, dtype)
    beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
    beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
    alpha = ops.cast(learning_rate, dtype) * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    index = self._get_variable_index(variable)
    target = variable.value if isinstance(variable, keras.Variable) else variable
    kernel.ncf_dense_adam_apply(
        var=target.handle, m=self._momentums[index].value.handle,
        v=self._velocities[index].value.handle, grad=ops.cast(gradient, dtype), alpha=alpha,
        one_minus_beta1=np.float32(1 - self.beta_1),   # Python's double, then float32,
        one_minus_beta2=np.float32(1 - self.beta_2),   # as Keras' ops convert them
        epsilon=np.float32(self.epsilon))
    return True


def lazy_sgd_rows(optimizer, gradient, variable, learning_rate):
    target = variable.value if isinstance(variable, keras.Variable) else variable
    step = tf.cast(learning_rate, variable.dtype) * gradient.values
    target.scatter_sub(tf.IndexedSlices(step, gradient.indices))   # duplicates add up


def history_sums(keys, starts, table, users, num_items):
    """-> (sum of table rows over each user's artists (n, d), their counts (n,), the sum of
    those rows' squares (n,)), for users (n,) int32.
    Speed (the same sums up to float rounding): each distinct artist of the batch is gathered
    once, so the table's gradient is one row per distinct artist, already summed, and both
    directions are sparse segment sums over sorted segments (the users' entries forwards, the
    artists' entries backwards, `_user_sums`). TensorFlow's unsorted segment sums of (entries,
    d) rows, which a plain gather + sum needs, are several times slower. With the compiled
    kernels (kernels.cc) the index and both directions are one op each, with TensorFlow's
    arithmetic bit for bit; without them, TensorFlow ops."""
    kernel = kernels.fused_kernel() if kernels.USE_KERNEL else None
    if kernel is not None:
        artists, entry_row, segments, count = kernel.ncf_history_index(
            keys=keys, starts=starts, users=users, num_items=num_items)
        total, squares = _kernel_user_sums(tf.gather(table, artists), entry_row, segments,
                                           tf.shape(users)[0])
        return total, count, squares
    begin, end = tf.gather(starts, users), tf.gather(starts, users + 1)
    positions = tf.ragged.range(begin, end)
    entries = tf.cast(tf.gather(keys, positions.flat_values) % num_items, tf.int32)
    # distinct artists by a count over the table's rows, not tf.unique: Grappler rewrites
    # gather(table, unique) + sparse segment sum into a sum over the whole table read densely
    present = tf.math.bincount(entries, minlength=num_items, maxlength=num_items) > 0
    artists = tf.cast(tf.where(present)[:, 0], tf.int32)                 # (distinct,) sorted
    entry_row = tf.searchsorted(artists, entries)                        # entry -> its artist
    segments, n = tf.cast(positions.value_rowids(), tf.int32), tf.shape(users)[0]
    by_artist = tf.argsort(entry_row, stable=True)
    total, squares = _user_sums(tf.gather(table, artists), entry_row, segments, n,
                                tf.gather(entry_row, by_artist), tf.gather(segments, by_artist))
    return total, tf.cast(end - begin, tf.float32), squares


@tf.custom_gradient
def _user_sums(rows, entry_row, segments, n, artist_of, segment_of):
    """rows (distinct, d) -> (per-user sums (n, d), per-user sums of squared rows (n,)); entry
    e is rows[entry_row[e]] in user segments[e] (sorted). Backwards the same sums taken per
    artist: (artist_of, segment_of) are the entries sorted by artist."""
    total = tf.sparse.segment_sum(rows, entry_row, segments, num_segments=n)
    squares = tf.sparse.segment_sum(tf.reduce_sum(tf.square(rows), -1), entry_row, segments,
                                    num_segments=n)

    def gradient(d_total, d_squares):
        distinct = tf.shape(rows)[0]
        d_rows = tf.sparse.segment_sum(d_total, segment_of, artist_of, num_segments=distinct)
        if d_squares is not None:
            scale = tf.sparse.segment_sum(d_squares, segment_of, artist_of,
                                          num_segments=distinct)
            d_rows += 2.0 * scale[:, None] * rows
        return d_rows, None, None, None, None, None

    return (total, squares), gradient


@tf.custom_gradient
def _kernel_user_sums(rows, entry_row, segments, n):
    """`_user_sums` as two compiled ops (kernels.cc: NcfHistorySums, NcfHistorySumsGrad)."""
    kernel = kernels.fused_kernel()
    total, squares = kernel.ncf_history_sums(
        rows=rows, norms=tf.reduce_sum(tf.square(rows), -1), entry_row=entry_row,
        segments=segments, num_segments=n)

    def gradient(d_total, d_squares):
        d_squares = tf.zeros([0], tf.float32) if d_squares is None else d_squares
        return (kernel.ncf_history_sums_grad(d_total=d_total, d_squares=d_squares, rows=rows,
                                             entry_row=entry_row, segments=segments),
                None, None, None)

    return (total, squares), gradient


def played(keys, users, items, num_items):
    """(n, c) bool: does user users[k] have artist items[k, j] among the sorted `keys`?"""
    wanted = tf.cast(users, tf.int64)[:, None] * num_items + tf.cast(items, tf.int64)
    flat = tf.reshape(wanted, [-1])
    index = tf.minimum(tf.searchsorted(keys, flat), tf.size(keys) - 1)
    return tf.reshape(tf.gather(keys, index) == flat, tf.shape(items))


def history_vectors(layer, users, items):
    """`UserHistory.call` on TensorFlow: (users (n,), items (n, c)) -> (n, c, d)."""
    users, items = tf.cast(users, tf.int32), tf.cast(items, tf.int32)
    table = layer.embeddings.value
    # The plays read once each, as tensors. `.value` is the variable itself, and a gather
    # from a variable (ResourceGather) puts it in copy-on-read mode for good: every later
    # read copies it whole, 138 MB of keys a read at the notebook's 17.3M plays.
    keys = tf.convert_to_tensor(layer.keys.value)
    starts = tf.convert_to_tensor(layer.starts.value)
    total, count, squares = history_sums(keys, starts, table, users, layer.num_items)
    if layer.l2:
        layer.add_loss(layer.l2 * tf.reduce_mean(squares / tf.maximum(count, 1.0)))
    own = tf.cast(played(keys, users, items, layer.num_items), tf.float32)
    vector = total[:, None, :] - own[..., None] * tf.gather(table, items)   # (n, c, d)
    return vector / tf.sqrt(tf.maximum(count[:, None] - own, 1.0))[..., None]


def history_totals(keys, starts, table, num_users, num_items):
    """-> (each user's rows summed (num_users, d), their counts (num_users,)) as NumPy arrays,
    4,096 users at a time."""
    keys, starts, table = tf.constant(keys), tf.constant(starts), tf.constant(table)
    totals, counts = [], []
    for first in range(0, num_users, 4096):
        users = tf.range(first, min(first + 4096, num_users), dtype=tf.int32)
        total, count, _ = history_sums(keys, starts, table, users, num_items)
        totals.append(total.numpy())
        counts.append(count.numpy())
    return np.concatenate(totals), np.concatenate(counts)


def _logits(parts, gmf_dim, mlp_half, gmf_vector, items):
    """mlp_half (n, h1) and gmf_vector (n, d), the user's; items (n, c) -> (n, c)."""
    logit = tf.zeros(tf.shape(items), tf.float32)
    if "user_half" in parts:
        hidden = tf.nn.relu(mlp_half[:, None, :] + tf.gather(parts["item_half"], items))
        for kernel, bias in parts["stack"]:
            hidden = tf.nn.relu(tf.tensordot(hidden, kernel, 1) + bias)
        logit += tf.tensordot(hidden, parts["out_kernel"][gmf_dim:], 1)
    if "gmf_user" in parts:
        gmf_vector *= parts["out_kernel"][:gmf_dim]
        logit += tf.einsum("nd,ncd->nc", gmf_vector, tf.gather(parts["gmf_item"], items))
    return logit


def scores(parts, history, gmf_dim, users, items, rescore_played=True):
    """models.make_scorer's arithmetic on tensors (models._scorer_parts' names; `history`
    {tower: its "keys", "table", "total", "count", "num_items"}): users (n,) against items
    (n, c) -> (n, c). With a history, the pairs a user played are scored again with that
    artist left out of the user's sum, as the model does (`rescore_played`). The export
    (export.py) scores with it too, so its rankings are the script's to the bit."""
    if "item_bias" in parts:
        user_vector = tf.gather(parts["gmf_user"], users)                  # (n, d)
        return (tf.einsum("nd,ncd->nc", user_vector, tf.gather(parts["gmf_item"], items))
                + tf.gather(parts["item_bias"], items))
    logit = _logits(parts, gmf_dim,
                    tf.gather(parts["user_half"], users) if "user_half" in parts else None,
                    tf.gather(parts["gmf_user"], users) if "gmf_user" in parts else None, items)
    if history and rescore_played:
        part = next(iter(history.values()))
        where = tf.where(played(part["keys"], users, items, part["num_items"]))   # (m, 2)
        pair_users, pair_items = tf.gather(users, where[:, 0]), tf.gather_nd(items, where)

        def left_out(tower):
            """The pair users' vectors without the pair's artist, which they played."""
            part = history[tower]
            vector = tf.gather(part["total"], pair_users) - tf.gather(part["table"], pair_items)
            count = tf.maximum(tf.gather(part["count"], pair_users) - 1.0, 1.0)
            return vector / tf.sqrt(count)[:, None]

        mlp_half = tf.matmul(left_out("mlp"), parts["user_kernel"]) if "mlp" in history else None
        gmf_vector = left_out("gmf") if "gmf" in history else None
        logit = tf.tensor_scatter_nd_update(
            logit, where, _logits(parts, gmf_dim, mlp_half, gmf_vector, pair_items[:, None])[:, 0])
    return tf.sigmoid(logit + parts["out_bias"])


def make_scorer(parts, history, gmf_dim):
    """models.make_scorer's arithmetic (`scores`) as one tf.function of fixed signature."""
    parts = {name: ([(tf.constant(k), tf.constant(b)) for k, b in value] if name == "stack"
                    else tf.constant(value)) for name, value in parts.items()}
    history = {tower: {name: (value if name == "num_items" else tf.constant(value))
                       for name, value in part.items()} for tower, part in history.items()}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def score(users, items):  # traced once (fixed signature)
        return scores(parts, history, gmf_dim, users, items)

    return lambda users, items: score(tf.constant(users, tf.int32),
                                      tf.constant(items, tf.int32)).numpy()


def batched_dataset(inputs, labels, batch_size):
    """Pre-batched arrays sliced one batch (of `batch_size` rows) per element:
    `from_tensor_slices(x).batch(n)` builds each batch one sample at a time (about 200,000
    samples/s), slicing is hundreds of times faster. The last, partial batch is its own
    element."""
    full = len(labels) - len(labels) % batch_size

    def shaped(array, rows):
        return array[:full].reshape(rows, batch_size, *array.shape[1:])

    rows = full // batch_size
    dataset = tf.data.Dataset.from_tensor_slices(
        ({name: shaped(array, rows) for name, array in inputs.items()}, shaped(labels, rows)))
    if full < len(labels):
        dataset = dataset.concatenate(tf.data.Dataset.from_tensors(
            ({name: array[full:] for name, array in inputs.items()}, labels[full:])))
    # No tf.data autotuning (nothing here for it to tune). Its model thread wakes up 10 ms,
    # 30 ms, 70 ms, ... after the iterator starts (the period doubling), and epochs often
    # ended only at a wake-up: lastfm-2k epochs of about 3 s took 5.2 s, of about 6 s 10.3 s.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def prepare(forced_xla):
    """The compiled kernels are CPU ops that XLA cannot compile: off when TensorFlow sees a GPU
    (its tables live there, and Keras would compile the step with XLA) or XLA is forced."""
    if sees_gpu() or forced_xla:
        kernels.USE_KERNEL = False


def sees_gpu():
    """Does TensorFlow see a GPU (as Keras asks when it picks XLA by itself)?"""
    return any(device.device_type != "CPU" for device in tf.config.list_physical_devices())


OUT_OF_MEMORY = (tf.errors.ResourceExhaustedError,)


def check_history(num_users, num_items):
    return ""    # TensorFlow's keys are 64-bit: any size
