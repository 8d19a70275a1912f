"""Online liquidation (docs/waterfall.md "Per-account liquidation" and "The kept ADL queue"):
the batch step equals the same candidates liquidated one call at a time for the queue and
random-walk policies; per-account calls equal the reference for every policy; the cascade
inside one call; skip-and-report; the kept queue's staleness rules ("exact" and "interval")
and lazy re-scoring; adl_rank against adl_ranking; bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from long_mode import deadline, examples
from reference_waterfall import _worst_first
from test_waterfall_properties import LIQ, MM, draw_book, draw_call, draw_crash, reference_call, set_marks
from waterfall_harness import (
    Book,
    MarketDef,
    build_both,
    build_engine,
    engine_events,
    engine_margin,
    engine_ranking,
    engine_state,
    engine_totals,
    reference_state,
)

from deleverage import Exchange, MarketClose
from deleverage.errors import InvalidInput, UnknownId


def executor_account(call) -> int:
    ex = call["executor"]
    return ex.counterparty if isinstance(ex, MarketClose) else ex.account


def candidates(ex, call) -> list[int]:
    """The batch step's documented order: liquidatable accounts with positions, worst first."""
    margin = engine_margin(ex)
    held = {a for a, _, _, _ in engine_state(ex)["positions"]}
    rows = [(a, eq, mm) for a, (eq, mm, liq, _) in margin.items() if liq and a in held and a != executor_account(call)]
    return [a for a, _, _ in _worst_first(rows)]


def without_step(events):
    return [e[1:] for e in events]


def book_state(ex) -> dict:
    s = engine_state(ex)
    return {k: s[k] for k in ("balances", "positions", "pools")}


@settings(max_examples=examples(60), deadline=deadline(), derandomize=True)
@given(st.data())
def test_batch_step_equals_per_account_calls(data):
    """queue and random_walk: one batch step and the same candidates liquidated one by one
    with accounts=[a], in that order, end with the same positions, balances and fund, and
    make the same fills (cascades included: each candidate's cascade runs inside its call),
    unless a winner is haircut twice in the step (see the assume below)."""
    book = draw_book(data)
    book.drawdown = None  # a drawdown rule reads the step's opening balance: steps differ here
    crash = draw_crash(data, book)
    call = draw_call(data)
    call["policy"] = data.draw(st.sampled_from(["queue", "random_walk"]))
    if call["policy"] == "random_walk":
        call["seed"] = data.draw(st.integers(0, 2**64 - 1))
    for k in ("cap", "g", "lot"):
        call.pop(k, None)
    batch, ref = build_both(book)
    one_by_one = build_engine(book)
    set_marks(batch, ref, crash)
    set_marks(one_by_one, ref, [])
    for m, p in crash:
        one_by_one.set_marks([m], np.array([p], dtype=np.int64), exact=True)
    order = candidates(one_by_one, call)
    res = batch.liquidate(exact=True, **call)
    events, haircut_in_earlier_calls, haircut_again = [], set(), False
    for a in order:
        r = one_by_one.liquidate(exact=True, accounts=[a], **call)
        events += engine_events(r)
        markets = {e[3] for e in engine_events(r) if e[1] == "haircut"}
        haircut_again |= bool(markets & haircut_in_earlier_calls)
        haircut_in_earlier_calls |= markets
    # "already taken" (section 6) counts per step: a winner haircut in one market for two
    # accounts pays that profit once in a batch step, but may pay it again in a later call
    # (documented); and what an earlier call took lowers every such winner's capacity in the
    # batch step only, which changes how a later haircut in that market is allocated (found
    # with random_walk at 1,200 examples). Examples with haircuts in one market for two
    # accounts are left out
    assume(not haircut_again)
    assert book_state(one_by_one) == book_state(batch)
    assert without_step(events) == without_step(engine_events(res))
    one_by_one.check_invariants()


@settings(max_examples=examples(60), deadline=deadline(), derandomize=True)
@given(st.data())
def test_per_account_call_equals_reference(data):
    """Every policy: a per-account call (any accounts, flat, healthy, repeated or the
    executor's among them) equals the reference: state, totals, events, skipped."""
    book = draw_book(data)
    ex, ref = build_both(book)
    for _ in range(data.draw(st.integers(1, 2))):
        set_marks(ex, ref, draw_crash(data, book))
        call = draw_call(data)
        ids = sorted(ref.accounts)
        accounts = data.draw(st.lists(st.sampled_from(ids), max_size=5))
        rres = ref.liquidate(call["executor"], call["mode"], call["policy"], call["ranking"], call["adl_price"],
                             accounts=accounts, **reference_call(call))
        res = ex.liquidate(exact=True, accounts=accounts, **call)
        assert [int(a) for a in res.skipped] == rres.skipped
        assert engine_totals(res) == rres.totals.as_dict()
        assert engine_state(ex) == reference_state(ref)
        assert sorted(engine_events(res)) == sorted(rres.events)
        ex.check_invariants()


# ------------------------------------------------------------------ hand cases

def cascade_book() -> Book:
    """A (long 10 @ 100, 50 deposited) is bankrupt at mark 90; W (short 20 @ 90, 92
    deposited) is the only winner. ADL at A's bankruptcy price 95 costs W 5 per lot on 10 lots:
    W keeps 10 lots with equity 42 < maintenance 45, so the same call liquidates W too."""
    m = MarketDef("M", 900, mmr=5 * 10**6, imr=10 * 10**6, pd=1)
    return Book([m], [(1, 50), (2, 92), (MM, 10**9)], [(1, 0, 10, 1000), (2, 0, -20, 900)], counterparty=MM)


def test_cascade_inside_one_call():
    ex, ref = build_both(cascade_book())
    call = dict(executor=MarketClose(MM, slippage_bps=100), mode="close", policy="queue", ranking="bitmex", adl_price="bankruptcy")
    res = ex.liquidate(exact=True, accounts=[1], **call)
    rres = ref.liquidate(call["executor"], "close", "queue", "bitmex", "bankruptcy", accounts=[1])
    kinds = [(e[1], e[2]) for e in engine_events(res)]
    assert ("adl_close", 2) in kinds  # W deleveraged by A's liquidation ...
    assert ("liquidation_fill", 2) in kinds  # ... and then liquidated in the same call
    assert res.totals.liquidated_accounts == 2 and len(res.skipped) == 0
    assert engine_state(ex) == reference_state(ref)
    assert engine_events(res) == rres.events
    assert not any(v[2] for v in engine_margin(ex).values())


def test_skips_and_reports():
    ex = build_engine(cascade_book())
    ex.deposit([7], [5], exact=True)  # a flat account
    res = ex.liquidate(executor=MarketClose(MM), accounts=[7, 2, MM, 1, 1])
    # flat, healthy (W before A's ADL), the executor's, then A liquidated, then A again (flat now)
    assert [int(a) for a in res.skipped] == [7, 2, MM, 1]
    assert res.totals.liquidated_accounts >= 1


def test_unknown_account_changes_nothing():
    ex = build_engine(cascade_book())
    before = engine_state(ex)
    with pytest.raises(UnknownId, match=r"accounts\[1\]"):
        ex.liquidate(executor=MarketClose(MM), accounts=[1, 12345])
    assert engine_state(ex) == before
    with pytest.raises(InvalidInput, match="accounts"):
        ex.liquidate(executor=MarketClose(MM), accounts=[1.5])
    assert engine_state(ex) == before


def ranking_book() -> Book:
    m = MarketDef("M", 100)
    deposits = [(1, 100), (2, 1000), (3, 1000), (4, 400), (5, 50), (MM, 10**9), (LIQ, 10**9)]
    positions = [(1, 0, 10, 100), (2, 0, -10, 100), (3, 0, 5, 100), (4, 0, -5, 100), (5, 0, -2, 95)]
    return Book([m], deposits, positions, counterparty=MM)


def scores(ex) -> dict[int, int]:
    return {r["account"]: r["score"] for r in engine_ranking(ex, 0)}


def reference_scores(ref) -> dict[int, int]:
    return {r["account"]: r["score"] for r in ref.adl_ranking(0)}


def test_exact_refresh_follows_every_mark_move():
    ex, ref = build_both(ranking_book())
    for price in (100, 85, 85, 120, 97):
        ex.set_marks([0], np.array([price], dtype=np.int64), exact=True)
        ref.set_marks([0], [price])
        assert scores(ex) == reference_scores(ref)
        assert engine_ranking(ex, 0) == sorted(ref.adl_ranking(0), key=lambda r: r["account"])


def test_interval_refresh_keeps_scores_until_the_nth_mark_update():
    ex, ref = build_both(ranking_book())
    ex.set_adl_refresh("interval", every=2)
    assert ex.adl_refresh == ("interval", 2)
    first = scores(ex)  # built now, at mark 100
    assert first == reference_scores(ref)
    ex.set_marks([0], np.array([85], dtype=np.int64), exact=True)  # 1 update: not stale yet
    ref.set_marks([0], [85])
    assert scores(ex) == first
    assert reference_scores(ref) != first  # (the move does change the scores)
    # an account whose balance changed is re-scored anyway (lazily, at the next use)
    ex.deposit([4], [300], exact=True)
    ref.deposit(4, 300)
    now = scores(ex)
    assert now[4] == reference_scores(ref)[4] and now[4] != first[4]
    assert {a: s for a, s in now.items() if a != 4} == {a: s for a, s in first.items() if a != 4}
    ex.set_marks([0], np.array([84], dtype=np.int64), exact=True)  # the 2nd update: refreshed
    ref.set_marks([0], [84])
    assert scores(ex) == reference_scores(ref)
    ex.set_adl_refresh("exact")
    ex.set_marks([0], np.array([90], dtype=np.int64), exact=True)
    ref.set_marks([0], [90])
    assert scores(ex) == reference_scores(ref)


def test_trades_rescore_and_add_positions_lazily():
    """A trade moves two accounts (one of them new to the side): both are re-scored before the
    queue's next use, without a refresh (the marks did not move)."""
    ex, ref = build_both(ranking_book())
    assert scores(ex) == reference_scores(ref)
    ex.deposit([8], [500], exact=True)
    ref.deposit(8, 500)
    ex.trade(3, 8, 0, 3, 100, exact=True)  # 8 opens a short, 3 adds to its long
    ref.trade(3, 8, 0, 3, 100)
    assert scores(ex) == reference_scores(ref)
    ex.trade(8, 2, 0, 3, 100, exact=True)  # 8 is flat again; 2 grows
    ref.trade(8, 2, 0, 3, 100)
    assert scores(ex) == reference_scores(ref)


def test_adl_rank_matches_the_indicator():
    ex = build_engine(ranking_book())
    ex.set_marks([0], np.array([88], dtype=np.int64), exact=True)
    table = {r["account"]: r for r in engine_ranking(ex, 0)}
    for a, row in table.items():
        one = ex.adl_rank(a, 0)
        assert (one.side, one.score_units, one.rank, one.light) == (row["side"], row["score"], row["rank"], row["light"])
        assert one.side_count == sum(1 for r in table.values() if r["side"] == row["side"])


def test_adl_rank_and_refresh_bad_input():
    ex = build_engine(ranking_book())
    with pytest.raises(UnknownId, match="account"):
        ex.adl_rank(12345, 0)
    with pytest.raises(InvalidInput, match="no position"):
        ex.adl_rank(LIQ, 0)
    with pytest.raises(UnknownId):
        ex.adl_rank(1, 7)
    with pytest.raises(InvalidInput, match="policy"):
        ex.set_adl_refresh("weekly")
    with pytest.raises(InvalidInput, match="every"):
        ex.set_adl_refresh("interval", every=0)
    with pytest.raises(InvalidInput, match="every"):
        ex.set_adl_refresh("interval", every=1.5)  # type: ignore[arg-type]
    assert ex.adl_refresh == ("exact", 1)


def test_a_failed_call_leaves_the_queue_usable():
    """A call that raises restores the book and drops the kept queues: the next call scores
    from the restored state."""
    ex, ref = build_both(ranking_book())
    ex.set_marks([0], np.array([60], dtype=np.int64), exact=True)
    ref.set_marks([0], [60])
    before = engine_state(ex)
    with pytest.raises(UnknownId):
        ex.liquidate(executor=MarketClose(424242), accounts=[1])
    assert engine_state(ex) == before
    assert scores(ex) == reference_scores(ref)
    ex.liquidate(executor=MarketClose(MM, slippage_bps=50), accounts=[1], exact=True)
    ref.liquidate(MarketClose(MM, slippage_bps=50), accounts=[1])
    assert engine_state(ex) == reference_state(ref)
    assert scores(ex) == reference_scores(ref)


def test_exchange_level_example():
    """The per-account call from Python, in human units."""
    ex = Exchange()
    btc = ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.1, mark_price=100.0)
    ex.deposit([1, 2, 3, 9], [100.0, 1000.0, 1000.0, 1e7])
    ex.trade(buyer=1, seller=2, market=btc, size=10, price=100.0)
    ex.trade(buyer=3, seller=9, market=btc, size=1, price=100.0)
    ex.set_marks([btc], [85.0])
    res = ex.liquidate(executor=MarketClose(9, slippage_bps=500), accounts=[3, 1])
    assert list(res.skipped) == [3]
    assert res.totals.liquidated_accounts == 1 and res.totals.adl_closes == 1
    ex.check_invariants()
