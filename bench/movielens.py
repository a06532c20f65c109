"""MovieLens 100K in the notebook's CSV format: a second real data set, to see whether the
defaults chosen on lastfm-2k hold on data they were not chosen on.

Run from the repository root (docs/results.md has the runs on these data):
    pip download --no-deps recbole==1.2.1 -d dl/       # a 2 MB wheel that carries ml-100k
    python bench/movielens.py dl/recbole-1.2.1-py3-none-any.whl ml100k/
    python bench/movielens.py ml-100k/u.data ml100k/   # or GroupLens's own files

In: RecBole's wheel (its `dataset_example/ml-100k` atomic files: .inter, .item, .user, read
from the zip; nothing is installed), or GroupLens's `u.data` (user, movie, rating, time,
tab-separated), with `u.item` and `u.user` read from beside it when they are there.
Out: OUT/lastfm_play.csv (user_id, artist_id: the movie, plays: the rating, 1 to 5),
lastfm_artist.csv (the movie's title and year) and lastfm_user.csv (gender and age; no
country), ids renumbered 0, 1, ... in the order of the original ids, so
`python ncf_lastfm.py --data_dir=OUT ...` reads them. Every rating counts as an interaction, as
every play does; the rating itself is kept as `plays` and not used by training.
Refuses, in one line: a missing or unreadable input, a wheel without ml-100k, a line that is not
four fields, an id or rating that is not an integer.
"""
import argparse
import csv
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import files  # noqa: E402

WHEEL_FOLDER = "recbole/dataset_example/ml-100k/ml-100k"


class InputError(ValueError):
    """A MovieLens file that cannot be read as one; the message names it and the line."""


def _rows(text, where, separator, fields, header):
    """(line number, fields) of each non-empty line of `text`, the header skipped."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or (header and number == 1):
            continue
        parts = line.split(separator)
        if len(parts) < fields:
            raise InputError(f"{where}: line {number} has {len(parts)} fields; expected "
                             f"{fields} separated by {separator!r}")
        out.append((number, parts))
    return out


def _integer(text, where, number, column):
    """int(text) for "7" and "7.0" (RecBole writes floats), else a one-line InputError."""
    try:
        if (value := float(text)).is_integer():
            return int(value)
    except ValueError:
        pass
    raise InputError(f"{where}: line {number} has {column} {text.strip()!r}; expected an "
                     "integer")


def _ratings(text, where, separator, header):
    """[(user, movie, rating)] of a ratings file (user, movie, rating, time)."""
    return [tuple(_integer(parts[k], where, number, name)
                  for k, name in enumerate(("user", "movie", "rating")))
            for number, parts in _rows(text, where, separator, 4, header)]


def _users(text, where, separator, header):
    """{user: (gender, age)} of a users file (user, age, gender, ...)."""
    return {_integer(parts[0], where, number, "user"): (parts[2], parts[1])
            for number, parts in _rows(text, where, separator, 3, header)}


def read_wheel(path):
    """-> (ratings [(user, movie, rating)], titles {movie: title}, users {user: (gender, age)})
    with the original ids, from RecBole's wheel."""
    try:
        with zipfile.ZipFile(path) as wheel:
            texts = {kind: wheel.read(f"{WHEEL_FOLDER}.{kind}").decode("utf-8")
                     for kind in ("inter", "item", "user")}
    except KeyError as error:
        raise InputError(f"{path}: no ml-100k in this file ({error.args[0]})") from None
    except zipfile.BadZipFile:
        raise InputError(f"{path}: not a wheel (a wheel is a zip archive)") from None
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: ml-100k's files are not UTF-8 text ({error.reason})") from None
    where = {kind: f"{path}:{WHEEL_FOLDER}.{kind}" for kind in texts}
    titles = {_integer(parts[0], where["item"], number, "movie"): f"{parts[1]} ({parts[2]})"
              for number, parts in _rows(texts["item"], where["item"], "\t", 3, True)}
    return (_ratings(texts["inter"], where["inter"], "\t", True), titles,
            _users(texts["user"], where["user"], "\t", True))


def read_grouplens(path):
    """The same from GroupLens's u.data, and u.item / u.user beside it if they are there."""
    with open(path, encoding="latin-1") as file:
        ratings = _ratings(file.read(), path, "\t", False)
    folder, titles, users = os.path.dirname(path), {}, {}
    if os.path.exists(item_path := os.path.join(folder, "u.item")):
        with open(item_path, encoding="latin-1") as file:
            titles = {_integer(parts[0], item_path, number, "movie"): parts[1]
                      for number, parts in _rows(file.read(), item_path, "|", 2, False)}
    if os.path.exists(user_path := os.path.join(folder, "u.user")):
        with open(user_path, encoding="latin-1") as file:
            users = _users(file.read(), user_path, "|", False)
    return ratings, titles, users


def write_csvs(ratings, titles, users, out):
    """The notebook's three CSVs in `out`, ids renumbered 0.. in the order of the original ids
    (every user and movie that is rated or listed gets one)."""
    user_ids = sorted({user for user, _, _ in ratings} | set(users))
    movie_ids = sorted({movie for _, movie, _ in ratings} | set(titles))
    user_of = {user: k for k, user in enumerate(user_ids)}
    movie_of = {movie: k for k, movie in enumerate(movie_ids)}
    os.makedirs(out, exist_ok=True)
    tables = {
        data.PLAY_FILE: [(user_of[u], movie_of[m], r) for u, m, r in ratings],
        data.ARTIST_FILE: [(movie_of[m], titles.get(m, f"movie {m}")) for m in movie_ids],
        data.USER_FILE: [(user_of[u], *users.get(u, ("", -1)), "") for u in user_ids],
    }
    for name, rows in tables.items():
        def write(path, name=name, rows=rows):
            with open(path, "w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file, lineterminator="\n")
                writer.writerow(data.COLUMNS[name])
                writer.writerows(rows)
        files.atomic_write(os.path.join(out, name), write)
    return len(ratings), len(user_ids), len(movie_ids)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python bench/movielens.py",
        description="MovieLens 100K (RecBole's wheel or GroupLens's u.data) as the notebook's "
                    "three CSVs.")
    parser.add_argument("source", help="RecBole's wheel (recbole-1.2.1-py3-none-any.whl) or "
                                       "GroupLens's u.data; required, no default")
    parser.add_argument("out", help="the folder to write the three CSVs into (made if "
                                    "missing); required, no default")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    source, out = args.source, args.out
    try:
        reader = read_wheel if zipfile.is_zipfile(source) else read_grouplens
        counts = write_csvs(*reader(source), out)
    except (InputError, OSError) as error:
        sys.exit(f"error: {error}")
    print("wrote {} ratings of {} users and {} movies to {}".format(*counts, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
