"""Waterfall rules at the edges (issue 12), each against the engine and the reference
waterfall: step totals summed without wrapping, ``cap`` as a hard per-step limit, a partial
liquidation sized with its fee, and ADL that neither creates a new bankrupt nor enriches one.
Expected numbers are derived in the comments from docs/waterfall.md."""

from __future__ import annotations

import pytest
from reference_model import R
from waterfall_harness import Book, MarketDef, build_both, engine_state, engine_totals, reference_state

from deleverage import Exchange, MarketClose

# ------------------------------------------------------------------ totals in 128 bits


def test_step_totals_do_not_wrap() -> None:
    """money_decimals 12, S = 1, k = 12: 1000 lots at 4000 are worth 4e18 units (< 2^62).
    Four longs with 1e16 of collateral; the mark falls 1% and the executor's price is 1 tick
    (100% slippage), the fund is empty, so ADL takes every lot (close mode, queue)."""
    ex = Exchange(12, threads=1)
    ex.add_market("M", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02)
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


# ------------------------------------------------------------------ ADL bounds

MM = 9


def adl_case(name):
    """The three cases of issue 12 (money, sizes and prices in units; 5% maintenance). The
    bankrupt account 1 is long 10 @ 100; account 2 is the only opposite-side winner; the
    executor closes at the mark and the fund is empty, so ADL takes every lot."""
    if name == "enriched":  # marks 105 then 85: the previous mark is above the bankruptcy price 90
        deposits, pos2, marks = [(1, 100), (2, 1000)], (2, 0, -10, 100), [(0, 105), (0, 85)]
    elif name == "gap":  # at the mark 85 the winner (150 of profit) pays 850 of the 900 owed
        deposits, pos2, marks = [(1, 100), (2, 1000)], (2, 0, -10, 100), [(0, 85)]
    else:  # "pushed": the winner (equity 50) would lose 140 at the bankruptcy price 99
        deposits, pos2, marks = [(1, 10), (2, 100)], (2, 0, -10, 80), [(0, 85)]
    book = Book([MarketDef("A", 100)], deposits + [(MM, 10**9)], [(1, 0, 10, 100), pos2])
    return book, marks


@pytest.mark.parametrize("case", ["enriched", "gap", "pushed"])
@pytest.mark.parametrize("adl_price", ["bankruptcy", "mark", "previous_mark"])
def test_adl_neither_creates_nor_enriches_a_bankrupt(case, adl_price) -> None:
    """A deleveraged account never ends below zero equity (or below where it started, if it
    started below); the bankrupt account never ends above zero (the excess goes to the fund);
    bad debt only when the winner cannot pay."""
    book, marks = adl_case(case)
    ex, ref = build_both(book)
    for m, p in marks:
        ex.set_marks([m], [p], exact=True)
        ref.set_marks([m], [p])
    start = {a: ref.margin(a)[0] for a in (1, 2)}
    res = ex.liquidate(executor=MarketClose(MM), adl_price=adl_price, exact=True)
    rres = ref.liquidate(MarketClose(MM), adl_price=adl_price)
    assert engine_state(ex) == reference_state(ref)
    assert engine_totals(res) == rres.totals.as_dict()
    ex.check_invariants()
    winner_equity = ex.account_margin(2, exact=True)["equity"]
    assert winner_equity >= min(0, start[2])
    assert [p for p in engine_state(ex)["positions"] if p[0] == 1] == []
    assert ex.balance(1, exact=True) <= 0
    totals = engine_totals(res)
    if case == "pushed":  # the winner can pay 900 of the 990 owed: it ends at 0, 90 is bad debt
        assert winner_equity == 0 and totals["bad_debt"] == 90
    else:  # the winner can pay everything: 1 ends at exactly 0, no bad debt
        assert ex.balance(1, exact=True) == 0 and totals["bad_debt"] == 0
    if case == "enriched" and adl_price == "previous_mark":  # 1050 paid, 900 owed: 150 to the fund
        assert totals["fund_fees"] == 150 and ex.insurance.balance(exact=True) == 150


# ------------------------------------------------------------------ cap is a hard limit


@pytest.mark.parametrize("cap,first", [(0.5, 7), (0.25, 3)])
def test_cap_holds_across_passes(cap, first) -> None:
    """Haircut mode, capped_pro_rata. Mark 85: 1 (long 10 @ 100, deposit 130) is closed at the
    mark with a deficit of 20; the only winner, 2 (short 5 @ 88, profit 15), has capacity 15.
    The market's pass takes floor(15 x cap); the second pass (winners of every market) used to
    take cap of the remaining 15 - first again (7 + 4 = 73% with cap 0.5, 3 + 3 = 40% with
    0.25). Now nothing more: the rest is bad debt."""
    book = Book([MarketDef("A", 100)], [(1, 130), (2, 1000), (MM, 10**9)], [(1, 0, 10, 100), (2, 0, -5, 88)], counterparty=MM)
    ex, ref = build_both(book)
    ex.set_marks([0], [85], exact=True)
    ref.set_marks([0], [85])
    kw = dict(mode="haircut", policy="capped_pro_rata")
    res = ex.liquidate(executor=MarketClose(MM), cap=cap, exact=True, **kw)
    rres = ref.liquidate(MarketClose(MM), cap=round(cap * R), **kw)
    assert engine_state(ex) == reference_state(ref)
    assert engine_totals(res) == rres.totals.as_dict()
    totals = engine_totals(res)
    assert totals["haircut_total"] == first == 15 * cap // 1
    assert totals["bad_debt"] == 20 - first
    assert ex.balance(2, exact=True) == 1000 - first
