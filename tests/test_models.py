"""The compiled kernels (kernels.cc) and their TensorFlow-ops twins: LazyAdam against a NumPy
Adam, and the history sums against a plain gather and sum."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import kernels
import models
import tf_fast
from conftest import needs_gxx


def numpy_lazy_adam(table, m, v, indices, values, steps, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    """Reference: Adam on the summed gradient of each distinct row, other rows untouched."""
    table, m, v = table.copy(), m.copy(), v.copy()
    for step in range(1, steps + 1):
        grad = np.zeros_like(table)
        np.add.at(grad, indices, values)
        rows = np.unique(indices)
        m[rows] = b1 * m[rows] + (1 - b1) * grad[rows]
        v[rows] = b2 * v[rows] + (1 - b2) * grad[rows] ** 2
        alpha = lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        table[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + eps)
    return table, m, v


def lazy_adam_steps(table, indices, values, steps, use_kernel, monkeypatch):
    monkeypatch.setattr(kernels, "USE_KERNEL", use_kernel)
    variable = keras.Variable(table, name="item_embedding")
    optimizer = models.LazyAdam(0.01)
    optimizer.build([variable])
    gradient = tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                tf.constant(table.shape, tf.int32))

    @tf.function
    def step():
        optimizer.apply_gradients([(gradient, variable)])

    for _ in range(steps):
        step()
    return (np.asarray(variable), np.asarray(optimizer._momentums[0]),
            np.asarray(optimizer._velocities[0]))


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("use_kernel", [True, False])
def test_lazy_adam_matches_numpy_and_leaves_other_rows(use_kernel, monkeypatch):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 6)).astype(np.float32)
    indices = np.array([3, 7, 3, 49, 0, 7, 7, 12, 3, 0], np.int32)   # duplicates on purpose
    values = rng.normal(size=(len(indices), 6)).astype(np.float32)
    got = lazy_adam_steps(table, indices, values, 3, use_kernel, monkeypatch)
    want = numpy_lazy_adam(table, np.zeros_like(table), np.zeros_like(table), indices, values, 3)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(50), indices)
    assert np.array_equal(got[0][untouched], table[untouched])
    assert not got[1][untouched].any() and not got[2][untouched].any()


@pytest.mark.tensorflow_only
@needs_gxx
def test_fused_kernel_builds_and_equals_tensorflow_ops(monkeypatch):
    assert kernels.fused_kernel() is not None, "g++ could not build kernels.cc"
    rng = np.random.default_rng(1)
    table = rng.normal(size=(2_000, 32)).astype(np.float32)
    indices = rng.integers(0, 2_000, 5_000).astype(np.int32)
    values = rng.normal(size=(5_000, 32)).astype(np.float32)
    fused = lazy_adam_steps(table, indices, values, 2, True, monkeypatch)
    ops = lazy_adam_steps(table, indices, values, 2, False, monkeypatch)
    for a, b in zip(fused, ops):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.tensorflow_only
@needs_gxx
def test_lazy_adam_kernel_groups_few_rows_of_a_large_table_as_it_groups_a_small_one(monkeypatch):
    # The kernel groups a gradient's entries by row with a counting sort over the table's rows,
    # or, where the entries are fewer than a sixteenth of the rows, by sorting the entries. The
    # same updates, once on a 40-row table (counting sort) and once with the rows spread over
    # 100,000 (a sort), must give every row the same bits: the same entries summed in the same
    # order. An unstable sort adds a row's 20 duplicate gradients in another order and fails.
    rng = np.random.default_rng(4)
    small = rng.normal(size=(40, 8)).astype(np.float32)
    indices = rng.integers(0, 40, 800).astype(np.int32)              # each row about 20 times
    values = rng.normal(size=(800, 8)).astype(np.float32)
    spread = np.sort(rng.choice(100_000, 40, replace=False)).astype(np.int32)  # same row order
    large = rng.normal(size=(100_000, 8)).astype(np.float32)
    large[spread] = small
    got_small = lazy_adam_steps(small, indices, values, 3, True, monkeypatch)
    got_large = lazy_adam_steps(large, spread[indices], values, 3, True, monkeypatch)
    for a, b in zip(got_small, got_large):
        assert np.array_equal(a, b[spread])
    others = np.setdiff1d(np.arange(100_000), spread)
    assert np.array_equal(got_large[0][others], large[others])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_DIGEST = """
import hashlib, json, sys
import numpy as np
import tensorflow as tf
sys.path.insert(0, {root!r})
import kernels
import models
import tf_fast
assert kernels.fused_kernel() is not None
rng = np.random.default_rng(7)
arrays = []
for rows, dim, n in ((3_000, 37, 9_000), (200, 128, 5_000), (100_000, 20, 700)):
    variable = tf.Variable(rng.normal(size=(rows, dim)).astype(np.float32))
    optimizer = models.LazyAdam(0.01)
    optimizer.build([variable])
    gradient = tf.IndexedSlices(tf.constant(rng.normal(size=(n, dim)).astype(np.float32)),
                                tf.constant(rng.integers(0, rows, n).astype(np.int32)),
                                tf.constant([rows, dim]))
    for _ in range(3):
        optimizer.apply_gradients([(gradient, variable)])
    arrays += [variable, optimizer._momentums[0], optimizer._velocities[0]]
users_of = rng.integers(0, 60, 4_000)
keys, starts = models.history_keys(users_of, rng.integers(0, 500, 4_000), 60, 500)
table = tf.Variable(rng.normal(size=(500, 45)).astype(np.float32))
users = tf.constant(rng.integers(0, 60, 200).astype(np.int32))
with tf.GradientTape() as tape:
    total, count, squares = tf_fast.history_sums(tf.constant(keys), tf.constant(starts), table,
                                                 users, 500)
    loss = tf.reduce_sum(tf.sin(total)) + tf.reduce_sum(squares * 0.3)
arrays += [total, squares, tf.convert_to_tensor(tape.gradient(loss, table))]
digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in arrays)).hexdigest()
print(json.dumps({{"digest": digest, "library": kernels._kernel_library,
                  "build": kernels.kernel_build()}}))
"""


@pytest.mark.slow                 # two builds of kernels.cc in two new processes
@needs_gxx
def test_kernels_built_for_this_cpu_give_the_portable_builds_bits():
    # NCF_LASTFM_KERNEL=1 builds kernels.cc with -march=native (this CPU's widest vectors), or
    # where g++ cannot, for this CPU's widest x86-64 level; `portable` for any CPU: LazyAdam's
    # updates (the counting-sort and sorted paths, 37 and 128 columns) and the history sums and
    # their gradient must come out the same to the last bit. Without -ffp-contract=off, g++
    # fuses Adam's multiply-adds on a CPU with FMA and this fails.
    assert kernels.native_target() or kernels.cpu_levels(), "no build for this CPU here"
    script = KERNEL_DIGEST.format(root=ROOT)
    runs = {}
    for mode in ("1", "portable"):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, "NCF_LASTFM_KERNEL": mode,
                                   "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        if mode == "1" and runs[mode]["build"] == "portable":
            # g++ could build neither for this CPU nor for its x86-64 level, and the run fell
            # back to the portable build, as it should
            pytest.skip("g++ cannot build kernels.cc for this CPU: no build to compare")
    assert runs["1"]["library"] != runs["portable"]["library"]      # two different builds
    assert runs["1"]["build"] in ("native", *kernels.cpu_levels())
    assert runs["portable"]["build"] == "portable"
    assert runs["1"]["digest"] == runs["portable"]["digest"]


@pytest.mark.slow                 # a build of kernels.cc in a new process
@needs_gxx
@pytest.mark.parametrize("failing", [["NATIVE_FLAGS"], ["NATIVE_FLAGS", "LEVEL_FLAGS"]],
                         ids=["native", "native-and-level"])
def test_a_failed_build_for_this_cpu_falls_back_to_its_level_then_the_portable_build(failing):
    # A g++ that cannot compile for this CPU (say, an assembler older than its instructions)
    # must cost that build only, not the kernels: here the native build (and the level's) are
    # made to fail; the widest x86-64 level this CPU has is tried next, then any CPU.
    script = ("import json, sys\n"
              f"sys.path.insert(0, {ROOT!r})\n"
              "import kernels\n"
              "import models\n"
              + "".join(f"kernels.{name} = kernels.{name} + ['-include', '/nonexistent/ncf.h']\n"
                        for name in failing) +
              "assert kernels.fused_kernel() is not None, 'no kernels'\n"
              "print(json.dumps({'loaded': kernels._kernel_library,\n"
              "                  'build': kernels.kernel_build(),\n"
              "                  'portable': kernels._build_kernel(native=False)}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "NCF_LASTFM_KERNEL": "1",
                               "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    paths = json.loads(done.stdout.strip().splitlines()[-1])
    levels = kernels.cpu_levels()
    if levels and len(failing) == 1:
        assert paths["build"] == levels[0] and paths["loaded"] != paths["portable"]
    else:
        assert paths["loaded"] == paths["portable"] and paths["build"] == "portable"
    assert "not available" not in done.stderr


@pytest.mark.parametrize("flags, levels", [
    ("sse4_2 ssse3 sse4_1 popcnt cx16 lahf_lm", ["x86-64-v2"]),
    ("sse4_2 ssse3 sse4_1 popcnt cx16 lahf_lm avx avx2 bmi1 bmi2 f16c fma abm movbe xsave",
     ["x86-64-v3", "x86-64-v2"]),
    ("sse4_2 ssse3 sse4_1 popcnt cx16 lahf_lm avx avx2 bmi1 bmi2 f16c fma abm movbe xsave "
     "avx512f avx512bw avx512cd avx512dq avx512vl", ["x86-64-v4", "x86-64-v3", "x86-64-v2"]),
    ("sse4_2 ssse3 sse4_1 popcnt cx16 lahf_lm avx512f avx512bw avx512cd avx512dq avx512vl",
     ["x86-64-v2"]),                  # AVX-512 without AVX2's level is not x86-64-v4
    ("fpu vme", []),
])
def test_cpu_levels_need_every_flag_of_their_level_and_the_levels_below(tmp_path, monkeypatch,
                                                                        flags, levels):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    assert kernels.cpu_levels(str(cpuinfo)) == levels
    monkeypatch.setattr(kernels.platform, "machine", lambda: "aarch64")
    assert kernels.cpu_levels(str(cpuinfo)) == []


@needs_gxx
@pytest.mark.parametrize("user_input", ["id", "history"])
def test_models_train_the_same_with_and_without_the_kernel(user_input, monkeypatch):
    rng = np.random.default_rng(2)
    users = rng.integers(0, 40, 64).astype(np.int32)
    items = rng.integers(0, 60, (64, 5)).astype(np.int32)
    labels = np.zeros((64, 5), np.float32)
    labels[:, 0] = 1
    history = None                                    # or 6 artists per user, some repeated
    if user_input == "history":
        history = (np.repeat(np.arange(40), 6), rng.integers(0, 60, 240))
    weights = []
    for use_kernel in (True, False):
        monkeypatch.setattr(kernels, "USE_KERNEL", use_kernel)
        keras.utils.set_random_seed(0)
        model = models.build_model("neumf", 40, 60, embedding_dim=8, hidden_units=(16, 8),
                                   l2=0.001, history=history)
        model.fit({"user": users, "item": items}, labels, batch_size=16, epochs=2, verbose=0,
                  shuffle=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        assert np.array_equal(a, b)        # the same arithmetic in the same order: every bit


@pytest.mark.tensorflow_only
def test_lazy_sgd_subtracts_the_summed_gradient_from_its_rows_only():
    rng = np.random.default_rng(3)
    table = rng.normal(size=(30, 4)).astype(np.float32)
    indices = np.array([2, 9, 2, 29, 2], np.int32)                    # row 2 three times
    values = rng.normal(size=(len(indices), 4)).astype(np.float32)
    variable = keras.Variable(table, name="item_embedding")
    optimizer = models.make_optimizer("sgd", 0.1)
    optimizer.build([variable])
    gradient = tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                tf.constant(table.shape, tf.int32))
    for _ in range(2):
        optimizer.apply_gradients([(gradient, variable)])
    want = table.copy()
    np.add.at(want, indices, -0.2 * values)                          # two steps of 0.1
    np.testing.assert_allclose(np.asarray(variable), want, rtol=1e-5, atol=1e-6)
    dense = keras.Variable(table, name="dense_twin")
    twin = keras.optimizers.SGD(0.1)
    twin.build([dense])
    for _ in range(2):
        twin.apply_gradients([(tf.convert_to_tensor(gradient), dense)])
    np.testing.assert_allclose(np.asarray(variable), np.asarray(dense), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_kernel", [True, False])
@pytest.mark.parametrize("graph", [False, True])
def test_history_sums_and_their_gradient_equal_a_plain_gather_and_sum(graph, use_kernel,
                                                                     monkeypatch):
    """history_sums gathers each distinct artist once and has its own gradient; against the
    obvious arithmetic (one gathered row per history entry, summed per user, squares too)."""
    monkeypatch.setattr(kernels, "USE_KERNEL", use_kernel)
    rng = np.random.default_rng(0)
    num_users, num_items, dim = 7, 12, 5
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(0, num_users, 40),
                                              rng.integers(0, num_items, 40))}
    users_of, items_of = np.array(sorted(pairs)).T
    keys, starts = models.history_keys(users_of, items_of, num_users, num_items)
    table = tf.Variable(rng.normal(size=(num_items, dim)).astype(np.float32))
    users = tf.constant([3, 0, 3, 6, 2, 6], tf.int32)        # repeats, and any order
    weight = tf.constant(rng.normal(size=(6, dim)).astype(np.float32))
    square_weight = tf.constant(rng.normal(size=6).astype(np.float32))

    def loss_of(sums):
        total, count, squares = sums
        return tf.reduce_sum(total * weight) + tf.reduce_sum(squares * square_weight / count)

    def fast():
        with tf.GradientTape() as tape:
            loss = loss_of(tf_fast.history_sums(tf.constant(keys), tf.constant(starts), table,
                                                users, num_items))
        return loss, tape.gradient(loss, table)

    def plain():
        with tf.GradientTape() as tape:
            sums, counts, squares = [], [], []
            for user in users.numpy():
                rows = tf.gather(table, items_of[users_of == user])
                sums.append(tf.reduce_sum(rows, 0))
                counts.append(float(len(rows)))
                squares.append(tf.reduce_sum(tf.square(rows)))
            loss = loss_of((tf.stack(sums), tf.constant(counts), tf.stack(squares)))
        return loss, tape.gradient(loss, table)

    loss, gradient = tf.function(fast)() if graph else fast()
    expected_loss, expected = plain()
    assert isinstance(gradient, tf.IndexedSlices)       # rows of the table, not the whole table
    assert len(np.unique(gradient.indices)) == len(gradient.indices)   # one row per artist
    assert np.isclose(loss, expected_loss, rtol=1e-5)
    assert np.allclose(tf.convert_to_tensor(gradient), tf.convert_to_tensor(expected), atol=1e-5)


@needs_gxx
@pytest.mark.parametrize("graph", [False, True])
def test_history_kernels_give_the_tensorflow_ops_sums_and_gradient_bit_for_bit(graph,
                                                                               monkeypatch):
    """The compiled history sums (kernels.cc) add in TensorFlow's own order, so a model trains
    the same with or without them. TensorFlow's sparse segment sum adds the first 2 to 9 rows,
    then blocks of 8: here users have 0 to 40 artists (the forward sums) and artists 1 to about
    70 entries in the batch (the gradient's sums), with repeated users, an empty batch and a
    batch of users without artists; every output and gradient compared exactly."""
    assert kernels.fused_kernel() is not None, "g++ could not build kernels.cc"
    rng = np.random.default_rng(5)
    num_users, num_items, dim = 41, 300, 16
    users_of = np.repeat(np.arange(num_users), np.arange(num_users))      # user u: u artists,
    items_of = np.concatenate([                                           # 0..24 played by many
        np.concatenate([np.arange(min(u, 25)),
                        rng.choice(np.arange(25, num_items), u - min(u, 25), replace=False)])
        for u in range(num_users)]).astype(np.int64)
    keys, starts = models.history_keys(users_of, items_of, num_users, num_items)
    keys, starts = tf.constant(keys), tf.constant(starts)
    table = tf.Variable(rng.normal(size=(num_items, dim)).astype(np.float32))
    batch = np.concatenate([np.arange(num_users), rng.integers(0, num_users, 30)])
    entries = np.zeros(num_items, int)                 # each artist's entries in the batch
    for user in batch:
        entries[items_of[users_of == user]] += 1
    assert {n % 8 for n in entries if n > 9} == set(range(8))         # every block layout
    for batch in (batch, [], [0, 0]):                                 # user 0 has no artist
        check_history_kernel(keys, starts, table, tf.constant(batch, tf.int32), num_items,
                             graph, monkeypatch, rng)


def check_history_kernel(keys, starts, table, users, num_items, graph, monkeypatch, rng):
    dim = table.shape[1]
    weight = tf.constant(rng.normal(size=(len(users), dim)).astype(np.float32))
    square_weight = tf.constant(rng.normal(size=len(users)).astype(np.float32))

    def sums_and_gradients(use_kernel, with_squares):
        monkeypatch.setattr(kernels, "USE_KERNEL", use_kernel)

        def run():
            with tf.GradientTape() as tape:
                total, count, squares = tf_fast.history_sums(keys, starts, table, users,
                                                             num_items)
                loss = tf.reduce_sum(total * weight)
                if with_squares:
                    loss += tf.reduce_sum(squares * square_weight)
            gradient = tape.gradient(loss, table)
            return total, count, squares, tf.convert_to_tensor(gradient)

        return [np.asarray(x) for x in (tf.function(run)() if graph else run())]

    for with_squares in (True, False):
        fused = sums_and_gradients(True, with_squares)
        plain = sums_and_gradients(False, with_squares)
        for name, a, b in zip(("sums", "counts", "squares", "gradient"), fused, plain):
            assert a.shape == b.shape and np.array_equal(a, b), name


@needs_gxx
def test_history_kernel_rejects_bad_input_with_an_error_not_a_crash():
    kernel = kernels.fused_kernel()
    assert kernel is not None, "g++ could not build kernels.cc"
    keys, starts = models.history_keys([0, 1], [2, 3], 2, 5)
    users = tf.constant([1, 2], tf.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="user 2 is outside"):
        kernel.ncf_history_index(keys=keys, starts=starts, users=users, num_items=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_items"):   # not % 0
        kernel.ncf_history_index(keys=keys, starts=starts, users=users[:1], num_items=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="sorted index"):
        kernel.ncf_history_index(keys=keys, starts=starts[::-1].copy(), users=users[:1],
                                 num_items=5)
    rows = tf.ones((2, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="bad entry"):
        kernel.ncf_history_sums(rows=rows, norms=tf.ones(2), entry_row=tf.constant([0, 2]),
                                segments=tf.constant([0, 0]), num_segments=1)


@pytest.mark.tensorflow_only
def test_batched_dataset_gives_every_row_in_order_without_tf_data_autotuning():
    import training
    users = np.arange(23, dtype=np.int32)
    items = np.arange(46, dtype=np.int32).reshape(23, 2)
    labels = np.tile(np.float32([1, 0]), (23, 1))
    dataset = training.batched_dataset({"user": users, "item": items}, labels, 5)
    batches = list(dataset.as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]          # the last batch partial
    assert np.array_equal(np.concatenate([b[0]["user"] for b in batches]), users)
    assert np.array_equal(np.concatenate([b[0]["item"] for b in batches]), items)
    assert np.array_equal(np.concatenate([b[1] for b in batches]), labels)
    assert dataset.options().autotune.enabled is False   # its thread made epochs wait


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("use_kernel", [True, False])
def test_the_history_layer_reads_its_plays_as_tensors_and_never_gathers_from_their_variables(
        use_kernel, monkeypatch):
    """A gather from a variable (ResourceGather) puts it in copy-on-read mode for good, after
    which every read copies it whole: the history's keys are 138 MB at the notebook's scale,
    read twice a step per tower. The plays must be read once each, as tensors."""
    monkeypatch.setattr(kernels, "USE_KERNEL", use_kernel)
    rng = np.random.default_rng(4)
    history = models.history_keys(np.repeat(np.arange(30), 5), rng.integers(0, 50, 150), 30, 50)
    layer = models.UserHistory(30, 50, 8, len(history[0]), l2=0.001)
    layer.set_history(*history)

    @tf.function
    def forward_and_backward(users, items):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(users, items)) + tf.add_n(layer.losses)
        return tape.gradient(loss, layer.embeddings.value)

    graph = forward_and_backward.get_concrete_function(
        tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 9], tf.int32)).graph
    handles = {}
    for variable in (layer.keys, layer.starts):
        inner = [internal for external, internal in graph.captures
                 if external is variable.value.handle]
        assert len(inner) == 1, variable.path
        handles[inner[0].name] = variable.path
    uses = [(op.type, handles[tensor.name]) for op in graph.get_operations()
            for tensor in op.inputs if tensor.name in handles]
    assert sorted(uses) == sorted(("ReadVariableOp", path) for path in handles.values()), uses


def test_an_untrained_saved_model_loads_without_a_warning_and_keeps_its_data_digest(tmp_path):
    import warnings
    model = models.build_model("mlp", 10, 12)
    path = str(tmp_path / "mlp.keras")
    models.save(model, path, "0123456789abcdef")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        loaded = models.load(path)
    assert not [w for w in shown if "Skipping variable loading" in str(w.message)]
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    assert models.saved_data_digest(path) == "0123456789abcdef"
    assert models.saved_data_digest(str(tmp_path / "missing.keras")) == ""
