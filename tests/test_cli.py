"""The `deleverage` console command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deleverage.cli import main


def test_demo_runs_the_crash_and_reports_a_solvent_book(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--positions", "20000", "--accounts", "2000", "--markets", "5", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "waterfall step" in out
    assert "bad debt left" in out
    assert "no negative equity left" in out


@pytest.mark.parametrize("args", [["demo", "--positions", "0"], ["demo", "--mode", "sideways"], ["demo", "--policy", "lottery"],
                                  ["nonsense"], []])
def test_bad_arguments_exit_with_usage(args: list[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2


def test_shock_out_of_range_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--positions", "1000", "--accounts", "100", "--shock", "-1.5"]) == 2
    assert "--shock" in capsys.readouterr().err


def test_console_script_help_documents_every_option() -> None:
    ran = subprocess.run([sys.executable, "-m", "deleverage.cli", "demo", "--help"], capture_output=True, text=True)
    assert ran.returncode == 0
    for option in ("--positions", "--accounts", "--markets", "--shock", "--seed", "--leverage", "--fund",
                   "--slippage-bps", "--mode", "--policy", "--ranking"):
        assert option in ran.stdout
