"""bench/movielens.py: MovieLens 100K in the notebook's CSV format, read back by data.py."""
import os
import sys
import zipfile

import numpy as np
import pytest

import data
from conftest import bench_help

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import movielens  # noqa: E402


INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t242\t3\t881250949\n186\t302\t3.0\t891717742\n196\t302\t5\t881250950\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime\n"
        "400\tNever Rated\t1995\tDrama\n")
USER = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "186\t39\tF\texecutive\t00000\n196\t49\tM\twriter\t55105\n")


def _wheel(path, inter=INTER):
    with zipfile.ZipFile(path, "w") as wheel:
        for kind, text in (("inter", inter), ("item", ITEM), ("user", USER)):
            wheel.writestr(f"{movielens.WHEEL_FOLDER}.{kind}", text)
    return str(path)


def test_wheel_becomes_csvs_that_data_reads_with_ids_in_the_original_order(tmp_path):
    out = tmp_path / "out"
    assert movielens.main([_wheel(tmp_path / "r.whl"), str(out)]) == 0
    plays = data.load_folder(str(out), use_cache=False)
    assert (plays.num_users, plays.num_artists) == (2, 3)     # users 186, 196; movies 242, 302, 400
    pairs = sorted(zip(plays.user_ids.tolist(), plays.artist_ids.tolist(),
                          plays.play_counts.tolist()))
    assert pairs == [(0, 1, 3), (1, 0, 3), (1, 1, 5)]
    assert list(plays.artist_names) == ["Kolya (1996)", "L.A. Confidential (1997)",
                                        "Never Rated (1995)"]
    assert (out / "lastfm_user.csv").read_text().splitlines()[1:] == ["0,F,39,", "1,M,49,"]


def test_grouplens_u_data_gives_the_same_plays_and_names_from_u_item(tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n"
                                     "196\t302\t5\t881250950\n")
    (tmp_path / "u.item").write_bytes("242|Kolya (1996)|24-Jan-1997\n"
                                      "302|Caf\u00e9 (1997)|01-Jan-1997\n".encode("latin-1"))
    out = tmp_path / "out"
    assert movielens.main([str(tmp_path / "u.data"), str(out)]) == 0
    plays = data.load_folder(str(out), use_cache=False)
    assert np.array_equal(np.sort(plays.play_counts), [3, 3, 5])
    assert list(plays.artist_names) == ["Kolya (1996)", "Caf\u00e9 (1997)"]


@pytest.mark.parametrize("inter, message", [
    (INTER + "196\t9x\t4\t881250951\n", "line 5 has movie '9x'; expected an integer"),
    (INTER + "196\t242\n", "line 5 has 2 fields; expected 4"),
    (INTER.replace("\t3\t881250949", "\t3.5\t881250949"), "line 2 has rating '3.5'"),
])
def test_bad_line_is_one_line_naming_the_file_and_line(tmp_path, capsys, inter, message):
    with pytest.raises(SystemExit) as exit_:
        movielens.main([_wheel(tmp_path / "r.whl", inter), str(tmp_path / "out")])
    assert str(exit_.value).startswith(f"error: {tmp_path / 'r.whl'}:")
    assert message in str(exit_.value) and "\n" not in str(exit_.value)


def test_zip_without_ml_100k_and_a_missing_file_are_one_line(tmp_path):
    with zipfile.ZipFile(tmp_path / "other.whl", "w") as wheel:
        wheel.writestr("other/file.txt", "x")
    with pytest.raises(SystemExit, match=r"^error: .*other\.whl: no ml-100k in this file"):
        movielens.main([str(tmp_path / "other.whl"), str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"^error: .*No such file or directory"):
        movielens.main([str(tmp_path / "missing.data"), str(tmp_path / "out")])


def test_ml_100k_files_that_are_not_text_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*r\.whl: ml-100k's files are not UTF-8 text"):
        movielens.main([_wheel(tmp_path / "r.whl", INTER.encode() + b"\xff\n"),
                        str(tmp_path / "out")])


def test_help_lists_both_arguments_and_a_wrong_count_is_a_usage_error(capsys):
    text = bench_help("movielens.py", forbidden="environ")
    arguments = " ".join(text.partition("positional arguments:")[2].split())
    assert arguments.startswith("source RecBole's wheel")
    assert " out the folder to write the three CSVs" in arguments
    with pytest.raises(SystemExit) as exit_:
        movielens.main(["only-one"])
    assert exit_.value.code == 2
    assert "the following arguments are required: out" in capsys.readouterr().err
