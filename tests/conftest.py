import ast
import os
import shutil
import subprocess
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEVER_IMPORTED = {"ncf_lastfm", "classic", "movielens", "paired", "quality", "speed", "step_time"}


def bench_help(script, forbidden="environ.get"):
    """`python bench/SCRIPT --help`'s text, once the script is found to import neither another
    bench script nor ncf_lastfm, and to read no environment variable (`forbidden` in its
    source, nor getenv)."""
    path = os.path.join(ROOT, "bench", script)
    with open(path, encoding="utf-8") as stream:
        source = stream.read()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & NEVER_IMPORTED
    assert forbidden not in source and "getenv" not in source
    process = subprocess.run([sys.executable, path, "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert "/tmp" not in process.stdout and "../" not in process.stdout
    return process.stdout


def help_of(script):
    """`bench_help(script)`'s options -> {"--name": its help on one line}."""
    options = {}
    for line in bench_help(script).partition("\noptions:\n")[2].splitlines():
        if line.startswith("  -"):
            name = line.split()[0].rstrip(",")
            options[name] = line
        elif line.startswith("   ") and options:
            options[name] += line
    return {name: " ".join(text.split()) for name, text in options.items()}


def pytest_collection_modifyitems(config, items):
    """Under KERAS_BACKEND=jax (CI runs the fast tests under both backends), the tests marked
    tensorflow_only are left out: they test TensorFlow's half of the seam (tf_fast.py, the
    compiled kernels, tf.data), or start their own processes on the backends they name."""
    import backend
    if not backend.is_jax():
        return
    kept = [item for item in items if item.get_closest_marker("tensorflow_only") is None]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
