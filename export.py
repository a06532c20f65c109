"""--export: the trained model as a TensorFlow SavedModel that recommends, for TensorFlow Serving
or any program that has TensorFlow; nothing of this repository is needed to load it.

In:  a trained model of the table (mlp, gmf, neumf, bpr; either user input), the `data.Plays` it
     was trained on (the data's own ids), its `split.Split` (what each user played, each
     artist's training listeners), and a folder.
Out: FOLDER/N/, a SavedModel in TensorFlow Serving's version layout (N = 1, or the next number
     after a previous export's), holding the weights, the id maps (`tf.lookup.StaticHashTable`)
     and every user's played artists, with two signatures:
       recommend (also `serving_default`): user_id (n,) string, k () int32 -> artist_id (n, k)
         string, score (n, k) float32, known (n,) bool. Each user's k best artists they never
         played (training or held-out), best first, as --recommend_user ranks them: the same
         scores, ties to the lower table row. A user not in the data gets the k most popular
         artists (score: their training listeners) and known False, not an error. Where fewer
         than k artists are left, the row ends in "" with score -inf; k is at most the catalogue.
       score: user_id (n,) string, artist_id (n,) string -> score (n,) float32, known (n,) bool:
         the model's score of each pair, as `models.make_scorer` gives it; NaN where an id is
         not in the data.
     Ids are the data's own: the file's text ids, or the row numbers as text ("007" is user 7,
     as for --recommend_user) when the data were numbered.
Speed: every artist is scored for one user at a time with `models.make_scorer`'s arithmetic, its
     ops in its order on the same weights (which is why the ranking is --recommend_user's to
     the bit), then the played ones masked and `tf.math.top_k` taken.
Refuses: a folder holding anything but an export's version folders, as a one-line InputError;
     it is never written into. A request of the wrong type gets TensorFlow's own error from the
     signature's type check.
"""
import os

import numpy as np
import tensorflow as tf

import errors
import files
import models
import settings
import tf_fast


class Recommender(tf.Module):
    """The exported module: the scorer's weights as variables, the id maps as tables."""

    def __init__(self, parts, history, gmf_dim, user_labels, artist_labels, numbered, items,
                 played, popularity):
        super().__init__(name="ncf_recommender")
        variable = lambda value, name: tf.Variable(value, trainable=False, name=name)  # noqa
        self.stack = [(variable(k, f"kernel_{n}"), variable(b, f"bias_{n}"))
                      for n, (k, b) in enumerate(parts.get("stack", []), 2)]
        self.weights = {name: variable(value, name) for name, value in parts.items()
                        if name != "stack"}
        self.history = {tower: {name: variable(part[name], f"{tower}_history_{name}")
                                for name in ("table", "total", "count")}
                        for tower, part in history.items()}     # per tower, as make_scorer
        self.history_keys = (variable(next(iter(history.values()))["keys"], "history_keys")
                             if history else None)              # the training pairs' keys
        self.gmf_dim, self.numbered = gmf_dim, numbered
        self.num_items = int(len(artist_labels))
        self.users = _table(user_labels, "users")
        self.artists = _table(artist_labels, "artists")
        self.artist_ids = variable(np.asarray(artist_labels, dtype=object).astype(bytes),
                                   "artist_ids")
        self.items = variable(items, "items")                   # the artists that exist
        self.played_starts = variable(played[0], "played_starts")   # (num_users + 1,) int64
        self.played_items = variable(played[1], "played_items")     # each user's, sorted
        self.popularity = variable(popularity, "popularity")    # -inf for gaps in the ids

    def _rows(self, table, ids):
        if self.numbered:      # "007" is row 7, as --recommend_user reads it
            ids = tf.strings.regex_replace(ids, "^0+([0-9])", "\\1")
        return table.lookup(ids)

    def _tensors(self):
        """Every variable read once per call: a gather from a tensor, not from the variable,
        which would put it in copy-on-read mode (models.UserHistory says why that is slow)."""
        read = {name: tf.convert_to_tensor(v) for name, v in self.weights.items()}
        read["stack"] = [(tf.convert_to_tensor(k), tf.convert_to_tensor(b))
                         for k, b in self.stack]
        keys = (tf.convert_to_tensor(self.history_keys) if self.history_keys is not None
                else None)
        read["history"] = {tower: {**{name: tf.convert_to_tensor(v) for name, v in part.items()},
                                   "keys": keys, "num_items": self.num_items}
                           for tower, part in self.history.items()}
        return read

    def _score(self, t, users, items, rescore_played=True):
        """models.make_scorer's scores (`tf_fast.scores`, the same ops in the same order)."""
        return tf_fast.scores(t, t["history"], self.gmf_dim, users, items, rescore_played)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([], tf.int32, name="k")])
    def recommend(self, user_id, k):
        t = self._tensors()
        items, starts = tf.convert_to_tensor(self.items), tf.convert_to_tensor(self.played_starts)
        played, popularity = (tf.convert_to_tensor(self.played_items),
                              tf.convert_to_tensor(self.popularity))
        artist_ids = tf.convert_to_tensor(self.artist_ids)
        rows = self._rows(self.users, user_id)                   # (n,), -1: not in the data
        k = tf.minimum(k, self.num_items)
        unscored = tf.fill([self.num_items], float("-inf"))

        def unplayed_scores(row):   # (num_items,): as report.recommend, one user at a time
            scores = self._score(t, row[None], items[None, :], rescore_played=False)[0]
            scores = tf.tensor_scatter_nd_update(unscored, items[:, None], scores)
            mine = played[starts[row]:starts[row + 1]]
            return tf.tensor_scatter_nd_update(scores, mine[:, None],
                                               tf.fill(tf.shape(mine), float("-inf")))

        def best(row):
            scores = tf.cond(row >= 0, lambda: unplayed_scores(row), lambda: popularity)
            values, best_items = tf.math.top_k(scores, k)    # equal scores: lower row first
            ids = tf.where(values > float("-inf"), tf.gather(artist_ids, best_items), "")
            return ids, values

        ids, scores = tf.map_fn(best, rows, fn_output_signature=(
            tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.float32)))
        return {"artist_id": ids, "score": scores, "known": rows >= 0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id"),
                                  tf.TensorSpec([None], tf.string, name="artist_id")])
    def score(self, user_id, artist_id):
        users, items = self._rows(self.users, user_id), self._rows(self.artists, artist_id)
        known = (users >= 0) & (items >= 0)
        scores = self._score(self._tensors(), tf.where(known, users, 0),
                             tf.where(known, items, 0)[:, None])[:, 0]
        return {"score": tf.where(known, scores, float("nan")), "known": known}


def _table(labels, name):
    """The data's own ids (text) -> their table rows (int32), -1 for an id not in the data."""
    keys = tf.constant(np.asarray(labels, dtype=object).astype(bytes))
    rows = tf.range(len(labels), dtype=tf.int32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, rows), -1,
                                     name=name)


def recommender(model, plays, split):
    """The exported module of `model`, trained on `plays` split as `split`."""
    parts, history, gmf_dim = models._scorer_parts(model)
    numbered = plays.user_labels is None
    user_labels = (plays.user_labels if plays.user_labels is not None
                   else np.arange(split.num_users))
    artist_labels = (plays.artist_labels if plays.artist_labels is not None
                     else np.arange(split.num_items))
    played = [np.concatenate([split.train_users, split.test_users, split.valid_users]),
              np.concatenate([split.train_items, split.test_items, split.valid_items])]
    keys, starts = models.history_keys(*played, split.num_users, split.num_items)
    popularity = np.bincount(split.train_items, minlength=split.num_items).astype(np.float32)
    exists = np.zeros(split.num_items, bool)
    exists[split.sampler.items] = True
    popularity[~exists] = -np.inf
    return Recommender(parts, history, gmf_dim, [str(u) for u in user_labels],
                       [str(a) for a in artist_labels], numbered, split.sampler.items,
                       (starts, (keys % split.num_items).astype(np.int32)), popularity)


def write(model, plays, split, folder, log=print):
    """Exports `model` into `folder`'s next version -> that version's path."""
    module = recommender(model, plays, split)
    signatures = {"serving_default": module.recommend, "recommend": module.recommend,
                  "score": module.score}
    path = files.new_version(folder, lambda temporary: tf.saved_model.save(
        module, temporary, signatures=signatures))
    if path is None:
        raise errors.InputError(settings.export_refusal(folder))
    size = sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)
    log(f"export: {path} (SavedModel, signatures recommend and score, {size / 2**20:,.1f} MB)")
    return path

