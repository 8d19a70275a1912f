"""Hand-computed cases of docs/waterfall.md, one per branch, run against the engine and the
reference waterfall (tests/reference_waterfall.py).

Every book uses money_decimals = qty_decimals = price_decimals = 0, so S = 1, k = 0 and a
position's value is simply q * p (money units); rates are in 1e-8 (R = 1e8). Maintenance is
5%, initial 10% unless said otherwise. Expected numbers are derived in the comments from
the formulas of the doc; none is read back from the code under test.
"""

import math

import numpy as np
import pytest
from reference_model import R
from reference_waterfall import allocate_capped_pro_rata
from waterfall_harness import (
    Book,
    MarketDef,
    build_both,
    engine_events,
    engine_margin,
    engine_ranking,
    engine_state,
    engine_totals,
    reference_state,
)

import deleverage
from deleverage import Backstop, Impact, MarketClose
from deleverage.errors import ConfigError, InvalidInput, UnknownId

BP = 10_000  # one basis point in 1e-8 units
MM = 9  # the market maker / liquidity account, very large collateral
BIG = 10**9


def run(book, executor, marks=None, **kw):
    """Run one step on both implementations; returns (engine result, engine, reference result, reference)."""
    ex, ref = build_both(book)
    if marks:
        for m, p in marks:
            ex.set_marks([m], np.array([p], dtype=np.int64), exact=True)
            ref.set_marks([m], [p])
    res = ex.liquidate(executor=executor, exact=True, **kw)
    ref_kw = dict(kw)  # fractions in the reference's 1e-8 units
    if "cap" in ref_kw:
        ref_kw["cap"] = round(ref_kw["cap"] * R)
    if "theta" in ref_kw:
        ref_kw["theta"] = round(ref_kw["theta"] * R)
    rres = ref.liquidate(executor, **ref_kw)
    return res, ex, rres, ref


def check(res, ex, rres, ref, totals=None, balances=None, positions=None, pools=None, events=None, exec_prices=None):
    """Assert the hand-computed expectations on the engine and on the reference."""
    for name, tot, ev, st in (("engine", engine_totals(res), engine_events(res), engine_state(ex)),
                              ("reference", rres.totals.as_dict(), rres.events, reference_state(ref))):
        if totals:
            got = {k: tot[k] for k in totals}
            assert got == totals, f"{name} totals"
        if balances:
            got = {a: st["balances"][a] for a in balances}
            assert got == balances, f"{name} balances"
        if positions is not None:
            assert st["positions"] == sorted(positions), f"{name} positions"
        if pools is not None:
            assert st["pools"] == pools, f"{name} pools"
        if events is not None:  # (kind, account, market, counterparty, size, amount, price, pool)
            assert [e[1:9] for e in ev] == events, f"{name} events"
        if exec_prices is not None:
            assert [e[9] for e in ev] == exec_prices, f"{name} exec prices"
    ex.check_invariants()
    ref.check_invariants()


def zero_totals(**over):
    t = dict(liquidated_accounts=0, partial_liquidations=0, deficit=0, fund_used=0, fund_fees=0, adl_notional=0,
             adl_closes=0, haircut_total=0, accounts_touched=0, bad_debt=0)
    t.update(over)
    return t


# ---------------------------------------------------------------- simple books

def one_long(mark, fee=0, fund=None, deposit=100):
    """Account 1: long 10 @ 100 (E = 1000) with `deposit`; MM holds the short side."""
    return Book([MarketDef("A", mark, fee=fee)], [(1, deposit), (MM, BIG)], [(1, 0, 10, 100)], counterparty=MM,
                fund=fund or {})


def test_fill_with_surplus_fee_capped_rest_stays():
    # mark 91: mark_value 910, cash = 100 - 1000 = -900, e' = 10, maintenance ceil(45.5) = 46:
    # liquidatable. bk = 910 - 10 = 900; slippage 0: exec price 91, exec value 910, d = -10.
    # Fill: balance 100 + (0 - 1000) + 910 = 10 > 0. Fee cap (0.5%) = ceil(910 * 0.005) = 5:
    # the fund takes 5, the account keeps 5. MM (short 10, E -1000) buys back at 910: +90.
    res, ex, rres, ref = run(one_long(91, fee=500_000), MarketClose(MM))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, fund_fees=5),
          balances={1: 5, MM: BIG + 90}, positions=[], pools=[5],
          events=[("liquidation_fill", 1, 0, MM, -10, 910, 91, -1), ("liquidation_fee", 1, 0, 0, 0, -5, 0, 0)])
    assert engine_state(ex)["ledger"] == [(1, 0, 0, 1, 5, "liquidation_fee")]
    assert engine_state(ex)["history"] == [(1, 0, 5)]
    assert ref.ledger == [(1, 0, 0, 1, 5, "liquidation_fee")]


def test_fee_takes_whole_surplus_when_smaller_than_cap():
    # Same, fee 2%: cap = ceil(910 * 0.02) = ceil(18.2) = 19 > surplus 10: the fund takes 10.
    res, ex, rres, ref = run(one_long(91, fee=2_000_000), MarketClose(MM))
    check(res, ex, rres, ref, totals=zero_totals(step=1, liquidated_accounts=1, fund_fees=10), balances={1: 0}, pools=[10])


def test_fund_pays_deficit():
    # mark 89: mark_value 890, e' = -900 + 890 = -10 (bankrupt), bk = 900. Slippage 100 bp:
    # exec price floor(89 * 0.99) = 88, exec value 880, d = 20. Plan: the pool (1000) covers 20.
    # Fill: balance 100 - 1000 + 880 = -20; the fund pays 20 -> 0; pool 980.
    res, ex, rres, ref = run(one_long(89, fund={0: 1000}), MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=20),
          balances={1: 0}, positions=[], pools=[980],
          events=[("liquidation_fill", 1, 0, MM, -10, 880, 88, -1), ("fund_payment", 1, 0, 0, 0, 20, 0, 0)])
    assert engine_state(ex)["ledger"] == [(0, 0, -1, 0, 1000, "deposit"), (1, 0, 0, 1, -20, "deficit_payment")]


def test_impact_raises_the_rate():
    # Impact: 100 bp per 445 of notional. notional = 10 * 89 = 890 -> impact = 200 bp,
    # rate = 300 bp: exec price floor(89 * 0.97) = floor(86.33) = 86, exec value 860, d = 40.
    res, ex, rres, ref = run(one_long(89, fund={0: 1000}), MarketClose(MM, slippage_bps=100, impact=Impact(445, 100)))
    check(res, ex, rres, ref, totals=zero_totals(step=1, liquidated_accounts=1, deficit=40, fund_used=40), pools=[960])


# ----------------------------------------------------------- the ADL book
# Creation order 7, 2, 4, 1, 5, MM (ids and creation order differ on purpose).
# Market A at mark 89:
#   1: long 10 @ 100, deposit 100: E 1000, u -110, equity -10, mm ceil(44.5) = 45 (bankrupt)
#   7, 2: short 4 @ 100, deposit 100: E -400, value -356, u 44, equity 144, mm ceil(17.8) = 18
#   4: short 4 @ 100, deposit 1000: u 44, equity 1044, mm 18
#   5: long 2 @ 80, deposit 50: E 160, value 178, u 18, equity 68, mm ceil(8.9) = 9
# BitMEX scores: 7 and 2: pnl floor(44e9/400) = 110_000_000, share 144,
#   lev floor(356e9/144) = 2_472_222_222 -> 110e6 * lev / 1e9 = 271_944_444 (a tie: id 2 first)
#   4: lev floor(356e9/1044) = 340_996_168 -> 37_509_578
#   5: pnl floor(18e9/160) = 112_500_000, lev floor(178e9/68) = 2_617_647_058 -> 294_485_294
#   1: pnl -110_000_000, share -10 <= 0 -> lev 1e15 -> trunc(-110e6 * 1e9 / 1e15) = -110
# Account 1 through MarketClose(MM, 100 bp): bk 900, exec price 88, exec value 880, d = 20.

def adl_book(fund=0, marks_first=None):
    return Book([MarketDef("A", 89)], [(7, 100), (2, 100), (4, 1000), (1, 100), (5, 50), (MM, BIG)],
                [(1, 0, 10, 100), (7, 0, -4, 100), (2, 0, -4, 100), (4, 0, -4, 100), (5, 0, 2, 80)],
                fund={0: fund} if fund else {})


def test_adl_close_queue_ties_and_value_split():
    # Pool 8: plan fund 8, L = 12, adl = min(10, ceil(10 * 12 / 20)) = 6 lots, worth
    # trunc(900 * 6 / 10) = 540. Queue (shorts): 2 (271_944_444, id 2 < 7), 7, then 4.
    # 2 takes 4, 7 takes 2; split: trunc(540 * 4 / 6) = 360, the last 540 - 360 = 180.
    # 2: flat, balance 100 + 400 - 360 = 140. 7: -2, E trunc(-400 * -2 / -4) = -200,
    # balance 100 + 200 - 180 = 120. 1: E 1000 -> 600 (balance 100 - 400 + 360 = 60) -> 400
    # (60 - 200 + 180 = 40); the executor takes 4 at 88 (352): 40 - 400 + 352 = -8; fund 8 -> 0.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, adl_notional=540, adl_closes=2,
                             accounts_touched=2),
          balances={1: 0, 2: 140, 7: 120, 4: 1000, 5: 50, MM: BIG},
          positions=[(7, 0, -2, -200), (4, 0, -4, -400), (5, 0, 2, 160), (MM, 0, 4, 352)],
          pools=[0],
          events=[("adl_close", 2, 0, 1, 4, -360, 90, -1), ("adl_close", 7, 0, 1, 2, -180, 90, -1),
                  ("liquidation_fill", 1, 0, MM, -4, 352, 88, -1), ("fund_payment", 1, 0, 0, 0, 8, 0, 0)])


def test_adl_close_whole_position_bankrupt_ends_at_zero():
    # No fund: L = 20 = d, adl = 10 lots at bk 900. Queue 2 (4), 7 (4), 4 (2):
    # 360, trunc(900 * 8 / 10) - 360 = 360, 900 - 720 = 180. 1 ends flat at exactly 0.
    # 4: -2, E -200, balance 1000 + 200 - 180 = 1020.
    res, ex, rres, ref = run(adl_book(), MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=900, adl_closes=3, accounts_touched=3),
          balances={1: 0, 2: 140, 7: 140, 4: 1020, MM: BIG},
          positions=[(4, 0, -2, -200), (5, 0, 2, 160)],
          events=[("adl_close", 2, 0, 1, 4, -360, 90, -1), ("adl_close", 7, 0, 1, 4, -360, 90, -1),
                  ("adl_close", 4, 0, 1, 2, -180, 90, -1)])


def test_adl_close_pro_rata():
    # Pool 8, 6 lots as above; pro rata over the shorts 7, 2, 4 (4 lots each, W = 12):
    # floor(6 * 4 / 12) = 2 each; value 540 split 180 / 180 / 180. Each winner: -2, E -200,
    # balance + (200 - 180) = +20.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), policy="pro_rata")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, adl_notional=540, adl_closes=3,
                             accounts_touched=3),
          balances={1: 0, 2: 120, 7: 120, 4: 1020},
          positions=[(7, 0, -2, -200), (2, 0, -2, -200), (4, 0, -2, -200), (5, 0, 2, 160), (MM, 0, 4, 352)])


def test_adl_pro_rata_fewer_lots_than_asked():
    # 1: long 10 bankrupt (bk 900, d 20, no fund -> 10 lots to ADL). Shorts: MM (the executor,
    # never a winner) 8 lots, 2: 2 lots. closed = 2 < 10: V = trunc(900 * 2 / 10) = 180;
    # 2 pays 180 and is flat: balance 10 + 200 - 180 = 30. The executor takes 8 at 88 (704):
    # 1: 100 + (800 - 1000) + 180 = 80, then 80 - 800 + 704 = -16 -> pending 16 -> no winner
    # left with a position in A -> bad debt 16.
    book = Book([MarketDef("A", 89)], [(1, 100), (2, 10), (MM, BIG)], [(1, 0, 10, 100), (2, 0, -2, 100)], counterparty=MM)
    res, ex, rres, ref = run(book, MarketClose(MM, slippage_bps=100), policy="pro_rata")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=180, adl_closes=1,
                             accounts_touched=1, bad_debt=16),
          balances={1: -16, 2: 30})


def test_adl_queue_fewer_lots_than_asked_reference():
    # The same book with the queue: the documented branch (closed < lots) on both.
    book = Book([MarketDef("A", 89)], [(1, 100), (2, 10), (MM, BIG)], [(1, 0, 10, 100), (2, 0, -2, 100)], counterparty=MM)
    res, ex, rres, ref = run(book, MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=180, adl_closes=1,
                             accounts_touched=1, bad_debt=16),
          balances={1: -16, 2: 30})


# ----------------------------------------------------------------- haircuts
# adl_book, pool 8, mode haircut: the executor takes all 10 at 88: balance 100 - 1000 + 880
# = -20; the plan's 8 is paid -> -12; pool 0 has nothing left: pending 12 on A.
# Winners of A (MM is the executor, 1 excluded): 7, 2, 4 (u 44 each) and 5 (u 18).

def test_haircut_queue():
    # capacity min(equity, profit): 7: 44, 2: 44, 4: 44, 5: min(68, 18) = 18.
    # Queue by score: 5 (294_485_294) first, capacity 18 >= 12: 5 pays 12 (balance 38).
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, haircut_total=12, accounts_touched=1),
          balances={1: 0, 5: 38, 2: 100, 7: 100, 4: 1000},
          positions=[(7, 0, -4, -400), (2, 0, -4, -400), (4, 0, -4, -400), (5, 0, 2, 160), (MM, 0, 10, 880)],
          events=[("liquidation_fill", 1, 0, MM, -10, 880, 88, -1), ("fund_payment", 1, 0, 0, 0, 8, 0, 0),
                  ("haircut", 5, 0, 0, 0, -12, 0, -1), ("socialized_credit", 1, 0, 0, 0, 12, 0, -1)])


def test_haircut_pro_rata():
    # weights = capacities 44, 44, 44, 18 (sum 150); budget 12; no one saturates
    # (44 * 150 > 12 * 44). floor(12 * 44 / 150) = 3 (remainder 78) x3, floor(12 * 18 / 150) = 1
    # (remainder 66): 10 given, 2 left to the largest remainders 78: ids 2 and 4.
    # 2: 4, 4: 4, 7: 3, 5: 1.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), mode="haircut", policy="pro_rata")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, haircut_total=12, accounts_touched=4),
          balances={1: 0, 2: 96, 4: 996, 7: 97, 5: 49})


def test_haircut_funding_index():
    # capacity = max(0, equity): 7: 144, 2: 144, 4: 1044, 5: 68; weight |q|: 4, 4, 4, 2 (W 14).
    # budget 12: floor(12 * 4 / 14) = 3 (remainder 6) x3, floor(12 * 2 / 14) = 1 (remainder 10):
    # 10 given, 2 left: 5 (remainder 10), then the tie at 6 goes to the smallest id, 2.
    # 2: 4, 7: 3, 4: 3, 5: 2. (5 is long, same side as the bankrupt account: all open interest pays.)
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), mode="haircut", policy="funding_index")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, haircut_total=12, accounts_touched=4),
          balances={1: 0, 2: 96, 7: 97, 4: 997, 5: 48})


def test_water_filling_saturation():
    # caps 1, 10, 10 with weights 1, 1, 2, budget 9: ratios 1, 10, 5; level h: the first
    # saturates (1 * 4 <= 9 * 1), left 8 over W 3: 2's cap 10 * 3 > 8 * 2 -> stop.
    # floor(8 * 1 / 3) = 2 (rem 2), floor(8 * 2 / 3) = 5 (rem 1): 7, 1 extra to id 11.
    assert allocate_capped_pro_rata(9, [1, 1, 2], [1, 10, 10], [10, 11, 12]) == [1, 3, 5]


# ------------------------------------------------- the policy lab's policies
# adl_book with pool 8 again: 6 lots (worth 540) go to ADL; the shorts are 7, 2, 4 (4 lots
# each, creation order 7, 2, 4); the executor takes the rest at 88.

def test_adl_close_capped_pro_rata_clips_then_haircuts():
    # cap 25%: K = floor(4 * 0.25) = 1 lot each, 3 < 6: each closes 1, V = trunc(540 * 3 / 6)
    # = 270, split by lots in creation order: 90, 90, 90. Winners: -3 lots, E -300, balance
    # 100 + (100 - 90) = 110. Account 1: 100 + 270 - 300 = 70; the executor takes 7 at 88
    # (616): 70 + 616 - 700 = -14; the fund's 8 -> -6; pool empty: pending 6 on A.
    # Haircut (capped 25% of profit): u = 3 * 11 = 33 for 7, 2, 4 (equity 143, 143, 1043) and
    # 18 for 5: K = 8, 8, 8, 4; weights = capacities 33, 33, 33, 18 (W 117): 6 * 33 / 117 =
    # 1 + 81/117 (x3), 6 * 18 / 117 = 0 + 108/117. Floors 1, 1, 1, 0; 3 units left to the
    # largest remainders: 5 (108), then 7 and 2 (81, ties in creation order): 2, 2, 1, 1.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), policy="capped_pro_rata", cap=0.25)
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, adl_notional=270, adl_closes=3,
                             haircut_total=6, accounts_touched=4),
          balances={1: 0, 7: 108, 2: 108, 4: 1009, 5: 49},
          positions=[(7, 0, -3, -300), (2, 0, -3, -300), (4, 0, -3, -300), (5, 0, 2, 160), (MM, 0, 7, 616)])
    assert engine_totals(res)["last_resort_needed"] == 12  # 20 - the fund's 8


def test_adl_close_risk_aware_takes_the_leveraged_first():
    # leverage = notional 356 / equity: 7 and 2: 356 / 144 = 2.47, 4: 356 / 1044 = 0.34.
    # linear g: weight w * lambda^2 = 24.4, 24.4, 0.47: shares of 6 lots 2.97, 2.97, 0.06 ->
    # floors 2, 2, 0, the 2 left to the largest remainders (7, 2): 3, 3, 0 (pro rata: 2, 2, 2).
    # V = 540: 270 each. 7 and 2: -1 lot, E -100, balance 100 + 300 - 270 = 130.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), policy="risk_aware")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, adl_notional=540, adl_closes=2,
                             accounts_touched=2),
          balances={1: 0, 7: 130, 2: 130, 4: 1000},
          positions=[(7, 0, -1, -100), (2, 0, -1, -100), (4, 0, -4, -400), (5, 0, 2, 160), (MM, 0, 4, 352)])


def test_adl_close_min_max_lots_trims_the_last_lot():
    # lot = 4: one whole lot each (L = 1); ceil(6 / 4) = 2 lots: 7 then 2 (equal fractions,
    # creation order): 4 + 4 = 8 > 6, so 7 (largest fraction, first) gives back 2: 2 and 4.
    # V = 540 split by lots: 7 trunc(540 * 2 / 6) = 180, 2 the rest 360. 7: -2, E -200,
    # balance 100 + 200 - 180 = 120; 2 flat, 100 + 400 - 360 = 140. Account 1: 100 + 540 - 600
    # = 40, the executor takes 4 at 88: 40 + 352 - 400 = -8, the fund pays 8.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), policy="min_max_lots", lot=4)
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, adl_notional=540, adl_closes=2,
                             accounts_touched=2),
          balances={1: 0, 7: 120, 2: 140, 4: 1000}, pools=[0],
          # shared ADL runs at the end of the round: the executor's part is filled first
          events=[("liquidation_fill", 1, 0, MM, -4, 352, 88, -1), ("adl_close", 7, 0, 1, 2, -180, 90, -1),
                  ("adl_close", 2, 0, 1, 4, -360, 90, -1), ("fund_payment", 1, 0, 0, 0, 8, 0, 0)],
          exec_prices=[88, 88, 88, 0])


def test_adl_close_random_walk_is_a_contiguous_walk_and_seeded():
    # Whatever the start, the walk takes 4 + 2 from two consecutive winners (cyclic creation
    # order 7, 2, 4), and the same seed gives the same closes.
    outs = []
    for seed in (1, 1, 2, 3, 4, 5):
        res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), policy="random_walk", seed=seed)
        closes = [(e[2], e[5]) for e in engine_events(res) if e[1] == "adl_close"]
        assert [e for e in rres.events if e[1] == "adl_close"] == [e for e in engine_events(res) if e[1] == "adl_close"]
        order = [7, 2, 4]
        first = order.index(closes[0][0])
        assert closes == [(order[first], 4), (order[(first + 1) % 3], 2)]
        outs.append(closes)
    assert outs[0] == outs[1]
    assert len({tuple(o) for o in outs}) > 1  # different seeds start at different winners


def test_shared_adl_round_keeps_the_fund_promised_to_waiting_accounts():
    # Two bankrupt longs 1, 2 (10 @ 100, deposit 100, mark 89: bk 900, exec 88 at 100 bp,
    # d = 20 each); winners 3, 4 short 10 @ 100; pool 10. Worst first: 1 then 2 (tie by id).
    # 1: fund 10 (promised until the round's end), L = 10 -> demand ceil(10 * 10 / 20) = 5 lots;
    # the executor takes the other 5 at 88 (440). 2: the pool's 10 is promised to 1, so
    # L = 20 -> demand 10 lots, nothing for the executor. Round: 15 lots pro rata over 10, 10:
    # 7.5 each -> 7, 7 and the unit left to the smaller id: 3: 8, 4: 7. Demands in order:
    # 1 takes 5 from 3 (value trunc(900 * 5 / 10) = 450); 2 takes 3 from 3 and 7 from 4
    # (V = 900: 270 and 630). 1: 100 + (440 - 500) + (450 - 500) = -10, the fund pays 10.
    # 2: 100 + 900 - 1000 = 0. 3: 1000 + (500 - 450) + (300 - 270) = 1080, short 2 (E -200);
    # 4: 1000 + 700 - 630 = 1070, short 3 (E -300). needed: 1: 20 - 10, 2: 20 - 0 = 30.
    book = Book([MarketDef("A", 89)], [(1, 100), (2, 100), (3, 1000), (4, 1000), (MM, BIG)],
                [(1, 0, 10, 100), (2, 0, 10, 100), (3, 0, -10, 100), (4, 0, -10, 100)], fund={0: 10})
    res, ex, rres, ref = run(book, MarketClose(MM, slippage_bps=100), policy="pro_rata")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=2, deficit=40, fund_used=10, adl_notional=1350, adl_closes=3,
                             accounts_touched=2),
          balances={1: 0, 2: 0, 3: 1080, 4: 1070},
          positions=[(3, 0, -2, -200), (4, 0, -3, -300), (MM, 0, 5, 440)], pools=[0],
          events=[("liquidation_fill", 1, 0, MM, -5, 440, 88, -1), ("adl_close", 3, 0, 1, 5, -450, 90, -1),
                  ("adl_close", 3, 0, 2, 3, -270, 90, -1), ("adl_close", 4, 0, 2, 7, -630, 90, -1),
                  ("fund_payment", 1, 0, 0, 0, 10, 0, 0)])
    assert (engine_totals(res)["last_resort_needed"], engine_totals(res)["last_resort_planned"]) == (30, 30)


def test_theta_one_closes_everything_and_leaves_the_fund():
    # theta = 1: the last resort takes the whole deficit (20) although the pool holds 8:
    # adl = ceil(10 * 20 / 20) = 10 lots, as in test_adl_close_whole_position_bankrupt_ends_at_zero;
    # the pool keeps its 8. Deficit matching would have needed 20 - 8 = 12.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), theta=1.0)
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=900, adl_closes=3, accounts_touched=3),
          balances={1: 0, 2: 140, 7: 140, 4: 1020}, pools=[8])
    assert (engine_totals(res)["last_resort_needed"], engine_totals(res)["last_resort_planned"]) == (12, 20)


def test_theta_one_haircut_keeps_the_fund():
    # Haircut mode, theta 1: the executor takes all 10 at 88 (balance -20); nothing planned
    # for the fund, the whole 20 is kept for the haircuts. Pro rata over profits 44, 44, 44, 18
    # (W 150): 20 * 44 / 150 = 5 + 130/150 (x3), 20 * 18 / 150 = 2 + 60/150; 3 left -> 6, 6, 6, 2.
    res, ex, rres, ref = run(adl_book(fund=8), MarketClose(MM, slippage_bps=100), mode="haircut", policy="pro_rata",
                             theta=1.0)
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, haircut_total=20, accounts_touched=4),
          balances={1: 0, 7: 94, 2: 94, 4: 994, 5: 48}, pools=[8])


def test_theta_fund_pays_when_no_winner_is_left():
    # one_long at 89 with a pool of 1000, haircut mode, theta 1: the -20 is kept for haircuts,
    # but the only other account is the executor: nobody can pay, so the fund pays the 20
    # instead of leaving bad debt.
    res, ex, rres, ref = run(one_long(89, fund={0: 1000}), MarketClose(MM, slippage_bps=100), mode="haircut", theta=1.0)
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=20),
          balances={1: 0}, pools=[980],
          events=[("liquidation_fill", 1, 0, MM, -10, 880, 88, -1), ("fund_payment", 1, 0, 0, 0, 20, 0, 0)])


def test_policy_options_are_checked():
    ex, _ = build_both(adl_book(fund=8))
    before = engine_state(ex)
    bad = [dict(policy="capped_pro_rata"),  # needs cap
           dict(policy="queue", cap=0.5), dict(policy="pro_rata", lot=2), dict(policy="queue", g="power:2"),
           dict(policy="capped_pro_rata", cap=1.5), dict(policy="capped_pro_rata", cap=float("nan")),
           dict(policy="min_max_lots", lot=0), dict(policy="min_max_lots", lot=-3), dict(policy="risk_aware", g="cubic"),
           dict(policy="risk_aware", g="power:-1"), dict(theta=-0.1), dict(theta=2.0), dict(theta="half"),
           dict(policy="random_walk", seed=-1), dict(policy="random_walk", seed=2**64), dict(policy="fair")]
    for kw in bad:
        with pytest.raises(InvalidInput):
            ex.liquidate(executor=MarketClose(MM), exact=True, **kw)
        assert engine_state(ex) == before, kw


# ----------------------------------------------------------- partial, backstop

def partial_book(fee):
    # 1: long 10 @ 100, deposit 100, mark 94: value 940, u -60, equity 40, mm ceil(47) = 47.
    return Book([MarketDef("A", 94, fee=fee)], [(1, 100), (MM, BIG)], [(1, 0, 10, 100)], counterparty=MM)


def test_partial_liquidation_restores_maintenance():
    # 100 bp: exec price floor(94 * 0.99) = 93, exec value 930, cost = 940 - 930 = 10.
    # den = 47 - 10 = 37, num = 47 - 40 = 7 < den: lots = ceil(10 * 7 / 37) = 2.
    # Fill 2 at 93 = 186: E trunc(1000 * 8 / 10) = 800, balance 100 - 200 + 186 = 86.
    # After: value 752, u -48, equity 38, mm ceil(37.6) = 38: no longer liquidatable.
    res, ex, rres, ref = run(partial_book(0), MarketClose(MM, slippage_bps=100, partial=True))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, partial_liquidations=1),
          balances={1: 86}, positions=[(1, 0, 8, 800), (MM, 0, -8, -800)],
          events=[("partial_fill", 1, 0, MM, -2, 186, 93, -1)])
    assert engine_margin(ex)[1] == (38, 38, False, False)


def test_partial_close_counts_its_fee():
    # Fee 0.5%: the whole close would pay 930 * 0.005 = 4.65 in fees, plus 1 of rounding:
    # den = (47 - 10) - 5.65 = 31.35 (in R units), num = 7: lots = ceil(10 * 7 / 31.35) = 3.
    # Fill 3 at 93 = 279: E trunc(1000 * 7 / 10) = 700, balance 100 - 300 + 279 = 79; fee
    # min(ceil(279 * 0.005) = 2, equity) = 2: balance 77. After: value 658, u -42, equity 35,
    # mm ceil(32.9) = 33: no longer liquidatable. (Sized without the fee, 2 lots and a fee of 1
    # left equity 37 < 38 and the account was closed in full.)
    res, ex, rres, ref = run(partial_book(500_000), MarketClose(MM, slippage_bps=100, partial=True))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, partial_liquidations=1, fund_fees=2),
          balances={1: 77}, positions=[(1, 0, 7, 700), (MM, 0, -7, -700)], pools=[2],
          events=[("partial_fill", 1, 0, MM, -3, 279, 93, -1), ("liquidation_fee", 1, 0, 0, 0, -2, 0, 0)])
    assert engine_margin(ex)[1] == (35, 33, False, False)


def test_partial_not_tried_for_bankrupt_account():
    # mark 89 (bankrupt, equity -10): closed in full directly (the fund pays 20 as in test_fund_pays_deficit).
    res, ex, rres, ref = run(one_long(89, fund={0: 1000}), MarketClose(MM, slippage_bps=100, partial=True))
    check(res, ex, rres, ref, totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=20), balances={1: 0})


def test_backstop_takes_over_at_bankruptcy_value():
    # mark 89: bk = 900. The vault 8 opens long 10 paying 900 (E 900); 1 ends at exactly 0.
    book = Book([MarketDef("A", 89, fee=1_000_000)], [(1, 100), (8, 10**6), (MM, BIG)], [(1, 0, 10, 100)], counterparty=MM)
    res, ex, rres, ref = run(book, Backstop(8))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1),
          balances={1: 0, 8: 10**6}, positions=[(8, 0, 10, 900), (MM, 0, -10, -1000)], pools=[0],
          events=[("backstop_fill", 1, 0, 8, -10, 900, 90, -1)])


# ---------------------------------------------------------------- insurance pools

def pools_book(pool_b):
    # A uses the shared pool 0 (1000); B has its own pool 1 (pool_b). 1: long 10 @ 100 in B,
    # bankrupt at 89 (bk 900, 100 bp: exec 88, d = 20). 3: short 10 @ 90 in B (u 10).
    return Book([MarketDef("A", 50), MarketDef("B", 89, own_pool=True)], [(1, 100), (3, 1000), (MM, BIG)],
                [(1, 1, 10, 100), (3, 1, -10, 90)], fund={0: 1000, 1: pool_b})


def test_own_pool_pays_its_market_deficit():
    res, ex, rres, ref = run(pools_book(50), MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref, totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=20),
          balances={1: 0}, pools=[1000, 30], events=[("liquidation_fill", 1, 1, MM, -10, 880, 88, -1),
                                                     ("fund_payment", 1, 1, 0, 0, 20, 0, 1)])
    assert ex.insurance.pool_of("B") == 1 and ex.insurance.pool_of("A") == 0


def test_own_pool_exhausted_shared_pool_untouched_haircut():
    # Pool 1 holds 15: plan 15, the rest 5 -> haircut mode: pending 5 on B; 3 pays 5 (u 10).
    res, ex, rres, ref = run(pools_book(15), MarketClose(MM, slippage_bps=100), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=15, haircut_total=5, accounts_touched=1),
          balances={1: 0, 3: 995}, pools=[1000, 0])


# --------------------------------------------------------------------- drawdown

def drawdown_book():
    # Two bankrupt longs in A at mark 60, deposit 100 each, long 10 @ 100: value 600,
    # e' = -300, bk = 900, slippage 0: d = 300 each. 1 is created first; equal equity -300,
    # so id order: 1 then 2. Winner 3: short 20 @ 90 (u 600), deposit 10_000.
    # Pool 0 = 800, rule (30%, window 2).
    return Book([MarketDef("A", 60)], [(1, 100), (2, 100), (3, 10_000), (MM, BIG)],
                [(1, 0, 10, 100), (2, 0, 10, 100), (3, 0, -20, 90)], fund={0: 800}, drawdown=(30 * R // 100, 2))


def test_drawdown_floor_stops_the_fund():
    # An empty step first records the closing balance 800. Then: floor ceil(800 * 0.7) = 560:
    # account 1 gets 240, L = 60 -> haircut pending 60. Account 2: balance 560, peak
    # max(560, 800) = 800: floor 560, available 0 -> pending 300. Pending 360 on A: 3 pays 360
    # (capacity min(equity, 600)).
    ex, ref = build_both(drawdown_book())
    ex.set_marks([0], np.array([100], dtype=np.int64), exact=True)
    ref.set_marks([0], [100])
    first = ex.liquidate(executor=MarketClose(MM), exact=True)
    ref.liquidate(MarketClose(MM))
    assert engine_totals(first)["liquidated_accounts"] == 0
    ex.set_marks([0], np.array([60], dtype=np.int64), exact=True)
    ref.set_marks([0], [60])
    res = ex.liquidate(executor=MarketClose(MM), mode="haircut", exact=True)
    rres = ref.liquidate(MarketClose(MM), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=2, liquidated_accounts=2, deficit=600, fund_used=240, haircut_total=360, accounts_touched=1),
          balances={1: 0, 2: 0, 3: 9640}, pools=[560])
    assert engine_state(ex)["history"] == [(1, 0, 800), (2, 0, 560)]


def test_drawdown_floor_holds_within_a_step():
    # No earlier step: the peak is the opening balance 800 (section 4), so the floor is
    # ceil(800 * 0.7) = 560 for the whole step, whatever is paid during it.
    # Account 1 (deficit 300): available 800 - 560 = 240 -> paid 240, fund 560; 60 pending.
    # Account 2 (deficit 300): available 560 - 560 = 0; 300 pending.
    # Haircut: 360 pending, paid by the one winner, 3: 10_000 - 360 = 9_640.
    res, ex, rres, ref = run(drawdown_book(), MarketClose(MM), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=2, deficit=600, fund_used=240, haircut_total=360, accounts_touched=1),
          balances={1: 0, 2: 0, 3: 9640}, pools=[560])


# ----------------------------------------------------------------- adl_price

def test_adl_price_mark_gap_paid_by_the_same_winners():
    # No fund: the winners' price is the mark (value 890), but the account is owed its
    # bankruptcy value 900 (section 5, ADL bounds): the fund cannot pay the gap, so each winner
    # pays it up to its limit (all have room). Queue 2, 7, 4; owed trunc(900 * 4 / 10) = 360,
    # 720 - 360 = 360, 900 - 720 = 180: exactly the bankruptcy-price case. (Before: 1 was left at
    # -10 and winner 5, never deleveraged, was haircut for it.)
    res, ex, rres, ref = run(adl_book(), MarketClose(MM, slippage_bps=100), adl_price="mark")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=900, adl_closes=3, accounts_touched=3),
          balances={1: 0, 2: 140, 7: 140, 4: 1020, 5: 50},
          events=[("adl_close", 2, 0, 1, 4, -360, 90, -1), ("adl_close", 7, 0, 1, 4, -360, 90, -1),
                  ("adl_close", 4, 0, 1, 2, -180, 90, -1)])


def test_adl_price_previous_mark_above_bankruptcy_pays_the_fund():
    # Marks 95 then 89: the winners pay at 95 (10 lots: 950; 380, 380, 190), the account is owed
    # 900 (360, 360, 180): the excess 20, 20, 10 goes to the fund as liquidation fees, and 1
    # ends at exactly 0 instead of keeping 50 it never had.
    res, ex, rres, ref = run(adl_book(), MarketClose(MM, slippage_bps=100), marks=[(0, 95), (0, 89)], adl_price="previous_mark")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_fees=50, adl_notional=950, adl_closes=3,
                             accounts_touched=3),
          balances={1: 0, 2: 120, 7: 120, 4: 1010, 5: 50}, pools=[50],
          events=[("adl_close", 2, 0, 1, 4, -380, 95, -1), ("liquidation_fee", 1, 0, 0, 0, -20, 0, 0),
                  ("adl_close", 7, 0, 1, 4, -380, 95, -1), ("liquidation_fee", 1, 0, 0, 0, -20, 0, 0),
                  ("adl_close", 4, 0, 1, 2, -190, 95, -1), ("liquidation_fee", 1, 0, 0, 0, -10, 0, 0)])


def test_adl_price_previous_mark():
    # Marks 90 then 89: previous mark 90: V = 10 * 90 = 900 (= bk here): same as bankruptcy.
    res, ex, rres, ref = run(adl_book(), MarketClose(MM, slippage_bps=100), marks=[(0, 90), (0, 89)], adl_price="previous_mark")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, adl_notional=900, adl_closes=3, accounts_touched=3),
          balances={1: 0, 2: 140, 7: 140, 4: 1020})


# ---------------------------------------------------------------------- cascade

def test_cascade_winner_pushed_into_debt_is_liquidated():
    # Mark 80. 1: long 10 @ 100, deposit 100: e' = -100, bk 900; 100 bp: exec floor(79.2) = 79,
    # d = 900 - 790 = 110, no fund: ADL 10 lots at 900. 6: short 20 @ 85 (E -1700), deposit 0:
    # u 100, equity 100, mm 80 (not a candidate). 5: long 10 @ 70 (u 100), deposit 1000.
    # Round 1: 6 takes 10: E trunc(-1700 * -10 / -20) = -850, balance 0 + 850 - 900 = -50:
    # u 50, equity 0 < mm 40. Round 2: 6 is liquidated: e' = (-50 + 850) - 800 = 0, bk -800;
    # buys at ceil(80 * 1.01) = 81: exec value -810, d = 10 -> ADL 10 lots against 5 at -800:
    # 5 sells 10 at 800: 1000 + (0 - 700) + 800 = 1100; 6: -50 + 850 - 800 = 0.
    book = Book([MarketDef("A", 80)], [(1, 100), (6, 0), (5, 1000), (MM, BIG)],
                [(1, 0, 10, 100), (6, 0, -20, 85), (5, 0, 10, 70)])
    res, ex, rres, ref = run(book, MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=2, deficit=120, adl_notional=1700, adl_closes=2, accounts_touched=2),
          balances={1: 0, 6: 0, 5: 1100, MM: BIG}, positions=[],
          events=[("adl_close", 6, 0, 1, 10, -900, 90, -1), ("adl_close", 5, 0, 6, -10, 800, 80, -1)])


def flat_debt_book():
    # Mark 80. 1: long 10 @ 100, deposit 100 (bk 900, d 110 at 100 bp). 6: short 10 @ 85,
    # deposit 40 (u 50, equity 90, mm 40; BitMEX score > 0). 4: short 5 @ 80 (u 0, score 0),
    # deposit 1000. 5: long 5 @ 70 (u 50), deposit 1000.
    return Book([MarketDef("A", 80)], [(1, 100), (6, 40), (4, 1000), (5, 1000), (MM, BIG)],
                [(1, 0, 10, 100), (6, 0, -10, 85), (4, 0, -5, 80), (5, 0, 5, 70)])


def test_adl_stops_at_the_winners_equity_reference():
    # 6 is first in the queue for all 10 lots at 900, but may pay only what leaves its equity
    # at 0 (section 5, ADL bounds): 40 + floor(u 50 + 800 of position value) = 890. The fund is
    # empty, so 6 pays 890 and ends flat at 0 (before: -10, settled in a second round); 1 is
    # left at -10: pending 10 on A, haircut (queue): 4 has no profit, 5 pays 10 (min(1050, 50)).
    ex, ref = build_both(flat_debt_book())
    rres = ref.liquidate(MarketClose(MM, slippage_bps=100))
    assert rres.totals.as_dict() == dict(zero_totals(step=1, liquidated_accounts=1, deficit=110, adl_notional=890,
                                                     adl_closes=1, haircut_total=10, accounts_touched=2),
                                          # no fund: deficit matching needs the whole deficit from the last resort
                                          last_resort_needed=110, last_resort_planned=110)
    assert ref.balance(6) == 0 and ref.balance(5) == 990 and ref.balance(1) == 0


def test_adl_stops_at_the_winners_equity_engine():
    res, ex, rres, ref = run(flat_debt_book(), MarketClose(MM, slippage_bps=100))
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=110, adl_notional=890, adl_closes=1,
                             haircut_total=10, accounts_touched=2),
          balances={1: 0, 6: 0, 5: 990},
          events=[("adl_close", 6, 0, 1, 10, -890, 89, -1), ("haircut", 5, 0, 0, 0, -10, 0, -1),
                  ("socialized_credit", 1, 0, 0, 0, 10, 0, -1)])


# ------------------------------------------------------------------- bad debt

def bad_debt_book(with_b):
    # 1: long 10 @ 100 in A bankrupt at 89 (d 20 at 100 bp), no fund, haircut mode.
    # 2: short 10 @ 90 in A, deposit 1000: u 10. Optionally market B: 3 long 1 @ 50 at mark 60
    # (u 10), 8 short 1 @ 50 (u -10), deposits 1000.
    markets = [MarketDef("A", 89)] + ([MarketDef("B", 60)] if with_b else [])
    deposits = [(1, 100), (2, 1000), (3, 1000), (8, 1000), (MM, BIG)]
    pos = [(1, 0, 10, 100), (2, 0, -10, 90)] + ([(3, 1, 1, 50), (8, 1, -1, 50)] if with_b else [])
    return Book(markets, deposits, pos)


def test_bad_debt_when_winners_exhausted():
    # Executor fills at 88: 1 at -20, pending 20 on A. 2 pays its profit 10; second pass: A has
    # no capacity left (10 - 10 taken), no other market: bad debt 10.
    res, ex, rres, ref = run(bad_debt_book(False), MarketClose(MM, slippage_bps=100), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, haircut_total=10, accounts_touched=1, bad_debt=10),
          balances={1: -10, 2: 990},
          events=[("liquidation_fill", 1, 0, MM, -10, 880, 88, -1), ("haircut", 2, 0, 0, 0, -10, 0, -1),
                  ("socialized_credit", 1, 0, 0, 0, 10, 0, -1), ("bad_debt", 1, -1, 0, 0, 10, 0, -1)])


def test_unpaid_rest_raised_from_other_markets():
    # As above, but B's winner 3 (u 10) pays the unpaid 10 in the second pass: no bad debt.
    res, ex, rres, ref = run(bad_debt_book(True), MarketClose(MM, slippage_bps=100), mode="haircut")
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, haircut_total=20, accounts_touched=2),
          balances={1: 0, 2: 990, 3: 990, 8: 1000},
          events=[("liquidation_fill", 1, 0, MM, -10, 880, 88, -1), ("haircut", 2, 0, 0, 0, -10, 0, -1),
                  ("socialized_credit", 1, 0, 0, 0, 10, 0, -1), ("haircut", 3, 1, 0, 0, -10, 0, -1),
                  ("socialized_credit", 1, -1, 0, 0, 10, 0, -1)])


# ------------------------------------------------------- worst-first ordering

def test_candidates_worst_first():
    # Three longs 10 @ 100 at mark 95 (value 950, mm ceil(47.5) = 48), slippage 0, surplus only:
    # deposits 30 (equity -20), 10 (equity -40), 60 (equity 10, ratio 4.8), 70 (equity 20).
    # Order: -40 (id 12), -20 (id 11), then 13 (ratio 4.8), 14 (ratio 2.4).
    book = Book([MarketDef("A", 95)], [(11, 30), (12, 10), (13, 60), (14, 70), (MM, BIG)],
                [(a, 0, 10, 100) for a in (11, 12, 13, 14)], counterparty=MM, fund={0: 100})
    res, ex, rres, ref = run(book, MarketClose(MM))
    fills = [e[2] for e in engine_events(res) if e[1] == "liquidation_fill"]
    assert fills == [12, 11, 13, 14]
    assert [e[2] for e in rres.events if e[1] == "liquidation_fill"] == [12, 11, 13, 14]


# ------------------------------------------------------ atomicity, bad inputs

def assert_unchanged(ex, before):
    assert engine_state(ex) == before
    ex.check_invariants()


def test_invalid_executor_account_changes_nothing():
    ex, ref = build_both(adl_book(fund=8))
    before = engine_state(ex)
    margin_before = engine_margin(ex)
    with pytest.raises(UnknownId):
        ex.liquidate(executor=MarketClose(12345), exact=True)
    with pytest.raises(UnknownId):
        ex.liquidate(executor=Backstop(12345), exact=True)
    assert_unchanged(ex, before)
    assert engine_margin(ex) == margin_before
    assert ex.step == 0
    ref_before = reference_state(ref)
    with pytest.raises(ref.errors.UnknownId):
        ref.liquidate(MarketClose(12345))
    assert reference_state(ref) == ref_before
    # and the exchange still works afterwards: the same step as test_adl_close_queue_ties_and_value_split
    res = ex.liquidate(executor=MarketClose(MM, slippage_bps=100), exact=True)
    assert engine_totals(res)["step"] == 1 and engine_totals(res)["adl_notional"] == 540


@pytest.mark.parametrize("kw, field", [
    (dict(mode="close_all"), "mode"), (dict(policy="fifo"), "policy"), (dict(ranking="okx"), "ranking"),
    (dict(adl_price="index"), "adl_price"), (dict(mode="close", policy="funding_index"), "funding_index"),
])
def test_bad_strings_are_refused_with_clear_errors(kw, field):
    ex, ref = build_both(adl_book(fund=8))
    before = engine_state(ex)
    with pytest.raises(InvalidInput, match=field):
        ex.liquidate(executor=MarketClose(MM), exact=True, **kw)
    assert_unchanged(ex, before)
    with pytest.raises(ref.errors.InvalidInput):
        ref.liquidate(MarketClose(MM), **kw)


@pytest.mark.parametrize("bad", [-1, 10_001, math.nan, math.inf, "10", True])
def test_slippage_out_of_range(bad):
    with pytest.raises(ConfigError, match="slippage_bps"):
        MarketClose(MM, slippage_bps=bad)


def test_bad_executor_objects():
    ex, _ = build_both(adl_book())
    before = engine_state(ex)
    with pytest.raises(InvalidInput, match="executor"):
        ex.liquidate(executor="MM", exact=True)
    with pytest.raises(ConfigError, match="depth"):
        Impact(0, 10)
    with pytest.raises(ConfigError, match="bps_per_depth"):
        Impact(100, -1)
    assert_unchanged(ex, before)


def test_missing_mark_refused_and_nothing_changes():
    ex = deleverage.Exchange(money_decimals=0)
    ex.add_market("A", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.05, initial_margin=0.1)
    ex.deposit([1, MM], [100, BIG], exact=True)
    ex.load_positions([1], [0], [10], [100], counterparty=MM, exact=True)
    with pytest.raises(InvalidInput, match="mark"):
        ex.liquidate(executor=MarketClose(MM), exact=True)
    assert ex.step == 0 and len(ex.insurance.history(exact=True)) == 0


def test_executor_never_deleveraged_and_nothing_to_do():
    # Nobody liquidatable: a step still counts and records the pool's closing balance.
    book = Book([MarketDef("A", 100)], [(1, 1000), (MM, BIG)], [(1, 0, 10, 100)], counterparty=MM, fund={0: 7})
    res, ex, rres, ref = run(book, MarketClose(MM))
    check(res, ex, rres, ref, totals=zero_totals(step=1), pools=[7], events=[])
    assert engine_state(ex)["history"] == [(1, 0, 7)]


def test_flat_account_with_old_debt_is_not_settled():
    # adl_book plus account 3, which bought 10 @ 100 from MM and sold them back @ 90 with no
    # deposit: flat with balance -100 (a trade is not margin-checked). The step must be exactly
    # test_haircut_queue (5 pays 12 for account 1) and leave 3 at -100.
    book = adl_book(fund=8)
    book.deposits.insert(0, (3, 0))
    ex, ref = build_both(book)
    for impl in (ex, ref):
        impl.trade(3, MM, 0, 10, 100, **({"exact": True} if impl is ex else {}))
        impl.trade(MM, 3, 0, 10, 90, **({"exact": True} if impl is ex else {}))
    assert ex.balance(3, exact=True) == -100 and ref.balance(3) == -100
    res = ex.liquidate(executor=MarketClose(MM, slippage_bps=100), mode="haircut", exact=True)
    rres = ref.liquidate(MarketClose(MM, slippage_bps=100), mode="haircut")
    assert rres.totals.haircut_total == 12 and ref.balance(3) == -100 and ref.balance(5) == 38
    check(res, ex, rres, ref,
          totals=zero_totals(step=1, liquidated_accounts=1, deficit=20, fund_used=8, haircut_total=12, accounts_touched=1),
          balances={1: 0, 3: -100, 5: 38, 2: 100, 7: 100, 4: 1000})


# -------------------------------------------------------------- the indicator

def test_adl_indicator_small_book():
    # adl_book at mark 89 (scores in the comment above the book).
    # Longs: 5 (294_485_294) rank 1, 1 (-110) rank 2; lights 5 - floor(5k/2): 5, 3.
    # Shorts: 2, 7 (tie, id 2 first), 4: lights 5, 5 - floor(5/3) = 4, 5 - floor(10/3) = 2.
    # Expected loss of the shorts: the bankrupt long 1 has gap -floor(-10 * 45 / 45) = 10 over
    # 10 lots: 2 takes 4 -> floor(10 * 4 / 10) = 4, 7 -> 4, 4 takes the last 2 -> 2.
    # The longs face no bankrupt short: 0.
    ex, ref = build_both(adl_book())
    want = sorted([
        dict(account=1, side=1, size=10, score=-110, rank=2, light=3, expected_loss=0),
        dict(account=5, side=1, size=2, score=294_485_294, rank=1, light=5, expected_loss=0),
        dict(account=7, side=-1, size=-4, score=271_944_444, rank=2, light=4, expected_loss=4),
        dict(account=2, side=-1, size=-4, score=271_944_444, rank=1, light=5, expected_loss=4),
        dict(account=4, side=-1, size=-4, score=37_509_578, rank=3, light=2, expected_loss=2),
    ], key=lambda d: d["account"])
    assert engine_ranking(ex, "A") == want
    assert sorted(ref.adl_ranking(0), key=lambda d: d["account"]) == want
    f = ex.adl_ranking("A")  # float mode: quote units and scores / 1e9
    assert sorted(zip(f.account.tolist(), f.expected_loss.tolist()))[0] == (1, 0.0)
    assert math.isclose(float(f.score[list(f.account).index(5)]), 0.294485294)


def test_adl_indicator_places_the_deficit_like_the_waterfall():
    # Account 1 is long 10 A @ 100 and long 10 B @ 100 with 200 deposited; A falls to 70, B
    # stays at 100: equity 200 - 300 = -100, all of the loss in A. Shorts: 2 in A, 3 in B.
    # "loss" (the default): A's bankruptcy value carries the whole -100 and B none, so A's
    # short expects 100 and B's short 0 (the waterfall would deleverage A only).
    # "maintenance": weights 700 (A: 10 x 70 x 10%) and 1000 (B): A gets floor(-100 x 700 /
    # 1700) = -42, B the rest -58: A's short expects 42, B's short 58.
    ex = deleverage.Exchange(0, threads=1)
    for sym in ("A", "B"):
        ex.add_market(sym, qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.1, initial_margin=0.2)
    ex.deposit([1, 2, 3], [200, 1000, 1000])
    ex.trade(1, 2, "A", 10, 100)
    ex.trade(1, 3, "B", 10, 100)
    ex.set_marks(["A", "B"], [70, 100])

    def expected(market, **kw):
        r = ex.adl_ranking(market, exact=True, **kw)
        return {int(a): int(x) for a, x, side in zip(r.account, r.expected_loss, r.side) if side < 0}

    assert expected("A") == {2: 100} and expected("B") == {3: 0}
    assert expected("A", deficit_split="maintenance") == {2: 42}
    assert expected("B", deficit_split="maintenance") == {3: 58}
    # positions() places it the same way: account 1's bankruptcy price in A is 70 + 100 / 10
    # = 80, in B its mark (no deficit there)
    p = ex.positions(exact=True)
    mine = {int(m): int(b) for a, m, b in zip(p.account, p.market, p.bankruptcy_price) if a == 1}
    assert mine == {0: 80, 1: 100}
    with pytest.raises(ConfigError, match="deficit_split"):
        ex.adl_ranking("A", deficit_split="nope")


def test_other_rankings_small_book():
    # Binance for 5: pnl floor(18e9 / max(1, 50)) = 360_000_000, ratio floor(9e9 / 68) =
    # 132_352_941 -> 360e6 * 132_352_941 / 1e9 = 47_647_058.
    # Hyperliquid for 5 (long): price_ratio floor(178e9 / 160) = 1_112_500_000,
    # lev floor(178e9 / 68) = 2_617_647_058 -> 2_912_132_352. For 2 (short): price_ratio
    # floor(400e9 / 356) = 1_123_595_505, lev floor(356e9 / 144) = 2_472_222_222 -> 2_777_777_776.
    ex, ref = build_both(adl_book())
    bn = {r["account"]: r["score"] for r in engine_ranking(ex, "A", "binance")}
    hl = {r["account"]: r["score"] for r in engine_ranking(ex, "A", "hyperliquid")}
    assert bn[5] == 47_647_058
    assert hl[5] == 2_912_132_352 and hl[2] == 2_777_777_776
    assert {r["account"]: r["score"] for r in ref.adl_ranking(0, "binance")}[5] == 47_647_058
    assert {r["account"]: r["score"] for r in ref.adl_ranking(0, "hyperliquid")}[2] == 2_777_777_776


def test_bitmex_pnl_is_floored_for_losers():
    # 3: long 3 @ 97 (E 291), deposit 291, mark 96: u = 288 - 291 = -3, equity 288 = notional:
    # pnl floor(-3e9 / 291) = floor(-10_309_278.35) = -10_309_279; share = equity = 288,
    # lev floor(288e9 / 288) = 1e9; score = trunc(pnl * 1e9 / lev) = -10_309_279.
    book = Book([MarketDef("A", 96)], [(3, 291), (MM, BIG)], [(3, 0, 3, 97)], counterparty=MM)
    ex, ref = build_both(book)
    assert {r["account"]: r["score"] for r in ref.adl_ranking(0)}[3] == -10_309_279
    assert {r["account"]: r["score"] for r in engine_ranking(ex, "A")}[3] == -10_309_279

