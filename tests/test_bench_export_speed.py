"""bench/export_speed.py: its options, and a run at a tiny scale that times both paths and finds
the export ranking as --recommend_user does (its full run takes minutes: docs/results.md)."""
import json
import os
import sys

import pytest

from conftest import help_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import export_speed  # noqa: E402


def test_export_speed_help_lists_every_option_with_its_default():
    options = help_of("export_speed.py")
    assert set(options) == {"-h", "--scale", "--users", "--repeats", "--seed"}
    for option, default in (("--scale", "1.0"), ("--users", "1000"), ("--repeats", "3"),
                            ("--seed", "0")):
        assert f"(default: {default})" in options[option], option


def test_bad_option_values_are_refused_before_any_work(capsys):
    for argument in ("--scale=0", "--users=0", "--repeats=0"):
        with pytest.raises(SystemExit) as exit_:
            export_speed.main([argument])
        assert exit_.value.code == 2
        assert argument.split("=")[0] in capsys.readouterr().err


def test_a_tiny_run_times_both_paths_and_finds_the_same_rankings(capsys):
    assert export_speed.main(["--scale=0.002", "--users=40", "--repeats=2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["users"] == 718 and result["artists"] == 320 and result["k"] == 10
    assert result["export_mb"] > 0 and result["export_seconds"] > 0
    assert list(result["calls"]) == ["1 user", "40 users"]
    for call in result["calls"].values():
        assert call["same_artists_and_order"] is True
        assert call["export_seconds"] > 0 and call["recommend_user_seconds"] > 0
    assert lines[-3].startswith("| 1 user | ") and lines[-2].startswith("| 40 users | ")
