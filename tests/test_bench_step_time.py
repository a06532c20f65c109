"""bench/step_time.py: seconds a training step at a synthetic scale, and the epoch they imply;
bench/speed.py's command line (its measurements take minutes, so they run as a benchmark)."""
import json
import os
import sys

import pytest

from conftest import help_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import step_time  # noqa: E402



def test_step_time_help_lists_every_option_with_its_default():
    options = help_of("step_time.py")
    assert set(options) == {"-h", "--scale", "--model", "--user_input", "--seed", "--warmup",
                            "--window", "--windows"}
    for option, default in (("--scale", "1.0"), ("--model", "neumf"), ("--user_input", "''"),
                            ("--seed", "0"), ("--warmup", "64"), ("--window", "256"),
                            ("--windows", "3")):
        assert f"(default: {default}" in options[option], option


def test_speed_help_lists_every_option_with_its_default():
    options = help_of("speed.py")
    assert set(options) == {"-h", "--scale", "--seed", "--write_csv"}
    for option, default in (("--scale", "1.0"), ("--seed", "0"), ("--write_csv", "''")):
        assert f"(default: {default}" in options[option], option


def test_model_settings_are_the_scripts_defaults():
    import ncf_lastfm
    for model, settings in step_time.MODEL_SETTINGS.items():
        expected = {key: ncf_lastfm.MODEL_DEFAULTS[model].get(key, getattr(ncf_lastfm, key))
                    for key in settings}
        assert settings == expected, model


def test_bad_option_values_are_refused_before_any_work(capsys):
    for argument in ("--windows=0", "--scale=-1", "--model=pop"):
        with pytest.raises(SystemExit) as exit_:
            step_time.main([argument])
        assert exit_.value.code == 2
        assert argument.split("=")[0] in capsys.readouterr().err


@pytest.mark.slow
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


@pytest.mark.slow
def test_step_time_with_the_id_input_and_more_steps_than_an_epoch(capsys):
    assert step_time.main(["--scale=0.005", "--user_input=id", "--warmup=1", "--window=2",
                           "--windows=1"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["user_input"] == "id"
    with pytest.raises(SystemExit, match="an epoch has"):
        step_time.main(["--scale=0.005", "--warmup=1", "--window=100000", "--windows=1"])
