"""Step 1 of the notebook: get and check the listening data.

In:  CSV files in the notebook's format, downloaded from a URL, read from a folder, or made in
     code by `make_planted`; only the plays file is required:
       lastfm_play.csv    user_id, artist_id, plays
       lastfm_artist.csv  artist_id, artist_name        (optional: names fall back to the ids)
       lastfm_user.csv    user_id, gender, age, country (optional: no model reads it)
     Ids may be any text or integers. Dense integer ids of 0 or more (the notebook's files) are
     table rows as they are; other ids (names, hashes, sparse or negative numbers) are mapped to
     rows in order of first appearance, and `Plays` keeps the file's own ids for every output.
Out: `Plays`: the listened user-artist pairs as NumPy arrays, repeated rows merged (plays
     summed), with artist names and, when mapped, the files' own ids.
Refuses: a missing plays file, an empty file, a missing column or one named twice in the
     header, a row with more fields than the header, a missing id, a played artist absent from
     an artists file that is given or named twice with different names, non-numeric, infinite
     or negative plays, plays beyond the 64-bit integers, and any line over 100,000 bytes. Each
     refusal is a `InputError` (a ValueError) whose message names the file, the row and what is
     accepted. CRLF line ends, a UTF-8 byte-order mark and a trailing comma are accepted.
"""
import csv
import dataclasses
import os
import time
import urllib.parse
import warnings

import numpy as np
import pandas as pd
from tqdm import tqdm

from errors import InputError, error_reason
from files import atomic_write, reading, write_text


PLAY_FILE, ARTIST_FILE, USER_FILE = "lastfm_play.csv", "lastfm_artist.csv", "lastfm_user.csv"
COLUMNS = {
    PLAY_FILE: ["user_id", "artist_id", "plays"],
    ARTIST_FILE: ["artist_id", "artist_name"],
    USER_FILE: ["user_id", "gender", "age", "country"],
}
CACHE_FILE = "lastfm_cache.npz"    # the checked plays, beside the CSVs they were read from
SOURCE_FILE = ".source-url"        # in the download folder: the URL its CSVs came from
FAILED_CHECK_FILE = ".failed-check"  # ... and, when they failed their check, why
CACHE_VERSION = 6           # 6: caches hold the files' own ids when they were mapped
MAX_TABLE_ROWS = 2**31 - 1  # ids are stored as int32
MAX_LINE_BYTES = 100_000    # a line of ids, counts and a name is far shorter
INT64_MAX = 2**63 - 1       # plays (and ids, before the table-size check) are read as int64


@dataclasses.dataclass
class Plays:
    """Listened pairs, one row per distinct (user, artist), sorted by user then artist."""
    user_ids: np.ndarray      # (num_pairs,) int32
    artist_ids: np.ndarray    # (num_pairs,) int32
    play_counts: np.ndarray   # (num_pairs,) int64, duplicates summed
    artist_names: np.ndarray  # (num_artists,) object; index = artist_id
    num_users: int
    num_artists: int
    num_duplicates: int = 0   # rows merged into another row of the same pair
    artist_known: np.ndarray = None   # (num_artists,) bool: an artist with that id exists
    # (listed in lastfm_artist.csv); False for gaps in the numbering. None: every id exists.
    user_labels: np.ndarray = None    # (num_users,) object: the file's own id of each row, when
    artist_labels: np.ndarray = None  # the ids were mapped to rows (strings, sparse); else None

    def user_label(self, row):
        return self.user_labels[row] if self.user_labels is not None else int(row)

    def artist_label(self, row):
        return self.artist_labels[row] if self.artist_labels is not None else int(row)

    def artists(self):
        """The sorted ids of the artists that exist (every id when there are no gaps)."""
        if self.artist_known is None:
            return np.arange(self.num_artists, dtype=np.int32)
        return np.flatnonzero(self.artist_known).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Sources

def download_csvs(root_url, cache_dir=None, explicit_url=False):
    """Downloads the three CSVs with Keras' `get_file` into ~/.keras/lastfm (or `cache_dir`)
    -> that folder. A file is fetched under a temporary name and renamed only when complete, so
    an interrupted download is never mistaken for a finished one."""
    from keras.utils import get_file
    scheme = urllib.parse.urlparse(root_url).scheme
    if scheme not in ("https", "http") or (scheme == "http" and not explicit_url):
        raise InputError(f"ROOT_URL {root_url!r} must start with https:// (http:// only when set "
                         "explicitly with --root_url)")
    base = root_url if root_url.endswith("/") else root_url + "/"
    folder = os.path.join(os.path.expanduser(cache_dir or os.path.join("~", ".keras")), "lastfm")
    os.makedirs(folder, exist_ok=True)
    # The folder holds one URL's files, named in SOURCE_FILE: another URL's (or, for a URL given
    # with --root_url, files of no recorded source) are fetched again, not passed off as its own
    record = os.path.join(folder, SOURCE_FILE)
    try:
        with open(record, encoding="utf-8") as stream:
            source = stream.read().strip()
    except OSError:
        source = "" if explicit_url else base
    if source != base:
        for name in (*COLUMNS, CACHE_FILE, SOURCE_FILE, FAILED_CHECK_FILE):
            if os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
    for name in COLUMNS:
        url, path = base + name, os.path.join(folder, name)
        if os.path.isfile(path):
            continue
        try:
            partial = get_file(f".part-{name}", url, cache_dir=os.path.dirname(folder),
                               cache_subdir="lastfm", force_download=True)
            os.replace(partial, path)
        except Exception as error:  # get_file removes its partial file
            raise InputError(f"could not download {url} ({error_reason(error)}); use "
                             "--data_dir=DIR with the three CSV files, or --dataset=sample to "
                             "run offline") from None
    if not os.path.isfile(record):
        write_text(record, base + "\n")
    return folder


def load_download(root_url, cache_dir=None, explicit_url=False, log=print):
    """The notebook's CSVs from `root_url` -> Plays. Files cached by an earlier run that fail
    their check are downloaded again, once; files that fail it as downloaded are recorded
    (FAILED_CHECK_FILE, with their stamp), so later runs say so at once instead of downloading
    them again each time."""
    folder = os.path.join(os.path.expanduser(cache_dir or os.path.join("~", ".keras")), "lastfm")
    cached = all(os.path.isfile(os.path.join(folder, name)) for name in COLUMNS)
    folder = download_csvs(root_url, cache_dir, explicit_url)
    record = os.path.join(folder, FAILED_CHECK_FILE)
    stamp = _failed_stamp(folder)
    if os.path.isfile(record):
        with open(record, encoding="utf-8") as stream:
            recorded_stamp, _, message = stream.read().partition("\n")
        if recorded_stamp == stamp:
            raise InputError(f"{message.strip()} (the files from {root_url} failed this check "
                             f"when downloaded; delete {folder} to download them again, or use "
                             "--root_url=MIRROR or --data_dir=DIR)")
        os.remove(record)
    try:
        return load_folder(folder)
    except InputError as error:
        if not cached:
            write_text(record, f"{stamp}\n{error}\n")
            raise
        log(f"warning: {error}; downloading again")   # a cached copy damaged since
        for name in COLUMNS:
            os.remove(os.path.join(folder, name))
    try:
        return load_folder(download_csvs(root_url, cache_dir, explicit_url))
    except InputError as error:
        write_text(record, f"{_failed_stamp(folder)}\n{error}\n")
        raise


def _failed_stamp(folder):
    """The downloaded CSVs' stamp as one line of text."""
    paths = [os.path.join(folder, name) for name in COLUMNS]
    return " ".join(map(str, _source_stamp(paths).ravel()))


def load_folder(data_dir, use_cache=True):
    """Reads and checks the three CSVs in `data_dir`; caches the result as .npz when it can."""
    if not os.path.isdir(data_dir):
        raise InputError(f"--data_dir {data_dir!r} is not a folder; it must hold "
                         f"{', '.join(COLUMNS)}")
    paths = {name: os.path.join(data_dir, name) for name in COLUMNS
             if name == PLAY_FILE or os.path.exists(os.path.join(data_dir, name))}
    if not os.path.exists(paths[PLAY_FILE]):
        raise InputError(f"{paths[PLAY_FILE]}: file not found; the folder must hold {PLAY_FILE} "
                         f"(and may hold {ARTIST_FILE} and {USER_FILE})")
    cache_path = os.path.join(data_dir, CACHE_FILE)
    stamp = _source_stamp(paths.values())
    if use_cache:
        cached = _read_cache(cache_path, stamp)
        if cached is not None:
            return cached
    with reading(data_dir):
        plays = _read_frames({name: _read_csv(path, name) for name, path in paths.items()})
    if use_cache:
        _write_cache(cache_path, stamp, plays)
    return plays


def make_planted(num_users, num_artists, num_plays, seed, num_groups=20, in_group=0.8):
    """A LastFM-like data set with planted taste: -> (play_df, artist_df, user_df).

    Each artist belongs to one of `num_groups` taste groups, each user to one group. A play is
    from the user's own group with probability `in_group`, else from anywhere; within either,
    artists are drawn by a heavy-tailed (Zipf-like) popularity. User activity is log-normal.
    A model that learns the groups beats the popularity ranking; one that does not, does not.
    All arithmetic is vectorised: the 17.3M-play scale takes seconds.
    """
    rng = np.random.default_rng(seed)
    artist_group, artist_rank, user_group = _planted_assignment(rng, num_users, num_artists,
                                                                num_groups)
    activity = rng.lognormal(0.0, 0.8, num_users)
    draws = int(num_plays * 1.6)  # repeated pairs merge; the surplus is trimmed below
    per_user = np.maximum(1, np.round(activity / activity.sum() * draws)).astype(np.int64)
    users = np.repeat(np.arange(num_users), per_user)
    groups = user_group[users]
    # Artists sorted by (group, popularity rank): group g's k-th most popular is at start[g] + k.
    by_group = np.lexsort((artist_rank, artist_group))
    group_size = np.bincount(artist_group, minlength=num_groups)
    group_start = np.concatenate([[0], np.cumsum(group_size)[:-1]])
    own = (rng.random(len(users)) < in_group) & (group_size[groups] > 0)
    uniform = rng.random(len(users))
    # (clipped: an empty last group starts at num_artists; `own` is False for its users)
    in_group_artist = by_group[np.minimum(group_start[groups] + _zipf_rank(
        uniform, group_size[groups]), num_artists - 1)]
    anywhere = np.argsort(artist_rank)[_zipf_rank(uniform, num_artists)]
    keys = _sorted_unique(users * num_artists + np.where(own, in_group_artist, anywhere))
    if len(keys) > num_plays:  # trim to the asked size, keeping every user's first pair
        first = np.concatenate([[True], keys[1:] // num_artists != keys[:-1] // num_artists])
        rest = np.flatnonzero(~first)
        keep = np.ones(len(keys), bool)
        keep[rest[rng.permutation(len(rest))[:len(keys) - num_plays]]] = False
        keys = keys[keep]
    counts = np.maximum(1, rng.zipf(1.8, len(keys)).clip(max=10_000))
    play_df = pd.DataFrame({"user_id": (keys // num_artists).astype(np.int32),
                            "artist_id": (keys % num_artists).astype(np.int32), "plays": counts})
    artist_df = pd.DataFrame({"artist_id": np.arange(num_artists),
                              "artist_name": [f"artist {i:05d}" for i in range(num_artists)]})
    user_df = pd.DataFrame({"user_id": np.arange(num_users),
                            "gender": np.where(rng.random(num_users) < 0.5, "m", "f"),
                            "age": rng.integers(15, 60, num_users),
                            "country": "Sampleland"})
    return play_df, artist_df, user_df


def _zipf_rank(uniform, size, exponent=0.8):
    """Inverse CDF of a density proportional to (1 + x) ** -exponent on [0, size) -> int ranks."""
    top = (size + 1.0) ** (1 - exponent) - 1
    rank = (uniform * top + 1) ** (1 / (1 - exponent)) - 1
    return np.minimum(rank.astype(np.int64), np.maximum(size - 1, 0))


def _sorted_unique(keys):
    """np.unique for int keys by sorting (NumPy 2's hash-based unique is slow on 10M+ keys)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def _planted_assignment(rng, num_users, num_artists, num_groups):
    """-> (artist_group, artist_rank, user_group): the first draws of `make_planted`."""
    artist_group = rng.integers(0, num_groups, num_artists)
    artist_rank = rng.permutation(num_artists)           # 0 = the most popular artist
    return artist_group, artist_rank, rng.integers(0, num_groups, num_users)


def planted_groups(num_users, num_artists, seed, num_groups=20):
    """The planted (user_group, artist_group) of `make_planted` with the same arguments."""
    artist_group, _, user_group = _planted_assignment(np.random.default_rng(seed), num_users,
                                                      num_artists, num_groups)
    return user_group, artist_group


def frames_to_plays(play_df, artist_df, user_df):
    """Checks frames already in memory (as `load_folder` does for files) -> Plays."""
    return _read_frames({PLAY_FILE: play_df, ARTIST_FILE: artist_df, USER_FILE: user_df})


# ----------------------------------------------------------------------------------------------
# Reading and checking

def check_line_lengths(path, limit=MAX_LINE_BYTES, block_size=1 << 22):
    """A InputError for the first line longer than `limit` bytes, found in blocks before any
    parser holds a whole line: one 2 GB line would otherwise fill the memory."""
    line, run = 1, 0          # the line being read, and its bytes so far
    with open(path, "rb") as stream:
        while block := stream.read(block_size):
            ends = np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
            # bytes of each line (its newline not counted); the first goes on from the last block
            lengths = np.diff(np.concatenate([[-1 - run], ends, [len(block)]])) - 1
            if (lengths > limit).any():
                extra = int(np.argmax(lengths > limit))
                raise InputError(f"{path}: line {line + extra:,} is longer than {limit:,} bytes; "
                                 "no field of this data needs that much (is it the right file?)")
            line, run = line + len(ends), int(lengths[-1])


def _read_csv(path, name):
    check_line_lengths(path)
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: the file is empty; expected a header "
                         f"{','.join(COLUMNS[name])} and rows")
    # index_col=False: without it, rows with one field more than the header make pandas take
    # the first column as the index and shift every other column. With it, a trailing comma is
    # harmless and a first row with extra fields raises a ParserWarning (made an error here); a
    # later one is a ParserError with its line.
    # keep_default_na=False: "NA", "null" and "nan" are artists' names and ids in the real
    # data, not missing values; an empty field stays "" and is refused where a value is needed
    options = dict(encoding="utf-8-sig", dtype={"artist_name": str}, index_col=False,
                   keep_default_na=False, low_memory=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            if os.path.getsize(path) < 50_000_000:
                frame = pd.read_csv(path, **options)
            else:  # the 360K plays: in pieces, with a progress bar on a terminal
                chunks = pd.read_csv(path, chunksize=2_000_000, **options)
                frame = pd.concat(list(tqdm(chunks, desc=f"reading {name}", unit=" x 2M rows",
                                            disable=None, leave=False)), ignore_index=True)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: the file is empty; expected a header "
                         f"{','.join(COLUMNS[name])} and rows") from None
    except pd.errors.ParserWarning as warning:
        raise InputError(f"{path}: {_first_extra_field(path) or error_reason(warning)}; remove the "
                         "extra fields or quote values that hold a comma") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable CSV file ({error_reason(error, -1)})") from None
    _check_unique_header(path, name)
    frame.attrs["path"] = path
    return frame


def _check_unique_header(path, name):
    """pandas reads a repeated column name as two columns, the second renamed (plays, plays.1),
    and the checks would silently read the first: refused. Unnamed (empty) columns aside."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            header = next((row for row in csv.reader(stream) if row), [])
    except csv.Error:  # a header field beyond the csv module's size limit: left unchecked
        return
    first = {}
    for number, column in enumerate(header, start=1):
        if column and column in first:
            raise InputError(f"{path}: the header names column {column!r} twice (columns "
                             f"{first[column]} and {number}); expected one column each of "
                             f"{', '.join(COLUMNS[name])}")
        first.setdefault(column, number)


def _first_extra_field(path):
    """'row N has M fields but the header has H' for the first row with more fields than the
    header, a single trailing comma aside; or None. Only called on a file pandas refused."""
    with open(path, encoding="utf-8-sig", newline="") as stream:
        rows = csv.reader(stream)
        header = next(rows, [])
        try:
            for line, row in enumerate(rows, start=2):
                extra = row[len(header):]
                if len(extra) > 1 or any(field.strip() for field in extra):
                    return f"row {line} has {len(row)} fields but the header has {len(header)}"
        except csv.Error:   # a field beyond the csv module's size limit: no row to name
            return None
    return None


def _read_frames(frames):
    """The checked frames -> Plays. Integer ids that are dense enough (the notebook's files) are
    used as rows directly; any other ids (names, hashes, sparse numbers) are mapped to rows."""
    for name, frame in frames.items():
        _check_columns(frame, name)
    play_df = frames[PLAY_FILE]
    counts = _integer_column(play_df, PLAY_FILE, "plays", numeric_only=True)
    if len(counts) == 0:
        raise InputError(f"{_where(play_df, PLAY_FILE)}: no rows; expected at least one play")
    if _rows_as_ids(frames):
        return _numbered_plays(frames, counts)
    return _mapped_plays(frames, counts)


def _rows_as_ids(frames):
    """Are the ids integers of 0 or more, dense enough to be table rows as they are?"""
    columns = [(frames[PLAY_FILE], "user_id"), (frames[PLAY_FILE], "artist_id")]
    columns += [(frames[name], column) for name, column in ((ARTIST_FILE, "artist_id"),
                                                             (USER_FILE, "user_id"))
                if name in frames]
    for frame, column in columns:
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values.dtype) or (values < 0).any() \
                or (values > INT64_MAX).any():
            return False
    return all(_dense_enough([frame[c].to_numpy(np.int64) for frame, c in columns
                              if c == column])[0] for column in ("user_id", "artist_id"))


def _numbered_plays(frames, counts):
    """Ids used as table rows; every played artist needs a name when an artists file is given."""
    play_df, artist_df = frames[PLAY_FILE], frames.get(ARTIST_FILE)
    users = play_df["user_id"].to_numpy(np.int64)
    artists = play_df["artist_id"].to_numpy(np.int64)
    user_df_ids = (frames[USER_FILE]["user_id"].to_numpy(np.int64) if USER_FILE in frames
                   else np.zeros(0, np.int64))
    if artist_df is None:
        known_artists, artist_names = _sorted_unique(artists), None
    else:
        known_artists = artist_df["artist_id"].to_numpy(np.int64)
        artist_names = artist_df["artist_name"].fillna("").astype(str).to_numpy()
        _check_one_name_per_artist(known_artists, artist_names, _where(artist_df, ARTIST_FILE))
    num_artists = int(max(known_artists.max(initial=-1), artists.max()) + 1)
    known = np.zeros(num_artists, bool)
    known[known_artists] = True
    unknown = ~known[artists]
    if unknown.any():
        row = int(np.argmax(unknown))
        raise InputError(f"{_where(play_df, PLAY_FILE)}: artist_id {artists[row]} (row "
                         f"{_csv_line(_where(play_df, PLAY_FILE), row)}) "
                         f"is not in {ARTIST_FILE}; every played artist needs a name there")
    num_users = int(max(users.max(), user_df_ids.max(initial=-1)) + 1)
    names = np.array([f"artist {i}" for i in range(num_artists)], dtype=object)
    if artist_names is not None:
        names[known_artists] = artist_names
    else:
        names[known_artists] = [str(i) for i in known_artists]   # no names: the ids
    return _merge_pairs(users, artists, counts, names, num_users, num_artists,
                        _where(play_df, PLAY_FILE), known)


def _mapped_plays(frames, counts):
    """Ids of any kind mapped to rows, in order of first appearance (played artists first,
    then artists only the artists file lists): outputs speak the file's own ids again."""
    play_df, artist_df = frames[PLAY_FILE], frames.get(ARTIST_FILE)
    user_text = _id_text(play_df, PLAY_FILE, "user_id")
    artist_text = _id_text(play_df, PLAY_FILE, "artist_id")
    users, user_labels = pd.factorize(user_text)
    listed = _id_text(artist_df, ARTIST_FILE, "artist_id") if artist_df is not None else None
    codes, artist_labels = pd.factorize(pd.concat([artist_text] + (
        [listed] if listed is not None else []), ignore_index=True))   # one hashing pass
    artists = codes[:len(artist_text)]
    names = np.array(artist_labels, dtype=object)          # no artists file: names are the ids
    if listed is not None:
        rows = codes[len(artist_text):]
        listed_names = artist_df["artist_name"].fillna("").astype(str).to_numpy()
        _check_one_name_per_artist(np.array(listed, dtype=object), listed_names,
                                   _where(artist_df, ARTIST_FILE))
        unnamed = ~np.isin(artists, rows)
        if unnamed.any():
            row = int(np.argmax(unnamed))
            raise InputError(f"{_where(play_df, PLAY_FILE)}: artist_id {artist_text.iloc[row]!r} "
                             f"(row {_csv_line(_where(play_df, PLAY_FILE), row)}) is not in "
                             f"{ARTIST_FILE}; every played artist needs a name there")
        names[rows] = listed_names
    for kind, labels in (("user", user_labels), ("artist", artist_labels)):
        if len(labels) > MAX_TABLE_ROWS:
            raise InputError(f"{PLAY_FILE}: {len(labels):,} distinct {kind} ids; at most "
                             f"{MAX_TABLE_ROWS:,} fit a table")
    plays = _merge_pairs(users.astype(np.int64), artists.astype(np.int64), counts, names,
                         len(user_labels), len(artist_labels), _where(play_df, PLAY_FILE))
    plays.user_labels = np.array(user_labels, dtype=object)
    plays.artist_labels = np.array(artist_labels, dtype=object)
    return plays


def _id_text(frame, name, column):
    """An id column as text, the way the file writes it; a missing id is refused."""
    values = frame[column]
    where = _where(frame, name)
    missing = values.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(values.dtype):   # object, or pandas 3's str dtype
        missing = missing | (values.astype(str) == "").to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise InputError(f"{where}: column {column!r} row {_csv_line(where, row)} is missing; "
                         "every row needs an id")
    if pd.api.types.is_float_dtype(values.dtype):   # 7.0 read as a float: written 7 in the file
        return values.map(lambda v: str(int(v)) if float(v).is_integer() else repr(v))
    return values if values.dtype == object else values.astype(str)


def _dense_enough(arrays, count=False):
    """Ids 0 or more that are dense enough to be table rows (the model and the samplers keep a
    row for every id up to the largest): largest + 1 <= 10 * distinct + 1000, and < 2**31 ->
    (dense?, table size, distinct ids; with `count`, also where that is plainly too sparse)."""
    size = max(int(ids.max(initial=-1)) for ids in arrays) + 1
    if size <= min(10 * sum(len(ids) for ids in arrays) + 1000, MAX_TABLE_ROWS):
        seen = np.zeros(size, bool)  # small: at most 10 entries per id given, plus 1000
        for ids in arrays:
            seen[ids] = True
        distinct = int(seen.sum())
    elif count:  # too sparse even if every id given were distinct: counted for a message only
        distinct = len(_sorted_unique(np.concatenate(arrays)))
    else:
        return False, size, None
    return size <= min(10 * distinct + 1000, MAX_TABLE_ROWS), size, distinct


def _check_dense_ids(column, sources):
    """Refuses ids far sparser than 0..n-1 (`_dense_enough`): 2 ids of which one is 10**14
    would ask for 10**14 rows. `sources`: (file, ids, place) with place(index) naming where
    ids[index] is, as "row 5"."""
    dense, size, distinct = _dense_enough([ids for _, ids, _ in sources], count=True)
    if dense:
        return
    where, ids, place = next(source for source in sources
                             if source[1].max(initial=-1) == size - 1)
    raise InputError(f"{where}: {column} {size - 1:,} ({place(int(np.argmax(ids)))}) is far "
                     f"beyond the {distinct:,} distinct {column}s; every id up to the largest "
                     f"gets a table row, so renumber the ids 0..{distinct - 1}")


def _check_one_name_per_artist(artist_ids, names, where):
    """Refuses an artist_id listed twice with different names (the same name twice is fine)."""
    order = np.argsort(artist_ids, kind="stable")
    clash = (artist_ids[order][1:] == artist_ids[order][:-1]) & \
        (names[order][1:] != names[order][:-1])
    if clash.any():
        first, second = order[np.argmax(clash)], order[np.argmax(clash) + 1]
        raise InputError(f"{where}: artist_id {artist_ids[first]} is named {names[first]!r} (row "
                         f"{_csv_line(where, first)}) and {names[second]!r} (row "
                         f"{_csv_line(where, second)}); give each artist_id one name")


def _csv_line(where, index):
    """The file's line number of data row `index` (0-based; the header is line 1): pandas skips
    empty lines, so after one the row's index is not its line. Read only when a message needs
    it. `where` a bare file name (a frame made in code, not read from a folder): index + 2."""
    if os.sep not in where:
        return index + 2
    try:
        with open(where, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            seen = -2                     # the header is row -1
            for row in reader:
                seen += bool(row)
                if seen == index:
                    return reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return index + 2


def _where(frame, name):
    return frame.attrs.get("path", name)


def _check_columns(frame, name):
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):  # a frame made in code; a file's header is checked as it is read
        raise InputError(f"{_where(frame, name)}: column {repeated[0]!r} is given twice; "
                         f"expected one column each of {', '.join(COLUMNS[name])}")
    missing = [column for column in COLUMNS[name] if column not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise InputError(f"{_where(frame, name)}: missing column {missing[0]!r} (found: {found}); "
                         f"expected columns {', '.join(COLUMNS[name])}")


def _integer_column(frame, name, column, numeric_only=False):
    """The column as int64, or a InputError naming the first bad value and its row."""
    values = frame[column]
    where = _where(frame, name)
    kind = "a number" if numeric_only else "an integer id"
    # pandas reads a column with a value from 2**63 to 2**64 - 1 as uint64: checked below
    if pd.api.types.is_integer_dtype(values.dtype) and not (values > INT64_MAX).any():
        array = values.to_numpy(np.int64)
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        # inf and numbers beyond int64 would cast to garbage (with a RuntimeWarning)
        in_range = numbers.abs() < 2.0**63
        bad = numbers.isna() | ~in_range | (~numeric_only & (numbers != np.floor(numbers)))
        if numeric_only:
            bad |= numbers.isna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            value = values.iloc[row]
            value = value.item() if isinstance(value, np.generic) else value
            shown = "missing" if pd.isna(value) or value == "" else repr(value)
            if np.isfinite(float(numbers.iloc[row])) and not in_range.iloc[row]:
                raise InputError(f"{where}: column {column!r} row {_csv_line(where, row)} is "
                                 f"{shown}; out of range, expected {kind} from 0 to "
                                 f"{INT64_MAX:,} (a 64-bit integer)")
            raise InputError(f"{where}: column {column!r} row {_csv_line(where, row)} is "
                             f"{shown}; expected {kind} (0 or more)")
        array = np.round(numbers.to_numpy(np.float64)).astype(np.int64)
    if (array < 0).any():
        row = int(np.argmax(array < 0))
        raise InputError(f"{where}: column {column!r} row {_csv_line(where, row)} is "
                         f"{array[row]}; expected {kind} of 0 or more")
    return array


def _merge_pairs(users, artists, counts, names, num_users, num_artists, where=PLAY_FILE,
                 known=None):
    """Sums the plays of repeated (user, artist) rows; sorts by user then artist."""
    keys = users.astype(np.int64) * num_artists + artists
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    unique_keys = keys[starts]
    merged = np.add.reduceat(counts[order], starts) if len(keys) else counts
    if len(keys) > len(unique_keys):   # a sum past int64 would wrap round to a wrong count
        totals = np.add.reduceat(counts[order].astype(np.float64), starts)
        if (totals >= 2.0**63).any():
            key = unique_keys[int(np.argmax(totals >= 2.0**63))]
            raise InputError(f"{where}: the plays of user_id {key // num_artists} and artist_id "
                             f"{key % num_artists} over their repeated rows add up to more than "
                             f"{INT64_MAX:,} (a 64-bit integer); expected smaller play counts")
    return Plays(user_ids=(unique_keys // num_artists).astype(np.int32),
                 artist_ids=(unique_keys % num_artists).astype(np.int32),
                 play_counts=merged, artist_names=names, num_users=num_users,
                 num_artists=num_artists, num_duplicates=len(keys) - len(unique_keys),
                 artist_known=known)


# ----------------------------------------------------------------------------------------------
# Binary cache: NumPy arrays only, loaded with allow_pickle=False.

def _source_stamp(paths):
    """Each file's size, modification time, change time and inode. The change time is set by
    the system at any write or copy, and no tool can set it back (`cp -p` and `touch -d` can
    set the modification time): an edit that keeps the size and the modification time still
    rebuilds the cache."""
    stats = [os.stat(p) for p in paths]
    return np.array([[s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino] for s in stats],
                    np.int64)


def _read_cache(cache_path, stamp):
    if not os.path.isfile(cache_path):
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as cache:
            if int(cache["version"]) != CACHE_VERSION or not np.array_equal(cache["stamp"], stamp):
                return None
            names = _decode_strings(cache["names_blob"], cache["names_offsets"])
            labels = {key: (_decode_strings(cache[f"{key}_blob"], cache[f"{key}_offsets"])
                            if f"{key}_blob" in cache else None)
                      for key in ("user_labels", "artist_labels")}
            return Plays(cache["user_ids"], cache["artist_ids"], cache["play_counts"], names,
                         int(cache["num_users"]), int(cache["num_artists"]),
                         int(cache["num_duplicates"]), cache["artist_known"], **labels)
    except Exception:  # a cache that does not load is rebuilt from the CSVs
        return None


def _encode_strings(strings):
    """Strings -> (UTF-8 blob, character offsets): NumPy arrays a cache holds without pickle."""
    strings = [str(s) for s in strings]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in strings])]).astype(np.int64)
    return np.frombuffer("".join(strings).encode("utf-8"), np.uint8), offsets


def _decode_strings(blob, offsets):
    text = blob.tobytes().decode("utf-8")
    return np.array([text[a:b] for a, b in zip(offsets[:-1], offsets[1:])], dtype=object)


def _write_cache(cache_path, stamp, plays):
    blob, offsets = _encode_strings(plays.artist_names)
    labels = {}
    for key in ("user_labels", "artist_labels"):
        if getattr(plays, key) is not None:
            labels[f"{key}_blob"], labels[f"{key}_offsets"] = _encode_strings(getattr(plays, key))
    try:
        arrays = dict(**labels, version=CACHE_VERSION, stamp=stamp, user_ids=plays.user_ids,
                      artist_ids=plays.artist_ids, play_counts=plays.play_counts,
                      names_blob=blob, names_offsets=offsets, num_users=plays.num_users,
                      num_artists=plays.num_artists, num_duplicates=plays.num_duplicates,
                      artist_known=plays.artist_known if plays.artist_known is not None
                      else np.ones(plays.num_artists, bool))
        atomic_write(cache_path, lambda temporary: np.savez(temporary, **arrays))
    except OSError:  # a read-only data folder: no cache, nothing else changes
        pass



def load(dataset, data_dir="", root_url="", scale=1.0, seed=0, explicit_url=False, log=print,
         cache_dir=None, source=None):
    """The data set the settings name -> Plays, with one line of counts printed. The public
    originals (sources.py) come converted, as a `data_dir` and the `source` that names them."""
    started = time.time()
    if dataset == "sample":
        plays = frames_to_plays(*make_planted(2_000, 5_000, 100_000, seed))
        source = "sample data made in code"
    elif dataset == "synthetic":
        sizes = [max(2, round(n * scale)) for n in (358_868, 160_112, 17_302_623)]
        plays = frames_to_plays(*make_planted(*sizes, seed))
        source = f"synthetic data at scale {scale:g}"
    elif data_dir:
        plays, source = load_folder(data_dir), source or data_dir
    else:
        plays, source = load_download(root_url, cache_dir, explicit_url, log), root_url
    log(f"data: {plays.num_users:,} users, "
        f"{counted('artists', plays.num_artists, len(plays.artists()))}, "
        f"{len(plays.user_ids):,} user-artist pairs"
        + (f" ({plays.num_duplicates:,} duplicate rows merged)" if plays.num_duplicates else "")
        + f" from {source} ({time.time() - started:.1f} s)")
    return plays


def counted(noun, num_ids, num_existing):
    """'17,632 artists', or with gaps in the ids '120 artists (ids up to 238; 119 gaps)'."""
    gaps = num_ids - num_existing
    if not gaps:
        return f"{num_ids:,} {noun}"
    return f"{num_existing:,} {noun} (ids up to {num_ids - 1:,}; {gaps:,} gaps)"
