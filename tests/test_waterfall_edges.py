"""Waterfall rules at the edges (issue 12), each against the engine and the reference
waterfall: step totals summed without wrapping, ``cap`` as a hard per-step limit, a partial
liquidation sized with its fee, and ADL that neither creates a new bankrupt nor enriches one.
Expected numbers are derived in the comments from docs/waterfall.md."""

from __future__ import annotations

import pytest

from deleverage import Exchange, MarketClose
from deleverage.errors import DeleverageError
from reference_model import R
from waterfall_harness import Book, MarketDef, build_both, engine_state, engine_totals, reference_state

# ------------------------------------------------------------------ totals in 128 bits


def test_step_totals_do_not_wrap() -> None:
    """money_decimals 12, S = 1, k = 12: 1000 lots at 4000 are worth 4e18 units (< 2^62).
    Four longs with 1e16 of collateral; the mark falls 1% and the executor's price is 1 tick
    (100% slippage), the fund is empty, so ADL takes every lot (close mode, queue)."""
    ex = Exchange(12, threads=1)
    ex.add_market("M", qty_decimals=0, price_decimals=0, maintenance_margin=0.01, initial_margin=0.02)
    ex.set_marks(["M"], [4000], exact=True)
    longs, shorts = [1, 2, 3, 4], [11, 12, 13, 14]
    ex.deposit(longs + shorts + [99], [10**16] * 4 + [10**18] * 4 + [10**18], exact=True)
    for a, b in zip(longs, shorts):
        ex.trade(a, b, "M", 1000, 4000, exact=True)
    ex.set_marks(["M"], [3960], exact=True)
    res = ex.liquidate(executor=MarketClose(99, slippage_bps=10_000), exact=True)
    # one position per account: bk_value = E - balance = 4e18 - 1e16; exec_value = 1000 x 1 x 1e12
    bk_value = 4000 * 1000 * 10**12 - 10**16
    d = bk_value - 1000 * 10**12
    t = res.totals
    assert t.deficit == 4 * d > 2**63
    assert t.last_resort_needed == t.last_resort_planned == 4 * d
    assert t.adl_notional == 4 * bk_value
    assert t.bad_debt == 0 and t.adl_closes == 4
    ex.check_invariants()


# ------------------------------------------------------------------ partial liquidation and its fee


@pytest.mark.parametrize("fee", [0, R // 100])
def test_partial_close_is_sized_with_its_fee(fee) -> None:
    """Account 1: long 10 at 100, balance 20, mark 100: equity 20 < maintenance 50 (5%).
    The executor closes at the mark (cost 0).
    - No fee: f = 30/50, ceil(10 x 0.6) = 6 lots; 4 lots left need 20 = equity: kept.
    - Fee 1%: the whole close would pay 10 in fees, plus one unit of rounding: f = 30/(50 - 11),
      ceil(10 x 30/39) = 8 lots, fee ceil(800 x 1%) = 8; equity 12 >= 10 needed by 2 lots.
      (Sized without the fee, the 6 lots' fee of 6 left equity 14 < 20: closed in full.)"""
    book = Book([MarketDef("A", 100, fee=fee)], [(1, 20), (9, 10**9)], [(1, 0, 10, 100)], counterparty=9)
    ex, ref = build_both(book)
    res = ex.liquidate(executor=MarketClose(9, partial=True), exact=True)
    rres = ref.liquidate(MarketClose(9, partial=True))
    kept, balance = (4, 20) if fee == 0 else (2, 12)
    for state in (engine_state(ex), reference_state(ref)):
        assert [p for p in state["positions"] if p[0] == 1] == [(1, 0, kept, 100 * kept)]
        assert state["balances"][1] == balance
    assert engine_totals(res) == rres.totals.as_dict()
    assert engine_totals(res)["partial_liquidations"] == 1
