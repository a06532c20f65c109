"""NeuMF with one change at a time, scored on validation artists only: what else was tried to
close issue 4's gap to item kNN and EASE, and what it gave.

Run from the repository root, on a split in the NCF paper's format (`--export_split`):
    python bench/neumf_variants.py --split=PREFIX --seed=S [--variants=default,softmax,...]
    python bench/neumf_variants.py --split=PREFIX --seed=S --export_validation=OUT
    python bench/neumf_variants.py --split=PREFIX --seed=S --by_popularity
    python bench/neumf_variants.py --split=PREFIX --seed=S --variants=V --adjust=-0.2,0,0.2
The second form writes OUT.train.rating / .test.rating / .test.negative with the validation
artists as the held-out ones (and the training rows without them), so that
`../shared/tools/peers_bench.py ncf OUT` scores the classic recommenders on the same validation
artists, with the same training rows, as the numbers below. No test artist is scored here.

Every variant is NeuMF with the project's defaults (MODEL_DEFAULTS["neumf"]: 128 factors,
8 fresh negatives per play, L2 0.001 on the looked-up rows (or $L2), lazy Adam at 1e-3 (or
$LEARNING_RATE), rows of a play and its negatives, 1,024 samples a step), built here from
plain Keras layers with a logit output (the same arithmetic as models.py's NeuMF, without its
speed-ups), plus one change:

  default      nothing changed
  softmax      sampled softmax: -log of the play's softmax share among its own row of negatives,
               instead of the log loss of each pair
  neg32        32 negatives per play, each weighted 1/4 (the same total weight as 8)
  popneg       4 of the 8 negatives drawn in proportion to (training listeners)^0.75 among the
               user's unplayed artists, not uniformly (popular artists the user skipped)
  item_bias    a learned bias per artist added to the logit (as the project's BPR has)
  history      each user is also represented by the artists they played (FISM / SVD++): the
               sum of a second embedding over their training artists, the scored artist left
               out, divided by the square root of their count, added to the user's own row
  history_only  each user is only the artists they played (the FISM sum above, no row of their
               own): the product's `--user_input=history`. The sum's rows get L2 $BAG_L2 per
               looked-up row (default 0.001, like every table; the product's rule, the mean
               over the user's ~47 training artists, is about 2e-5)
  embed_dropout  dropout on every embedding vector, user and artist, in both towers (an
               ensemble of thinned models inside one); rate 0.2, or $EMBED_DROPOUT
  average      the weights averaged over the last 3 epochs before scoring (Polyak / SWA)
  plateau      the learning rate halved after every epoch without a better validation HR@10
               (Keras's ReduceLROnPlateau with patience 1), training on from the last weights
  decay        the learning rate multiplied by 0.85 after every epoch (1e-3, 8.5e-4, ...)
  rare_plays   each play's term of the log loss weighted by (training listeners of its
               artist)^-0.5, scaled to a mean of 1 over the plays (negatives unchanged): item
               kNN's cosine gives a rare shared artist that much more weight
  play_counts  each play's term of the log loss weighted by log(1 + plays)^$PLAY_POWER (default
               1), the plays read from $PLAYS_CSV (default ../shared/data/lastfm-2k's
               lastfm_play.csv), scaled to a mean of 1 over each user's plays
  nais         history_only with attention (NAIS, He et al. TKDE 2018): each played artist's
               row weighted for the scored artist by exp(h . relu(W (p_i * q_j) + b)), over
               (sum of those weights)^0.5, in both towers (each its own attention, $ATTENTION
               units, default 16); h starts at 0, so training starts from history_only
  softmax_mix  history_only trained with a sampled softmax over the play and $SOFTMAX_NEGATIVES
               (default 64) unplayed artists, half drawn uniformly and half in proportion to
               training listeners, each logit less log q (q = 0.5 / artists + 0.5 * listeners /
               plays, the mixture's share: the sampled softmax's correction towards a softmax
               over the whole catalogue)
  shared_bag   history_only whose scored artist's row is that artist's history row (FISM with
               one table per tower, not two): score(u, j) then depends on p_i . p_j over the
               user's artists i, a symmetric artist-artist similarity as item kNN's cosine
  dns          history_only with dynamic negative sampling (Zhang et al. SIGIR 2013): $DNS_SHARE
               (default 0.5) of each play's 8 negatives is the one the model scores highest
               among $DNS_POOL (default 4) unplayed artists drawn uniformly, scored at the
               start of each epoch; the rest are uniform as before
  history_bias  history_only plus item_bias's learned bias per artist (FISM has one)
  listeners    history_only whose artist is also the artists' listeners, the input's mirror
               image (as DeepCF, Deng et al. AAAI 2019, feeds both rows of the play matrix):
               the artist's own row plus the sum of a learned row per training listener other
               than the scoring user, over sqrt(their count), in both towers; those rows' L2 is
               $L2 times their mean square over the listeners, per scored artist
  pairwise     history_only trained with BPR's pairwise loss: -log sigmoid(play - negative),
               averaged over the play's 8 negatives, instead of the log loss of each pair
  ema          history_only scored with an exponential moving average of its weights over the
               training steps (Keras' use_ema, momentum $EMA_MOMENTUM, default 0.999: about the
               last 1,000 steps, 1.2 epochs of 800 steps); training goes on from its own weights
  history_dropout  history_only whose training rows each drop $HISTORY_DROP (default 0.5) of
               the user's artists from the sum, drawn afresh for every row and step (the sum
               and its count over the kept ones; nothing dropped when scoring): the denoising
               input of Mult-DAE (Liang et al. WWW 2018), so the model learns to score an
               artist from part of a history, as it must for the held-out one
  idf_history  history_only whose sum weights each played artist i by (training listeners of
               i)^-$IDF_POWER (default 0.5), scaled to a mean of 1 over the training plays: item
               kNN's cosine, sum over i of co(i, j) / sqrt(n_i n_j), counts a shared rare artist
               that much more, where a learned sum shrinks a rare artist's row (few plays
               against its L2)
  adamw        history_only with no L2 in the loss, and decoupled weight decay instead (AdamW,
               Loshchilov and Hutter ICLR 2019: every weight, every table row included, times
               1 - learning rate * $WEIGHT_DECAY (default 0.1) at every step). With L2 in the
               loss, Adam divides each row's step by its own gradient's scale, so a row that
               few plays train (a rare artist) is shrunk at close to the full learning rate
  ensemble     3 NeuMFs (or $ENSEMBLE) with different initial weights and negatives; their
               logits averaged. Each is the default variant, or $ENSEMBLE_OF (e.g. history_only)

With `LOSS=name` (one of bce, pairwise, softmax, ...: the losses the variants use), every
variant trains with that loss, e.g. `LOSS=pairwise --variants=default`: BPR's pairwise loss with
the user's id as input.

With `NEG_RATIO=n`, every variant draws n negatives per play instead of 8 (1,024 // (1 + n)
rows a step), and with `BATCH_SIZE=b` trains on b // (1 + n) rows a step. With `REPEAT=r`, an
epoch is r epochs' rows (each play r times, with fresh negatives each time), shuffled
together: with `NEG_RATIO=1 REPEAT=8`, 8 negatives per play per epoch as with the default, but
each in a row of its own beside the play.

With `TOWERS=gmf` (or `mlp`), only that tower feeds the output layer (the other is still built,
and unused). With `DOT_OUTPUT=1` the output layer is a fixed sum of its inputs, no weights
and no bias: with `TOWERS=gmf`, the score is the plain dot product of the user's and the
artist's vectors, as BPR's (without its item bias).

With `PLAY_GRAD=g`, the artist rows of each training row's play (its first column, in both
towers) pass back g times their gradient (their value unchanged); the user's side and the
negatives' rows are untouched. With the pairwise loss over 8 negatives in one row, an artist's
row gets about 8 times the gradient when it is the play as each time it is a negative, where
the log loss (and the pairwise loss over one negative) gives it the same in both roles; LazyAdam
scales each row's step by that row's own gradients, so `PLAY_GRAD=0.125` evens the two roles.

With `NEG_L2=x`, the artist rows of a training row's negatives (every column but the first) get
L2 x instead of $L2 (the play's row keeps $L2): with 8 negatives in one row, an artist's row is
penalised once per negative lookup, 8 a play, where one negative a row gives one.

With `NEG_WEIGHT=w`, each negative's term of the log loss (the `bce` loss) is weighted w
against the play's 1, over the row's total weight (1 + 8w): w = 0.5 gives a play twice a
negative's weight.

With `INIT_STD=s`, the user, history and artist rows start from N(0, s) (default 0.01, the
paper's and models.py's).

With `OPTIMIZER=sgd`, every variant but ema and adamw trains with plain SGD (models.LazySGD:
each looked-up row moves by the learning rate times its gradient, no per-row scaling) instead
of LazyAdam; the losses are means over a step's rows, so its learning rate is in the tens.

With `HISTORY_NORM=a`, every variant with the history input divides the user's sum by
(count)^a instead of its square root (FISM's alpha; 1 is the mean, 0 the plain sum).

With `ROW_OUT=1`, every variant with the history input leaves a training row's play (its
first column) out of the user's sum for the row's negatives as well as for the play, so that
the play and its negatives are scored against the same user vector (by default each negative
is scored against the whole history, the play included).

`--by_popularity` trains the default NeuMF (or the one variant given with `--variants`) once
and prints its validation HR@10 beside item kNN's (cosine, every neighbour, as peers_bench.py
scores it), by how many training users played the held-out artist.

`--adjust=b1,b2,...` trains one variant once and prints its validation HR@10 and NDCG@10 with
each candidate's logit lowered by b * log(1 + its training listeners), for each b: b > 0 takes a
popularity prior out of the ranking (item kNN's cosine divides by the square root of the
candidate's listeners), b < 0 adds one.

Training stops after 3 epochs without a better validation HR@10 (at most 30); the best epoch's
validation HR@10 and NDCG@10 are printed, as a Markdown table.
"""
import os
import sys
import time

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ncf_lastfm import environment_error, import_tensorflow_quietly  # noqa: E402

if __name__ == "__main__" and (error := environment_error()):   # before Keras picks a backend
    sys.exit(f"error: {error}")
import_tensorflow_quietly()   # TensorFlow's start-up notes would bury a one-line error
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

import data  # noqa: E402
import evaluate  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402
from paired import item_knn, played_matrix  # noqa: E402


def _env(kind, name, default):
    """A setting from the environment, or a one-line exit naming the bad value."""
    text = os.environ.get(name, default)
    try:
        return kind(text)
    except ValueError:
        sys.exit(f"error: {name}={text!r} is not {'an integer' if kind is int else 'a number'}")


VARIANTS = ("default", "softmax", "neg32", "popneg", "item_bias", "history", "history_only",
            "embed_dropout",
            "average", "plateau", "decay", "rare_plays", "play_counts", "ensemble", "nais",
            "softmax_mix", "shared_bag", "dns", "history_bias", "listeners", "pairwise", "ema",
            "history_dropout", "idf_history",
            "adamw")
HISTORY_ONLY = ("history_only", "nais", "softmax_mix", "shared_bag", "dns",   # no user row
                "history_bias", "listeners", "pairwise", "ema", "history_dropout",
                "idf_history", "adamw")
FACTORS = 128
BATCH_SIZE = _env(int, "BATCH_SIZE", "1024")
NEG_RATIO = _env(int, "NEG_RATIO", "8")
REPEAT = _env(int, "REPEAT", "1")
if NEG_RATIO < 1 or BATCH_SIZE < 1 or REPEAT < 1:
    sys.exit(f"error: NEG_RATIO={NEG_RATIO}, BATCH_SIZE={BATCH_SIZE} and REPEAT={REPEAT} must "
             "be 1 or more")
L2 = _env(float, "L2", "0.001")
LEARNING_RATE = _env(float, "LEARNING_RATE", "1e-3")
MAX_EPOCHS, PATIENCE, TOP_K = 30, 3, 10
EMBED_DROPOUT = _env(float, "EMBED_DROPOUT", "0.2")
ENSEMBLE = _env(int, "ENSEMBLE", "3")
ENSEMBLE_OF = os.environ.get("ENSEMBLE_OF", "default")
PLAYS_CSV = os.environ.get("PLAYS_CSV", os.path.join(ROOT, "..", "shared", "data", "lastfm-2k",
                                                      "lastfm_play.csv"))
PLAY_POWER = _env(float, "PLAY_POWER", "1")
BAG_L2 = _env(float, "BAG_L2", str(L2))
ATTENTION = _env(int, "ATTENTION", "16")
SOFTMAX_NEGATIVES = _env(int, "SOFTMAX_NEGATIVES", "64")
DNS_POOL = _env(int, "DNS_POOL", "4")
DNS_SHARE = _env(float, "DNS_SHARE", "0.5")
EMA_MOMENTUM = _env(float, "EMA_MOMENTUM", "0.999")
ROW_OUT = os.environ.get("ROW_OUT", "0") == "1"
HISTORY_DROP = _env(float, "HISTORY_DROP", "0.5")
if not 0 <= HISTORY_DROP < 1:
    sys.exit(f"error: HISTORY_DROP={HISTORY_DROP} is not in [0, 1)")
IDF_POWER = _env(float, "IDF_POWER", "0.5")
HISTORY_NORM = _env(float, "HISTORY_NORM", "0.5")
WEIGHT_DECAY = _env(float, "WEIGHT_DECAY", "0.1")
TOWERS = os.environ.get("TOWERS", "")   # gmf or mlp: that tower alone feeds the output
if TOWERS not in ("", "gmf", "mlp"):
    sys.exit(f"error: TOWERS={TOWERS!r}: give gmf or mlp (or leave it unset for both)")
DOT_OUTPUT = os.environ.get("DOT_OUTPUT", "0") == "1"   # the output: a plain sum, fixed
LOSS = os.environ.get("LOSS", "")       # one of LOSSES for every variant, e.g. pairwise
PLAY_GRAD = _env(float, "PLAY_GRAD", "1")   # the play's artist rows pass back this share
NEG_L2 = _env(float, "NEG_L2", "-1")   # the negatives' artist rows' L2, if 0 or more
NEG_WEIGHT = _env(float, "NEG_WEIGHT", "1")   # each negative's share of the log loss
if not 0 < NEG_WEIGHT < float("inf"):
    sys.exit(f"error: NEG_WEIGHT={NEG_WEIGHT} is not a positive number")
INIT_STD = _env(float, "INIT_STD", "0.01")   # the embedding rows' initial N(0, INIT_STD)
OPTIMIZER = os.environ.get("OPTIMIZER", "lazy_adam")   # or sgd: plain SGD on the looked-up rows
if OPTIMIZER not in ("lazy_adam", "sgd"):
    sys.exit(f"error: OPTIMIZER={OPTIMIZER!r}: give lazy_adam or sgd")


def scored_mask(played, items):
    """(n, c) float: 1 where items[k, j] is among user k's training artists played[k] (n, L)."""
    return tf.cast(tf.reduce_any(played[:, None, :] == items[:, :, None], -1), tf.float32)


class UserVector(layers.Layer):
    """(user (n,), items (n, c)) -> (n, c, d): the user's own row, plus, with `history`, the
    FISM sum over their training artists other than the scored one, over sqrt(count)."""

    def __init__(self, num_users, num_items, dim, history=None, own_row=True, attention=0,
                 drop=0.0, played_weights=None, l2=L2, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.history, self.own_row = num_items, history, own_row
        self.drop, self.l2 = drop, l2
        self.played_weights = (None if played_weights is None else   # the pad's weight: 0
                               tf.constant(np.append(played_weights, 0.0), tf.float32))
        init = keras.initializers.RandomNormal(stddev=INIT_STD)
        self.rows = self.add_weight(shape=(num_users, dim), initializer=init, name="rows")
        if history is not None:
            self.bag = self.add_weight(shape=(num_items + 1, dim), initializer=init, name="bag")
        self.attention = attention
        if attention:
            self.attention_kernel = self.add_weight(shape=(dim, attention), name="att_kernel",
                                                    initializer="glorot_uniform")
            self.attention_bias = self.add_weight(shape=(attention,), initializer="zeros",
                                                  name="att_bias")
            self.attention_out = self.add_weight(shape=(attention,), initializer="zeros",
                                                 name="att_out")

    def call(self, user, items, item_vectors=None, training=None):
        if self.attention:
            return self._attended(user, items, item_vectors)
        vector = tf.gather(self.rows.value, user)                              # (n, d)
        if not self.own_row:
            vector = tf.zeros_like(vector)
        penalty = tf.reduce_sum(tf.square(vector))
        vector = tf.broadcast_to(vector[:, None, :],
                                 tf.concat([tf.shape(items), tf.shape(vector)[-1:]], 0))
        if self.history is not None:
            played, real, bag = self._played_rows(user, self.drop if training else 0.0)
            penalty += BAG_L2 / L2 * tf.reduce_sum(tf.square(bag))
            if ROW_OUT:      # the row's play (column 0) left out for its negatives too
                scored = tf.broadcast_to(scored_mask(played, items[:, :1]), tf.shape(items))
                own = scored[..., None] * tf.gather(self.bag.value, items[:, :1])
            else:
                scored = scored_mask(played, items)                            # (n, c)
                own = scored[..., None] * tf.gather(self.bag.value, items)   # (n, c, d)
            if self.played_weights is not None:
                bag = bag * tf.gather(self.played_weights, played)[..., None]
                own = own * tf.gather(self.played_weights,
                                      items[:, :1] if ROW_OUT else items)[..., None]
            total = tf.reduce_sum(bag, 1)[:, None, :] - own
            count = tf.reduce_sum(real, 1)[:, None] - scored
            vector += total / tf.maximum(count, 1.0)[..., None] ** HISTORY_NORM
        if self.l2:
            self.add_loss(self.l2 * penalty / tf.cast(tf.shape(user)[0], tf.float32))
        return vector

    def _played_rows(self, user, drop=0.0):
        """-> the users' training artists (n, L) (pad = num_items), 1 for a real one (n, L),
        and their history rows, zero for the pad (n, L, d); with `drop`, each artist of each
        row is the pad with that chance."""
        played = tf.gather(self.history, user)
        if drop:
            dropped = tf.random.uniform(tf.shape(played)) < drop
            played = tf.where(dropped, self.num_items, played)
        real = tf.cast(played < self.num_items, tf.float32)
        return played, real, tf.gather(self.bag.value, played) * real[..., None]

    def _attended(self, user, items, item_vectors):
        """NAIS: sum_i a_ij p_i over the played artists i other than j, a_ij =
        exp(f(p_i * q_j)) / (sum_i exp(f(p_i * q_j)))^0.5."""
        played, real, bag = self._played_rows(user)
        keep = real[:, None, :] * tf.cast(played[:, None, :] != items[:, :, None],
                                          tf.float32)                          # (n, c, L)
        product = bag[:, None, :, :] * item_vectors[:, :, None, :]            # (n, c, L, d)
        hidden = tf.nn.relu(tf.tensordot(product, self.attention_kernel.value, 1)
                            + self.attention_bias.value)
        logit = tf.tensordot(hidden, self.attention_out.value, 1)             # (n, c, L)
        top = tf.reduce_max(tf.where(keep > 0, logit, -np.inf), -1, keepdims=True)
        top = tf.stop_gradient(tf.where(tf.math.is_finite(top), top, 0.0))
        weight = tf.where(keep > 0, tf.exp(tf.minimum(logit - top, 0.0)), 0.0)   # no overflow
        # exp(l) / sqrt(sum exp(l)) = exp(l - top) / sqrt(sum exp(l - top)) * exp(top / 2)
        weight *= tf.exp(top / 2) / tf.sqrt(
            tf.maximum(tf.reduce_sum(weight, -1, keepdims=True), 1e-12))
        penalty = BAG_L2 / L2 * tf.reduce_sum(tf.square(bag))
        self.add_loss(L2 * penalty / tf.cast(tf.shape(user)[0], tf.float32))
        return tf.einsum("ncl,nld->ncd", weight, bag)


class BagRows(layers.Layer):
    """items (n, c) -> (n, c, d): the rows of a UserVector's history table, L2 per looked-up
    row as models._embedding's."""

    def __init__(self, owner, **kwargs):
        super().__init__(**kwargs)
        self.owner = owner

    def call(self, items):
        rows = tf.gather(self.owner.bag.value, items)
        batch = tf.cast(tf.shape(items)[0], tf.float32)
        self.add_loss(L2 * tf.reduce_sum(tf.square(rows)) / batch)
        return rows


class ColumnL2(layers.Layer):
    """rows (n, c, d) -> the same; adds (play_l2 * |column 0|^2 + negative_l2 * |columns 1..|^2)
    / n, models._embedding's L2 on looked-up rows when the two are equal."""

    def __init__(self, play_l2, negative_l2, **kwargs):
        super().__init__(**kwargs)
        self.play_l2, self.negative_l2 = play_l2, negative_l2

    def call(self, rows):
        squares = tf.reduce_sum(tf.square(rows), [0, 2])                       # (c,)
        batch = tf.cast(tf.shape(rows)[0], rows.dtype)
        self.add_loss((self.play_l2 * squares[0] + self.negative_l2 * tf.reduce_sum(squares[1:]))
                      / batch)
        return rows


class PlayGradient(layers.Layer):
    """rows (n, c, d) -> the same values; column 0's (the play's) gradient times `share`."""

    def __init__(self, share, **kwargs):
        super().__init__(**kwargs)
        self.share = share

    def call(self, rows):
        columns = tf.shape(rows)[1]
        weight = tf.concat([[self.share], tf.ones([columns - 1])], 0)[None, :, None]
        return rows * weight + tf.stop_gradient(rows) * (1 - weight)


class ItemListeners(layers.Layer):
    """(user (n,), items (n, c)) -> (n, c, d): per scored artist, the sum of a learned row per
    training listener other than the scoring user, over sqrt(their count) (zero for none)."""

    def __init__(self, split, dim, history, **kwargs):
        super().__init__(**kwargs)
        self.history, self.num_items = history, split.num_items
        pairs = np.unique(np.stack([split.train_items.astype(np.int64),
                                    split.train_users.astype(np.int64)], 1), axis=0)
        self.pairs = tf.constant(pairs)
        self.counts = tf.constant(np.bincount(pairs[:, 0], minlength=split.num_items)
                                  .astype(np.float32))
        self.shape = (split.num_items, split.num_users)
        self.rows = self.add_weight(shape=(split.num_users, dim), name="rows",
                                    initializer=keras.initializers.RandomNormal(stddev=0.01))

    def call(self, user, items):
        table = self.rows.value
        listeners = tf.sparse.SparseTensor(self.pairs, tf.ones(tf.shape(self.pairs)[:1]),
                                           self.shape)
        sums = tf.sparse.sparse_dense_matmul(listeners, table)                    # (I, d)
        squares = tf.sparse.sparse_dense_matmul(
            listeners, tf.reduce_sum(tf.square(table), 1, keepdims=True))[:, 0]    # (I,)
        scored = scored_mask(tf.gather(self.history, user), items)            # (n, c)
        own = tf.gather(table, user)                                           # (n, d)
        total = tf.gather(sums, items) - scored[..., None] * own[:, None, :]
        count = tf.maximum(tf.gather(self.counts, items) - scored, 1.0)
        own_square = scored * tf.reduce_sum(tf.square(own), -1)[:, None]
        penalty = tf.reduce_sum((tf.gather(squares, items) - own_square) / count)
        self.add_loss(L2 * penalty / tf.cast(tf.shape(user)[0], tf.float32))
        return total / tf.sqrt(count)[..., None]


def history_matrix(split):
    """(num_users, most artists) training artists per user, padded with num_items."""
    counts = np.bincount(split.train_users, minlength=split.num_users)
    matrix = np.full((split.num_users, max(1, counts.max())), split.num_items, np.int32)
    order = np.argsort(split.train_users, kind="stable")
    users, items = split.train_users[order], split.train_items[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    matrix[users, np.arange(len(users)) - starts[users]] = items
    return matrix


class AveragingLazyAdam(models.LazyAdam):
    """LazyAdam keeping a moving average of the weights (Keras' use_ema), which `fit` leaves
    alone: Keras' own `finalize_variable_values` overwrites the weights with the average at
    the end of every `fit`, that is, here, every epoch."""

    def finalize_variable_values(self, var_list):
        pass


def build(split, variant):
    """NeuMF (GMF and MLP towers, separate embeddings) -> logits (n, c)."""
    history = (tf.constant(history_matrix(split))
               if variant == "history" or variant in HISTORY_ONLY else None)
    own_row = variant not in HISTORY_ONLY
    attention = ATTENTION if variant == "nais" else 0
    drop = HISTORY_DROP if variant == "history_dropout" else 0.0
    played_weights = idf_weights(split) if variant == "idf_history" else None
    l2 = 0.0 if variant == "adamw" else L2          # adamw: decay in the optimizer instead
    user = keras.Input(shape=(), name="user", dtype="int32")
    item = keras.Input(shape=(None,), name="item", dtype="int32")

    initial = keras.initializers.RandomNormal(stddev=INIT_STD)

    def item_rows(name):
        if NEG_L2 >= 0:
            return ColumnL2(l2, NEG_L2)(models._embedding(split.num_items, FACTORS, name, 0,
                                                          initial)(item))
        return models._embedding(split.num_items, FACTORS, name, l2, initial)(item)   # (n, c, d)

    gmf_user = UserVector(split.num_users, split.num_items, FACTORS, history, own_row,
                          attention, drop, played_weights, l2, name="gmf_user")
    mlp_user = UserVector(split.num_users, split.num_items, FACTORS, history, own_row,
                          attention, drop, played_weights, l2, name="mlp_user")
    if variant == "shared_bag":
        gmf_item, mlp_item = BagRows(gmf_user)(item), BagRows(mlp_user)(item)
    else:
        gmf_item, mlp_item = item_rows("gmf_item"), item_rows("mlp_item")
    if variant == "listeners":
        listened = [ItemListeners(split, FACTORS, history, name=f"{tower}_listeners")(user, item)
                    for tower in ("gmf", "mlp")]
        gmf_item = layers.Add()([gmf_item, listened[0]])
        mlp_item = layers.Add()([mlp_item, listened[1]])
    if PLAY_GRAD != 1:
        gmf_item, mlp_item = PlayGradient(PLAY_GRAD)(gmf_item), PlayGradient(PLAY_GRAD)(mlp_item)
    vectors = [gmf_user(user, item, gmf_item), gmf_item, mlp_user(user, item, mlp_item),
               mlp_item]
    if variant == "embed_dropout":
        vectors = [layers.Dropout(EMBED_DROPOUT)(vector) for vector in vectors]
    gmf = layers.Multiply()(vectors[:2])
    hidden = layers.Concatenate()(vectors[2:])
    for units in (32, 16, 8):
        hidden = layers.Dense(units, activation="relu")(hidden)
    output = (layers.Dense(1, use_bias=False, kernel_initializer="ones", trainable=False)
              if DOT_OUTPUT else layers.Dense(1))
    logit = output({"gmf": gmf, "mlp": hidden}[TOWERS] if TOWERS else
                   layers.Concatenate()([gmf, hidden]))
    logit = layers.Reshape((-1,))(logit)
    if variant in ("item_bias", "history_bias"):
        bias = models.RowEmbedding(split.num_items, 1, embeddings_initializer="zeros")(item)
        logit = layers.Add()([logit, layers.Reshape((-1,))(bias)])
    model = keras.Model([user, item], logit)
    optimizer = (AveragingLazyAdam(LEARNING_RATE, use_ema=True, ema_momentum=EMA_MOMENTUM)
                 if variant == "ema" else
                 models.LazyAdam(LEARNING_RATE, weight_decay=WEIGHT_DECAY) if variant == "adamw"
                 else models.make_optimizer(OPTIMIZER, LEARNING_RATE))
    model.compile(optimizer,
                  loss=LOSSES[LOSS] if LOSS else LOSSES.get(variant, LOSSES["bce"]),
                  steps_per_execution=models.STEPS_PER_CALL)
    return model


def _bce(labels, logits, negative_weight=1.0):
    """Log loss per pair, negatives weighted, over the row's total weight (1 + 8 when 1.0)."""
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    weights = labels + negative_weight * (1 - labels)
    return tf.reduce_sum(weights * losses, -1) / tf.reduce_sum(weights, -1)


def _weighted_plays(labels, logits):
    """Log loss per pair; a play's label is its weight (> 0), over the row's 1 + 8 pairs."""
    played = tf.cast(labels > 0, tf.float32)
    losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=played, logits=logits)
    weights = labels + (1 - played)
    return tf.reduce_sum(weights * losses, -1) / tf.cast(tf.shape(labels)[-1], tf.float32)


LOSSES = {
    "bce": lambda labels, logits: _bce(labels, logits, NEG_WEIGHT),
    "rare_plays": _weighted_plays,
    "play_counts": _weighted_plays,
    "neg32": lambda labels, logits: _bce(labels, logits, 0.25),
    "softmax": lambda labels, logits: -tf.reduce_sum(labels * tf.nn.log_softmax(logits), -1),
    # labels: log q of each artist; the play is column 0
    "softmax_mix": lambda labels, logits: -tf.nn.log_softmax(logits - labels)[..., 0],
    # the play is column 0, its negatives the rest
    "pairwise": lambda labels, logits: tf.reduce_mean(
        tf.nn.softplus(logits[..., 1:] - logits[..., :1]), -1),
}


def artist_listeners(split):
    """Training listeners per artist."""
    return np.bincount(split.train_items, minlength=split.num_items)


def idf_weights(split):
    """(num_items,) (training listeners)^-IDF_POWER (1 for none), mean 1 over the plays."""
    weights = np.maximum(artist_listeners(split), 1).astype(np.float64) ** -IDF_POWER
    return (weights / weights[split.train_items].mean()).astype(np.float32)


def rare_play_weights(split):
    """Per artist, (training listeners)^-0.5, scaled to a mean of 1 over the training plays."""
    weights = np.maximum(artist_listeners(split), 1) ** -0.5
    return (weights / weights[split.train_items].mean()).astype(np.float32)


def play_count_weights(split):
    """Per training play, log(1 + plays)^PLAY_POWER from $PLAYS_CSV, scaled to a mean of 1 over
    each user's training plays (a user's total weight is unchanged)."""
    import pandas as pd
    frame = pd.read_csv(PLAYS_CSV)
    keys = frame.user_id.values.astype(np.int64) * split.num_items + frame.artist_id.values
    counts = pd.Series(frame.plays.values, index=keys).groupby(level=0).sum()
    wanted = split.train_users.astype(np.int64) * split.num_items + split.train_items
    weights = np.log1p(counts.reindex(wanted).fillna(1).values) ** PLAY_POWER
    means = np.bincount(split.train_users, weights, split.num_users) / np.maximum(
        np.bincount(split.train_users, minlength=split.num_users), 1)
    order = np.argsort(wanted)
    return {"keys": wanted[order], "num_items": split.num_items,
            "weights": (weights / means[split.train_users]).astype(np.float32)[order]}


def weights_of_plays(table, users, items):
    """The weights of plays (users, items) from play_count_weights' sorted table."""
    keys = users.astype(np.int64) * table["num_items"] + items
    return table["weights"][np.searchsorted(table["keys"], keys)]


def popular_negatives(split, users, count, rng, power=0.75):
    """(len(users), count) unplayed artists drawn with probability ~ listeners^power; draws
    that hit a played artist are drawn again (10 rounds, then uniform)."""
    weights = artist_listeners(split) ** power
    cumulative = np.cumsum(weights / weights.sum())
    rows = np.repeat(users.astype(np.int64), count)
    drawn = np.empty(len(rows), np.int64)
    todo = np.arange(len(rows))
    for _ in range(10):
        drawn[todo] = np.minimum(np.searchsorted(cumulative, rng.random(len(todo))),
                                 split.num_items - 1)
        todo = todo[split.sampler.is_played(rows[todo], drawn[todo])]
        if not len(todo):
            break
    drawn[todo] = split.sampler.sample(rows[todo], rng)
    return drawn.reshape(len(users), count).astype(np.int32)


def mixed_softmax_rows(split, seed, epoch):
    """Rows of a play, SOFTMAX_NEGATIVES / 2 uniform and as many popular unplayed artists;
    labels log q per artist (see softmax_mix)."""
    half = SOFTMAX_NEGATIVES // 2
    inputs, _ = training.epoch_data("neumf", split, half, seed, epoch)
    popular = popular_negatives(split, inputs["user"], half,
                                np.random.default_rng([seed, 4, epoch]), power=1.0)
    inputs["item"] = np.concatenate([inputs["item"], popular], 1)
    listeners = artist_listeners(split)
    uniform = np.zeros(split.num_items)
    uniform[split.sampler.items] = 1.0 / len(split.sampler.items)   # gaps in the ids: never drawn
    log_q = np.log(0.5 * uniform + 0.5 * listeners / listeners.sum() + 1e-30).astype(np.float32)
    return inputs, log_q[inputs["item"]]


def hard_negative_rows(split, score, seed, epoch):
    """Rows of a play and NEG_RATIO negatives: the first round(DNS_SHARE * NEG_RATIO) each the
    highest-scored of DNS_POOL uniform unplayed draws (`score(users, items)`), the rest
    uniform; labels as epoch_data's."""
    hard = int(round(DNS_SHARE * NEG_RATIO))
    inputs, labels = training.epoch_data("neumf", split, NEG_RATIO, seed, epoch)
    users = inputs["user"]
    pool = split.sampler.sample(np.repeat(users, hard * DNS_POOL),
                                np.random.default_rng([seed, 5, epoch]))
    pool = pool.reshape(len(users), hard * DNS_POOL).astype(np.int32)
    scores = score(users, pool).reshape(len(users), hard, DNS_POOL)
    chosen = np.take_along_axis(pool.reshape(len(users), hard, DNS_POOL),
                                scores.argmax(-1)[..., None], -1)[..., 0]
    inputs["item"][:, 1:1 + hard] = chosen
    return inputs, labels


def scorer(model):
    call = tf.function(lambda users, items: model({"user": users, "item": items}))
    return lambda users, items: np.concatenate([
        call(tf.constant(users[k:k + 256], tf.int32), tf.constant(items[k:k + 256], tf.int32))
        .numpy() for k in range(0, len(users), 256)])


def validation_metrics(score, split):
    result = evaluate.hit_ratio_at_k(score, split.valid_users, split.valid_items,
                                     split.valid_negatives, TOP_K)
    return result["hit_ratio"], result["ndcg"]


def scored_weights(model, variant, weights, snapshots):
    """-> (the weights an epoch is scored, and kept if best, with; the snapshots so far):
    the epoch's own `weights`, or for `average` the mean of the last 3 epochs', or for `ema`
    the optimizer's moving average. The model is left with `weights`."""
    if variant == "average":
        snapshots = (snapshots + [weights])[-3:]
        return [np.mean(parts, 0) for parts in zip(*snapshots)], snapshots
    if variant == "ema":
        model.optimizer._overwrite_model_variables_with_average_value(model.trainable_variables)
        averaged = model.get_weights()
        model.set_weights(weights)
        return averaged, snapshots
    return weights, snapshots


def repeated_epoch_data(split, negatives, seed, epoch, repeat):
    """`repeat` epochs' rows of training.epoch_data (epochs epoch * repeat + r), shuffled
    together: each play `repeat` times, each time with fresh negatives."""
    parts = [training.epoch_data("neumf", split, negatives, seed, epoch * repeat + r)
             for r in range(repeat)]
    if repeat == 1:
        return parts[0]
    order = np.random.default_rng([seed, 5, epoch]).permutation(sum(len(p[1]) for p in parts))
    inputs = {name: np.concatenate([p[0][name] for p in parts])[order] for name in parts[0][0]}
    return inputs, np.concatenate([p[1] for p in parts])[order]


def train(split, variant, seed, log):
    """-> (best epoch, validation HR, NDCG, seconds, the scorer at the best epoch)."""
    keras.utils.set_random_seed(seed)
    model = build(split, variant)
    score = scorer(model)       # one traced scorer for the whole run: it reads the weights
    negatives = 32 if variant == "neg32" else NEG_RATIO
    rows = max(1, BATCH_SIZE // (1 + NEG_RATIO))           # the default's rows a step
    best, snapshots, started = (0, -1.0, 0.0, None), [], time.time()
    play_weights = rare_play_weights(split) if variant == "rare_plays" else None
    play_table = play_count_weights(split) if variant == "play_counts" else None
    for epoch in range(MAX_EPOCHS):
        inputs, labels = repeated_epoch_data(split, negatives, seed, epoch, REPEAT)
        if variant == "popneg":
            inputs["item"][:, 1 + NEG_RATIO // 2:] = popular_negatives(
                split, inputs["user"], NEG_RATIO - NEG_RATIO // 2,
                np.random.default_rng([seed, 3, epoch]))
        if variant == "softmax_mix":
            inputs, labels = mixed_softmax_rows(split, seed, epoch)
        if variant == "dns":
            inputs, labels = hard_negative_rows(split, score, seed, epoch)
        if variant == "rare_plays":
            labels = labels * play_weights[inputs["item"]]
        if variant == "play_counts":
            labels = labels.copy()
            labels[:, 0] = weights_of_plays(play_table, inputs["user"], inputs["item"][:, 0])
        if variant == "decay":
            model.optimizer.learning_rate.assign(LEARNING_RATE * 0.85 ** epoch)
        model.fit(training.batched_dataset(inputs, labels, rows), epochs=1, verbose=0)
        weights = model.get_weights()                   # copies: the weights trained on
        frozen, snapshots = scored_weights(model, variant, weights, snapshots)
        model.set_weights(frozen)
        hit_ratio, ndcg = validation_metrics(score, split)
        model.set_weights(weights)                      # train on from the epoch's own
        log(f"  {variant} seed {seed} epoch {epoch + 1}: valid HR@10 {hit_ratio:.4f}, "
            f"NDCG@10 {ndcg:.4f}")
        if hit_ratio > best[1]:
            best = (epoch + 1, hit_ratio, ndcg, frozen)
        elif epoch + 1 - best[0] >= PATIENCE:
            break
        elif variant == "plateau":
            model.optimizer.learning_rate.assign(model.optimizer.learning_rate * 0.5)
    model.set_weights(best[3])
    return best[0], best[1], best[2], time.time() - started, score


def run_variant(split, variant, seed, log):
    if variant != "ensemble":
        epoch, hit_ratio, ndcg, seconds, _ = train(split, variant, seed, log)
        return {"variant": variant, "best_epoch": str(epoch), "hit_ratio": hit_ratio,
                "ndcg": ndcg, "seconds": seconds}
    members = [train(split, ENSEMBLE_OF, seed + k, log) for k in range(ENSEMBLE)]
    scores = [member[4] for member in members]
    hit_ratio, ndcg = validation_metrics(
        lambda users, items: np.mean([score(users, items) for score in scores], 0), split)
    return {"variant": variant, "best_epoch": "/".join(str(m[0]) for m in members),
            "hit_ratio": hit_ratio, "ndcg": ndcg, "seconds": sum(m[3] for m in members)}


def item_knn_scores(split, users, items):
    """Item kNN as peers_bench.py (bench/paired.py's) on the training pairs -> (scores (n, c),
    training listeners per artist)."""
    played = played_matrix(split)
    return item_knn(played)(users, items), played.sum(0)


def one_variant(settings, flag):
    """The one variant `flag` trains: --variants's only one, or default when none is given."""
    given = settings["variants"].split(",")
    if settings["variants"] == ",".join(VARIANTS):
        return "default"
    if len(given) != 1 or given[0] == "ensemble":
        sys.exit(f"error: {flag} trains one NeuMF; give one variant (not ensemble) in --variants")
    return given[0]


def by_popularity(split, seed, log, variant="default"):
    """Validation HR@10 of NeuMF (`variant`) and item kNN by the held-out artist's training
    listeners."""
    *_, neumf = train(split, variant, seed, log)
    items = np.concatenate([split.valid_items[:, None], split.valid_negatives], 1)
    knn, listeners = item_knn_scores(split, split.valid_users, items)
    neumf_scores = neumf(split.valid_users, items)
    ranks = {"neumf": evaluate.ranks_against(*_columns(neumf_scores)),
             "item kNN": evaluate.ranks_against(*_columns(knn))}
    held_out = listeners[split.valid_items]
    print("| training listeners of the held-out artist | users | item kNN HR@10 | NeuMF HR@10 |")
    print("| --- | --- | --- | --- |")
    for low, high in ((0, 0), (1, 1), (2, 3), (4, 9), (10, 30), (31, None)):
        chosen = (held_out >= low) & (held_out <= (high if high is not None else np.inf))
        label = f"{low}" if low == high else f"{low} or more" if high is None else f"{low}-{high}"
        print(f"| {label} | {chosen.sum():,} | {np.mean(ranks['item kNN'][chosen] < TOP_K):.3f} "
              f"| {np.mean(ranks['neumf'][chosen] < TOP_K):.3f} |")
    print(f"| all | {len(held_out):,} | {np.mean(ranks['item kNN'] < TOP_K):.4f} "
          f"| {np.mean(ranks['neumf'] < TOP_K):.4f} |")
    lost = (ranks["neumf"] >= TOP_K) & (ranks["item kNN"] < TOP_K)
    above = neumf_scores[:, 1:] >= neumf_scores[:, :1]
    rare = listeners[split.valid_negatives] <= 2
    won = (ranks["item kNN"] >= TOP_K) & (ranks["neumf"] < TOP_K)
    print(f"\nNeuMF misses that item kNN hits: {lost.sum()} users (the reverse: {won.sum()}); "
          f"of the candidates NeuMF scores at or above their held-out artist, "
          f"{rare[above & lost[:, None]].mean():.0%} have 2 or fewer training listeners (of all "
          f"candidates: {rare.mean():.0%}).")


def popularity_adjusted(split, seed, log, variant, betas):
    """Validation HR@10 / NDCG@10 of one trained NeuMF (`variant`) whose logits are lowered by
    beta * log(1 + training listeners) of each candidate, for each beta: how much of the
    model's ranking is a popularity prior that item kNN's cosine (over sqrt of the candidate's
    listeners) does not have."""
    epoch, *_, neumf = train(split, variant, seed, log)
    items = np.concatenate([split.valid_items[:, None], split.valid_negatives], 1)
    logits = neumf(split.valid_users, items)
    prior = np.log1p(artist_listeners(split))[items]
    print(f"| beta | valid HR@10 | valid NDCG@10 |   ({variant}, best epoch {epoch})")
    print("| --- | --- | --- |")
    for beta in betas:
        hits, gains = evaluate.hits_and_gains(
            evaluate.ranks_against(*_columns(logits - beta * prior)), TOP_K)
        print(f"| {beta:g} | {hits.mean():.4f} | {gains.mean():.4f} |")


def _columns(scores):
    return scores[:, 0], scores[:, 1:]


def export_validation(split, prefix):
    """The validation artists as the held-out ones, training rows without them."""
    held_out = data.Split(split.train_users, split.train_items, split.valid_users,
                          split.valid_items, split.valid_negatives, split.valid_users[:0],
                          split.valid_items[:0], split.valid_negatives[:0], split.sampler,
                          split.num_users, split.num_items)
    return data.write_ncf_split(held_out, prefix)


def main(argv):
    settings = {"split": "", "seed": "42", "variants": ",".join(VARIANTS), "export_validation": "",
                "by_popularity": "", "adjust": ""}
    for argument in argv:
        key, _, value = argument.lstrip("-").partition("=")
        if key not in settings:
            sys.exit(f"error: unknown argument {argument}; known: "
                     + ", ".join(f"--{k}" for k in settings))
        settings[key] = value if "=" in argument else "1"
    variants = settings["variants"].split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if not settings["split"] or unknown:
        sys.exit(f"error: give --split=PREFIX and --variants from {', '.join(VARIANTS)}")
    if LOSS and LOSS not in LOSSES:
        sys.exit(f"error: LOSS={LOSS!r}: give one of {', '.join(LOSSES)}")
    if ENSEMBLE_OF not in VARIANTS or ENSEMBLE_OF == "ensemble":
        sys.exit(f"error: ENSEMBLE_OF={ENSEMBLE_OF!r}: give one of the variants but ensemble")
    if not settings["seed"].isdigit():
        sys.exit(f"error: --seed={settings['seed']!r}: give an integer of 0 or more")
    if error := environment_error():
        sys.exit(f"error: {error}")
    seed = int(settings["seed"])
    try:
        _, split = data.read_ncf_split(settings["split"], seed, validation=True)
    except data.DataError as error:
        sys.exit(f"error: {error}")
    if settings["export_validation"]:
        print("\n".join(export_validation(split, settings["export_validation"])))
        return
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if settings["adjust"]:
        try:
            betas = [float(beta) for beta in settings["adjust"].split(",")]
        except ValueError:
            sys.exit(f"error: --adjust={settings['adjust']!r}: give numbers, like 0,0.1,0.2")
        return popularity_adjusted(split, seed, log, one_variant(settings, "--adjust"), betas)
    if settings["by_popularity"]:
        return by_popularity(split, seed, log, one_variant(settings, "--by_popularity"))
    rows = [run_variant(split, variant, seed, log) for variant in variants]
    print(f"NeuMF variants on the validation artists of {settings['split']} (seed {seed}, "
          f"{len(split.valid_users):,} users)\n")
    print("| variant | best epoch | valid HR@10 | valid NDCG@10 | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['variant']} | {row['best_epoch']} | {row['hit_ratio']:.4f} | "
              f"{row['ndcg']:.4f} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
