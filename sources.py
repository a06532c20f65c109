"""The public LastFM data sets, downloaded once and converted once to the notebook's CSV files.

In:  a data set's name ("lastfm-360k" or "lastfm-2k"), optionally a mirror (`root_url`, a URL
     folder the archive's own file name is appended to) and a cache folder (default ~/.keras).
Out: a folder holding the notebook's CSV files, with ids as in the original (strings, not
     renumbered):
       lastfm_play.csv    user_id, artist_id, plays
       lastfm_artist.csv  artist_id, artist_name           (one name per artist_id)
       lastfm_user.csv    user_id, gender, age, country    (lastfm-360k only; age may be empty)
     Cache layout, one folder per data set, <cache_dir or ~/.keras>/<dataset>/:
       <archive>          the archive as downloaded: lastfm-dataset-360K.tar.gz or
                          hetrec2011-lastfm-2k.zip. It may be deleted once converted; put it
                          there by hand (from any mirror) and nothing is downloaded
       lastfm_*.csv       the converted files; the loader may add its lastfm_cache.npz beside
       .converted         written last: the converter's version and the archive's name and size
       .lock              held while one run downloads or converts; a second run waits, then
                          finds the work done. Temporary files (.tmp-*) a killed run left of
                          the archive or the CSVs are deleted by the next run
     A call with the archive (or `.converted`) and the CSVs present downloads nothing and
     converts nothing. The archive is fetched under a new temporary name and renamed when
     complete; each CSV is written under a temporary name and renamed when complete
     (`files.atomic_write`), and a failed conversion removes every CSV it wrote, so a CSV under
     its real name is always a whole one, from one conversion.
Refuses, each as one line of `errors.InputError` (the script exits with code 2): an unknown data
     set; a `root_url` that is not http:// or https://; a download that fails (no network, a
     refused connection, HTTP 404, a transfer cut short), naming the URL and the alternatives;
     a truncated or corrupt archive, naming the file, which is deleted so that the next run
     downloads it again (an archive whose content is refused below is first checked against
     its own checksums: damaged bytes can decompress to a bad line); a missing member; a
     member with unexpected columns (naming the member and the columns expected) or a line
     with more fields than the others (naming the line); a
     plays value that is not a whole number of 0 or more, naming the member and its line.
     Rows of lastfm-360k with neither an artist MBID nor an artist name are left out, with a
     count in the log. Names are decoded as UTF-8, a byte that is not UTF-8 replaced by U+FFFD.

The data sets, their origin and terms (this module fetches them; it grants no right to them):
  lastfm-360k  "Last.fm Dataset - 360K users" (user top artists), collected by Òscar Celma,
               Music Technology Group, Universitat Pompeu Fabra, with the Last.fm API ("Music
               Recommendation and Discovery in the Long Tail", Springer 2010), from
               http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-360K.tar.gz (plain
               http; no digest is published to check it against). About 359K users and 17.5M
               (user, artist, plays) rows. Terms: distributed with Last.fm's permission for
               non-commercial use (research); cite the source. The archive holds
                 lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv   user sha1, artist
                     MBID (may be empty), artist name, plays; tab-separated, no header
                 lastfm-dataset-360K/usersha1-profile.tsv   user sha1, gender, age, country,
                     signup date; tab-separated, no header
               user_id is the user's sha1; artist_id the MusicBrainz id or, where that is empty,
               the artist's name (so an id may be any text, "NA" or "311" too: read them as
               strings, with no NA values). artist_name is the name most played under that
               artist_id (ties: the one seen first). A user who played one artist under two
               spellings of one MBID has two rows of that pair; the loader merges them.
  lastfm-2k    HetRec 2011 "hetrec2011-lastfm-2k" (Iván Cantador, Peter Brusilovsky, Tsvi
               Kuflik, 2nd Workshop on Information Heterogeneity and Fusion in Recommender
               Systems, RecSys 2011), published by GroupLens at
               https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip.
               1,892 users, 17,632 artists, 92,834 (user, artist, weight) rows. Terms:
               non-commercial research use; cite the workshop and credit Last.fm. The zip holds
               user_artists.dat (header userID, artistID, weight) and artists.dat (header id,
               name, url, pictureURL), tab-separated; artists.dat mixes Latin-1 and UTF-8. The
               integer ids are kept; plays = weight. There is no users file: none is written.
"""
import contextlib
import csv
import fcntl
import gzip
import io
import json
import os
import tarfile
import time
import urllib.parse
import zipfile
import zlib

import numpy as np
import pandas as pd
from tqdm import tqdm

from data import ARTIST_FILE, COLUMNS, PLAY_FILE, USER_FILE
from errors import InputError, error_reason
from files import atomic_write, write_json

CONVERTED_FILE = ".converted"   # written last: the CSVs beside it are one whole conversion
CONVERTER_VERSION = 1           # raise it when the CSVs a conversion writes change
CHUNK_ROWS = 500_000            # rows of a member parsed at a time: memory stays bounded

PLAYS_360K = "lastfm-dataset-360K/usersha1-artmbid-artname-plays.tsv"
PROFILE_360K = "lastfm-dataset-360K/usersha1-profile.tsv"
PLAYS_2K, ARTISTS_2K = "user_artists.dat", "artists.dat"

# Each data set: its archive's URL, the CSVs its conversion writes, and the members it reads
# (for a member without a header: its fields, described; with one: the header it must have).
DATASETS = {
    "lastfm-360k": dict(
        url="http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-360K.tar.gz",
        files=(PLAY_FILE, ARTIST_FILE, USER_FILE),
        members={PLAYS_360K: ["user sha1", "artist MBID", "artist name", "plays"],
                 PROFILE_360K: ["user sha1", "gender", "age", "country", "signup date"]}),
    "lastfm-2k": dict(
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        files=(PLAY_FILE, ARTIST_FILE),
        members={PLAYS_2K: ["userID", "artistID", "weight"],
                 ARTISTS_2K: ["id", "name", "url", "pictureURL"]}),
}
HEADERS = {PLAYS_2K, ARTISTS_2K}   # members whose first line is a header

# What a damaged archive raises while it is read (gzip.BadGzipFile is an OSError, as a full
# disk is: it is named here so that only it, not any OSError, deletes the archive)
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


class _Corrupt(Exception):
    """Raised inside a conversion for a damaged archive; `fetch` turns it into a InputError."""


def fetch(dataset, root_url="", cache_dir=None, log=print):
    """Downloads (once) and converts (once) a public LastFM data set -> the folder of its CSVs.

    `dataset` is "lastfm-360k" or "lastfm-2k"; `root_url` a mirror folder the archive's file
    name is appended to (default: the original URL); `cache_dir` the folder the data set's
    folder is made in (default ~/.keras); `log` takes one line of progress at a time.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown data set {dataset!r}; expected one of {', '.join(DATASETS)}")
    source = DATASETS[dataset]
    archive_name = os.path.basename(urllib.parse.urlparse(source["url"]).path)
    if root_url:
        if urllib.parse.urlparse(root_url).scheme not in ("http", "https"):
            raise InputError(f"ROOT_URL {root_url!r} must start with https:// or http://")
        url = (root_url if root_url.endswith("/") else root_url + "/") + archive_name
    else:
        url = source["url"]
    folder = os.path.join(os.path.expanduser(cache_dir or os.path.join("~", ".keras")), dataset)
    os.makedirs(folder, exist_ok=True)
    archive = os.path.join(folder, archive_name)
    with _locked(folder, log):
        _remove_stale_temporaries(folder, archive_name)
        if _converted(folder, archive, source["files"]):
            return folder
        if not os.path.isfile(archive):
            _download(url, archive, folder)
        _convert(dataset, archive, folder, log)
    return folder


def _download(url, archive, folder):
    """The archive at `url` -> `archive`, through a new temporary name renamed when complete
    (Keras' get_file shows the progress bar)."""
    from keras.utils import get_file

    def download(temporary):
        get_file(os.path.basename(temporary), url, cache_subdir=os.path.dirname(temporary),
                 cache_dir=folder, force_download=True)
    try:
        atomic_write(archive, download)   # removes the temporary file on any failure
    except Exception as error:   # get_file raises a bare Exception for HTTP and URL errors
        reason = error_reason(error).replace(f"URL fetch failure on {url}: ", "")
        reason = reason.removeprefix("None -- ")   # get_file's errno of a URLError, often None
        raise InputError(f"could not download {url} ({reason}); use --data_dir=DIR with the CSV "
                         f"files, put {os.path.basename(archive)} in {folder}, or use "
                         "--dataset=sample to run offline") from None


def _remove_stale_temporaries(folder, archive_name):
    """Temporary files of this module's that a killed run left (a part-downloaded archive can
    be hundreds of MB). With the folder locked, no live run is writing them; the loader's
    temporary caches are not touched."""
    ours = (archive_name, CONVERTED_FILE, *COLUMNS)
    for name in os.listdir(folder):
        if name.startswith(".tmp-") and name.endswith(tuple("-" + own for own in ours)):
            os.remove(os.path.join(folder, name))


def _converted(folder, archive, names):
    """Whether `folder` holds a whole conversion of `archive` by this converter version."""
    try:
        with open(os.path.join(folder, CONVERTED_FILE), encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("version") != CONVERTER_VERSION:
        return False
    if not all(os.path.isfile(os.path.join(folder, name)) for name in names):
        return False
    if os.path.isfile(archive):   # an archive put there since: its CSVs, not the old ones
        return (record.get("archive") == os.path.basename(archive)
                and record.get("size") == os.path.getsize(archive))
    return True                   # the archive was deleted after the conversion to save space


def _convert(dataset, archive, folder, log):
    """The archive -> the CSVs in `folder`, then CONVERTED_FILE. Any CSV of an earlier
    conversion goes first; on a failure, every CSV this one wrote goes too."""
    started = time.time()
    log(f"{dataset}: converting {os.path.basename(archive)} to CSV files in {folder} (once)")
    paths = [os.path.join(folder, name) for name in (CONVERTED_FILE, *COLUMNS)]
    for path in paths:
        if os.path.lexists(path):
            os.remove(path)
    try:
        if dataset == "lastfm-360k":
            counts = _convert_360k(archive, folder, log)
        else:
            counts = _convert_2k(archive, folder)
    except BaseException as error:
        for path in paths:
            if os.path.lexists(path):
                os.remove(path)
        # Bytes damaged in the middle can decompress to text that fails a check before the
        # archive's own checksum is reached: a refused member is checked against it
        damage = str(error) if isinstance(error, _Corrupt) else (
            _damage(archive) if isinstance(error, InputError) else None)
        if damage:
            if os.path.lexists(archive):
                os.remove(archive)
            raise InputError(f"{archive}: the archive is truncated or corrupt ({damage}); it was "
                             "deleted, so the next run downloads it again") from None
        raise
    atomic_write(os.path.join(folder, CONVERTED_FILE), lambda temporary: write_json(
        temporary, {"version": CONVERTER_VERSION, "archive": os.path.basename(archive),
                    "size": os.path.getsize(archive)}))
    log(f"{dataset}: wrote {', '.join(f'{n:,} {what}' for what, n in counts.items())} "
        f"({time.time() - started:.0f} s)")


# ----------------------------------------------------------------------------------------------
# The two conversions

def _convert_360k(archive, folder, log):
    """One pass through the tar.gz (a stream: it is decompressed once), each member converted
    as it comes."""
    counts, seen = {}, set()
    with _reading_archive(), tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name not in DATASETS["lastfm-360k"]["members"] or not member.isfile():
                continue
            seen.add(name)
            with _progress(tar.extractfile(member), member.size, name) as stream:
                if name == PLAYS_360K:
                    counts.update(_plays_360k(stream, archive, folder, log))
                else:
                    counts["users"] = _users_360k(stream, archive, folder)
    _check_members(archive, "lastfm-360k", seen)
    return {key: counts[key] for key in ("plays", "artists", "users")}


def _plays_360k(stream, archive, folder, log):
    """usersha1-artmbid-artname-plays.tsv -> lastfm_play.csv, then lastfm_artist.csv with the
    most played name of each artist_id."""
    where = f"{archive}: {PLAYS_360K}"
    totals, pending = None, []      # plays per (artist_id, name), in the order first seen
    rows = skipped = 0

    def write(temporary):
        nonlocal totals, pending, rows, skipped
        with open(temporary, "w", encoding="utf-8", newline="") as out:
            out.write(",".join(COLUMNS[PLAY_FILE]) + "\n")
            for chunk, lines in _member_chunks(stream, where, PLAYS_360K):
                user, mbid, name = chunk[0], chunk[1], chunk[2]
                plays = _plays(chunk[3], lines, where)
                artist = mbid.where(mbid != "", name)
                known = (artist != "").to_numpy()
                skipped += int((~known).sum())
                frame = pd.DataFrame({"user_id": user, "artist_id": artist, "plays": plays})[known]
                frame.to_csv(out, header=False, index=False)
                rows += len(frame)
                pending.append(frame.assign(artist_name=name[known]).groupby(
                    ["artist_id", "artist_name"], sort=False)["plays"].sum())
                if len(pending) >= 8:
                    totals, pending = _add_totals(totals, pending), []
    atomic_write(os.path.join(folder, PLAY_FILE), write)
    totals = _add_totals(totals, pending)
    if skipped:
        log(f"lastfm-360k: left out {skipped:,} rows of {PLAYS_360K} with neither an artist "
            "MBID nor a name")
    pairs = totals.reset_index()
    order = pairs["artist_id"].drop_duplicates()               # artist ids as first seen
    best = pairs.sort_values("plays", ascending=False, kind="stable").drop_duplicates(
        "artist_id").set_index("artist_id")["artist_name"]    # ties: the name seen first
    artists = pd.DataFrame({"artist_id": order.to_numpy(),
                            "artist_name": best.loc[order].to_numpy()})
    _write_csv(artists, os.path.join(folder, ARTIST_FILE))
    return {"plays": rows, "artists": len(artists)}


def _add_totals(totals, pending):
    parts = ([] if totals is None else [totals]) + pending
    if not parts:
        return pd.Series([], dtype=np.int64, index=pd.MultiIndex.from_arrays(
            [[], []], names=["artist_id", "artist_name"]), name="plays")
    return pd.concat(parts).groupby(level=[0, 1], sort=False).sum()


def _users_360k(stream, archive, folder):
    """usersha1-profile.tsv -> lastfm_user.csv (the signup date left out)."""
    where = f"{archive}: {PROFILE_360K}"
    frames = [chunk.iloc[:, :4] for chunk, _ in _member_chunks(stream, where, PROFILE_360K)]
    users = pd.concat(frames) if frames else pd.DataFrame(columns=range(4))
    users.columns = COLUMNS[USER_FILE]
    _write_csv(users, os.path.join(folder, USER_FILE))
    return len(users)


def _convert_2k(archive, folder):
    with _reading_archive(), zipfile.ZipFile(archive) as package:
        names = {info.filename.removeprefix("./"): info for info in package.infolist()}
        _check_members(archive, "lastfm-2k", set(names))
        with _progress(package.open(names[PLAYS_2K]), names[PLAYS_2K].file_size,
                       PLAYS_2K) as stream:
            where = f"{archive}: {PLAYS_2K}"
            frames = [pd.DataFrame({"user_id": chunk[0], "artist_id": chunk[1],
                                    "plays": _plays(chunk[2], lines, where)})
                      for chunk, lines in _member_chunks(stream, where, PLAYS_2K)]
        plays = pd.concat(frames) if frames else pd.DataFrame(columns=COLUMNS[PLAY_FILE])
        with package.open(names[ARTISTS_2K]) as stream:
            where = f"{archive}: {ARTISTS_2K}"
            frames = [chunk.iloc[:, :2] for chunk, _ in
                      _member_chunks(stream, where, ARTISTS_2K)]
        artists = pd.concat(frames) if frames else pd.DataFrame(columns=range(2))
        artists.columns = COLUMNS[ARTIST_FILE]
    _write_csv(plays, os.path.join(folder, PLAY_FILE))
    _write_csv(artists, os.path.join(folder, ARTIST_FILE))
    return {"plays": len(plays), "artists": len(artists)}


# ----------------------------------------------------------------------------------------------
# Reading members

def _member_chunks(stream, where, member):
    """A member's rows as frames of strings (columns 0, 1, ...; no NA values: "NA" and "null"
    are names), CHUNK_ROWS at a time, each with its rows' line numbers -> (frame, lines).
    Blank lines are skipped; the header of a member that has one is checked and dropped."""
    expected = DATASETS["lastfm-360k" if member in (PLAYS_360K, PROFILE_360K) else
                        "lastfm-2k"]["members"][member]
    shown = ", ".join(expected)
    reader = pd.read_csv(stream, sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str,
                         na_filter=False, skip_blank_lines=False, chunksize=CHUNK_ROWS,
                         encoding="utf-8", encoding_errors="replace")
    first = True
    try:
        for chunk in reader:
            lines = chunk.index.to_numpy() + 1
            if first:
                first = False
                if member in HEADERS:
                    header = [str(value).strip().lstrip("\ufeff") for value in chunk.iloc[0]]
                    if header != expected:
                        raise InputError(f"{where}: unexpected columns {', '.join(header)}; "
                                         f"expected the tab-separated header {shown}")
                    chunk, lines = chunk.iloc[1:], lines[1:]
                elif chunk.shape[1] != len(expected):
                    raise InputError(f"{where}: line 1 has {chunk.shape[1]} tab-separated fields; "
                                     f"expected {len(expected)} ({shown})")
            filled = (chunk != "").any(axis=1).to_numpy()   # blank lines: every field empty
            yield chunk[filled], lines[filled]
    except pd.errors.EmptyDataError:
        raise InputError(f"{where}: the member is empty; expected tab-separated lines of "
                         f"{shown}") from None
    except pd.errors.ParserError as error:
        raise InputError(f"{where}: {error_reason(error, -1).split('C error: ')[-1]}; "
                         f"expected {len(expected)} tab-separated fields ({shown})") from None
    finally:
        reader.close()


def _plays(values, lines, where):
    """A column of plays (strings) -> int64, or a InputError naming the first bad value's line."""
    numbers = pd.to_numeric(values, errors="coerce")
    floats = numbers.to_numpy(np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~((floats >= 0) & (floats < 2.0**63) & (floats == np.floor(floats)))
    if bad.any():
        row = int(np.argmax(bad))
        value = values.iloc[row]
        shown = "missing" if value == "" else repr(value)
        raise InputError(f"{where}: line {lines[row]:,}: plays is {shown}; expected a whole "
                         "number of plays (0 or more)")
    return numbers.astype(np.int64)


def _damage(archive):
    """Why the archive fails its own checksums (the gzip stream's CRC, each zip member's
    CRC-32) -> a reason, or None when it passes them."""
    try:
        if archive.endswith(".zip"):
            with zipfile.ZipFile(archive) as package:
                bad = package.testzip()
            return f"member {bad} fails its CRC-32 check" if bad else None
        with gzip.open(archive) as stream:
            while stream.read(1 << 22):
                pass
    except CORRUPT as error:
        return error_reason(error)
    return None


def _check_members(archive, dataset, present):
    missing = [name for name in DATASETS[dataset]["members"] if name not in present]
    if missing:
        raise InputError(f"{archive}: no member {missing[0]}; the {dataset} archive holds "
                         f"{' and '.join(DATASETS[dataset]['members'])} (is it another file? "
                         "delete it to download it again)")


@contextlib.contextmanager
def _reading_archive():
    """A damaged archive's error, from wherever in the reading it comes -> _Corrupt."""
    try:
        yield
    except CORRUPT as error:
        raise _Corrupt(error_reason(error)) from None


class _Counted(io.RawIOBase):
    """A binary stream that moves a progress bar by the bytes read through it."""

    def __init__(self, stream, bar):
        self.stream, self.bar = stream, bar

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        self.bar.update(len(data))
        return len(data)

    def close(self):
        self.bar.close()
        super().close()


def _progress(stream, size, name):
    """`stream` with a progress bar of its bytes, shown on a terminal only."""
    bar = tqdm(total=size, desc=f"converting {os.path.basename(name)}", unit="B",
               unit_scale=True, disable=None, leave=False)
    return io.BufferedReader(_Counted(stream, bar), 1 << 20)


def _write_csv(frame, path):
    atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False,
                                                      encoding="utf-8"))


@contextlib.contextmanager
def _locked(folder, log):
    """Holds `folder` while this run downloads or converts; another run waits, then finds the
    work done. The lock goes with the process, even when killed."""
    handle = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                     0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run that is downloading or converting in {folder}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)
