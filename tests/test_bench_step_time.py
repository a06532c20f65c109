"""bench/step_time.py: seconds a training step at a synthetic scale, and the epoch they imply."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))
import step_time  # noqa: E402


def test_step_time_reports_each_window_and_the_epoch_they_imply(capsys):
    assert step_time.main(["--scale=0.005", "--warmup=2", "--window=5", "--windows=3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["model"] == "neumf" and result["user_input"] == "history"   # the defaults
    assert result["rows_a_step"] == 1024 // 9                    # a play and its 8 negatives
    assert -(-result["training_plays"] // result["rows_a_step"]) == result["steps_an_epoch"]
    assert len(result["seconds_a_step"]) == 3 and min(result["seconds_a_step"]) > 0
    assert sorted(result["seconds_a_step"])[1] == result["median_seconds_a_step"]
    minutes = result["median_seconds_a_step"] * result["steps_an_epoch"] / 60
    assert result["epoch_minutes"] == pytest.approx(minutes, abs=0.051)
    assert result["environment"]["cpu"]
    assert lines[-2].startswith("neumf (history input), scale 0.005: ")


def test_step_time_with_the_id_input_and_more_steps_than_an_epoch(capsys):
    assert step_time.main(["--scale=0.005", "--user_input=id", "--warmup=1", "--window=2",
                           "--windows=1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["user_input"] == "id"
    with pytest.raises(SystemExit, match="an epoch has"):
        step_time.main(["--scale=0.005", "--warmup=1", "--window=100000", "--windows=1"])
