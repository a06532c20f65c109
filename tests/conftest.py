import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402

import data  # noqa: E402

# The compiled kernels (kernels.cc) are built with g++ on first use; where there is none the
# script runs on TensorFlow ops (tests/test_cli.py checks that), and a test of the kernels
# themselves has nothing to test
needs_gxx = pytest.mark.skipif(shutil.which("g++") is None,
                               reason="no C++ compiler (g++) on PATH: kernels.cc cannot be built")


def write_csvs(folder, play_df, artist_df, user_df):
    os.makedirs(folder, exist_ok=True)
    play_df.to_csv(os.path.join(folder, data.PLAY_FILE), index=False)
    artist_df.to_csv(os.path.join(folder, data.ARTIST_FILE), index=False)
    user_df.to_csv(os.path.join(folder, data.USER_FILE), index=False)
    return str(folder)


@pytest.fixture
def planted_dir(tmp_path):
    """A small planted data set as the three CSVs: 300 users, 400 artists, about 9,000 plays."""
    return write_csvs(tmp_path / "csv", *data.make_planted(300, 400, 9_000, seed=3))
