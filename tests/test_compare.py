"""deleverage.compare and ComparisonTable: rows equal to hand-computed steps, the input
exchange untouched, shocks and paths, rendering, plotting, bad inputs."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from test_metrics import EXEC, MM, adl_book, random_exchange
from waterfall_harness import build_engine

import deleverage
from deleverage import ComparisonTable, MarketClose
from deleverage.errors import InvalidInput, UnknownId


def snapshot(ex):
    """Everything compare could change, as plain values."""
    pos = ex.positions(exact=True)
    return {
        "positions": [tuple(r) for r in zip(pos.account.tolist(), pos.market.tolist(), pos.size.tolist(),
                                            pos.entry_notional.tolist())],
        "balances": {int(a): ex.balance(int(a), exact=True) for a in ex.account_ids()},
        "marks": ex.marks(exact=True).tolist(),
        "step": ex.step,
        "pools": [ex.insurance.balance(p, exact=True) for p in range(ex.insurance.pool_count)],
        "ledger": {k: v.tolist() for k, v in ex.insurance.ledger(exact=True).columns().items()},
        "history": {k: v.tolist() for k, v in ex.insurance.history(exact=True).columns().items()},
    }


def adl_exchange_at_100():
    """adl_book with the mark at 100 (nobody liquidatable): a -11% shock moves it to 89."""
    ex = build_engine(adl_book())
    ex.set_marks([0], np.array([100], dtype=np.int64), exact=True)
    return ex


def test_rows_match_hand_computed_step():
    # The shock -0.11 moves A from 100 to 89 ticks: test_close_queue_whole_position for the
    # queue (taken 10, needed 20, largest 1, touched 3); pro rata closes 10 lots of 12 as
    # 4 (id 2: the leftover lot goes to the smallest id among equal remainders), 3, 3:
    # taken 4 + 3 + 3 = 10, fractions 1, 3/4, 3/4.
    ex = adl_exchange_at_100()
    table = deleverage.compare(ex, {"A": -0.11}, ["queue", "pro_rata"], executor=EXEC)
    assert table.labels == ("queue", "pro_rata")
    q, p = table["queue"], table["pro_rata"]
    assert (q.taken_units, q.needed_units, q.largest_fraction, q.accounts_touched) == (10, 20, 1.0, 3)
    assert (p.taken_units, p.needed_units, p.accounts_touched) == (10, 20, 3)
    assert sorted(p.winner_rows.taken_units.tolist()) == [3, 3, 4]
    assert table.specs[1] == {"mode": "close", "policy": "pro_rata"}


def test_input_exchange_unchanged():
    ex, mm, marks = random_exchange(3, fund=25.0)
    before = snapshot(ex)
    shock = {"M0": -0.3, "M1": 0.2}
    deleverage.compare(ex, shock, ["queue", "pro_rata"], executor=MarketClose(mm, slippage_bps=20))
    deleverage.compare(ex, shock, ["queue", "pro_rata", "funding_index"], executor=MarketClose(mm, slippage_bps=20),
                       mode="haircut")
    path = np.array([marks * 0.9, marks * 0.7, marks])
    deleverage.compare(ex, path, ["queue"], executor=MarketClose(mm))
    assert snapshot(ex) == before
    ex.check_invariants()


def test_each_policy_equals_a_manual_run():
    ex, mm, marks = random_exchange(11, fund=10.0)
    executor = MarketClose(mm, slippage_bps=20)
    table = deleverage.compare(ex, {"M0": -0.35}, [{"policy": "queue", "ranking": "binance", "label": "binance queue"},
                                                    "pro_rata"], executor=executor)
    assert table.labels == ("binance queue", "pro_rata")
    for label, kw in (("binance queue", dict(policy="queue", ranking="binance")), ("pro_rata", dict(policy="pro_rata"))):
        copy = ex.copy()
        ticks = copy.marks(exact=True)[0]
        copy.set_marks([0], np.array([round(ticks * 0.65)], dtype=np.int64), exact=True)
        res = copy.liquidate(executor=executor, exact=True, **kw)
        assert table[label].taken_units + table[label].overshoot_gross_units >= 0
        assert table[label].adl_notional == res.totals.adl_notional / 10**6
        assert table[label].accounts_touched == res.totals.accounts_touched


def test_path_sums_steps():
    # A 2-step path: the first step keeps the mark (NaN), the second crashes to 89: the same
    # money as the one-step shock, over 2 steps; the top winner is chosen at the first step.
    ex = adl_exchange_at_100()
    path = np.array([[np.nan], [89.0]])
    table = deleverage.compare(ex, path, ["queue"], executor=EXEC)
    m = table["queue"]
    assert m.steps == 2 and (m.taken_units, m.needed_units, m.accounts_touched) == (10, 20, 3)
    assert m.top_winner == 5  # at mark 100 only 5 (long 2 @ 80) is in profit
    one = deleverage.compare(ex, np.array([89.0]), ["queue"], executor=EXEC)["queue"]
    assert one.steps == 1 and one.taken_units == 10 and one.top_winner == 2


def test_markdown_and_pandas():
    ex = adl_exchange_at_100()
    table = deleverage.compare(ex, {"A": -0.11}, ["queue", "pro_rata"], executor=EXEC)
    md = table.to_markdown()
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| policy") and set(lines[1]) <= set("|-:")
    assert lines[2].split("|")[1].strip() == "queue"
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    row = dict(zip(header, cells))
    assert row["touched"] == "3" and row["max fraction"] == "1.0000" and row["taken"] == "10.00"
    assert row["needed"] == "20.00" and row["overshoot net"] == "-10.00" and row["rank tau"] == "n/a"
    assert str(table) == md
    assert all(len(line) == len(lines[0]) for line in lines)
    df = table.to_pandas()
    assert list(df.index) == ["queue", "pro_rata"] and df.loc["queue", "taken_units"] == 10
    assert math.isnan(df.loc["queue", "rank_tau"])
    assert "taken" in table.to_markdown(columns=["taken"]).splitlines()[0]
    with pytest.raises(InvalidInput, match="nonsense"):
        table.to_markdown(columns=["nonsense"])
    with pytest.raises(KeyError, match="risk"):
        table["risk_aware"]


def test_plot_png(tmp_path):
    # matplotlib is in the test extra (pyproject.toml), so this never skips
    ex, mm, marks = random_exchange(5, fund=10.0)
    table = deleverage.compare(ex, {"M0": -0.35, "M1": -0.3}, ["queue", "pro_rata"], executor=MarketClose(mm, slippage_bps=20))
    fig = table.plot(title="test")
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure) and len(fig.axes) == 2
    out = tmp_path / "cmp.png"
    fig.savefig(out, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib(monkeypatch):
    ex = adl_exchange_at_100()
    table = deleverage.compare(ex, {"A": -0.11}, ["queue"], executor=EXEC)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"deleverage\[plot\]"):
        table.plot()


@pytest.mark.parametrize("policies, match", [
    (["queue", "fifo"], r"policies\[1\]: unknown policy 'fifo'"),
    ([], "empty"),
    ("queue", "list"),
    ([{"ranking": "binance"}], "'policy'"),
    (["queue", "queue"], "duplicate label"),
    ([{"policy": "queue", "exact": False}], "exact"),
    ([42], r"policies\[0\]"),
])
def test_bad_policies(policies, match):
    ex = adl_exchange_at_100()
    before = snapshot(ex)
    with pytest.raises(InvalidInput, match=match):
        deleverage.compare(ex, {"A": -0.11}, policies, executor=EXEC)
    assert snapshot(ex) == before


@pytest.mark.parametrize("shock, error, match", [
    ({"BTC": -0.3}, UnknownId, "BTC"),
    ({7: -0.3}, UnknownId, "7"),
    ({"A": -1.0}, InvalidInput, "-1"),
    ({"A": "down"}, InvalidInput, "relative move"),
    ({}, InvalidInput, "empty"),
    (np.array([1.0, 2.0]), InvalidInput, "2 columns"),
    (np.zeros((2, 2, 1)), InvalidInput, "dimensions"),
    (np.array([0.0]), InvalidInput, "at least one price unit"),
    (np.array([np.inf]), InvalidInput, "finite"),
    (np.empty((0, 1)), InvalidInput, "no step"),
])
def test_bad_shocks(shock, error, match):
    ex = adl_exchange_at_100()
    before = snapshot(ex)
    with pytest.raises(error, match=match):
        deleverage.compare(ex, shock, ["queue"], executor=EXEC)
    assert snapshot(ex) == before


def test_policy_the_engine_refuses_changes_nothing():
    # A known lab policy this engine build may not run yet, or a close/haircut mismatch:
    # liquidate refuses it; the input is untouched either way.
    ex = adl_exchange_at_100()
    before = snapshot(ex)
    with pytest.raises(InvalidInput, match="funding_index"):
        deleverage.compare(ex, {"A": -0.11}, ["funding_index"], executor=EXEC)
    assert snapshot(ex) == before


def test_not_an_exchange():
    with pytest.raises(InvalidInput, match="exchange"):
        deleverage.compare("exchange", {"A": -0.1}, ["queue"], executor=EXEC)
    with pytest.raises(InvalidInput, match="policy"):
        deleverage.compare(adl_exchange_at_100(), {"A": -0.1}, ["queue"], executor=EXEC, policy="queue")


def test_exports():
    assert deleverage.compare is not None and deleverage.metrics.measure is not None
    assert isinstance(deleverage.compare(adl_exchange_at_100(), {"A": -0.11}, ["queue"], executor=EXEC), ComparisonTable)
    assert MM == 9


def test_example_script_runs_small(tmp_path, monkeypatch):
    # docs/examples/compare_policies.py at a tiny size, writing into tmp_path: both modes give
    # one row per policy the engine runs, the PNGs exist, --update-doc fills the markers.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "examples" / "compare_policies.py"
    spec = importlib.util.spec_from_file_location("compare_policies_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "BOOK", dict(positions=1_500, accounts=150, markets=2, seed=3, leverage=8.0))
    monkeypatch.setattr(mod, "IMG", tmp_path / "img")
    monkeypatch.setattr(mod, "DOCS", tmp_path)
    (tmp_path / "policy_lab.md").write_text("x\n<!-- compare_policies:close:begin -->\nold\n<!-- compare_policies:close:end -->\n"
                                            "<!-- compare_policies:haircut:begin -->\n<!-- compare_policies:haircut:end -->\n")
    monkeypatch.setattr(sys, "argv", ["compare_policies.py", "--update-doc"])
    mod.main()
    assert (tmp_path / "img" / "policy_lab_close.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "img" / "policy_lab_haircut.png").exists()
    doc = (tmp_path / "policy_lab.md").read_text()
    assert "old" not in doc and doc.count("| queue (BitMEX)") == 2 and "| pro_rata" in doc
    runs = set(deleverage.waterfall.POLICIES)
    assert doc.count("\n| ") - 2 == sum(s["policy"] in runs for s in mod.CLOSE + mod.HAIRCUT)  # rows + 2 headers


def test_plot_when_nothing_was_taken():
    import warnings

    table = deleverage.compare(adl_exchange_at_100(), {"A": 0.0}, ["queue", "pro_rata"], executor=EXEC)
    assert table["queue"].accounts_touched == 0 and "n/a" in table.to_markdown()  # Gini of nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = table.plot()
    assert len(fig.axes) == 2


def test_every_lab_policy_runs_and_haircut_lot_is_quote_currency():
    # Every policy of the lab through compare, with its keywords in human units. In haircut
    # mode lot=0.5 is half a unit of quote currency (500_000 money units): min_max_lots takes
    # whole multiples of it except, in each allocation (market and round), the one winner that
    # gives back the excess.
    ex, mm, marks = random_exchange(8, fund=10.0)
    executor = MarketClose(mm, slippage_bps=20)
    close = deleverage.compare(ex, {"M0": -0.35}, ["queue", "pro_rata", {"policy": "capped_pro_rata", "cap": 0.5},
                                                    "risk_aware", {"policy": "min_max_lots", "lot": 10}, "random_walk"],
                               executor=executor)
    assert len(close) == 6 and all(r.accounts_touched > 0 for r in close.rows)
    assert close.labels[2] == "capped_pro_rata (cap=0.5)"
    hc = deleverage.compare(ex, {"M0": -0.35}, [{"policy": "min_max_lots", "lot": 0.5}, "funding_index"],
                            executor=executor, mode="haircut")
    takes = hc.rows[0].winner_rows.taken_units
    allocations = len({(int(m), int(s)) for m, s in zip(hc.rows[0].winner_rows.market, hc.rows[0].winner_rows.step)})
    assert len(takes) > 10 and sum(int(t) % 500_000 != 0 for t in takes) <= 2 * allocations
    with pytest.raises(InvalidInput, match="lot"):
        deleverage.compare(ex, {"M0": -0.35}, [{"policy": "min_max_lots", "lot": "big"}], executor=executor,
                           mode="haircut")
