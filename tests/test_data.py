"""Contracts of data.py: reading and checking the CSVs, the split, the paper's file format."""
import os
import re
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import errors
import data
from conftest import write_csvs
from split import count_untrained, leave_one_out, read_ncf_split, split_digest, write_ncf_split


def tiny_frames():
    play = pd.DataFrame({"user_id": [0, 0, 0, 1, 1, 2, 2, 2, 3],
                         "artist_id": [0, 1, 2, 1, 3, 0, 2, 4, 4],
                         "plays": [5, 3, 1, 7, 2, 9, 4, 4, 1]})
    artist = pd.DataFrame({"artist_id": range(6), "artist_name": [f"a{i}" for i in range(6)]})
    user = pd.DataFrame({"user_id": range(4), "gender": "", "age": -1, "country": ""})
    return play, artist, user


def test_split_holds_out_one_item_per_eligible_user_and_keeps_every_pair():
    plays = data.frames_to_plays(*data.make_planted(200, 300, 5_000, seed=1))
    split = leave_one_out(plays, 20, seed=0, validation=True)
    counts = np.bincount(plays.user_ids, minlength=plays.num_users)
    assert sorted(split.test_users) == sorted(np.flatnonzero(counts >= 2))
    assert sorted(split.valid_users) == sorted(np.flatnonzero(counts >= 3))
    everything = set(zip(split.train_users, split.train_items)) | \
        set(zip(split.test_users, split.test_items)) | set(zip(split.valid_users, split.valid_items))
    assert everything == set(zip(plays.user_ids, plays.artist_ids))
    assert len(split.train_users) + len(split.test_users) + len(split.valid_users) == len(plays.user_ids)


def test_split_candidates_are_unplayed_distinct_and_seeded():
    plays = data.frames_to_plays(*data.make_planted(200, 300, 5_000, seed=1))
    first = leave_one_out(plays, 30, seed=5)
    again = leave_one_out(plays, 30, seed=5)
    other = leave_one_out(plays, 30, seed=6)
    assert np.array_equal(first.test_negatives, again.test_negatives)
    assert np.array_equal(first.test_items, again.test_items)
    assert not np.array_equal(first.test_negatives, other.test_negatives)
    played = set(zip(plays.user_ids, plays.artist_ids))
    for user, row in zip(first.test_users, first.test_negatives):
        assert len(set(row)) == 30
        assert not any((user, item) in played for item in row)


def test_test_item_is_the_same_with_validation_on_or_off():
    plays = data.frames_to_plays(*data.make_planted(100, 200, 2_000, seed=2))
    plain = leave_one_out(plays, 10, seed=0)
    valid = leave_one_out(plays, 10, seed=0, validation=True)
    assert np.array_equal(plain.test_items, valid.test_items)
    assert set(zip(valid.valid_users, valid.valid_items)).isdisjoint(
        zip(valid.test_users, valid.test_items))


@pytest.mark.parametrize("num_artists", [2, 5])
def test_planted_data_with_an_empty_last_taste_group_is_made(num_artists):
    # fewer artists than taste groups leaves groups empty; an empty last group starts at
    # num_artists, whose index was an IndexError (--dataset=synthetic --scale=1e-5)
    play_df, artist_df, _ = data.make_planted(4, num_artists, 17, seed=42)
    assert play_df.artist_id.between(0, num_artists - 1).all() and len(play_df) > 0


def test_users_with_one_artist_only_train():
    plays = data.frames_to_plays(*tiny_frames())
    split = leave_one_out(plays, 1, seed=0)
    assert 3 not in split.test_users          # user 3 played one artist
    assert 3 in split.train_users


def test_users_who_played_almost_everything_are_left_out_of_testing_with_a_count():
    play = pd.DataFrame({"user_id": [0] * 9 + [1, 1, 2, 2],
                         "artist_id": list(range(9)) + [0, 1, 2, 3], "plays": 1})
    artist = pd.DataFrame({"artist_id": range(10), "artist_name": [f"a{i}" for i in range(10)]})
    user = pd.DataFrame({"user_id": range(3), "gender": "", "age": -1, "country": ""})
    split = leave_one_out(data.frames_to_plays(play, artist, user), 3, seed=0)
    assert 0 not in split.test_users and split.num_untestable == 1
    assert sorted(split.test_users) == [1, 2]


def test_num_eval_negatives_beyond_any_users_unplayed_artists_is_refused():
    plays = data.frames_to_plays(*tiny_frames())
    with pytest.raises(errors.InputError, match="NUM_EVAL_NEGATIVES=99"):
        leave_one_out(plays, 99, seed=0)


def test_duplicates_are_merged_and_counted(tmp_path):
    play, artist, user = tiny_frames()
    play = pd.concat([play, play.iloc[:2]])
    plays = data.load_folder(write_csvs(tmp_path, play, artist, user), use_cache=False)
    assert plays.num_duplicates == 2 and len(plays.user_ids) == 9
    assert plays.play_counts[(plays.user_ids == 0) & (plays.artist_ids == 0)][0] == 10


def test_crlf_and_bom_are_accepted(tmp_path):
    folder = write_csvs(tmp_path, *tiny_frames())
    path = os.path.join(folder, data.PLAY_FILE)
    text = open(path).read().replace("\n", "\r\n")
    with open(path, "wb") as stream:
        stream.write(b"\xef\xbb\xbf" + text.encode())
    plays = data.load_folder(folder, use_cache=False)
    assert len(plays.user_ids) == 9


def test_cache_round_trip_gives_the_same_data(tmp_path):
    play, artist, user = tiny_frames()
    artist.loc[1, "artist_name"] = "Sigur Rós"
    folder = write_csvs(tmp_path, play, artist, user)
    first = data.load_folder(folder)
    assert os.path.isfile(os.path.join(folder, "lastfm_cache.npz"))
    second = data.load_folder(folder)
    assert np.array_equal(first.artist_ids, second.artist_ids)
    assert list(second.artist_names) == list(first.artist_names)
    assert second.artist_names[1] == "Sigur Rós"


def test_an_edit_that_keeps_size_and_modification_time_is_read_not_the_cache(tmp_path):
    play, artist, user = tiny_frames()
    folder = write_csvs(tmp_path, play, artist, user)
    first = data.load_folder(folder)
    path = os.path.join(folder, data.PLAY_FILE)
    before = os.stat(path)
    text = open(path).read()
    edited = text.replace("\n0,", "\n1,", 1)           # the first play moves to user 1
    assert edited != text and len(edited) == len(text)
    time.sleep(0.01)
    with open(path, "w") as stream:
        stream.write(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))   # as `cp -p` or `touch -d`
    assert os.path.getsize(path) == before.st_size
    second = data.load_folder(folder)
    assert not np.array_equal(first.user_ids, second.user_ids)
    assert np.array_equal(second.user_ids, data.load_folder(folder, use_cache=False).user_ids)


BAD_CASES = [
    ("missing column", lambda p, a, u: (p.rename(columns={"plays": "count"}), a, u), "missing column 'plays'"),
    ("fractional artist id not in the artists file", lambda p, a, u: (p.assign(artist_id=p.artist_id.astype(float).where(p.index != 1, 1.5)), a, u), r"artist_id '1.5' \(row 3\) is not in lastfm_artist.csv"),
    ("text artist id not in the artists file", lambda p, a, u: (p.assign(artist_id=p.artist_id.astype(object).where(p.index != 4, "Björk")), a, u), r"artist_id 'Björk' \(row 6\) is not in lastfm_artist.csv"),
    pytest.param("missing user id", lambda p, a, u: (p.assign(user_id=p.user_id.astype(float).where(p.index != 0)), a, u), "column 'user_id' row 2 is missing; every row needs an id"),
    pytest.param("missing artist id", lambda p, a, u: (p.assign(artist_id=p.artist_id.astype(object).where(p.index != 3, "")), a, u), "column 'artist_id' row 5 is missing; every row needs an id"),
    ("unknown artist", lambda p, a, u: (p, a[a.artist_id != 4], u), "artist_id 4 .* is not in lastfm_artist.csv"),
    ("text plays", lambda p, a, u: (p.assign(plays=p.plays.astype(object).where(p.index != 5, "many")), a, u), "'plays' row 7 is 'many'"),
    ("negative plays", lambda p, a, u: (p.assign(plays=p.plays.where(p.index != 6, -2)), a, u), "'plays' row 8 is -2"),
]


@pytest.mark.parametrize("case, change, message", BAD_CASES,
                         ids=[c.values[0] if hasattr(c, "values") else c[0] for c in BAD_CASES])
def test_bad_csv_is_refused_with_a_message_naming_file_column_and_value(tmp_path, case, change, message):
    folder = write_csvs(tmp_path, *change(*tiny_frames()))
    with pytest.raises(errors.InputError, match=message) as caught:
        data.load_folder(folder, use_cache=False)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name, change, message", [
    (data.USER_FILE, "empty", "lastfm_user.csv: the file is empty"),
    (data.ARTIST_FILE, "empty", "lastfm_artist.csv: the file is empty"),
    (data.PLAY_FILE, "empty", "lastfm_play.csv: the file is empty"),
    (data.PLAY_FILE, "removed", r"lastfm_play.csv: file not found; the folder must hold "
                                r"lastfm_play.csv \(and may hold lastfm_artist.csv and "
                                r"lastfm_user.csv\)"),
])
def test_missing_and_empty_files_are_refused(tmp_path, name, change, message):
    folder = write_csvs(tmp_path, *tiny_frames())
    if change == "empty":
        open(os.path.join(folder, name), "w").close()
    else:
        os.remove(os.path.join(folder, name))
    with pytest.raises(errors.InputError, match=message) as caught:
        data.load_folder(folder, use_cache=False)
    assert "\n" not in str(caught.value)


def test_a_folder_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(errors.InputError, match="is not a folder"):
        data.load_folder(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("removed", [[data.USER_FILE], [data.ARTIST_FILE],
                                     [data.USER_FILE, data.ARTIST_FILE]])
def test_only_the_plays_file_is_required(tmp_path, removed):
    folder = write_csvs(tmp_path, *tiny_frames())
    whole = data.load_folder(folder, use_cache=False)
    for name in removed:
        os.remove(os.path.join(folder, name))
    plays = data.load_folder(folder, use_cache=False)
    assert np.array_equal(plays.user_ids, whole.user_ids)
    assert np.array_equal(plays.artist_ids, whole.artist_ids)
    assert np.array_equal(plays.play_counts, whole.play_counts)
    if data.ARTIST_FILE in removed:          # no names: an artist is named by its id
        assert [plays.artist_names[a] for a in np.unique(plays.artist_ids)] == \
            [str(a) for a in np.unique(plays.artist_ids)]
    else:
        assert list(plays.artist_names) == list(whole.artist_names)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["user_id", "artist_id", "plays"]), st.integers(0, 8),
       st.one_of(st.text(alphabet="abcxyz!?", min_size=1, max_size=5), st.integers(-1000, -1),
                 st.floats(0.1, 0.9), st.just("")))
def test_any_cell_is_read_as_documented_or_refused_naming_its_row(tmp_path_factory, column,
                                                                  row, bad):
    """plays: a number of 0 or more (a fraction is one); an id: any text or number, and a
    played artist must be named in the artists file. (A missing id: BAD_CASES.)"""
    if bad == "" and column != "plays":
        return
    play, artist, user = tiny_frames()
    play = play.astype(object)
    play.loc[row, column] = bad
    folder = write_csvs(tmp_path_factory.mktemp("bad"), play, artist, user)
    if column == "plays" and isinstance(bad, float):
        assert data.load_folder(folder, use_cache=False).play_counts.sum() > 0
        return  # fractional plays are a valid number
    if column == "user_id" and bad != "":     # another kind of id: mapped, and kept for outputs
        plays = data.load_folder(folder, use_cache=False)
        assert plays.user_labels is not None and str(bad) in set(plays.user_labels)
        assert len(plays.user_labels) == plays.num_users == len(set(play.user_id.astype(str)))
        return
    if bad == "":
        message = rf"column 'plays' row {row + 2} is missing"
    elif column == "artist_id":
        message = rf"artist_id '{re.escape(str(bad))}' \(row {row + 2}\) is not in lastfm_artist.csv"
    else:
        message = rf"column 'plays' row {row + 2} is '?{re.escape(str(bad))}'?; expected a number"
    with pytest.raises(errors.InputError, match=f"lastfm_play.csv: {message}"):
        data.load_folder(folder, use_cache=False)


def test_paper_format_round_trip(tmp_path):
    plays = data.frames_to_plays(*data.make_planted(150, 200, 3_000, seed=4))
    split = leave_one_out(plays, 25, seed=0, validation=True)
    prefix = str(tmp_path / "lastfm")
    write_ncf_split(split, prefix)
    _, back = read_ncf_split(prefix, seed=0, validation=True)
    assert np.array_equal(back.test_users, split.test_users)
    assert np.array_equal(back.test_items, split.test_items)
    assert np.array_equal(back.test_negatives, split.test_negatives)
    pairs = set(zip(split.train_users, split.train_items)) | set(zip(split.valid_users, split.valid_items))
    back_pairs = set(zip(back.train_users, back.train_items)) | set(zip(back.valid_users, back.valid_items))
    assert pairs == back_pairs


# ----------------------------------------------------------------------------------------------
# Inputs an audit found to end in a traceback, a memory error or a silent wrong answer

@pytest.mark.parametrize("column, largest", [
    ("artist_id", 10**14), ("user_id", 10**14),
    ("artist_id", 1060),                        # 1061 rows > 10 * 6 distinct + 1000
    ("user_id", 2**63),                         # beyond int64 (pandas reads it as uint64)
    ("user_id", -4),
])
def test_ids_too_sparse_for_a_table_are_mapped_to_rows_not_given_one_each(tmp_path, column,
                                                                          largest):
    # the model and the samplers keep a row for every id up to the largest: 10**14 would ask
    # for 10**14 rows; mapped, the tables have one row per distinct id and outputs the id itself
    play, artist, user = tiny_frames()
    if column == "artist_id":  # artist 5 (unplayed) becomes `largest`, played by user 0
        artist.loc[5, "artist_id"] = play.loc[1, "artist_id"] = largest
    else:                      # user 3 (one play) becomes `largest`
        play, user = play.astype({"user_id": object}), user.astype({"user_id": object})
        user.loc[3, "user_id"] = play.loc[8, "user_id"] = largest
    plays = data.load_folder(write_csvs(tmp_path, play, artist, user), use_cache=False)
    plain = data.frames_to_plays(*tiny_frames())
    labels = plays.artist_labels if column == "artist_id" else plays.user_labels
    assert len(labels) == (plays.num_artists if column == "artist_id" else plays.num_users)
    assert str(largest) in set(labels)
    assert plays.num_users == 4 and plays.num_artists == 6 and len(plays.user_ids) == 9
    if column == "artist_id":                # the renamed artist keeps its name
        row = list(labels).index(str(largest))
        assert plays.artist_names[row] == "a5"
        played_by_0 = {plays.artist_label(a) for a in plays.artist_ids[plays.user_ids == 0]}
        assert played_by_0 == {"0", str(largest), "2"}
    assert sorted(plays.play_counts) == sorted(plain.play_counts)


def test_gaps_in_ids_within_ten_times_the_count_plus_1000_are_accepted(tmp_path):
    play, artist, user = tiny_frames()
    artist.loc[5, "artist_id"] = play.loc[1, "artist_id"] = 1059  # 1060 rows = 10 * 6 + 1000
    plays = data.load_folder(write_csvs(tmp_path, play, artist, user), use_cache=False)
    assert plays.num_artists == 1060 and 1059 in plays.artist_ids


def test_a_row_with_more_fields_than_the_header_is_refused_a_trailing_comma_is_not(tmp_path):
    folder = write_csvs(tmp_path, *tiny_frames())
    path = os.path.join(folder, data.PLAY_FILE)
    lines = open(path).read().splitlines()
    expected = data.load_folder(folder, use_cache=False)
    for extra in (lambda i: ",9" if i == 1 else "",          # only the first row: no shift
                  lambda i: ",9" if i else "",               # every row: no shift to an index
                  lambda i: ",9" if i == 3 else ""):         # a later row
        with open(path, "w") as stream:
            stream.write("\n".join(line + extra(i) for i, line in enumerate(lines)) + "\n")
        with pytest.raises(errors.InputError, match=r"lastfm_play.csv: .*(row|line) [24]") as caught:
            data.load_folder(folder, use_cache=False)
        assert "\n" not in str(caught.value)
    with open(path, "w") as stream:
        stream.write("\n".join(line + ("," if i else "") for i, line in enumerate(lines)) + "\n")
    plays = data.load_folder(folder, use_cache=False)
    assert np.array_equal(plays.play_counts, expected.play_counts)
    assert np.array_equal(plays.artist_ids, expected.artist_ids)


@pytest.mark.parametrize("size, message", [
    (90_000, r"lastfm_play.csv: row 2 has 5 fields but the header has 3; remove the extra fields"),
    (200_000, r"lastfm_play.csv: line 2 is longer than 100,000 bytes"),   # was a csv.Error
])                                                                        # traceback
def test_a_row_with_extra_fields_and_a_long_field_is_one_clean_error(tmp_path, size, message):
    folder = write_csvs(tmp_path, *tiny_frames())
    path = os.path.join(folder, data.PLAY_FILE)
    lines = open(path).read().splitlines()
    lines[1] += "," + "A" * size + ",y"
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    with pytest.raises(errors.InputError, match=message) as caught:
        data.load_folder(folder, use_cache=False)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 1000


def test_a_line_over_the_limit_is_refused_before_it_is_parsed_anywhere_in_the_file(tmp_path):
    folder = write_csvs(tmp_path, *tiny_frames())
    path = os.path.join(folder, data.PLAY_FILE)
    lines = open(path).read().splitlines()
    lines[7] = lines[7][:2] + "9" * 100_001          # one number, longer than any line may be
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")
    with pytest.raises(errors.InputError, match=r"lastfm_play.csv: line 8 is longer than 100,000 "
                                             r"bytes"):
        data.load_folder(folder, use_cache=False)


def test_an_artist_id_with_two_names_is_refused_and_the_same_name_twice_is_not(tmp_path):
    play, artist, user = tiny_frames()
    same = pd.concat([artist, artist.iloc[[2]]], ignore_index=True)
    plays = data.load_folder(write_csvs(tmp_path / "same", play, same, user), use_cache=False)
    assert list(plays.artist_names) == list(artist.artist_name)
    clash = pd.concat([artist, pd.DataFrame({"artist_id": [2], "artist_name": ["other"]})],
                      ignore_index=True)
    with pytest.raises(errors.InputError, match=r"artist_id 2 is named 'a2' \(row 4\) and 'other' "
                                             r"\(row 8\)"):
        data.load_folder(write_csvs(tmp_path / "clash", play, clash, user), use_cache=False)


@pytest.mark.parametrize("num_eval_negatives", [99, 1])
def test_data_where_no_user_has_two_artists_names_that_cause(num_eval_negatives):
    play = pd.DataFrame({"user_id": [0, 1], "artist_id": [0, 1], "plays": [5, 3]})
    artist = pd.DataFrame({"artist_id": range(4), "artist_name": list("abcd")})
    user = pd.DataFrame({"user_id": range(2), "gender": "", "age": -1, "country": ""})
    with pytest.raises(errors.InputError, match="no user has played 2 or more artists"):
        leave_one_out(data.frames_to_plays(play, artist, user), num_eval_negatives, seed=0)


@pytest.mark.parametrize("bad", ["inf", "-inf", "1e300"])
def test_infinite_or_huge_plays_give_one_clean_error_and_no_warning(tmp_path, bad):
    play, artist, user = tiny_frames()
    play = play.astype(object)
    play.loc[0, "plays"] = bad
    folder = write_csvs(tmp_path, play, artist, user)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(errors.InputError, match=rf"'plays' row 2 is ({bad}|1e\+300);"):
            data.load_folder(folder, use_cache=False)


def small_split(tmp_path):
    """A split in the paper's format -> (prefix, {suffix: the file's lines})."""
    plays = data.frames_to_plays(*data.make_planted(60, 80, 600, seed=5))
    prefix = str(tmp_path / "s")
    write_ncf_split(leave_one_out(plays, 5, seed=0), prefix)
    suffixes = (".train.rating", ".test.rating", ".test.negative")
    return prefix, {suffix: open(prefix + suffix).read().splitlines() for suffix in suffixes}


def rewrite(path, lines):
    with open(path, "w") as stream:
        stream.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("value, message", [
    ("-1", r"s.test.negative: negatives must be integer item ids of 0 or more \(line 1 has -1\)"),
    ("99999999", r"s.test.negative: item id 99,999,999 \(line 1\) is far beyond the .* "
                 r"distinct item ids; .* renumber"),
])
def test_split_negative_that_is_negative_or_huge_is_refused(tmp_path, value, message):
    prefix, lines = small_split(tmp_path)
    negative = lines[".test.negative"]
    pair, first, *rest = negative[0].split("\t")
    rewrite(prefix + ".test.negative", ["\t".join([pair, value, *rest])] + negative[1:])
    with pytest.raises(errors.InputError, match=message):
        read_ncf_split(prefix, seed=0)


def test_split_negative_file_without_negatives_is_refused(tmp_path):
    prefix, lines = small_split(tmp_path)
    rewrite(prefix + ".test.negative", [line.split("\t")[0] for line in lines[".test.negative"]])
    with pytest.raises(errors.InputError, match="s.test.negative: line 1 has no negatives"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("suffix", [".train.rating", ".test.rating", ".test.negative"])
def test_split_file_that_is_not_utf8_is_refused(tmp_path, suffix):
    prefix, lines = small_split(tmp_path)
    with open(prefix + suffix, "ab") as stream:
        stream.write(b"\xff\xfe\n")
    with pytest.raises(errors.InputError, match=f"s{suffix}: not UTF-8 text"):
        read_ncf_split(prefix, seed=0)


def test_split_test_pair_in_the_training_file_is_refused(tmp_path):
    prefix, lines = small_split(tmp_path)
    test = lines[".test.rating"]
    rewrite(prefix + ".train.rating", lines[".train.rating"] + [test[2], test[4]])
    user, item = test[2].split("\t")[:2]
    with pytest.raises(errors.InputError, match=rf"s.test.rating: test pair \(user {user}, item "
                                             rf"{item}\) on line 3 is also in .*s.train.rating, "
                                             r"as are 2 of the"):
        read_ncf_split(prefix, seed=0)


def test_split_test_file_with_a_user_twice_is_refused_naming_the_line(tmp_path):
    prefix, lines = small_split(tmp_path)
    test, negative = lines[".test.rating"], lines[".test.negative"]
    rewrite(prefix + ".test.rating", test + [test[2]])          # counted twice in evaluation
    rewrite(prefix + ".test.negative", negative + [negative[2]])
    user = test[2].split("\t")[0]
    with pytest.raises(errors.InputError, match=rf"s.test.rating: line {len(test) + 1} repeats user "
                                             rf"{user} of line 3; give each test user one line"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("tab_on", ["every line", "line 4"])
def test_split_negative_line_with_a_trailing_tab_names_the_line(tmp_path, tab_on):
    prefix, lines = small_split(tmp_path)
    rewrite(prefix + ".test.negative", [line + ("\t" if tab_on == "every line" or i == 3 else "")
                                        for i, line in enumerate(lines[".test.negative"])])
    line = 1 if tab_on == "every line" else 4
    with pytest.raises(errors.InputError, match=rf"s.test.negative: line {line} has an empty field "
                                             r"\(a tab at the end of the line"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("head, message", [                 # both were read silently
    ("(999,999)", r"line 3 is for \(user 999, item 999\) but line 3 of .*s.test.rating is "
                  r"user \d+, item \d+; the two files must list the test pairs in the same order"),
    ("hello", r"line 3 starts with 'hello'; expected \(user,item\)"),
])
def test_split_negative_line_for_another_test_pair_is_refused(tmp_path, head, message):
    prefix, lines = small_split(tmp_path)
    negative = lines[".test.negative"]
    negative[2] = "\t".join([head] + negative[2].split("\t")[1:])
    rewrite(prefix + ".test.negative", negative)
    with pytest.raises(errors.InputError, match="s.test.negative: " + message):
        read_ncf_split(prefix, seed=0)


def test_split_negative_lines_swapped_between_users_are_refused(tmp_path):
    prefix, lines = small_split(tmp_path)
    negative = lines[".test.negative"]
    negative[0], negative[1] = negative[1], negative[0]      # user 1's candidates for user 0
    rewrite(prefix + ".test.negative", negative)
    with pytest.raises(errors.InputError, match=r"s.test.negative: line 1 is for \(user 1,"):
        read_ncf_split(prefix, seed=0)


def test_split_negative_line_with_an_item_twice_is_refused(tmp_path):
    prefix, lines = small_split(tmp_path)                    # was scored, the item counted twice
    negative = lines[".test.negative"]
    fields = negative[3].split("\t")
    fields[3] = fields[1]
    negative[3] = "\t".join(fields)
    rewrite(prefix + ".test.negative", negative)
    with pytest.raises(errors.InputError, match=rf"s.test.negative: line 4 lists item {fields[1]} "
                                             r"twice among its negatives"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("suffix, column, value, message", [
    (".train.rating", 0, "x", "line 4 has user 'x'"),              # was a traceback
    (".test.rating", 1, "abc", "line 4 has item 'abc'"),           # was a traceback
    (".train.rating", 1, "-3", "line 4 has item '-3'"),
    (".train.rating", 0, "2.0", "line 4 has user '2.0'"),
    (".test.rating", 1, "", "line 4 has no item"),
])
def test_split_rating_id_that_is_not_an_id_names_its_line(tmp_path, suffix, column, value,
                                                          message):
    prefix, lines = small_split(tmp_path)
    fields = lines[suffix][3].split("\t")
    fields[column] = value
    rewrite(prefix + suffix, lines[suffix][:3] + ["\t".join(fields)] + lines[suffix][4:])
    with pytest.raises(errors.InputError, match=f"s{suffix}: {message}; user and item must be "
                                             "integer ids of 0 or more"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("suffix, column, value, message", [   # were tracebacks
    (".test.negative", 1, "99999999999999999999", "line 1 has 99999999999999999999, out of range"),
    (".test.rating", 1, "18446744073709551615", "line 1 has item 18446744073709551615, out of range"),
    (".train.rating", 0, "9223372036854775808", "line 1 has user 9223372036854775808, out of range"),
    (".train.rating", 1, "99999999999999999999999",    # beyond uint64 too: named line 1 (was
     "line 1 has item 99999999999999999999999, out of range"),   # another line's item)
])
def test_split_id_beyond_int64_is_one_clean_error(tmp_path, suffix, column, value, message):
    prefix, lines = small_split(tmp_path)
    fields = lines[suffix][0].split("\t")
    fields[column] = value
    rewrite(prefix + suffix, ["\t".join(fields)] + lines[suffix][1:])
    with pytest.raises(errors.InputError, match=f"s{suffix}: {message}"):
        read_ncf_split(prefix, seed=0)


@pytest.mark.parametrize("name, header, message", [
    (data.PLAY_FILE, "user_id,artist_id,plays,plays", "column 'plays' twice (columns 3 and 4)"),
    (data.ARTIST_FILE, "artist_id,artist_id,artist_name", "column 'artist_id' twice (columns 1 and 2)"),
    (data.USER_FILE, "user_id,gender,age,country,gender", "column 'gender' twice (columns 2 and 5)"),
])
def test_a_column_named_twice_in_a_header_is_refused(tmp_path, name, header, message):
    folder = write_csvs(tmp_path, *tiny_frames())
    path = os.path.join(folder, name)
    first, *rows = open(path).read().splitlines()
    extra = {data.PLAY_FILE: lambda row: row + ",1", data.USER_FILE: lambda row: row + ",x",
             data.ARTIST_FILE: lambda row: row.split(",")[0] + "," + row}[name]
    rewrite(path, [header] + [extra(row) for row in rows])    # pandas read plays, plays.1
    with pytest.raises(errors.InputError, match=rf"{name}: the header names {re.escape(message)}; "
                                             r"expected one column each of") as caught:
        data.load_folder(folder, use_cache=False)
    assert "\n" not in str(caught.value)
    play, artist, user = tiny_frames()
    with pytest.raises(errors.InputError, match="lastfm_play.csv: column 'plays' is given twice"):
        data.frames_to_plays(pd.concat([play, play[["plays"]]], axis=1), artist, user)


@pytest.mark.parametrize("column, bad, shown", [
    ("plays", "1e20", r"1e\+20"),
    ("plays", "100000000000000000000", "100000000000000000000"),
    ("plays", "18446744073709551615", "18446744073709551615"),   # was 'is -1' (uint64 wrapped)
])
def test_a_number_beyond_int64_is_out_of_range_not_not_a_number(tmp_path, column, bad, shown):
    play, artist, user = tiny_frames()
    play = play.astype(object)
    play.loc[0, column] = bad
    folder = write_csvs(tmp_path, play, artist, user)
    kind = "a number" if column == "plays" else "an integer id"
    with pytest.raises(errors.InputError, match=rf"lastfm_play.csv: column '{column}' row 2 is "
                                             rf"{shown}; out of range, expected {kind} from 0 to "
                                             r"9,223,372,036,854,775,807"):
        data.load_folder(folder, use_cache=False)


def test_repeated_rows_whose_plays_add_up_past_int64_are_refused_not_wrapped(tmp_path):
    play, artist, user = tiny_frames()
    big = 2**62 + 1                     # each fits in int64, twice does not
    play = pd.concat([play, play.iloc[[0]]], ignore_index=True)
    play.loc[[0, len(play) - 1], "plays"] = big
    folder = write_csvs(tmp_path, play, artist, user)
    with pytest.raises(errors.InputError, match=rf"lastfm_play.csv: the plays of user_id "
                                             rf"{play.user_id[0]} and artist_id "
                                             rf"{play.artist_id[0]} over their repeated rows add "
                                             r"up to more than 9,223,372,036,854,775,807"):
        data.load_folder(folder, use_cache=False)
    play.loc[[0, len(play) - 1], "plays"] = 2**61      # the same rows, summed within range
    merged = data.load_folder(write_csvs(tmp_path / "ok", play, artist, user), use_cache=False)
    first = (merged.user_ids == play.user_id[0]) & (merged.artist_ids == play.artist_id[0])
    assert merged.play_counts[first].tolist() == [2**62]


def test_split_messages_name_the_files_line_after_an_empty_line(tmp_path):
    prefix, lines = small_split(tmp_path)
    test, negative = lines[".test.rating"], lines[".test.negative"]
    rewrite(prefix + ".test.rating", test[:2] + ["", "   "] + test[2:] + [test[2]])
    rewrite(prefix + ".test.negative", negative + [negative[2]])
    user = test[2].split("\t")[0]
    with pytest.raises(errors.InputError, match=rf"s.test.rating: line {len(test) + 3} repeats user "
                                             rf"{user} of line 5; give each test user one line"):
        read_ncf_split(prefix, seed=0)
    train = lines[".train.rating"]
    pair = "\t".join(test[1].split("\t")[:2])                 # a test pair, put in training
    rewrite(prefix + ".test.rating", ["", ""] + test)
    rewrite(prefix + ".test.negative", negative)
    rewrite(prefix + ".train.rating", train + [pair + "\t1\t0"])
    with pytest.raises(errors.InputError, match=r"s.test.rating: test pair \(user \d+, item \d+\) "
                                             r"on line 4 is also in"):
        read_ncf_split(prefix, seed=0)


def gapped_frames(num_users=60, num_artists=80, num_plays=900, seed=5):
    """Planted data whose artist ids are 0, 2, 4, ...: every odd id is a gap (no such artist)."""
    play, artist, user = data.make_planted(num_users, num_artists, num_plays, seed=seed)
    return play.assign(artist_id=play.artist_id * 2), artist.assign(artist_id=artist.artist_id * 2), user


def test_gaps_in_the_artist_ids_are_never_candidates_negatives_or_cached_away(tmp_path):
    folder = write_csvs(tmp_path, *gapped_frames())
    for plays in (data.load_folder(folder), data.load_folder(folder)):   # written, then cached
        assert plays.num_artists == 159 and np.array_equal(plays.artists(), np.arange(0, 159, 2))
        split = leave_one_out(plays, 40, seed=0, validation=True)
        for drawn in (split.test_negatives, split.valid_negatives,
                      split.sampler.sample(split.train_users, np.random.default_rng(0))):
            assert (np.asarray(drawn) % 2 == 0).all()
        counts = np.bincount(plays.user_ids, minlength=plays.num_users)
        assert np.array_equal(split.sampler.num_free, 80 - counts)


def test_an_item_id_no_split_file_names_is_never_a_validation_candidate(tmp_path):
    plays = data.frames_to_plays(*gapped_frames())
    split = leave_one_out(plays, 20, seed=0)
    prefix = str(tmp_path / "gapped")
    write_ncf_split(split, prefix)
    _, back = read_ncf_split(prefix, seed=0, validation=True)
    named = np.unique(np.concatenate([back.train_items, back.test_items, back.valid_items,
                                      back.test_negatives.ravel()]))
    assert (named % 2 == 0).all() and len(back.valid_users) > 0
    assert len(back.sampler.items) == len(named) < back.num_items
    assert np.isin(back.valid_negatives, named).all()


def test_split_training_pair_on_two_lines_is_one_pair_never_validation_and_trained(tmp_path):
    prefix, lines = small_split(tmp_path)
    train = lines[".train.rating"]
    rewrite(prefix + ".train.rating", train + train[::2])     # every other pair given twice
    plays, split = read_ncf_split(prefix, seed=0, validation=True)
    _, plain = read_ncf_split(small_split(tmp_path / "again")[0], seed=0, validation=True)
    assert plays.num_duplicates == len(train[::2])
    keys = split.train_users.astype(np.int64) * split.num_items + split.train_items
    assert len(np.unique(keys)) == len(keys)                  # each pair trained once
    valid = split.valid_users.astype(np.int64) * split.num_items + split.valid_items
    assert not np.isin(valid, keys).any()                     # a validation pair is not trained
    assert len(split.train_users) + len(split.valid_users) == len(train)
    assert np.array_equal(split.valid_items, plain.valid_items)   # the same carve as without


def test_count_untrained_counts_test_users_without_a_training_pair():
    assert count_untrained(np.array([0, 1, 2, 3]), np.array([1, 1, 3]), 5) == 2


def test_split_digest_is_the_same_read_back_with_or_without_validation_and_not_another_seed(
        tmp_path):
    plays = data.frames_to_plays(*data.make_planted(60, 80, 600, seed=5))
    split = leave_one_out(plays, 5, seed=0, validation=True)
    write_ncf_split(split, str(tmp_path / "s"))
    digest = split_digest(split)
    assert split_digest(read_ncf_split(str(tmp_path / "s"), seed=0)[1]) == digest
    assert split_digest(read_ncf_split(str(tmp_path / "s"), seed=3,
                                                 validation=True)[1]) == digest
    assert split_digest(leave_one_out(plays, 5, seed=0)) == digest
    assert split_digest(leave_one_out(plays, 5, seed=1)) != digest


def test_split_negatives_the_user_played_are_scored_as_given_and_counted_or_replaced(tmp_path):
    # published files of papers that built on NCF list some played items (or the held-out
    # item) as negatives, and their tables were scored so
    prefix, lines = small_split(tmp_path)
    test = [line.split("\t") for line in lines[".test.rating"]]
    user, held_out = test[3][:2]
    played = next(l.split("\t")[1] for l in lines[".train.rating"] if l.split("\t")[0] == user)
    negative = lines[".test.negative"]
    fields = negative[3].split("\t")
    fields[2], fields[4] = played, held_out
    rewrite(prefix + ".test.negative", negative[:3] + ["\t".join(fields)] + negative[4:])
    _, plain = read_ncf_split(str(small_split(tmp_path / "plain")[0]), seed=0)
    _, given = read_ncf_split(prefix, seed=0)
    assert given.played_negatives == (2, 1) and not given.replaced_negatives
    assert given.test_negatives[3].tolist() == [int(f) for f in fields[1:]]
    assert np.array_equal(np.delete(given.test_negatives, 3, 0), np.delete(plain.test_negatives, 3, 0))
    _, replaced = read_ncf_split(prefix, seed=0, replace_played=True)
    assert replaced.played_negatives == (2, 1) and replaced.replaced_negatives
    row = replaced.test_negatives[3]
    assert len(set(row.tolist())) == len(row) and int(held_out) not in row
    assert not replaced.sampler.is_played(np.full(len(row), int(user)), row).any()
    kept = [i for i in (1, 3, 5) if i < len(fields)]
    assert [row[i - 1] for i in kept] == [int(fields[i]) for i in kept]   # the others as listed
    assert np.array_equal(np.delete(replaced.test_negatives, 3, 0),
                          np.delete(given.test_negatives, 3, 0))


def test_split_negative_file_with_a_byte_order_mark_is_read(tmp_path):
    prefix, lines = small_split(tmp_path)
    _, plain = read_ncf_split(prefix, seed=0)
    with open(prefix + ".test.negative", "w", encoding="utf-8-sig") as stream:
        stream.write("\n".join(lines[".test.negative"]) + "\n")
    _, split = read_ncf_split(prefix, seed=0)
    assert np.array_equal(split.test_negatives, plain.test_negatives)


@pytest.mark.parametrize("column, value, message", [
    ("artist_id", "abc", r"artist_id 'abc' \(row 10\) is not in lastfm_artist.csv"),
    pytest.param("user_id", "", r"column 'user_id' row 10 is missing"),
    ("plays", "abc", r"column 'plays' row 10 is 'abc'"),
])
def test_csv_messages_name_the_files_line_after_empty_lines(tmp_path, column, value, message):
    folder = tmp_path / "csv"
    write_csvs(folder, *data.make_planted(20, 30, 200, seed=0))
    lines = (folder / data.PLAY_FILE).read_text().splitlines()
    fields = lines[7].split(",")
    fields[lines[0].split(",").index(column)] = value
    lines = lines[:2] + ["", ""] + lines[2:7] + [",".join(fields)] + lines[8:]   # now line 10
    (folder / data.PLAY_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(errors.InputError, match="lastfm_play.csv: " + message):
        data.load_folder(str(folder), use_cache=False)
