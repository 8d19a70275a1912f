"""policy="none" (no last resort: bad debt) and compare(horizon_steps=H), the counterfactual
over a later horizon, on a small path computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

import deleverage
from deleverage import Exchange
from deleverage.errors import InvalidInput
from deleverage.executors import MarketClose

A, B, C, MM = 1, 2, 3, 9


def book() -> Exchange:
    """A and C long 1 BTC at 100 each, B short 2; A has 10 of collateral. Empty fund."""
    ex = Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.1, mark_price=100)
    ex.deposit([A, B, C, MM], [10.0, 1000.0, 1000.0, 1e6])
    ex.trade(A, B, "BTC", 1, 100)
    ex.trade(C, B, "BTC", 1, 100)
    return ex


def test_policy_none_records_bad_debt() -> None:
    # BTC 100 -> 80: A's equity 10 - 20 = -10. No last resort: the executor buys A's lot at
    # 80, A is left at -10 and that is the bad debt; B's short is not touched
    ex = book()
    ex.set_marks(["BTC"], [80])
    res = ex.liquidate(executor=MarketClose(MM), policy="none", exact=True)
    assert res.totals.bad_debt == 10_000000 and res.totals.adl_closes == 0 and res.totals.haircut_total == 0
    assert ex.balance(A, exact=True) == -10_000000
    assert ex.net_size("BTC") == 0 and ex.positions(exact=True).size.tolist().count(-2) == 1  # B still short 2
    ex.check_invariants()
    # the same in haircut mode
    ex = book()
    ex.set_marks(["BTC"], [80])
    assert ex.liquidate(executor=MarketClose(MM), policy="none", mode="haircut", exact=True).totals.bad_debt == 10_000000


PATH = np.array([[80.0], [120.0]])  # step 0: the crash; step 1: BTC rallies to 120


def test_horizon_counterfactual_by_hand() -> None:
    # queue, step 0: A's bankruptcy price 90 (80 + its deficit of 10); the fund is empty, so
    # B (the only short) buys A's lot at 90: B realizes 100 - 90 = 10 and stays short 1.
    # Without a last resort B stays short 2.
    #   after step 0 (mark 80): queue B = 1000 + 10 + (100 - 80) = 1030; none B = 1000 + 2*20 = 1040
    #   after step 1 (mark 120): queue B = 1000 + 10 - 20 = 990;        none B = 1000 - 2*20 = 960
    # the last resort was needed for 10 (A's deficit).
    t0 = deleverage.compare(book(), PATH, ["queue", "none"], executor=MarketClose(MM), horizon_steps=0)
    assert t0["queue"].winners_cost_at_horizon_units == 1040_000000 - 1030_000000
    assert t0["queue"].overshoot_at_horizon_units == 10_000000 - 10_000000
    assert t0["none"].winners_cost_at_horizon_units == 0  # no winner paid
    t1 = deleverage.compare(book(), PATH, ["queue", "pro_rata"], executor=MarketClose(MM), horizon_steps=1)
    for label in ("queue", "pro_rata"):  # one winner: both policies close the same lot
        assert t1[label].winners_cost_at_horizon_units == 960_000000 - 990_000000
        assert t1[label].overshoot_at_horizon_units == -30_000000 - 10_000000
        assert t1[label].winners_cost_at_horizon == -30.0 and t1[label].overshoot_at_horizon == -40.0
    row = t1.to_dicts()[0]
    assert row["winners_cost_at_horizon"] == -30.0 and "overshoot at horizon" in t1.to_markdown(
        columns=("winners_cost_at_horizon", "overshoot_at_horizon"))
    # without a horizon the columns are absent
    assert "winners_cost_at_horizon" not in deleverage.compare(book(), PATH, ["queue"], executor=MarketClose(MM)).to_dicts()[0]


@pytest.mark.parametrize("h", [-1, 2, 1.5, True])
def test_bad_horizon(h) -> None:
    with pytest.raises(InvalidInput, match="horizon_steps"):
        deleverage.compare(book(), PATH, ["queue"], executor=MarketClose(MM), horizon_steps=h)
