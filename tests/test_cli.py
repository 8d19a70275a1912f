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


# ---------------------------------------------------------------------- deleverage stress

import json  # noqa: E402
from pathlib import Path  # noqa: E402

SMALL = ["stress", "--positions", "3000", "--accounts", "600", "--markets", "3", "--seed", "2", "--no-progress"]


def test_stress_writes_summary_report_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(SMALL + ["--shock", "-0.1", "--paths", "3", "--steps", "10", "--policies", "queue,pro_rata,funding_index",
                         "--out", str(out), "--parquet"]) == 0
    text = capsys.readouterr().out
    for policy in ("queue", "pro_rata", "funding_index"):
        assert policy in text
    assert "fund needed VaR" in text and "bad debt" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["policies"]) == {"queue", "pro_rata", "funding_index"}
    q = summary["policies"]["queue"]
    assert q["paths"] == 3 and q["steps"] == 11  # the shock is step 0
    assert q["liquidations_mean"] > 0 and "fund_needed_var_0.99" in q
    assert summary["policies"]["funding_index"]["adl_notional_mean"] == 0.0  # a haircut policy never closes
    report = (out / "report.md").read_text()
    assert "| metric | queue | pro_rata | funding_index |" in report
    for png in ("fund.png", "bad_debt.png", "adl.png", "haircuts.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    for pq in ("series.parquet", "accounts.parquet", "summary.parquet"):
        assert (out / pq).stat().st_size > 0


def test_stress_runs_every_policy_lab_policy_with_theta(tmp_path: Path) -> None:
    names = "queue,capped_pro_rata,risk_aware,min_max_lots,random_walk,haircut:capped_pro_rata"
    assert main(SMALL + ["--shock", "-0.15", "--paths", "2", "--steps", "5", "--policies", names, "--cap", "0.3",
                         "--theta", "1", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["policies"]) == set(names.split(","))
    # theta = 1: the last resort takes every deficit; the fund pays only what the winners
    # could not (ADL never takes a winner below zero equity), never more than the deficit
    for name, totals in summary["policies"].items():
        assert totals["paths"] == 2, name
        assert totals["fund_used_mean"] <= totals["deficit_mean"], name
    assert summary["policies"]["queue"]["deficit_mean"] > 0  # there was something to cover


def test_stress_shock_alone_is_one_path_of_one_step_and_html_report(tmp_path: Path) -> None:
    assert main(SMALL + ["--shock", "-0.3", "--policies", "queue", "--format", "html", "--out", str(tmp_path)]) == 0
    q = json.loads((tmp_path / "summary.json").read_text())["policies"]["queue"]
    assert (q["paths"], q["steps"]) == (1, 1)
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<table" in page


def test_stress_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    args = SMALL + ["--paths", "2", "--steps", "15", "--vol", "0.02", "--policies", "queue,haircut:pro_rata"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--threads", "1"]) == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())["policies"]
    b = json.loads((tmp_path / "b" / "summary.json").read_text())["policies"]
    assert a == b


def test_stress_loads_a_book_file(tmp_path: Path) -> None:
    import pandas as pd

    book = pd.DataFrame({"account": [1, 2, 3, 4], "market": ["BTC", "BTC", "ETH", "ETH"], "size": [1.0, -1.0, 10.0, -10.0],
                         "entry_price": [100.0, 100.0, 10.0, 10.0], "collateral": [12.0, 1000.0, 11.0, 1000.0]})
    path = tmp_path / "book.csv"
    book.to_csv(path, index=False)
    assert main(["stress", "--book", str(path), "--shock", "-0.2", "--fund", "0", "--policies", "queue",
                 "--no-progress", "--out", str(tmp_path / "out")]) == 0
    q = json.loads((tmp_path / "out" / "summary.json").read_text())["policies"]["queue"]
    # both longs are bankrupt at -20%: 1 has 12 - 20 = -8, 3 has 11 - 20 = -9
    assert q["liquidations_mean"] == 2 and q["bad_debt_mean"] == 0.0
    assert q["accounts_hit"] == 2  # the two shorts are deleveraged


@pytest.mark.parametrize("args", [["stress", "--policies", "queue,lottery"], ["stress", "--paths", "-1"],
                                  ["stress", "--steps", "0"], ["stress", "--policies", "sideways:queue"],
                                  ["stress", "--format", "pdf"], ["stress", "--policies", "queue,queue"],
                                  ["stress", "--cap", "1.5"], ["stress", "--theta", "lots"], ["stress", "--theta", "-0.2"]])
def test_stress_bad_arguments_exit_with_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert "error" in capsys.readouterr().err


def test_stress_refuses_a_malformed_book_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "book.csv"
    path.write_text("account,market,size,entry_price\n1,BTC,1.0,100\n")
    assert main(["stress", "--book", str(path), "--shock", "-0.1", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "missing column 'collateral'" in capsys.readouterr().err
    path.write_text("account,market,size,entry_price,collateral\n1,BTC,one,100,5\n2,BTC,-1,100,5\n")
    assert main(["stress", "--book", str(path), "--shock", "-0.1", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "book.size at line 2 of book.csv: expected a finite number (got 'one')" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_stress_refuses_nothing_to_run_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMALL + ["--paths", "0"]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert main(SMALL + ["--shock", "-2"]) == 2
    assert main(SMALL + ["--confidence", "1.5", "--shock", "-0.1"]) == 2
    assert main(SMALL + ["--counterparty", "999999", "--shock", "-0.1"]) == 2
    assert "--counterparty" in capsys.readouterr().err


def test_help_documents_every_stress_option() -> None:
    ran = subprocess.run([sys.executable, "-m", "deleverage.cli", "stress", "--help"], capture_output=True, text=True)
    assert ran.returncode == 0
    from deleverage.cli import _build_parser

    stress = _build_parser()._subparsers._group_actions[0].choices["stress"]  # type: ignore[union-attr]
    options = [o for a in stress._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert len(options) >= 25
    for option in options:
        assert option in ran.stdout
    top = subprocess.run([sys.executable, "-m", "deleverage.cli", "--help"], capture_output=True, text=True)
    assert "stress" in top.stdout and "demo" in top.stdout


# ---------------------------------------------------------------------- user errors, version, every policy

import deleverage  # noqa: E402
from deleverage.waterfall import MODES, POLICIES  # noqa: E402

TINY_DEMO = ["demo", "--positions", "3000", "--accounts", "300", "--markets", "3", "--seed", "3"]


def _cli(*args: str, shell_suffix: str = "") -> subprocess.CompletedProcess[str]:
    """The console command in a fresh interpreter (as a user's shell runs it)."""
    cmd = " ".join([sys.executable, "-m", "deleverage.cli", *args]) + shell_suffix
    return subprocess.run(["bash", "-c", cmd + "; exit ${PIPESTATUS[0]}"], capture_output=True, text=True)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"deleverage {version('deleverage')}"
    assert version("deleverage") == deleverage.__version__


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", POLICIES)
def test_demo_accepts_every_policy_and_mode(policy: str, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    if mode == "close" and policy == "funding_index":
        # the one combination the library refuses: a one-line error, no traceback
        assert main([*TINY_DEMO, "--policy", policy, "--mode", mode]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "funding_index" in err and "haircut" in err
        return
    assert main([*TINY_DEMO, "--policy", policy, "--mode", mode]) == 0
    out = capsys.readouterr().out
    assert f"last resort: {mode}/{policy}/" in out
    assert "no negative equity left" in out


def test_demo_funding_index_alone_runs_in_haircut_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY_DEMO, "--policy", "funding_index"]) == 0
    assert "last resort: haircut/funding_index/" in capsys.readouterr().out


def test_demo_help_lists_every_policy() -> None:
    ran = _cli("demo", "--help")
    for name in (*POLICIES, *MODES):
        assert name in ran.stdout


@pytest.mark.parametrize("args", [
    ["demo", "--policy", "funding_index", "--mode", "close"],   # haircut-only policy in close mode
    ["demo", "--policy", "queue", "--cap", "0.3"],              # cap is not used by the queue
    ["demo", "--policy", "pro_rata", "--lot", "2"],             # lot is not used by pro_rata
    ["demo", "--policy", "risk_aware", "--g", "cubic"],         # unknown risk function
    ["demo", "--positions", "0"],                               # parser-level error
    ["demo", "--policy", "lottery"],
    ["stress", "--book", "no-such-book.csv", "--shock", "-0.1", "--no-progress"],
    ["stress", "--positions", "2000", "--accounts", "200", "--shock", "-0.1", "--no-progress", "--counterparty", "99999"],
])
def test_user_errors_are_one_line_and_exit_2(args: list[str]) -> None:
    ran = _cli(*args)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], ran.stderr


def test_closed_pipe_is_one_line_and_exit_2() -> None:
    # `true` reads nothing and exits at once: every write of the demo meets a closed pipe
    ran = _cli(*TINY_DEMO, shell_suffix=" | true")
    assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr, ran.stderr
    assert ran.returncode == 2, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1


def test_stress_into_head_has_no_traceback() -> None:
    ran = _cli("stress", "--positions", "2000", "--accounts", "200", "--markets", "2", "--shock", "-0.2", "--no-progress",
               "--out", "$(mktemp -d)", shell_suffix=" | head -1")
    assert "Traceback" not in ran.stderr and "Exception ignored" not in ran.stderr, ran.stderr
    assert ran.returncode in (0, 2), ran.stderr
    assert ran.stdout.startswith("deleverage stress:")
