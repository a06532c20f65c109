"""Downloads against a server on 127.0.0.1 started here: never the internet."""
import http.server
import os
import threading

import pytest

import errors
import data
from conftest import write_csvs


class Server:
    def __init__(self, folder, truncate=False):
        source = folder

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=source, **kwargs)

            def log_message(self, *args):
                pass

            def copyfile(self, stream, output):
                if truncate:  # announce the whole length, send half, hang up
                    output.write(stream.read()[: os.fstat(stream.fileno()).st_size // 2])
                else:
                    super().copyfile(stream, output)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    folder = write_csvs(tmp_path / "site", *data.make_planted(50, 60, 500, seed=0))
    servers = []

    def start(truncate=False):
        servers.append(Server(folder, truncate))
        return servers[-1].url
    yield start
    for server in servers:
        server.close()


def test_download_then_cache(served, tmp_path):
    url = served()
    plays = data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert len(plays.user_ids) > 200
    assert set(os.listdir(tmp_path / "k" / "lastfm")) == set(data.COLUMNS) | {"lastfm_cache.npz",
                                                                              ".source-url"}


def test_files_cached_from_another_url_are_fetched_again(served, tmp_path):
    first, other = served(), served()
    data.load("lastfm", root_url=first, explicit_url=True, cache_dir=str(tmp_path / "k"))
    cache = tmp_path / "k" / "lastfm"
    (cache / data.PLAY_FILE).write_text("user_id,artist_id,plays\n0,0,1\n")   # first's, edited
    plays = data.load("lastfm", root_url=first, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert len(plays.user_ids) == 1                       # the same URL: its cached files
    plays = data.load("lastfm", root_url=other, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert len(plays.user_ids) > 200                      # another URL: downloaded again
    assert (cache / ".source-url").read_text() == other + "\n"


def test_files_of_no_recorded_source_are_fetched_again_for_a_given_url(served, tmp_path):
    url = served()
    cache = tmp_path / "k" / "lastfm"
    write_csvs(cache, *data.make_planted(5, 6, 10, seed=1))   # an older version's download
    plays = data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert len(plays.user_ids) > 200


def test_404_names_the_url_and_the_alternatives(served, tmp_path):
    url = served() + "missing/"
    with pytest.raises(errors.InputError) as caught:
        data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"))
    message = str(caught.value)
    assert url + "lastfm_play.csv" in message and "--data_dir" in message
    assert "--dataset=sample" in message and "404" in message
    assert not os.listdir(tmp_path / "k" / "lastfm")  # nothing half-written left behind


def test_no_network_is_one_clear_error(tmp_path):
    url = "http://127.0.0.1:9/"  # the discard port: nothing listens
    with pytest.raises(errors.InputError, match="could not download http://127.0.0.1:9/lastfm_play.csv"):
        data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"))


def test_truncated_download_leaves_no_file_that_a_later_run_would_trust(served, tmp_path):
    url = served(truncate=True)
    with pytest.raises(errors.InputError, match="could not download"):
        data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert not [n for n in os.listdir(tmp_path / "k" / "lastfm") if n in data.COLUMNS]
    good = served()
    plays = data.load("lastfm", root_url=good, explicit_url=True, cache_dir=str(tmp_path / "k"))
    assert len(plays.user_ids) > 200


def test_cached_file_that_does_not_parse_is_downloaded_again(served, tmp_path):
    url = served()
    cache = tmp_path / "k" / "lastfm"
    cache.mkdir(parents=True)
    for name in data.COLUMNS:
        (cache / name).write_text("garbage\n\x00\x01")
    (cache / ".source-url").write_text(url + "\n")   # this URL's download, then damaged
    messages = []
    plays = data.load("lastfm", root_url=url, explicit_url=True, cache_dir=str(tmp_path / "k"),
                      log=messages.append)
    assert len(plays.user_ids) > 200
    assert any("downloading again" in m for m in messages)


def test_plain_http_needs_an_explicit_root_url(tmp_path):
    with pytest.raises(errors.InputError, match="must start with https://"):
        data.load("lastfm", root_url="http://127.0.0.1:9/", cache_dir=str(tmp_path))
    with pytest.raises(errors.InputError, match="must start with https://"):
        data.load("lastfm", root_url="file:///etc/", explicit_url=True, cache_dir=str(tmp_path))
