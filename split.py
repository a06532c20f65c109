"""Step 2 of the notebook: hold out one listened artist per user, and the NCF paper's split files.

In:  `data.Plays` (every listened user-artist pair), or a split in the NCF paper's format
     (PREFIX.train.rating, PREFIX.test.rating, PREFIX.test.negative, tab-separated).
Out: `Split`: the training pairs, one held-out test artist per user with `num_eval_negatives`
     artists the user never played as its candidates, and optionally a validation artist per
     user with its own candidates. `split_digest` names what a model trained on a split has seen.
Refuses: data where no user can be tested, and split files with a test pair in the training
     file, a user on two lines of the test file, a line over 100,000 bytes, or a .test.negative
     line without negatives, each as a `errors.InputError` naming the file and line. A listed
     negative the user played (or their held-out item), as some published files of papers that
     built on NCF have, is scored as given and counted, or replaced when asked.
"""
import dataclasses
import hashlib
import os
import re

import numpy as np
import pandas as pd

import sampling
from files import new_temporary, reading
from errors import InputError, error_reason
from data import INT64_MAX, _check_dense_ids, _merge_pairs, check_line_lengths



@dataclasses.dataclass
class Split:
    """Train rows plus held-out test (and validation) items with their sampled candidates."""
    train_users: np.ndarray       # (num_train,) int32, sorted by user
    train_items: np.ndarray       # (num_train,) int32
    test_users: np.ndarray        # (num_test,) int32
    test_items: np.ndarray        # (num_test,) int32
    test_negatives: np.ndarray    # (num_test, num_eval_negatives) int32, never a listened artist
    valid_users: np.ndarray       # (num_valid,) int32; empty when validation is off
    valid_items: np.ndarray
    valid_negatives: np.ndarray
    sampler: "sampling.NegativeSampler"  # knows every listened artist of every user
    num_users: int
    num_items: int
    num_untestable: int = 0       # users left out of testing: too few unplayed artists
    played_negatives: tuple = (0, 0)   # a split file's negatives the user played: (count, users)
    replaced_negatives: bool = False   # ... and were they replaced by fresh unplayed ones


def _lowest_per_user(key, users, counts):
    """Mask of each user's row with the smallest key (the first on a tie): the rows that
    np.lexsort((key, users)) puts first for each user. `users` must be sorted."""
    present = counts[counts > 0]
    starts = np.concatenate([[0], np.cumsum(present)[:-1]])
    lowest = np.minimum.reduceat(key, starts) if len(key) else key
    rows = np.flatnonzero(key == np.repeat(lowest, present))
    first = rows[np.concatenate([[True], users[rows][1:] != users[rows][:-1]])]
    mask = np.zeros(len(key), bool)
    mask[first] = True
    return mask


def leave_one_out(plays, num_eval_negatives, seed, validation=False):
    """Holds out one random listened artist per user with >= 2 artists (the test item) and, with
    `validation`, a second one per user with >= 3 artists. Candidates: `num_eval_negatives`
    artists the user never played, distinct, drawn uniformly.

    The test item is the same with validation on or off, so test sets agree across runs.
    """
    rng = np.random.default_rng([seed, 1])
    users, items = plays.user_ids, plays.artist_ids
    sampler = sampling.NegativeSampler(users, items, plays.num_users, plays.num_artists,
                                       plays.artists())
    key = rng.random(len(users))                          # a random order within each user
    counts = np.bincount(users, minlength=plays.num_users)
    free = sampler.num_free
    if not (counts >= 2).any():
        raise InputError(f"no user has played 2 or more artists (the data has {len(users):,} "
                         "user-artist pairs, one per user), so none can have an artist held out "
                         "for testing and another to train on; the data needs such users")
    most = int(free[counts >= 2].max())
    if num_eval_negatives > most == 0:
        raise InputError("every user with 2 or more artists has played all "
                         f"{len(sampler.items):,} artists, so no unplayed artist is left to be a "
                         "test candidate; the data needs artists some such users did not play")
    if num_eval_negatives > most:
        raise InputError(f"NUM_EVAL_NEGATIVES={num_eval_negatives} is larger than the artists any "
                         f"testable user has not played (at most {most}); use "
                         f"--num_eval_negatives={most} or less")
    testable = (counts >= 2) & (free >= num_eval_negatives)
    assert (users[1:] >= users[:-1]).all(), "Plays are sorted by user"
    # The held-out artist is the user's lowest key, the validation artist the second lowest:
    # two linear passes instead of sorting 17M rows.
    first = _lowest_per_user(key, users, counts)
    key[first] = np.inf
    second = _lowest_per_user(key, users, counts)
    is_test = first & testable[users]
    is_valid = validation & second & (counts[users] >= 3) & testable[users]
    test_rows, valid_rows = np.flatnonzero(is_test), np.flatnonzero(is_valid)
    train_rows = np.flatnonzero(~(is_test | is_valid))
    test_users, valid_users = users[test_rows], users[valid_rows]
    return Split(
        train_users=users[train_rows], train_items=items[train_rows],
        test_users=test_users, test_items=items[test_rows],
        test_negatives=sampler.sample_distinct(test_users, num_eval_negatives, rng),
        valid_users=valid_users, valid_items=items[valid_rows],
        valid_negatives=sampler.sample_distinct(valid_users, num_eval_negatives, rng),
        sampler=sampler, num_users=plays.num_users, num_items=plays.num_artists,
        num_untestable=int(((counts >= 2) & ~testable).sum()))


def split_digest(split):
    """A digest of what a model trained on `split` has seen and is scored on: the sizes, every
    pair outside the test set (training and validation alike, so carving validation or not
    does not change it) and the test pairs. An exported split read back has the same digest."""
    digest = hashlib.sha256(np.array([split.num_users, split.num_items], np.int64).tobytes())
    for users, items in ((np.concatenate([split.train_users, split.valid_users]),
                          np.concatenate([split.train_items, split.valid_items])),
                         (split.test_users, split.test_items)):
        digest.update(np.sort(users.astype(np.int64) * split.num_items + items).tobytes())
    return digest.hexdigest()[:16]


def count_untrained(users, train_users, num_users):
    """How many of `users` have no training pair (a split file can hold such test users)."""
    return int((np.bincount(train_users, minlength=num_users)[users] == 0).sum())


def write_ncf_split(split, prefix):
    """Writes PREFIX.train.rating (every pair but the test ones, validation included),
    PREFIX.test.rating and PREFIX.test.negative, tab-separated as in the NCF paper's Data/."""
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    train_users = np.concatenate([split.train_users, split.valid_users])
    train_items = np.concatenate([split.train_items, split.valid_items])
    order = np.lexsort((train_items, train_users))
    train = pd.DataFrame({"user": train_users[order], "item": train_items[order], "rating": 1,
                          "timestamp": 0})
    test = pd.DataFrame({"user": split.test_users, "item": split.test_items, "rating": 1,
                         "timestamp": 0})
    negative_lines = [f"({u},{i})\t" + "\t".join(map(str, row)) for u, i, row in
                      zip(split.test_users, split.test_items, split.test_negatives.tolist())]
    paths = [prefix + ".train.rating", prefix + ".test.rating", prefix + ".test.negative"]
    texts = [train.to_csv(sep="\t", header=False, index=False),
             test.to_csv(sep="\t", header=False, index=False), "\n".join(negative_lines) + "\n"]
    write_together(paths, texts)
    return paths


def write_together(paths, texts):
    """The three files appear together or not at all: each is written whole under a new name
    first; then the old set is moved aside, the new one renamed into place, and the old one
    removed. A failure on the way puts the old set back, so no run mixes new files with old
    ones (a set that --split would refuse, or worse, accept)."""
    temporaries, set_aside, placed = [], [], []
    try:
        for path, text in zip(paths, texts):
            handle, temporary = new_temporary(path)
            temporaries.append(temporary)
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
        for path in paths:
            if os.path.lexists(path):
                handle, aside = new_temporary(path)
                os.close(handle)
                os.replace(path, aside)
                set_aside.append((aside, path))
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
            placed.append(path)
    except BaseException:
        for path in placed:
            os.remove(path)
        for aside, path in set_aside:
            os.replace(aside, path)
        set_aside = []
        raise
    finally:
        for temporary in temporaries:
            if os.path.lexists(temporary):
                os.remove(temporary)
        for aside, _ in set_aside:
            os.remove(aside)


def read_ncf_split(prefix, seed, validation=False, replace_played=False):
    """Reads a split in the NCF paper's format -> (Plays, Split). The test items and their
    negatives are taken from the files as given; validation, if asked, is one random training
    pair per user with >= 2 training pairs, with negatives drawn here."""
    with reading(prefix):
        return _read_ncf_split(prefix, seed, validation, replace_played)


def _read_ncf_split(prefix, seed, validation, replace_played):
    paths = [prefix + suffix for suffix in (".train.rating", ".test.rating", ".test.negative")]
    for path in paths:
        if not os.path.isfile(path):
            raise InputError(f"{path}: file not found; --split=PREFIX needs {', '.join(paths)}")
        check_line_lengths(path)
    train = _read_rating(paths[0])
    test = _read_rating(paths[1])
    _check_one_test_row_per_user(paths[1], test[0])
    negatives, negative_lines, heads = _read_negatives(paths[2], len(test[0]))
    _check_negative_heads(paths, test, heads, negative_lines)
    _check_split_ids(paths, train, test, negatives, negative_lines)
    num_users = int(max(train[0].max(), test[0].max())) + 1
    num_items = int(max(train[1].max(), test[1].max(), negatives.max(initial=0))) + 1
    _check_no_test_pair_in_train(paths, train, test, num_items)
    users = np.concatenate([train[0], test[0]])
    items = np.concatenate([train[1], test[1]])
    known = np.zeros(num_items, bool)   # an item no file names is a gap in the numbering
    for ids in (items, negatives.ravel()):
        known[ids] = True
    plays = _merge_pairs(users, items, np.ones(len(users), np.int64),
                         np.array([f"item {i}" for i in range(num_items)], dtype=object),
                         num_users, num_items, known=known)
    sampler = sampling.NegativeSampler(plays.user_ids, plays.artist_ids, num_users, num_items,
                                       plays.artists())
    test_users, test_items = test[0].astype(np.int32), test[1].astype(np.int32)
    # Published files of papers that built on NCF list some played items (or the held-out item)
    # as negatives, and their tables were scored so: as given by default, counted, or replaced
    played = sampler.is_played(np.repeat(test_users, negatives.shape[1]),
                               negatives.ravel()).reshape(negatives.shape)
    if played.any() and replace_played:
        negatives = replace_played_negatives(sampler, test_users, negatives, played,
                                             np.random.default_rng([seed, 6]), paths[2])
    # a pair on two lines of the training file is one pair (as the CSVs' repeated rows are),
    # else it would train twice and could be carved as validation while still trained on
    train_keys = np.unique(train[0] * num_items + train[1])
    train_users = (train_keys // num_items).astype(np.int32)
    train_items = (train_keys % num_items).astype(np.int32)
    valid_rows = np.zeros(0, np.int64)
    if validation:
        rng = np.random.default_rng([seed, 3])
        shuffled = np.lexsort((rng.random(len(train_users)), train_users))
        counts = np.bincount(train_users, minlength=num_users)
        first = np.concatenate([[True], train_users[shuffled][1:] != train_users[shuffled][:-1]])
        valid_rows = shuffled[first & (counts[train_users[shuffled]] >= 2)
                              & (sampler.num_free[train_users[shuffled]] >= negatives.shape[1])]
    keep = np.ones(len(train_users), bool)
    keep[valid_rows] = False
    rng = np.random.default_rng([seed, 4])
    valid_users = train_users[valid_rows]
    split = Split(train_users[keep], train_items[keep], test_users, test_items,
                  negatives.astype(np.int32), valid_users, train_items[valid_rows],
                  sampler.sample_distinct(valid_users, negatives.shape[1], rng),
                  sampler, num_users, num_items,
                  played_negatives=(int(played.sum()), int(played.any(axis=1).sum())),
                  replaced_negatives=bool(replace_played and played.any()))
    return plays, split


def replace_played_negatives(sampler, users, negatives, played, rng, path):
    """Each negative a user played (or their held-out item) -> a fresh unplayed item that is
    not among the row's other negatives, drawn uniformly."""
    negatives = negatives.copy()
    for row in np.flatnonzero(played.any(axis=1)):
        user, kept = users[row], negatives[row][~played[row]]
        needed = int(played[row].sum())
        if sampler.num_free[user] < len(kept) + needed:
            raise InputError(f"{path}: user {user} has too few unplayed items to replace the "
                             f"{needed} played negatives of their line")
        drawn = sampler.sample_distinct(np.array([user]), len(kept) + needed, rng)[0]
        fresh = drawn[~np.isin(drawn, kept)][:needed]
        negatives[row][played[row]] = fresh
    return negatives


def _check_split_ids(paths, train, test, negatives, negative_lines):
    """The sparse-id check of the CSVs, for the split files (before any table is made)."""
    def line_in(path):
        return lambda index: f"line {_rating_line(path, index)}"

    def negative_line(index):
        return f"line {negative_lines[index // negatives.shape[1]]}"
    _check_dense_ids("user id", [(paths[0], train[0], line_in(paths[0])),
                                 (paths[1], test[0], line_in(paths[1]))])
    _check_dense_ids("item id", [(paths[0], train[1], line_in(paths[0])),
                                 (paths[1], test[1], line_in(paths[1])),
                                 (paths[2], negatives.ravel(), negative_line)])


def _check_one_test_row_per_user(path, test_users):
    """A user on two lines of the test file would be scored, and counted, twice."""
    order = np.argsort(test_users, kind="stable")
    repeats = order[1:][test_users[order][1:] == test_users[order][:-1]]
    if len(repeats):
        row = int(repeats.min())
        first = int(np.argmax(test_users == test_users[row]))
        raise InputError(f"{path}: line {_rating_line(path, row)} repeats user "
                         f"{test_users[row]} of line {_rating_line(path, first)}; give each test "
                         "user one line, the held-out item, or the "
                         "user is counted twice in evaluation")


def _check_no_test_pair_in_train(paths, train, test, num_items):
    """A test pair also in training would be scored with the answer in the training data."""
    leaked = np.isin(test[0] * num_items + test[1], train[0] * num_items + train[1])
    if leaked.any():
        row = int(np.argmax(leaked))
        raise InputError(f"{paths[1]}: test pair (user {test[0][row]}, item {test[1][row]}) on "
                         f"line {_rating_line(paths[1], row)} is also in {paths[0]}, as are "
                         f"{int(leaked.sum()):,} of the {len(leaked):,} test pairs; remove them "
                         "from the training file")


def _read_rating(path):
    try:
        frame = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1])
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error_reason(error)}); expected "
                         "tab-separated user, item, ... lines") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError) as error:
        raise InputError(f"{path}: not a tab-separated user, item, ... file ({error})") from None
    for column, label in ((0, "user"), (1, "item")):
        values = frame[column]   # (2**63 to 2**64 - 1 are read as uint64: out of range below)
        if pd.api.types.is_signed_integer_dtype(values.dtype) and not (values < 0).any():
            continue
        # read again as text: pandas' parse turns '3.0' and '3' alike into 3.0
        text = pd.read_csv(path, sep="\t", header=None, usecols=[column], dtype=str)[column]
        digits = text.fillna("").str.fullmatch(r"\s*\d+\s*").to_numpy()
        too_large = np.array([bool(d) and int(v) > INT64_MAX for d, v in zip(digits, text)])
        row = int(np.argmax(~digits | too_large))
        if too_large[row]:
            raise InputError(f"{path}: line {_rating_line(path, row)} has {label} "
                             f"{text.iloc[row].strip()}, out of range; ids are integers from 0 "
                             f"to {INT64_MAX:,}")
        shown = f"no {label}" if pd.isna(text.iloc[row]) else f"{label} {text.iloc[row]!r}"
        raise InputError(f"{path}: line {_rating_line(path, row)} has {shown}; user and item "
                         "must be integer ids of 0 or more")
    return frame[0].to_numpy(np.int64), frame[1].to_numpy(np.int64)


def _rating_line(path, row):
    """The file's line number of data row `row` (0-based) of a .rating file, for a message:
    pandas skips empty (or all-space) lines, so after one the row's index is not its line. Read
    only when a message needs it."""
    try:
        with open(path, encoding="utf-8") as stream:
            seen = -1
            for number, text in enumerate(stream, start=1):
                seen += bool(text.strip(" \r\n"))   # as pandas: tabs are fields
                if seen == row:
                    return number
    except (OSError, UnicodeDecodeError):
        pass
    return row + 1


def _read_negatives(path, num_rows):
    """-> (negatives (num_rows, num_negatives) int64, the file's line number of each row)."""
    try:
        with open(path, encoding="utf-8-sig") as stream:   # a byte-order mark, as the .rating
            split_lines = [(number, line.rstrip("\r\n").split("\t"))
                           for number, line in enumerate(stream, start=1) if line.strip()]
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error_reason(error)}); expected lines of "
                         "(user,item) then negative item ids, tab-separated") from None
    numbered = [(number, fields[1:]) for number, fields in split_lines]
    heads = [fields[0] for _, fields in split_lines]
    lines = [fields for _, fields in numbered]
    if len(lines) != num_rows:
        raise InputError(f"{path}: expected {num_rows} lines, one per test row, each with the "
                         f"same number of negatives; found {len(lines)}")
    if not lines[0]:
        raise InputError(f"{path}: line {numbered[0][0]} has no negatives after its (user,item); "
                         "each line needs the test pair, then its negative item ids, tab-separated")
    try:
        if len({len(line) for line in lines}) != 1:
            raise ValueError("lines of different lengths")
        negatives = np.array(lines, dtype=np.int64)
    except (ValueError, OverflowError):
        raise InputError(f"{path}: {_first_bad_negative_line(numbered)}") from None
    if (negatives < 0).any():
        row = int(np.argmax((negatives < 0).any(axis=1)))
        raise InputError(f"{path}: negatives must be integer item ids of 0 or more (line "
                         f"{numbered[row][0]} has {negatives[row].min()})")
    ordered = np.sort(negatives, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if repeated.any():
        row = int(np.argmax(repeated))
        item = ordered[row, 1:][ordered[row, 1:] == ordered[row, :-1]][0]
        raise InputError(f"{path}: line {numbered[row][0]} lists item {item} twice among its "
                         "negatives; a test user's candidates must be distinct (a repeated one "
                         "would count twice against the held-out item)")
    return negatives, np.array([number for number, _ in numbered], np.int64), heads


def _check_negative_heads(paths, test, heads, negative_lines):
    """Line k of the negatives file starts with the (user,item) of line k of the test file:
    the negatives are matched to test users by line, so a line out of order, or another
    user's, would score a user against candidates that are not theirs."""
    for row, head in enumerate(heads):
        match = re.fullmatch(r"\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*", head)
        if match is None:
            raise InputError(f"{paths[2]}: line {negative_lines[row]} starts with {head!r}; "
                             "expected (user,item), the pair of the same line of "
                             f"{os.path.basename(paths[1])}, then the negatives")
        pair = (int(match.group(1)), int(match.group(2)))
        if pair != (int(test[0][row]), int(test[1][row])):
            raise InputError(f"{paths[2]}: line {negative_lines[row]} is for (user {pair[0]}, "
                             f"item {pair[1]}) but line {_rating_line(paths[1], row)} of "
                             f"{paths[1]} is user {test[0][row]}, item {test[1][row]}; the two "
                             "files must list the test pairs in the same order")


def _first_bad_negative_line(numbered):
    """What is wrong with the first of the (line number, fields) that are not integer item
    ids, as many as on the first line. Only called on a file whose negatives did not parse."""
    first_number, first_fields = numbered[0]
    for number, fields in numbered:
        for field in fields:
            if not field.strip():
                return (f"line {number} has an empty field (a tab at the end of the line, or two "
                        "tabs in a row); expected negative item ids separated by single tabs")
            try:
                np.array([field], dtype=np.int64)
            except ValueError:
                return f"line {number} has {field!r}; negatives must be integer item ids"
            except OverflowError:
                return (f"line {number} has {field.strip()}, out of range; negatives are "
                        f"integer item ids from 0 to {INT64_MAX:,}")
        if len(fields) != len(first_fields):
            return (f"line {number} has {len(fields)} negatives but line {first_number} has "
                    f"{len(first_fields)}; each line needs the same number")
    return "negatives must be integer item ids"
