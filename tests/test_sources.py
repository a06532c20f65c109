"""sources.fetch against small archives in the originals' formats, served on 127.0.0.1 here:
never the internet."""
import fcntl
import http.server
import io
import os
import shutil
import socket
import tarfile
import threading
import time
import zipfile

import pytest

import errors
import data
import sources

U1 = "00000c289a1829a808ac09c00daf10bc3c4e223b"
U2 = "00001411dc427966b17297bf4d69e7e193135d89"
U3 = "fffe8c7f952d9b960a56ed4dcb40a415d924b224"
BETTY = "3bd73256-3905-4f3a-97e2-8b341527f805"
BJORK = "87c5dedd-371d-4a53-9f7f-80522fb7f3cb"

# usersha1-artmbid-artname-plays.tsv: an empty MBID (the name is the id), one MBID under two
# spellings (the more played names it), a name with quotes, an artist named "NA", a blank
# line, and a row with neither MBID nor name (left out)
PLAYS_TSV = (f"{U1}\t{BETTY}\tbetty blowtorch\t2137\n"
             f"{U1}\t\tdie Ärzte\t1099\n"
             f"{U1}\t{BJORK}\tbjork\t5\n"
             f"{U2}\t{BJORK}\tBjörk\t300\n"
             f"{U2}\t\tThe \"Quoted\" Band\t12\n"
             "\n"
             f"{U2}\t\tNA\t7\n"
             f"{U3}\t{BETTY}\tBetty Blowtorch\t9\n"
             f"{U3}\t\t\t4\n")
PROFILE_TSV = (f"{U1}\tf\t22\tGermany\tFeb 1, 2007\n"
               f"{U2}\tm\t\tUnited States\tDec 4, 2007\n"
               f"{U3}\t\t\tCôte D'Ivoire\tSep 1, 2006\n")
PLAY_CSV_360K = ("user_id,artist_id,plays\n"
                 f"{U1},{BETTY},2137\n"
                 f"{U1},die Ärzte,1099\n"
                 f"{U1},{BJORK},5\n"
                 f"{U2},{BJORK},300\n"
                 f"{U2},\"The \"\"Quoted\"\" Band\",12\n"
                 f"{U2},NA,7\n"
                 f"{U3},{BETTY},9\n")
ARTIST_CSV_360K = ("artist_id,artist_name\n"
                   f"{BETTY},betty blowtorch\n"
                   "die Ärzte,die Ärzte\n"
                   f"{BJORK},Björk\n"
                   "\"The \"\"Quoted\"\" Band\",\"The \"\"Quoted\"\" Band\"\n"
                   "NA,NA\n")
USER_CSV_360K = ("user_id,gender,age,country\n"
                 f"{U1},f,22,Germany\n"
                 f"{U2},m,,United States\n"
                 f"{U3},,,Côte D'Ivoire\n")

USER_ARTISTS_DAT = b"userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t89\t5\n3\t90\t1\n"
# Latin-1 (Mot\xf6rhead) and UTF-8 (Bj\xc3\xb6rk) in one file, as in the original
ARTISTS_DAT = (b"id\tname\turl\tpictureURL\n"
               b"51\tDuran Duran\thttp://www.last.fm/music/Duran+Duran\thttp://x/1.jpg\n"
               b"52\tMot\xf6rhead\thttp://www.last.fm/music/Mot%C3%B6rhead\thttp://x/2.jpg\n"
               b"89\tBj\xc3\xb6rk\thttp://www.last.fm/music/Bj%C3%B6rk\thttp://x/3.jpg\n"
               b"90\tThe \"Quoted\" Band\thttp://www.last.fm/music/Quoted\t\n")
PLAY_CSV_2K = "user_id,artist_id,plays\n2,51,13883\n2,52,11690\n3,89,5\n3,90,1\n"
ARTIST_CSV_2K = ("artist_id,artist_name\n51,Duran Duran\n52,Mot\ufffdrhead\n89,Björk\n"
                 "90,\"The \"\"Quoted\"\" Band\"\n")

NAME_360K, NAME_2K = "lastfm-dataset-360K.tar.gz", "hetrec2011-lastfm-2k.zip"


def write_360k(path, plays=PLAYS_TSV, profile=PROFILE_TSV, skip=()):
    """The 360K archive's layout: a folder entry, a README, then the two TSV files."""
    members = {"lastfm-dataset-360K/README.txt": "Last.fm Dataset - 360K users\n",
               sources.PLAYS_360K: plays, sources.PROFILE_360K: profile}
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("lastfm-dataset-360K")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, text in members.items():
            if name not in skip:
                payload = text.encode("utf-8")
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return path


def write_2k(path, user_artists=USER_ARTISTS_DAT, artists=ARTISTS_DAT, skip=()):
    members = {"artists.dat": artists, "readme.txt": b"hetrec2011-lastfm-2k\n",
               "tags.dat": b"tagID\ttagValue\n1\tmetal\n", "user_artists.dat": user_artists,
               "user_friends.dat": b"userID\tfriendID\n2\t275\n"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as package:
        for name, payload in members.items():
            if name not in skip:
                package.writestr(name, payload)
    return path


class Site:
    """A folder served over HTTP on 127.0.0.1; `requests` holds each path asked for."""

    def __init__(self, folder):
        self.folder, self.requests, self.cut_short = folder, [], False
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args):
                pass

            def send_head(self):
                site.requests.append(self.path)
                return super().send_head()

            def copyfile(self, stream, output):
                if site.cut_short:   # announce the whole length, send half, hang up
                    output.write(stream.read()[: os.fstat(stream.fileno()).st_size // 2])
                else:
                    super().copyfile(stream, output)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs=dict(poll_interval=0.05), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def site(tmp_path):
    (tmp_path / "site").mkdir()
    served = Site(tmp_path / "site")
    yield served
    served.close()


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "keras")


def fetch(dataset, site, cache, **options):
    return sources.fetch(dataset, root_url=site.url, cache_dir=cache, log=lambda line: None,
                         **options)


def read(folder, name):
    with open(os.path.join(folder, name), encoding="utf-8", newline="") as stream:
        return stream.read()


def leftovers(folder):
    """Files of a failed run: temporary files and CSVs."""
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-") or n.endswith(".csv"))


def test_360k_is_converted_to_the_notebook_format(site, cache):
    write_360k(site.folder / NAME_360K)
    lines = []
    folder = sources.fetch("lastfm-360k", root_url=site.url, cache_dir=cache, log=lines.append)
    assert folder == os.path.join(cache, "lastfm-360k")
    assert read(folder, data.PLAY_FILE) == PLAY_CSV_360K
    assert read(folder, data.ARTIST_FILE) == ARTIST_CSV_360K
    assert read(folder, data.USER_FILE) == USER_CSV_360K
    assert sorted(os.listdir(folder)) == sorted([".converted", ".lock", NAME_360K, *data.COLUMNS])
    assert any("left out 1 rows" in line for line in lines)
    assert site.requests == ["/" + NAME_360K]


def test_2k_is_converted_with_its_integer_ids_and_no_users_file(site, cache):
    write_2k(site.folder / NAME_2K)
    folder = fetch("lastfm-2k", site, cache)
    assert folder == os.path.join(cache, "lastfm-2k")
    assert read(folder, data.PLAY_FILE) == PLAY_CSV_2K
    assert read(folder, data.ARTIST_FILE) == ARTIST_CSV_2K
    assert sorted(os.listdir(folder)) == sorted([".converted", ".lock", NAME_2K, data.PLAY_FILE,
                                                 data.ARTIST_FILE])


def test_the_original_url_without_root_url(site, cache, monkeypatch):
    (site.folder / "datasets").mkdir()
    write_2k(site.folder / "datasets" / NAME_2K)
    monkeypatch.setitem(sources.DATASETS["lastfm-2k"], "url", site.url + "datasets/" + NAME_2K)
    sources.fetch("lastfm-2k", cache_dir=cache, log=lambda line: None)
    assert site.requests == ["/datasets/" + NAME_2K]


@pytest.mark.parametrize("slash", ["", "/"])
def test_root_url_is_a_mirror_folder(site, cache, slash):
    (site.folder / "mirror").mkdir()
    write_360k(site.folder / "mirror" / NAME_360K)
    folder = sources.fetch("lastfm-360k", root_url=site.url + "mirror" + slash, cache_dir=cache,
                           log=lambda line: None)
    assert site.requests == ["/mirror/" + NAME_360K]
    assert read(folder, data.PLAY_FILE) == PLAY_CSV_360K


@pytest.mark.parametrize("dataset, write, name", [("lastfm-360k", write_360k, NAME_360K),
                                                  ("lastfm-2k", write_2k, NAME_2K)])
def test_a_second_call_neither_downloads_nor_converts(site, cache, dataset, write, name):
    write(site.folder / name)
    folder = fetch(dataset, site, cache)
    stamps = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)}
    lines = []
    assert sources.fetch(dataset, root_url=site.url, cache_dir=cache, log=lines.append) == folder
    assert site.requests == ["/" + name] and lines == []
    assert {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)} == stamps


def test_a_missing_csv_is_converted_again_from_the_cached_archive(site, cache):
    write_360k(site.folder / NAME_360K)
    folder = fetch("lastfm-360k", site, cache)
    os.remove(os.path.join(folder, data.USER_FILE))
    lines = []
    sources.fetch("lastfm-360k", root_url=site.url, cache_dir=cache, log=lines.append)
    assert site.requests == ["/" + NAME_360K]        # not downloaded again
    assert any("converting" in line for line in lines)
    assert read(folder, data.USER_FILE) == USER_CSV_360K


def test_404_names_the_url_and_the_alternatives(site, cache):
    with pytest.raises(errors.InputError) as caught:
        fetch("lastfm-2k", site, cache)
    message = str(caught.value)
    assert site.url + NAME_2K in message and "404" in message
    assert "--data_dir" in message and "--dataset=sample" in message
    assert "\n" not in message
    assert os.listdir(os.path.join(cache, "lastfm-2k")) == [".lock"]


def test_a_refused_connection_is_one_clear_error(cache):
    with socket.socket() as probe:   # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(errors.InputError, match=f"could not download {url}{NAME_360K} .*refused"):
        sources.fetch("lastfm-360k", root_url=url, cache_dir=cache, log=lambda line: None)
    assert os.listdir(os.path.join(cache, "lastfm-360k")) == [".lock"]


def test_a_transfer_cut_short_leaves_nothing_a_later_run_would_trust(site, cache):
    write_360k(site.folder / NAME_360K, plays=PLAYS_TSV * 200)
    site.cut_short = True
    with pytest.raises(errors.InputError, match="could not download"):
        fetch("lastfm-360k", site, cache)
    assert os.listdir(os.path.join(cache, "lastfm-360k")) == [".lock"]


@pytest.mark.parametrize("dataset, write, name", [("lastfm-360k", write_360k, NAME_360K),
                                                  ("lastfm-2k", write_2k, NAME_2K)])
def test_a_truncated_archive_is_named_and_deleted(site, cache, dataset, write, name):
    whole = write(site.folder / name).read_bytes()
    (site.folder / name).write_bytes(whole[: len(whole) * 2 // 3])   # served complete
    archive = os.path.join(cache, dataset, name)
    with pytest.raises(errors.InputError, match=f"{archive}: the archive is truncated or corrupt"):
        fetch(dataset, site, cache)
    assert not os.path.exists(archive)
    assert leftovers(os.path.join(cache, dataset)) == []
    (site.folder / name).write_bytes(whole)                 # the next run downloads it again
    folder = fetch(dataset, site, cache)
    assert read(folder, data.PLAY_FILE) == (PLAY_CSV_360K if dataset == "lastfm-360k"
                                            else PLAY_CSV_2K)
    assert site.requests == ["/" + name] * 2


@pytest.mark.parametrize("dataset, write, options, member, expected", [
    ("lastfm-360k", write_360k, dict(plays=f"{U1}\t{BETTY}\t2137\n"),
     sources.PLAYS_360K, "expected 4 (user sha1, artist MBID, artist name, plays)"),
    ("lastfm-360k", write_360k, dict(profile=f"{U1}\tf\t22\tGermany\n"),
     sources.PROFILE_360K, "expected 5 (user sha1, gender, age, country, signup date)"),
    ("lastfm-360k", write_360k, dict(plays=PLAYS_TSV + f"{U3}\t\tx\t1\textra\n"),
     sources.PLAYS_360K, "line 10, saw 5; expected 4 tab-separated fields"),
    ("lastfm-2k", write_2k, dict(user_artists=b"userID\tartistID\tcount\n2\t51\t3\n"),
     "user_artists.dat", "expected the tab-separated header userID, artistID, weight"),
    ("lastfm-2k", write_2k, dict(artists=b"id\tname\n51\tDuran Duran\n"),
     "artists.dat", "expected the tab-separated header id, name, url, pictureURL"),
])
def test_a_member_with_unexpected_columns_is_named(site, cache, dataset, write, options, member,
                                                   expected):
    name = NAME_360K if dataset == "lastfm-360k" else NAME_2K
    write(site.folder / name, **options)
    with pytest.raises(errors.InputError) as caught:
        fetch(dataset, site, cache)
    assert f"{name}: {member}: " in str(caught.value) and expected in str(caught.value)
    assert leftovers(os.path.join(cache, dataset)) == []
    assert os.path.exists(os.path.join(cache, dataset, name))   # whole: kept


@pytest.mark.parametrize("dataset, write, member", [
    ("lastfm-360k", write_360k, sources.PROFILE_360K),
    ("lastfm-2k", write_2k, "artists.dat"),
])
def test_a_missing_member_is_named(site, cache, dataset, write, member):
    name = NAME_360K if dataset == "lastfm-360k" else NAME_2K
    write(site.folder / name, skip=[member])
    with pytest.raises(errors.InputError, match=f"{name}: no member {member};"):
        fetch(dataset, site, cache)
    assert leftovers(os.path.join(cache, dataset)) == []


def test_non_numeric_plays_name_the_member_and_line_and_leave_no_csv(site, cache, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)   # the bad line in a later chunk than the first
    write_360k(site.folder / NAME_360K, plays=PLAYS_TSV + f"{U3}\t{BJORK}\tBjörk\tmany\n")
    with pytest.raises(errors.InputError, match=f"{sources.PLAYS_360K}: line 10: plays is 'many'; "
                                             "expected a whole number"):
        fetch("lastfm-360k", site, cache)
    assert leftovers(os.path.join(cache, "lastfm-360k")) == []


def test_chunks_give_the_same_files_as_one_read(site, cache, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)
    write_360k(site.folder / NAME_360K)
    folder = fetch("lastfm-360k", site, cache)
    assert read(folder, data.PLAY_FILE) == PLAY_CSV_360K
    assert read(folder, data.ARTIST_FILE) == ARTIST_CSV_360K


def test_refusals_before_any_download(cache):
    with pytest.raises(errors.InputError, match="unknown data set 'lastfm-1k'; expected one of "
                                             "lastfm-360k, lastfm-2k"):
        sources.fetch("lastfm-1k", cache_dir=cache)
    with pytest.raises(errors.InputError, match="must start with https:// or http://"):
        sources.fetch("lastfm-2k", root_url="file:///etc/", cache_dir=cache)


def test_a_csv_appears_under_its_name_only_when_whole(site, cache, monkeypatch):
    """Seen from inside the conversion, chunk by chunk: a run killed there leaves no CSV."""
    monkeypatch.setattr(sources, "CHUNK_ROWS", 2)
    folder, seen = os.path.join(cache, "lastfm-360k"), []
    plays = sources._plays

    def watched(values, lines, where):
        seen.append(sorted(n for n in os.listdir(folder) if n in data.COLUMNS))
        return plays(values, lines, where)
    monkeypatch.setattr(sources, "_plays", watched)
    write_360k(site.folder / NAME_360K)
    fetch("lastfm-360k", site, cache)
    assert len(seen) == 5 and not any(seen)


def test_bytes_damaged_in_the_middle_are_found_by_the_checksum(site, cache):
    """Damaged deflate data can decompress to lines that fail a check of their own before the
    gzip CRC at the end is read: the archive is still named corrupt, and deleted."""
    damaged = bytearray(write_360k(site.folder / NAME_360K, plays=PLAYS_TSV * 3000).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    damaged[len(damaged) // 2 + 1] ^= 0xFF
    (site.folder / NAME_360K).write_bytes(damaged)
    archive = os.path.join(cache, "lastfm-360k", NAME_360K)
    with pytest.raises(errors.InputError, match=f"{archive}: the archive is truncated or corrupt "
                                             r"\(CRC check failed"):
        fetch("lastfm-360k", site, cache)
    assert not os.path.exists(archive) and leftovers(os.path.dirname(archive)) == []


def test_a_killed_runs_temporaries_go_and_the_loaders_stay(site, cache):
    folder = os.path.join(cache, "lastfm-2k")
    os.makedirs(folder)
    stale = [".tmp-a1b2c3-" + NAME_2K, ".tmp-d4e5f6-lastfm_play.csv", ".tmp-g7h8-.converted"]
    for name in [*stale, ".tmp-x9y8-lastfm_cache.npz"]:
        with open(os.path.join(folder, name), "wb") as stream:
            stream.write(b"partial")
    write_2k(site.folder / NAME_2K)
    fetch("lastfm-2k", site, cache)
    assert not set(stale) & set(os.listdir(folder))
    assert ".tmp-x9y8-lastfm_cache.npz" in os.listdir(folder)


def test_a_second_run_waits_for_the_first_then_finds_the_work_done(site, cache, tmp_path):
    write_2k(site.folder / NAME_2K)
    folder = os.path.join(cache, "lastfm-2k")
    os.makedirs(folder)
    lines, done = [], threading.Event()
    with open(os.path.join(folder, ".lock"), "w") as held:   # the first run, busy
        fcntl.flock(held, fcntl.LOCK_EX)
        second = threading.Thread(target=lambda: (sources.fetch(
            "lastfm-2k", root_url=site.url, cache_dir=cache, log=lines.append), done.set()))
        second.start()
        for _ in range(200):
            if lines:
                break
            time.sleep(0.05)
        assert lines == [f"waiting for another run that is downloading or converting in {folder}"]
        assert not done.is_set()
        finished = fetch("lastfm-2k", site, str(tmp_path / "first"))   # the first run's work,
        for name in os.listdir(finished):                              # done in its folder
            shutil.copy2(os.path.join(finished, name), folder)
    second.join(timeout=20)
    assert done.is_set() and len(lines) == 1                 # nothing converted
    assert site.requests == ["/" + NAME_2K]                   # nor downloaded again


# ---- the command line, end to end --------------------------------------------------------------

def planted_archives(folder):
    """Both archives holding the same planted plays (150 users, 300 artists), in the originals'
    formats: 2k with integer ids, 360K with user hashes and artist MBIDs (some left empty)."""
    plays, artists, _ = data.make_planted(150, 300, 4_000, seed=5)
    lines = "".join(f"{u + 2}\t{a + 51}\t{n}\n" for u, a, n in plays.itertuples(index=False))
    names = "".join(f"{a + 51}\t{name}\thttp://www.last.fm/music/x\t\n"
                    for a, name in artists.itertuples(index=False))
    write_2k(folder / "hetrec2011-lastfm-2k.zip",
             user_artists=("userID\tartistID\tweight\n" + lines).encode(),
             artists=("id\tname\turl\tpictureURL\n" + names).encode())
    user = [f"{i * 2654435761 % 2**160:040x}" for i in range(150)]
    mbid = [f"{a:08x}-0000-4000-8000-000000000000" if a % 7 else "" for a in range(300)]
    rows = "".join(f"{user[u]}\t{mbid[a]}\t{artists.artist_name[a]}\t{n}\n"
                   for u, a, n in plays.itertuples(index=False))
    profile = "".join(f"{h}\tf\t22\tGermany\tFeb 1, 2007\n" for h in user)
    write_360k(folder / "lastfm-dataset-360K.tar.gz", plays=rows, profile=profile)
    return user


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["lastfm-2k", "lastfm-360k"])
def test_a_public_dataset_trains_and_recommends_in_its_own_ids(dataset, site, tmp_path,
                                                                monkeypatch, capsys):
    import ncf_lastfm
    users = planted_archives(tmp_path / "site")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))      # the download cache: ~/.keras
    first = "2" if dataset == "lastfm-2k" else users[0]
    code = ncf_lastfm.main([f"--dataset={dataset}", f"--root_url={site.url}", "--num_epoch=2",
                            "--quiet", f"--output_dir={tmp_path / 'out'}",
                            f"--recommend_user={first}"])
    out = capsys.readouterr().out
    assert code == 0 and "hit ratio :" in out
    folder = tmp_path / "home" / ".keras" / dataset
    assert (folder / "lastfm_play.csv").exists()
    with open(tmp_path / "out" / "mlp" / "recommendations.csv", encoding="utf-8") as stream:
        rows = stream.read().splitlines()[1:]
    assert len(rows) == 10 and all(row.split(",")[0] == first for row in rows)
    import pandas as pd
    converted = pd.read_csv(folder / "lastfm_play.csv", dtype=str, keep_default_na=False)
    played = set(converted.artist_id[converted.user_id == first])
    recommended = {row.split(",")[2] for row in rows}
    assert played and not recommended & played     # ten unplayed artists, in the data's own ids


def test_a_public_dataset_without_network_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import ncf_lastfm
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with socket.socket() as probe:          # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = ncf_lastfm.main(["--dataset=lastfm-2k", f"--root_url=http://127.0.0.1:{port}/",
                            "--quiet", f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "could not download" in err
