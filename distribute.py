"""Training the NCF models over several devices or machines: mirrored, or a parameter server.

In:  a `models.Blueprint` (what a model is built from), a `split.Split`, and plain settings.
Out: for `mirrored`, a compiled Keras model whose variables are mirrored over N devices, which
     `training.fit` (Keras fit) trains like a single-device one; for `parameter_server`, a
     `ParameterServerTrainer` whose tables are sharded over the parameter servers and whose
     steps `ClusterCoordinator.schedule` runs on the workers. Either way `single_device_copy`
     (mirrored) or `ParameterServerTrainer.export` gives back an ordinary single-device model
     (`models.build_model`'s, with the weights and the optimizer's state), so evaluation
     (`models.make_scorer`), `models.save` and a later `--strategy=none` run load and score it
     as today.
Devices: `logical_cpus(n)` splits the CPU into n logical devices; it must run before TensorFlow
     initialises its devices (the first op, model or strategy), else it raises RuntimeError.
     Logical CPUs share the same cores: they show correctness and overhead, not speed-up.
Mirrored: one step on N replicas is the single-device step on the same batch, up to float
     rounding (the gradient is summed over the replicas' halves), for mlp, gmf, neumf and bpr,
     with user ids or histories, with lazy_adam and sgd. Two Keras 3 limits are worked around:
     `steps_per_execution` is 1 (`steps_per_call`), and BPR's loss is computed per sample
     (`PairwiseCrossentropy`) so that Keras scales it by 1 / replicas as it does the others'.
     The per-replica means are averaged, so a last batch that does not split evenly weighs its
     parts equally (Keras' rule for every loss). `--optimizer=adam` with `--user_input=history`
     differs in the moments: Keras' Adam squares the pieces of a sparse gradient before adding
     them up, and the pieces differ between one device and two (so tests/test_distribute.py
     checks the mirrored step with lazy_adam and sgd).
Parameter server: a local in-process cluster (2 workers, 2 parameter servers on 127.0.0.1)
     unless TF_CONFIG names one. Every embedding table is sharded by rows over the parameter
     servers (`tf.distribute.experimental.partitioners.FixedShardsPartitioner`); the dense
     layers are whole variables placed round-robin. Worker steps look up only the rows a batch
     needs and take gradients with respect to the shards, so LazyAdam and SGD update only the
     rows a batch touched (Keras' Adam updates whole shards). An epoch's plays are split into
     one shard per worker, each with its own negatives seeded by (seed, epoch, shard) through
     `sampling`; the coordinator hands each step to whichever worker is free, so the data of a
     run depend on the seed, not on which worker ran them. Models: mlp, gmf, neumf, bpr with user
     ids; `--user_input=history` is refused (not written for sharded tables).
Asynchronous updates change three things. (1) Workers read and write the shared variables
     without waiting for each other, so a step may compute its gradient from weights another
     worker has since changed, and two runs with the same seed differ in the last digits and
     more: results are reproducible in distribution, not bit for bit. `synchronous=True` runs one
     step at a time (then one step equals the single-device step). (2) Resuming works per
     epoch: a checkpoint is written after each epoch (weights and optimizer state, by
     `training.Checkpoints`); a resumed run repeats the same epochs' data but not the same
     interleaving of updates. (3) Concurrent updates of one variable can overwrite each
     other: the optimizer's step counter, which every step adds 1 to, counted
     119 of 122 asynchronous steps in one run here (all 122 with `synchronous=True`), so
     LazyAdam's bias correction sees a few steps fewer.
"""
import json
import os
import socket
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import errors  # noqa: E402
import model_table  # noqa: E402
import kernels  # noqa: E402
import models  # noqa: E402
from models import PairwiseCrossentropy  # noqa: E402
import sampling  # noqa: E402
import training  # noqa: E402
from split import split_digest  # noqa: E402



# ----------------------------------------------------------------------------------------------
# Devices and the models' description

def logical_cpus(n):
    """Splits the first CPU into `n` logical devices -> their names. TensorFlow fixes its
    devices when it first initialises them (the first op, variable or strategy); after that
    only the same configuration is accepted, so this must run first in the process."""
    if n < 1:
        raise ValueError(f"logical_cpus({n}): at least one device")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        raise RuntimeError(
            f"logical_cpus({n}) must run before TensorFlow initialises its devices (before the "
            f"first op, model or strategy); this process already runs on {have} logical CPU "
            "device(s). Call it at the start of the program, or start a new process") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def use_kernels_for(devices):
    """The compiled kernels (kernels.cc) have CPU code only, and LazyAdam's takes the table's
    own handle, so it must run where the table lives: off as soon as any device is not a CPU.
    `kernels.USE_KERNEL` is read when a step is traced, so this is process-wide."""
    if any("CPU" not in tf.DeviceSpec.from_string(device).device_type.upper()
           for device in devices):
        kernels.USE_KERNEL = False
    return kernels.USE_KERNEL


# ----------------------------------------------------------------------------------------------
# MirroredStrategy

def mirrored_strategy(num_devices):
    """A MirroredStrategy over `num_devices` devices: GPUs when there are that many, else
    logical CPUs (`logical_cpus` must have made them)."""
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
    devices = gpus if len(gpus) >= num_devices else cpus
    if len(devices) < num_devices:
        raise RuntimeError(f"mirrored_strategy({num_devices}): this process has {len(cpus)} "
                           f"CPU and {len(gpus)} GPU device(s); call logical_cpus"
                           f"({num_devices}) first, before TensorFlow starts")
    devices = devices[:num_devices]
    use_kernels_for(devices)
    return tf.distribute.MirroredStrategy(devices)


def steps_per_call(strategy):
    """Keras 3 (3.15) fails to run `steps_per_execution` > 1 under MirroredStrategy: where its
    multi-step tf.while loop asks the distributed iterator for a next batch (`has_next`, so at
    the end of every fit's data) it reads a placeholder that is never fed ("You must feed a
    value for placeholder tensor ... while/body ..."). One step per call trains correctly;
    lift this (return models.STEPS_PER_CALL) once Keras fixes it, which a test shows."""
    return 1 if strategy.num_replicas_in_sync > 1 else models.STEPS_PER_CALL


def rows_per_step(labels, batch_size, strategy):
    """`training.rows_per_step`, rounded down to a multiple of the replicas. Keras 3 (3.15)
    fit under MirroredStrategy averages the first batch's per-replica pieces before training
    (`_maybe_symbolic_build`: strategy.reduce("MEAN", ...)), which fails when they differ in
    size ("Inputs to operation AddN of type AddN must have the same size and shape. Input 0:
    [26,5] != input 1: [25,5]"): 256 samples of 1 + 4 are 51 rows, cut 26 + 25. Only the first
    batch matters; a short last batch trains as usual."""
    return training.rows_per_step(labels, batch_size, strategy.num_replicas_in_sync)


def build_model(strategy, spec):
    """`spec`'s model built and compiled under `strategy`: the variables (and the optimizer's)
    mirrored over its devices. Model, optimizer and loss are `models.build_model`'s, but for
    BPR's loss (`PairwiseCrossentropy`) and `steps_per_call`. Keras fit trains it, with batches
    of `rows_per_step` rows (`training.rows_per_step` rounds to the replicas)."""
    with strategy.scope():
        model = spec.build()
        loss = (PairwiseCrossentropy() if model_table.spec(spec.name).pairwise
                else keras.losses.BinaryCrossentropy())
        model.compile(model.optimizer, loss=loss, metrics=[keras.metrics.BinaryAccuracy()],
                      steps_per_execution=steps_per_call(strategy))
    return model


def single_device_copy(model, spec):
    """The mirrored `model` as `spec.build()`'s single-device model: weights, and the
    optimizer's step and moments when it has trained. What `models.save` should write: the
    mirrored model's compile settings hold `PairwiseCrossentropy`, which a process that has
    not imported this module cannot load."""
    single = spec.build()
    single.set_weights(model.get_weights())
    if model.optimizer.built:
        single.optimizer.build(single.trainable_variables)
        for mine, theirs in zip(single.optimizer.variables, model.optimizer.variables):
            mine.assign(np.asarray(theirs))
    return single


# ----------------------------------------------------------------------------------------------
# The parameter-server cluster

def free_port():
    """A TCP port on 127.0.0.1 that is free now (another process could take it before the
    server binds it; the in-process cluster is for tests and benchmarks)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_cluster(num_workers=2, num_ps=2):
    """An in-process cluster, as TensorFlow's parameter-server tutorial makes one -> (cluster
    resolver, servers; keep them alive while training). The servers' threads live in this
    process: its memory and CPU time are every task's together."""
    spec = tf.train.ClusterSpec({
        "worker": [f"127.0.0.1:{free_port()}" for _ in range(num_workers)],
        "ps": [f"127.0.0.1:{free_port()}" for _ in range(num_ps)]})
    # A worker needs a thread per concurrent closure plus one; on a 2-core machine TensorFlow's
    # default pool is 2, and 2 workers' steps in flight then deadlock (the tutorial's fix)
    worker_config = tf.compat.v1.ConfigProto()
    worker_config.inter_op_parallelism_threads = max(num_workers + 1, os.cpu_count() or 1)
    servers = [tf.distribute.Server(spec, job_name="worker", task_index=i, protocol="grpc",
                                    config=worker_config) for i in range(num_workers)]
    servers += [tf.distribute.Server(spec, job_name="ps", task_index=i, protocol="grpc")
                for i in range(num_ps)]
    return tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc"), servers


def cluster_resolver():
    """The cluster TF_CONFIG describes (this process being its chief, the coordinator), or
    else a local in-process one -> (resolver, servers started here)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.cluster_resolver.TFConfigClusterResolver(), []
    return local_cluster()


def serve():
    """A worker or parameter server of the TF_CONFIG cluster: `python distribute.py serve`.
    Loads the compiled kernels first, since LazyAdam's row update runs where a shard lives."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if kernels.USE_KERNEL:
        from kernels import fused_kernel
        fused_kernel()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, protocol="grpc")
    server.join()


class TablePartitioner:
    """Shards a variable by rows over the parameter servers while `tables` is on, else keeps
    it whole. The strategy asks its partitioner about every variable; a fixed partitioner
    would also split the dense layers' small kernels, which gain nothing from it."""

    def __init__(self, num_shards):
        self.fixed = tf.distribute.experimental.partitioners.FixedShardsPartitioner(num_shards)
        self.tables = False

    def __call__(self, shape, dtype, axis=0):
        return self.fixed(shape, dtype, axis) if self.tables else [1] * len(shape)


def prepare(strategy, num_devices):
    """What a strategy needs before TensorFlow makes its first op -> the parameter-server
    Cluster (connecting resets TensorFlow's context, so it comes first), or None. Mirrored over
    more devices than the GPUs: logical CPUs."""
    if strategy == "mirrored" and len(tf.config.list_physical_devices("GPU")) < num_devices:
        logical_cpus(num_devices)
    return Cluster() if strategy == "parameter_server" else None


class Cluster:
    """A ParameterServerStrategy on a cluster, its ClusterCoordinator and TablePartitioner:
    one per process (the coordinator connects this process to the cluster), shared by every
    trainer. `resolver`: default `cluster_resolver()` (TF_CONFIG's, else a local cluster)."""

    def __init__(self, resolver=None):
        self.servers = []
        if resolver is None:
            resolver, self.servers = cluster_resolver()
        tasks = resolver.cluster_spec().as_dict()
        self.num_workers, num_ps = len(tasks.get("worker", [])), len(tasks.get("ps", []))
        if not self.num_workers or not num_ps:
            raise ValueError(f"the cluster needs 'worker' and 'ps' tasks; it has {sorted(tasks)}")
        self.partitioner = TablePartitioner(num_ps)
        self.strategy = tf.distribute.ParameterServerStrategy(
            resolver, variable_partitioner=self.partitioner)
        self.coordinator = tf.distribute.coordinator.ClusterCoordinator(self.strategy)


def shard_epoch(model_name, split, neg_ratio, seed, epoch, shard, num_shards):
    """Shard `shard` of an epoch: every num_shards-th training play, with negatives drawn by
    `sampling` from its own generator, seeded by (seed, epoch, shard) -> (inputs, labels)."""
    rng = np.random.default_rng([seed, 7, epoch, shard])
    users, items = split.train_users[shard::num_shards], split.train_items[shard::num_shards]
    if model_table.spec(model_name).pairwise:
        users, positives, negatives = sampling.pairwise_set(users, items, split.sampler, rng)
        return ({"user": users, "item": positives, "negative_item": negatives},
                np.ones(len(users), np.float32))
    users, items, labels = sampling.training_set(users, items, split.sampler, neg_ratio, rng)
    return {"user": users, "item": items}, labels


# ----------------------------------------------------------------------------------------------
# The parameter-server trainer

def _parts(variable):
    """A variable's shards (a ShardedVariable's), or the variable itself."""
    return list(variable.variables) if hasattr(variable, "variables") else [variable]


def _lookup(table, ids):
    """Rows of a (sharded) table for ids of any shape -> ids.shape + (d,). Each shard gathers
    its own rows where it lives ("div": shard k holds a contiguous block of rows, as the
    partitioner cut them); a sharded lookup takes 1-D ids only."""
    rows = tf.nn.embedding_lookup(table, tf.reshape(ids, [-1]))
    return tf.reshape(rows, tf.concat([tf.shape(ids), tf.shape(rows)[-1:]], 0))


class ParameterServerTrainer:
    """A model's weights on the parameter servers, and a step that runs on the workers.

    `cluster`: a `Cluster` (default: a new one). `initial`: a single-device model of `spec`
    whose weights (and optimizer state, when it has trained) start the run; default a new
    `spec.build()`; `export` writes the trained weights back into it. The step's arithmetic is
    the model's own (models.py), written over the variables: Keras layers cannot read sharded
    tables (RowEmbedding's gather takes the whole table, a sharded one takes 1-D ids only)."""

    def __init__(self, spec, cluster=None, initial=None):
        if spec.history is not None:
            # tf_fast.history_sums gathers from one table variable, and its compiled kernel
            # takes the table whole: a sharded version is not written
            raise ValueError("--user_input=history is not supported with parameter_server; "
                             "use --user_input=id")
        self.spec, self.cluster = spec, cluster or Cluster()
        self.num_workers, self.strategy = self.cluster.num_workers, self.cluster.strategy
        self.coordinator, partitioner = self.cluster.coordinator, self.cluster.partitioner
        self.single = spec.build() if initial is None else initial
        tables = {layer.embeddings.path for layer in self.single.layers
                  if isinstance(layer, models.RowEmbedding)}
        self.variables = {}
        with self.strategy.scope():
            for weight in self.single.trainable_weights:
                partitioner.tables = weight.path in tables
                self.variables[weight.path] = tf.Variable(np.asarray(weight),
                                                          name=weight.path.replace("/", "."))
                partitioner.tables = False
            self.optimizer = models.make_optimizer(spec.optimizer, spec.learning_rate)
            self.optimizer.build(self.trainable)
        self._copy_optimizer(self.single.optimizer, self.optimizer, to_servers=True)
        self._step = self._make_step()

    @property
    def trainable(self):
        """Every variable a step updates, shards one by one: the gradient is taken with
        respect to the shards (a ShardedVariable is not a variable the tape can watch)."""
        return [part for variable in self.variables.values() for part in _parts(variable)]

    def shard_devices(self):
        """{weight path: [the device of each of its shards]}."""
        return {path: [part.device for part in _parts(variable)]
                for path, variable in self.variables.items()}

    def _copy_optimizer(self, single, sharded, to_servers):
        """The step count and the moments (per row, so a table's moments are cut as its rows
        are) from `single`'s optimizer to `sharded`'s, or back. Nothing when `single`'s has
        not trained: its moments start at zero, as the servers' do."""
        if not single.built:
            if to_servers:
                return
            single.build(self.single.trainable_variables)
        slots = [name for name in ("_momentums", "_velocities") if hasattr(sharded, name)]
        for weight in self.single.trainable_weights:
            parts = _parts(self.variables[weight.path])
            for name in slots:
                whole = getattr(single, name)[single._get_variable_index(weight)]
                pieces = [getattr(sharded, name)[sharded._get_variable_index(part)]
                          for part in parts]
                if to_servers:
                    bounds = np.cumsum([0] + [int(part.shape[0]) for part in parts])
                    value = np.asarray(whole)
                    for piece, start, stop in zip(pieces, bounds[:-1], bounds[1:]):
                        piece.assign(value[start:stop] if len(parts) > 1 else value)
                else:
                    whole.assign(np.concatenate([np.asarray(p) for p in pieces])
                                 if len(parts) > 1 else np.asarray(pieces[0]))
        target = sharded if to_servers else single
        target.iterations.assign((single if to_servers else sharded).iterations.numpy())

    def load(self, model):
        """Weights and optimizer state from a single-device model of the same spec (resume)."""
        for weight in model.trainable_weights:
            value = np.asarray(weight)
            parts = _parts(self.variables[weight.path])
            bounds = np.cumsum([0] + [int(part.shape[0]) for part in parts])
            for part, start, stop in zip(parts, bounds[:-1], bounds[1:]):
                part.assign(value[start:stop] if len(parts) > 1 else value)
        self.single = model
        self._copy_optimizer(model.optimizer, self.optimizer, to_servers=True)

    def export(self):
        """The trained weights and optimizer state in the single-device model (`spec.build()`'s,
        kept for this): what evaluation, `models.save` and a later single-device run use."""
        for weight in self.single.trainable_weights:
            parts = _parts(self.variables[weight.path])
            weight.assign(np.concatenate([np.asarray(part) for part in parts])
                          if len(parts) > 1 else np.asarray(parts[0]))
        self._copy_optimizer(self.single.optimizer, self.optimizer, to_servers=False)
        return self.single

    # ------------------------------------------------------------------------------------------
    # The model's arithmetic over the variables (models.py's, layer for layer)

    def _rows(self, path, ids, penalties):
        """A RowEmbedding's lookup; its L2 activity penalty is l2 * sum(rows^2) / batch."""
        rows = _lookup(self.variables[path], ids)
        if self.spec.l2:
            penalties.append(self.spec.l2 * tf.reduce_sum(tf.square(rows))
                             / tf.cast(tf.shape(rows)[0], rows.dtype))
        return rows

    def _dense(self, name, x, activation=tf.nn.relu):
        x = tf.matmul(x, self.variables[f"{name}/kernel"]) + self.variables[f"{name}/bias"]
        return activation(x)

    def _dropout(self, x):
        return tf.nn.dropout(x, self.spec.dropout) if self.spec.dropout else x

    def _mlp(self, prefix, users, items, penalties):
        user = self._rows(f"{prefix}user_embedding/embeddings", users, penalties)    # (n, d)
        item = self._rows(f"{prefix}item_embedding/embeddings", items, penalties)    # (n, c, d)
        kernel, dim = self.variables[f"{prefix}hidden_1/kernel"], user.shape[-1]
        bias = self.variables[f"{prefix}hidden_1/bias"]
        hidden = tf.nn.relu(tf.matmul(user, kernel[:dim])[:, None, :]                # PairDense
                            + tf.matmul(item, kernel[dim:]) + bias)
        hidden = self._dropout(hidden)
        for number in range(2, len(self.spec.hidden_units) + 1):
            hidden = self._dropout(self._dense(f"{prefix}hidden_{number}", hidden))
        return hidden

    def _gmf(self, prefix, users, items, penalties):
        user = self._rows(f"{prefix}user_embedding/embeddings", users, penalties)
        item = self._rows(f"{prefix}item_embedding/embeddings", items, penalties)
        return user[:, None, :] * item                                               # (n, c, d)

    def _probabilities(self, inputs, penalties):
        """The model's output for a batch: (n, c) probabilities, BPR's (n,)."""
        users, items = inputs["user"], inputs["item"]
        spec = model_table.spec(self.spec.name)
        if spec.pairwise:
            user = self._rows("user_embedding/embeddings", users, penalties)

            def score(ids):
                rows = self._rows("item_embedding/embeddings", ids, penalties)
                bias = _lookup(self.variables["item_bias/embeddings"], ids)
                return tf.reduce_sum(user * rows, axis=1, keepdims=True) + bias      # (n, 1)

            return tf.reshape(tf.sigmoid(score(items) - score(inputs["negative_item"])), [-1])
        towers = {"gmf": self._gmf, "mlp": self._mlp}
        tops = [towers[tower](spec.layer_name(tower, ""), users, items, penalties)
                for tower in spec.towers]
        top = tops[0] if len(tops) == 1 else tf.concat(tops, axis=-1)
        return tf.squeeze(self._dense("prediction", top, tf.sigmoid), -1)          # (n, c)

    def _make_step(self):
        """The worker's step: forward, loss (Keras' binary cross-entropy, mean over samples,
        plus the L2 penalties), gradients with respect to the shards, the optimizer's update.
        Returns (loss, the worker's index, its start and end times) for the statistics."""
        pairwise = model_table.spec(self.spec.name).pairwise
        per_row = [None] if pairwise else [None, None]                    # (n,) or (n, c)
        spec = {"user": tf.TensorSpec([None], tf.int32), "item": tf.TensorSpec(per_row, tf.int32),
                "label": tf.TensorSpec(per_row, tf.float32)}
        if pairwise:
            spec["negative_item"] = tf.TensorSpec([None], tf.int32)

        def replica_step(batch):
            with tf.GradientTape() as tape:
                penalties = []
                probabilities = self._probabilities(batch, penalties)
                loss = tf.reduce_mean(keras.losses.binary_crossentropy(batch["label"],
                                                                       probabilities))
                total = loss + tf.add_n(penalties) if penalties else loss
            trainable = self.trainable
            self.optimizer.apply_gradients(zip(tape.gradient(total, trainable), trainable))
            return total

        @tf.function
        def update(batch):
            return self.strategy.run(replica_step, args=(batch,))

        @tf.function(input_signature=[spec])
        def step(batch):
            # The updates feed nothing that is returned, so a timestamp after them needs a call
            # that ends with them: a tf.function call ends once all its stateful ops have run
            started = tf.timestamp()
            with tf.control_dependencies([started]):
                total = update(batch)
            with tf.control_dependencies([total]):
                ended = tf.timestamp()
            worker = tf.distribute.coordinator.experimental_get_current_worker_index()
            return total, worker, started, ended
        return step

    # ------------------------------------------------------------------------------------------
    # Training

    def schedule(self, inputs, labels):
        """Queues one step on the batch -> a RemoteValue of (loss, worker, start, end)."""
        batch = {name: tf.constant(array) for name, array in inputs.items()}
        batch["label"] = tf.constant(labels)
        return self.coordinator.schedule(self._step, args=(batch,))

    def train_epoch(self, split, epoch, *, batch_size, neg_ratio, seed, synchronous=False):
        """One epoch: a data shard per worker (`shard_epoch`), their batches queued in turn
        (shard 0's first, shard 1's first, ...), run by whichever worker is free; with
        `synchronous`, one step at a time. -> statistics: loss (mean over steps), samples,
        seconds (training only), sampling seconds, steps per worker, step seconds."""
        started = time.time()
        shards = [shard_epoch(self.spec.name, split, neg_ratio, seed, epoch, shard,
                              self.num_workers) for shard in range(self.num_workers)]
        sampled = time.time()
        rows = training.rows_per_step(max((labels for _, labels in shards), key=len), batch_size)
        queues = [[({name: array[start:start + rows] for name, array in inputs.items()},
                    labels[start:start + rows]) for start in range(0, len(labels), rows)]
                  for inputs, labels in shards]
        if not any(queues):
            raise errors.InputError("no training pairs: every user with plays to train on "
                                    "has played every artist")
        results = []
        for turn in range(max(len(queue) for queue in queues)):
            for queue in queues:
                if turn < len(queue):
                    results.append(self.schedule(*queue[turn]))
                    if synchronous:
                        self.coordinator.join()
        self.coordinator.join()
        fetched = [tuple(np.asarray(value) for value in result.fetch()) for result in results]
        losses = np.array([loss for loss, *_ in fetched], np.float64)
        workers = np.array([worker for _, worker, *_ in fetched])
        if not np.isfinite(losses).all():
            raise errors.RunError(
                f"training diverged in epoch {epoch + 1} (loss {losses[~np.isfinite(losses)][0]})"
                f"; lower --learning_rate (now {self.spec.learning_rate}) or --batch_size")
        return {"loss": float(losses.mean()), "samples": int(sum(l.size for _, l in shards)),
                "seconds": time.time() - sampled, "sample_seconds": sampled - started,
                "steps": len(fetched),
                "steps_per_worker": np.bincount(workers, minlength=self.num_workers).tolist(),
                "step_seconds": [float(end - start) for _, _, start, end in fetched]}


def fit_parameter_server(trainer, split, *, num_epoch, batch_size, neg_ratio, seed, top_k,
                         synchronous=False, checkpoints=None, fingerprint=None, resume=False,
                         log=print):
    """`training.fit`'s loop for a ParameterServerTrainer -> (single-device model, history).
    After each epoch the weights come back to the single-device model, which is scored on the
    test set and, with `checkpoints`, saved with the run's state in `training.fit`'s format (so
    `training.resume_from` reads it). No validation or early stopping here."""
    history, start = [], 0
    fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))
    digest = split_digest(split)
    if resume:
        model, history, _, start = training.resume_from(checkpoints, fingerprint, split,
                                                        digest, log)
        trainer.load(model)
    for epoch in range(start, num_epoch):
        stats = trainer.train_epoch(split, epoch, batch_size=batch_size, neg_ratio=neg_ratio,
                                    seed=seed, synchronous=synchronous)
        model = trainer.export()
        test = training.score_sets(model, split, top_k, with_validation=False)["test"]
        record = {"epoch": epoch + 1, "loss": stats["loss"],
                  "seconds": round(stats["seconds"] + stats["sample_seconds"], 2),
                  "sample_seconds": round(stats["sample_seconds"], 2),
                  "test_hit_ratio": test["hit_ratio"], "test_ndcg": test["ndcg"],
                  "steps_per_worker": stats["steps_per_worker"]}
        history.append(record)
        if checkpoints is not None:
            checkpoints.save(model, {"epoch": epoch + 1, "history": history,
                                     "best": {"epoch": 0, "hit_ratio": -1.0, "ndcg": -1.0},
                                     "fingerprint": fingerprint, "data_digest": digest})
        log(f"epoch {epoch + 1}/{num_epoch}: loss {stats['loss']:.4f}, test HR@{top_k} "
            f"{test['hit_ratio']:.3f}, {stats['samples'] / max(stats['seconds'], 1e-9):,.0f} "
            f"samples/s, steps per worker {stats['steps_per_worker']}")
    return trainer.export(), history


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: TF_CONFIG=... python distribute.py serve   (a worker or parameter "
                 "server of the cluster TF_CONFIG describes)")
    serve()
