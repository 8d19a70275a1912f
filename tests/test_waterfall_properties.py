"""Property tests of the waterfall: hypothesis-generated books (several markets, accounts in
several markets, flat accounts, a market maker holding the imbalance with large collateral),
crashes (mark moves) and random executor / mode / policy / ranking / adl_price / fund / pool /
drawdown choices. After every step: invariants, solvency, who may pay, determinism, and the
engine equal to the reference waterfall (tests/reference_waterfall.py), every example
compared (no branch is routed around).
"""

import copy

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from long_mode import deadline, examples
from reference_model import R
from waterfall_harness import Book, MarketDef, build_both, engine_events, engine_margin, engine_state, engine_totals, reference_state

from deleverage import Backstop, MarketClose
from deleverage.errors import ArithmeticOverflow, DeleverageError

MM = 99  # market maker: holds the imbalance, huge collateral
LIQ = 98  # a flat liquidity account / backstop vault, huge collateral
BIG = 10**12
PCT = R // 100

# reference flags of branches where the engine is known to be wrong (reported):
#   pro_rata_shortage: pro_rata ADL with fewer winner lots than asked raises in the engine
#   pending_without_candidates: a flat winner's pending haircut is never resolved by the engine
#   flat_debt_before: a flat account already in debt (bad debt of an earlier step) is settled
#     again by the engine in round 1 (its debt is re-socialized when the round has candidates)



def draw_book(data):
    d = data.draw
    # a fifth of the books near the limits: money_decimals 0 or 12, positions worth up to
    # ~2^59 money units each in tiny (10^-6) or huge (~2^59) lots, collateral near 2^61
    near = d(st.integers(0, 4)) == 0
    md = d(st.sampled_from([0, 12] if near else [0, 2]))
    # money scale of the book: 1, or so that 20 units at 260 quote are worth ~2^58 money units
    scale = max(1, 2**58 // (20 * 260 * 10**md)) if near else 1
    n_markets = d(st.integers(1, 3))
    markets = []
    for i in range(n_markets):
        if near:  # tiny lots with money_decimals 12, huge lot counts with 0
            qd, pd = (6 if md == 12 else 0), d(st.integers(0, 2))
        else:
            qd, pd = d(st.integers(0, 1)), d(st.integers(0, 1))
        extra = 0 if near else d(st.sampled_from([0, 0, 3]))  # marks finer than the order tick
        mmr = d(st.integers(1, 10)) * PCT // 2 + d(st.integers(0, 99))
        mark = d(st.integers(50, 200)) * 10 ** (pd + extra) + d(st.integers(0, 10**extra - 1))
        markets.append(MarketDef(f"M{i}", mark, mmr=mmr, imr=mmr + d(st.integers(0, 5)) * PCT,
                                 fee=d(st.sampled_from([0, 0, PCT // 2, PCT, 3 * PCT])), own_pool=d(st.booleans()),
                                 qd=qd, pd=pd, md=pd + extra if extra else None))
    n_accounts = d(st.integers(2, 6))
    ids = list(range(1, n_accounts + 1))
    deposits = [(a, d(st.integers(0, 400)) * 10**md * scale) for a in ids]
    n_flat = d(st.integers(0, 2))
    deposits += [(100 + j, d(st.integers(0, 50)) * 10**md * scale) for j in range(n_flat)]
    d(st.randoms()).shuffle(deposits)  # creation order != id order
    deposits += [(MM, 2**61 if near else BIG), (LIQ, 2**61 if near else BIG)]
    positions = []
    for a in ids:
        held = d(st.lists(st.integers(0, n_markets - 1), min_size=1, max_size=n_markets, unique=True))
        for m in held:
            size = d(st.integers(-20, 20).filter(lambda x: x != 0)) * 10 ** markets[m].qd * scale
            tick = 10 ** ((markets[m].md or markets[m].pd) - markets[m].pd)  # entries are whole order ticks
            entry = max(1, markets[m].mark * d(st.integers(70, 130)) // 100 // tick) * tick
            positions.append((a, m, size, entry))
    fund = {}
    pools = [0] + [1 + sum(1 for mm in markets[:i] if mm.own_pool) for i, mk in enumerate(markets) if mk.own_pool]
    for p in pools:
        if d(st.booleans()):
            fund[p] = d(st.integers(0, 300)) * 10**md * scale
    drawdown = None
    if d(st.booleans()):
        drawdown = (d(st.integers(1, 9)) * 10 * PCT, d(st.integers(1, 3)))
    return Book(markets, deposits, positions, counterparty=MM, fund=fund, drawdown=drawdown, money_decimals=md)


def draw_call(data):
    d = data.draw
    kind = d(st.sampled_from(["mm", "liq", "backstop"]))
    slip = d(st.sampled_from([0, 0, 10, 100, 500]))
    partial = d(st.booleans())
    if kind == "backstop":
        executor = Backstop(LIQ)
    else:
        executor = MarketClose(MM if kind == "mm" else LIQ, slippage_bps=slip, partial=partial)
    mode = d(st.sampled_from(["close", "haircut"]))
    # "none" is the counterfactual (no last resort): what the fund cannot pay is bad debt
    policy = d(st.sampled_from(["queue", "pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk", "none"]
                               + (["funding_index"] if mode == "haircut" else [])))
    ranking = d(st.sampled_from(["bitmex", "binance", "hyperliquid"]))
    adl_price = d(st.sampled_from(["bankruptcy", "mark", "previous_mark"]))
    call = dict(executor=executor, mode=mode, policy=policy, ranking=ranking, adl_price=adl_price)
    theta = d(st.sampled_from(["deficit", "deficit", 0.0, 0.5, 1.0, 0.123]))
    if theta != "deficit":
        call["theta"] = theta
    if policy == "capped_pro_rata" or (policy == "risk_aware" and d(st.booleans())):
        call["cap"] = d(st.sampled_from([0.0, 0.1, 0.5, 1.0, 0.333]))
    if policy == "risk_aware":
        call["g"] = d(st.sampled_from(["linear", "power:2", "excess:1.5", "power:0"]))
    if policy == "min_max_lots":
        call["lot"] = d(st.sampled_from([1, 2, 3, 7]))
    if policy == "random_walk":
        call["seed"] = d(st.integers(0, 2**64 - 1))
    if d(st.booleans()):
        call["deficit_split"] = d(st.sampled_from(["loss", "maintenance"]))
    return call


def reference_call(call):
    """liquidate()'s keywords in the reference's integer units."""
    theta = call.get("theta", "deficit")
    return dict(theta=-1 if theta == "deficit" else int(round(theta * R)), cap=int(round(call.get("cap", 1.0) * R)),
                lot=call.get("lot", 1), g=call.get("g", "linear"), seed=call.get("seed", 0),
                deficit_split=call.get("deficit_split", "loss"))


def draw_crash(data, book):
    moves = []
    for m, mk in enumerate(book.markets):
        if data.draw(st.booleans()):
            moves.append((m, max(1, mk.mark * data.draw(st.integers(55, 145)) // 100)))
    return moves


def set_marks(ex, ref, moves):
    """Apply the moves to both; a move that would take an account out of the representable
    range (near-limit books) must be refused by both, and is skipped."""
    for m, p in moves:
        try:
            ex.set_marks([m], np.array([p], dtype=np.int64), exact=True)
        except ArithmeticOverflow:
            with pytest.raises(OverflowError):  # the reference's ArithmeticOverflow
                ref.set_marks([m], [p])
            continue
        ref.set_marks([m], [p])


def upnl_positive(ref, a, m):
    acct = ref.accounts[a]
    return m in acct.positions and ref._u_money(m, acct.positions[m]) > 0


def check_step(ex, ref, call, res, before_eng, before_ref_positions, before_margin=None):
    """The properties of one successful engine step (engine values only, except `ref` which
    holds the start-of-step book for the who-may-pay checks)."""
    totals = engine_totals(res)
    events = engine_events(res)
    ex.check_invariants()
    margin = engine_margin(ex)
    if totals["bad_debt"] == 0:
        for a, v in margin.items():
            old_debt = a not in before_ref_positions and before_eng["balances"][a] < 0  # bad debt of an earlier step
            assert not v[3] or old_debt, f"account {a} is left bankrupt without bad debt: {margin}"
    # flat accounts never pay: their balance is unchanged
    executor_account = call["executor"].account if isinstance(call["executor"], Backstop) else call["executor"].counterparty
    for a, bal in before_eng["balances"].items():
        if a not in before_ref_positions and a != executor_account:
            assert engine_state(ex)["balances"][a] == bal, f"flat account {a} changed"
    executor_account = call["executor"].account if isinstance(call["executor"], Backstop) else call["executor"].counterparty
    # the accounts of the round being run are excluded from being winners while it runs
    # (docs/waterfall.md section 1): a round starts with its accounts' fills, so the fills that
    # follow a last-resort event open the next round; with queue and random_walk every
    # candidate is its own round, so another account's fills may open one too (a cascade
    # round's accounts are then checked one at a time: weaker, never wrong)
    per_account = call["policy"] in ("queue", "random_walk")
    round_accounts: set = set()
    liquidated = set()  # every account liquidated in the step
    last_resort_since_fill = True
    adl_seen = set()
    for e in events:
        kind, acc, m, size = e[1], e[2], e[3], e[5]
        if kind in ("liquidation_fill", "partial_fill", "backstop_fill"):
            if acc not in round_accounts and (last_resort_since_fill or per_account):
                round_accounts = set()
            round_accounts.add(acc)
            liquidated.add(acc)
            last_resort_since_fill = False
        if kind in ("adl_close", "haircut"):
            last_resort_since_fill = True
            assert acc != executor_account, "the executor account was deleveraged"
            assert acc not in round_accounts, f"account {acc} deleveraged while its own round ran"
        if kind == "adl_close":
            assert call["mode"] == "close"
            start = before_ref_positions.get(acc, {}).get(m)
            assert start is not None and np.sign(start) == -np.sign(size), f"adl_close of {acc} is not against its side"
            adl_seen.add((acc, m))
        if kind == "haircut" and call["policy"] != "funding_index":
            assert m in before_ref_positions.get(acc, {}), f"haircut of {acc} without a position in {m}"
            assert (acc, m) in adl_seen or upnl_positive(ref, acc, m), f"haircut of {acc} in {m} without profit"
        if kind == "haircut":
            assert acc in before_ref_positions, f"flat account {acc} haircut"
    if before_margin is not None:
        # ADL bounds (docs/waterfall.md section 5), for every adl_price: a deleveraged account
        # that was not liquidated never ends below min(0, its equity at the start); a liquidated
        # account that started bankrupt and ends flat never keeps money (balance <= 0)
        state = engine_state(ex)
        holders = {p[0] for p in state["positions"]}
        for acc in {e[2] for e in events if e[1] == "adl_close"} - liquidated:
            assert margin[acc][0] >= min(0, before_margin[acc][0]), f"ADL pushed {acc} below zero: {before_margin[acc]} -> {margin[acc]}"
        for acc in liquidated:
            if before_margin[acc][0] < 0 and acc not in holders:
                assert state["balances"][acc] <= 0, f"bankrupt {acc} ends with {state['balances'][acc]}"


def run_example(data, differential=True):
    book = draw_book(data)
    ex, ref = build_both(book)
    steps = data.draw(st.integers(1, 2))
    for _ in range(steps):
        set_marks(ex, ref, draw_crash(data, book))
        call = draw_call(data)
        before_eng = engine_state(ex)
        before_margin = engine_margin(ex)
        before_positions = {a: {m: p.size for m, p in acct.positions.items()} for a, acct in ref.accounts.items() if acct.positions}
        ref_before = copy.deepcopy(ref)
        rres = ref.liquidate(call["executor"], call["mode"], call["policy"], call["ranking"], call["adl_price"], **reference_call(call))
        ref.check_invariants()
        try:
            res = ex.liquidate(exact=True, **call)
        except DeleverageError:
            # atomic even when it raises
            assert engine_state(ex) == before_eng
            ex.check_invariants()
            raise
        check_step(ex, ref_before, call, res, before_eng, before_positions, before_margin)
        if not differential:
            ref_sync(ref, ex)  # the next step's start-of-step book is the engine's
            continue
        # differential: totals, state and events equal the reference's
        assert engine_totals(res) == rres.totals.as_dict()
        assert engine_state(ex) == reference_state(ref)
        assert sorted(engine_events(res)) == sorted(rres.events)


def ref_sync(ref, ex):
    """Copy the engine's balances and positions into the reference (used only by the
    engine-only property test, so that the next step's start-of-step book is the engine's)."""
    from reference_model import Position

    st_ = engine_state(ex)
    for a, acct in ref.accounts.items():
        acct.balance = st_["balances"][a]
        acct.positions = {}
    for a, m, q, e in st_["positions"]:
        ref.accounts[a].positions[m] = Position(q, e)


@settings(max_examples=examples(40), deadline=deadline(), derandomize=True)
@given(st.data())
def test_waterfall_properties(data):
    """Engine-only properties after every step (invariants, solvency, who may pay)."""
    run_example(data, differential=False)


@settings(max_examples=examples(80), deadline=deadline(), derandomize=True, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(st.data())
def test_waterfall_equals_reference(data):
    """Differential: totals, state (balances, positions, pools, ledger, history, step) and events."""
    run_example(data)


@settings(max_examples=examples(25), deadline=deadline(), derandomize=True)
@given(st.data())
def test_determinism(data):
    book = draw_book(data)
    moves = draw_crash(data, book)
    call = draw_call(data)
    outs = []
    for _ in range(2):
        ex, ref = build_both(book)
        set_marks(ex, ref, moves)
        try:
            res = ex.liquidate(exact=True, **call)
            outs.append((engine_totals(res), engine_events(res), engine_state(ex)))
        except DeleverageError as e:
            outs.append((type(e).__name__, str(e), engine_state(ex)))
    assert outs[0] == outs[1]
