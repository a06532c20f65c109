"""What users look at: training curves, hit ratio at K, recommendations by name, similar artists.

In:  a trained model, the `data.Plays` it was trained on (for names and play counts), the split.
Out: PNG plots, `recommendations.csv`, printed tables, and --export's SavedModel (export.py).
     Recommendations never include an artist the user has played; every artist is scored for
     a user in one batched call.
Refuses: a user id outside the data, an artist name not in the data (with close spellings).
"""
import difflib
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import errors  # noqa: E402
import evaluate  # noqa: E402
import model_table  # noqa: E402
import models  # noqa: E402
import files  # noqa: E402
import loading  # noqa: E402
import settings  # noqa: E402
from split import split_digest  # noqa: E402


def write_run(s, plays, split, model, result, folder, version):
    """metrics.json, the saved model, plots, recommendations, similar artists, the export."""
    popularity = result["popularity"]
    metrics = {
        "model": result["model"], "hit_ratio": result["hit_ratio"], "ndcg": result["ndcg"],
        "popularity_hit_ratio": popularity["hit_ratio"], "popularity_ndcg": popularity["ndcg"],
        "num_test_users": int(len(split.test_users)), "num_epoch": len(result["history"]),
        "best_epoch": result["best_epoch"], "train_seconds": result["train_seconds"],
        "eval_seconds": result.get("eval_seconds", 0.0), "history": result["history"],
        "played_negatives": split.played_negatives[0],
        "played_negative_users": split.played_negatives[1],
        "settings": settings.recorded(s),
        "version": version}
    for key in ("full_hit_ratio", "full_ndcg", "full_users"):
        if key in result:
            metrics[key] = result[key]
            metrics["popularity_" + key] = popularity[key]
    if model is not None and (not s.load or s.num_epoch):   # trained here
        path = os.path.join(folder, f"{result['model']}.keras")
        digest = split_digest(split)
        ids = loading.id_record(plays)
        files.atomic_write(path, lambda temporary: models.save(model, temporary, digest, ids))
        metrics["saved_model"] = path
        print(f"saved model: {path}")
    files.atomic_write(os.path.join(folder, "metrics.json"),
                       lambda path: files.write_json(path, metrics))
    for path in plot_run(result, popularity, s.top_k, folder, 1 + s.num_eval_negatives):
        print(f"plot: {path}")
    if s.recommend_user and model is not None:
        recommend(model, plays, split, settings.parse_user_list(s.recommend_user), s.top_k,
                  folder)
    if s.similar_to and model is not None:
        similar_artists(model, plays, s.similar_to, 10, folder)
    if s.export and model is not None:
        import export   # TensorFlow's (settings refuse --export on JAX)
        export.write(model, plays, split, s.export)


def plot_run(result, popularity, top_k, folder, candidates):
    """Training curves and hit ratio at K = 1..20 against popularity -> the PNG paths.
    `candidates`: how many artists each test user's held-out one was ranked among."""
    paths = []
    history = result.get("history") or []
    if history:
        epochs = [h["epoch"] for h in history]
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        left.plot(epochs, [h["loss"] for h in history], marker="o")
        left.set(title=f"{result['model']}: training loss", xlabel="epoch",
                 ylabel="binary cross-entropy")
        for prefix, style in (("test", "-"), ("valid", "--")):
            if f"{prefix}_hit_ratio" in history[0]:
                right.plot(epochs, [h[f"{prefix}_hit_ratio"] for h in history], style,
                           marker="o", label=f"{prefix} HR@{top_k}")
                right.plot(epochs, [h[f"{prefix}_ndcg"] for h in history], style, marker="s",
                           label=f"{prefix} NDCG@{top_k}")
        right.axhline(popularity["hit_ratio"], color="gray", linestyle=":",
                      label=f"popularity HR@{top_k}")
        right.set(title=f"{result['model']}: ranking quality per epoch", xlabel="epoch",
                  ylabel="metric")
        right.legend()
        paths.append(_save(figure, os.path.join(folder, "training_curves.png")))
    if "ranks" in result:
        max_k = min(20, candidates)
        figure, axes = plt.subplots(figsize=(6, 4))
        ks = np.arange(1, max_k + 1)
        axes.plot(ks, evaluate.hit_ratio_curve(result["ranks"], max_k), marker="o",
                  label=result["model"])
        axes.plot(ks, evaluate.hit_ratio_curve(popularity["ranks"], max_k), marker="s",
                  label="popularity")
        axes.set(title=f"hit ratio at K (1 held-out artist among {candidates:,} candidates)",
                 xlabel="K", ylabel="hit ratio", xticks=ks[::2])
        axes.legend()
        paths.append(_save(figure, os.path.join(folder, "hit_ratio_at_k.png")))
    return paths


def _save(figure, path):
    figure.tight_layout()
    files.atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=90))
    plt.close(figure)
    return path


def user_rows(users, plays):
    """The user ids as given (text) -> their table rows, or a InputError naming the first that is
    not in the data. Ids the file wrote as numbers are rows themselves when they were not mapped."""
    if plays.user_labels is None:
        rows = [int(u) if u.isdigit() and int(u) < plays.num_users else -1 for u in users]
        span = f"ids run from 0 to {plays.num_users - 1}"
    else:
        index = pd.Index(plays.user_labels)
        rows = [int(i) for i in index.get_indexer(users)]
        span = f"{len(index):,} user ids, such as {', '.join(map(str, index[:3]))}"
    for user, row in zip(users, rows):
        if row < 0:
            raise errors.InputError(f"--recommend_user: user id {user[:80]!r} is not in the data "
                                    f"({span})")
    return rows


def recommend(model, plays, split, users, top_k, folder, shown=10):
    """Prints each user's most-played artists and top-k recommendations; writes
    recommendations.csv (user_id, rank, artist_id, artist_name, score) in the data's own ids
    -> that frame. `users`: the ids as the user gave them."""
    scorer = models.make_scorer(model)
    all_items = split.sampler.items   # the artists that exist, not gaps in the numbering
    lines = []
    for user, row in zip(users, user_rows(users, plays)):
        scores = np.full(split.num_items, -np.inf)
        scores[all_items] = scorer(np.array([row], np.int32), all_items[None, :])[0]
        played = split.sampler.played_items(row)
        scores[played] = -np.inf                    # never recommend what the user played
        top = [item for item in np.argsort(-scores, kind="stable")[:top_k]
               if np.isfinite(scores[item])]
        mine = plays.user_ids == row
        favourite = plays.artist_ids[mine][np.argsort(-plays.play_counts[mine], kind="stable")]
        print(f"user {user} played {len(played)} artists; most played: "
              + ", ".join(str(plays.artist_names[a]) for a in favourite[:shown]))
        print(f"top {top_k} recommendations for user {user}:")
        for rank, item in enumerate(top, 1):
            print(f"  {rank:2d}. {plays.artist_names[item]} ({scores[item]:.3f})")
            lines.append((plays.user_label(row), rank, plays.artist_label(item),
                          str(plays.artist_names[item]), float(scores[item])))
    frame = pd.DataFrame(lines, columns=["user_id", "rank", "artist_id", "artist_name", "score"])
    path = os.path.join(folder, "recommendations.csv")
    files.atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False,
                                                            encoding="utf-8"))
    print(f"recommendations: {path}")
    return frame


def item_embedding_name(model):
    return model_table.spec(model.name).item_table


def find_artist(plays, name):
    """The artist id whose name matches (case-insensitive; between names that differ only in
    case, the exact spelling decides), or a InputError with suggestions."""
    lowered = np.array([str(n).lower() for n in plays.artist_names])
    known = (np.ones(len(lowered), bool) if plays.artist_known is None
             else plays.artist_known)
    matches = np.flatnonzero((lowered == name.lower()) & known)   # a gap in the ids: no artist
    exact = [int(m) for m in matches if plays.artist_names[m] == name]
    if exact or len(matches) == 1:
        return exact[0] if exact else int(matches[0])
    if len(matches) > 1:      # names that differ only in case: the user must say which
        spelled = ", ".join(repr(str(plays.artist_names[m])) for m in matches[:5])
        raise errors.InputError(f"--similar_to: {len(matches)} artists are named {name!r} apart "
                                f"from case ({spelled}); write the name as one of them")
    close = difflib.get_close_matches(name.lower(), lowered[known].tolist(), n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise errors.InputError(f"--similar_to: no artist named {name!r} in the data{hint}")


def similar_artists(model, plays, name, count=10, folder=None):
    """Prints the `count` artists nearest to `name` by cosine similarity of item embeddings,
    and writes them to `folder`/similar_artists.csv -> list of (artist_id, artist_name,
    similarity)."""
    target = find_artist(plays, name)
    layer = item_embedding_name(model)
    table = np.asarray(model.get_layer(layer).get_weights()[0], np.float64)
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit[target]
    similarity[target] = -np.inf
    if plays.artist_known is not None:
        similarity[~plays.artist_known] = -np.inf   # gaps in the ids are not artists
    nearest = np.argsort(-similarity, kind="stable")[:count]
    nearest = nearest[np.isfinite(similarity[nearest])]   # not itself, nor a gap in the ids
    print(f"artists most similar to {plays.artist_names[target]} "
          f"(cosine similarity of the {layer} table):")
    result = []
    for rank, item in enumerate(nearest, 1):
        print(f"  {rank:2d}. {plays.artist_names[item]} ({similarity[item]:.3f})")
        result.append((plays.artist_label(item), str(plays.artist_names[item]),
                       float(similarity[item])))
    if folder is not None:
        frame = pd.DataFrame(result, columns=["artist_id", "artist_name", "similarity"])
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        frame.insert(0, "similar_to", str(plays.artist_names[target]))
        path = os.path.join(folder, "similar_artists.csv")
        files.atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False,
                                                                encoding="utf-8"))
        print(f"similar artists: {path}")
    return result
