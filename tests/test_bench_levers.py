"""bench/batch_levers.py: its options, and a tiny run that names every variant."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT, help_of


def test_batch_levers_lists_its_options():
    options = help_of("batch_levers.py")
    assert set(options) >= {"-h", "--scale", "--rounds", "--calls", "--seed"}


@pytest.mark.slow                     # six models trained in a new process
def test_batch_levers_times_every_variant_on_tiny_data():
    done = subprocess.run([sys.executable, "bench/batch_levers.py", "--scale=0.003",
                           "--rounds=1", "--calls=1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rates = {k: v for k, v in result.items() if "call" in k or "floor" in k}
    assert len(rates) == 6 and all(v > 0 for v in rates.values())
