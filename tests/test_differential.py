"""Differential tests: random books applied to the engine and to the pure-Python reference
model must give identical margin reports and position views, and the incremental check
must report exactly the exposed accounts at the current marks."""

import pytest
from engine_adapter import EngineExchange
from hypothesis import given, settings
from hypothesis import strategies as st
from long_mode import deadline, examples
from reference_model import ReferenceExchange
from scenario import (
    HypothesisDraw,
    NumpyDraw,
    assert_engine_equals_reference,
    assert_same_margin,
    assert_same_margin_ratio,
    draw_mark,
    draw_market,
    draw_money_decimals,
    draw_price,
    draw_size,
    setup_markets,
    typical_notional_money,
)


class Pair:
    """Applies every operation to the reference and to the engine; the reference must
    accept it (scenarios here only contain valid operations)."""

    def __init__(self, md):
        self.ref = ReferenceExchange(money_decimals=md)
        self.eng = EngineExchange(money_decimals=md)

    def __getattr__(self, name):
        def both(*args, **kw):
            getattr(self.ref, name)(*args, **kw)
            getattr(self.eng, name)(*args, **kw)

        return both


def build_book(d, max_accounts=12, max_markets=5):
    md = draw_money_decimals(d)
    specs = [draw_market(d, i, md) for i in range(d.int(1, max_markets))]
    pair = Pair(md)
    mids = setup_markets([pair.ref, pair.eng], specs)
    n_acc = d.int(2, max_accounts)
    pool = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 2**40 + 7, 2**62 - 1, 0, 999, 4242]
    accounts = d.sample(pool, n_acc)
    cp = 777  # counterparty for unbalanced loads
    typical = [typical_notional_money(s, md) for s in specs]
    for a in accounts:
        # from nothing to about one typical notional: plenty of thin accounts
        pair.deposit(a, max(typical) * d.int(0, 12) // 10 + d.int(0, 3))
    pair.deposit(cp, max(typical) * 1000)
    # loaded positions, counterparty absorbs the imbalance
    rows = []
    for a in accounts:
        for mi, m in enumerate(mids):
            if d.bool(0.5):
                sign = 1 if d.bool() else -1
                rows.append((a, m, sign * draw_size(d, specs[mi]), draw_price(d, specs[mi])))
    if rows:
        pair.load_positions(rows, counterparty=cp)
    everyone = accounts + [cp]
    # trades between random accounts: increases, reductions, closes and flips
    for _ in range(d.int(0, 25)):
        buyer, seller = d.sample(everyone, 2)
        if d.bool():
            buyer, seller = seller, buyer
        mi = d.int(0, len(mids) - 1)
        pair.trade(buyer, seller, mids[mi], draw_size(d, specs[mi]), draw_price(d, specs[mi]))
    # marks: sometimes big moves so that accounts become liquidatable or bankrupt
    pair.set_marks(mids, [draw_mark(d, s, spread_pct=d.choice([5, 30, 60])) for s in specs])
    return pair, specs, mids, everyone


def incremental_rounds(d, pair, specs, mids, everyone, rounds=3):
    ref, eng = pair.ref, pair.eng
    for rnd in range(rounds):
        moved = d.sample(mids, d.int(1, len(mids)))
        pair.set_marks(moved, [draw_mark(d, specs[m], spread_pct=40) for m in moved])
        if d.bool(0.3):
            # a trade between the mark move and the check invalidates cached sums too
            buyer, seller = d.sample(everyone, 2)
            m = d.choice(mids)
            pair.trade(buyer, seller, m, draw_size(d, specs[m]), draw_price(d, specs[m]))
        # ask about the moved markets, or about some other subset: the report must be at
        # the current marks either way, for exactly the accounts exposed to the subset
        asked = moved if d.bool() else d.sample(mids, d.int(1, len(mids)))
        exposed = ref.accounts_in_markets(set(asked) | ref.moved_markets())
        ref_rows = ref.check_margin(asked)
        assert [r.account for r in ref_rows] == exposed
        assert_same_margin(ref_rows, eng.check_margin(asked), f"round {rnd} check_margin({asked})")
        if d.bool(0.5):
            assert_engine_equals_reference(ref, eng, f"round {rnd}")
    assert_engine_equals_reference(ref, eng, "after incremental rounds")


@pytest.mark.parametrize("seed", range(40))
def test_random_book_matches_reference(seed):
    d = NumpyDraw(seed)
    pair, specs, mids, everyone = build_book(d)
    assert_engine_equals_reference(pair.ref, pair.eng, f"seed {seed}")
    assert_same_margin_ratio(pair.ref, pair.eng)


@pytest.mark.parametrize("seed", range(40))
def test_incremental_check_matches_reference(seed):
    d = NumpyDraw(1000 + seed)
    pair, specs, mids, everyone = build_book(d)
    # a full check first, so that the engine has cached values to go stale
    assert_same_margin(pair.ref.check_margin(), pair.eng.check_margin(), "initial full check")
    incremental_rounds(d, pair, specs, mids, everyone)


@pytest.mark.parametrize("seed", range(5))
def test_larger_book_matches_reference(seed):
    d = NumpyDraw(5000 + seed)
    pair, specs, mids, everyone = build_book(d, max_accounts=16, max_markets=12)
    assert_engine_equals_reference(pair.ref, pair.eng, f"seed {seed}")
    incremental_rounds(d, pair, specs, mids, everyone, rounds=5)


@settings(max_examples=examples(60), deadline=deadline(), derandomize=True)
@given(st.data())
def test_hypothesis_book_matches_reference(data):
    d = HypothesisDraw(data)
    pair, specs, mids, everyone = build_book(d, max_accounts=6, max_markets=3)
    assert_engine_equals_reference(pair.ref, pair.eng)
    incremental_rounds(d, pair, specs, mids, everyone, rounds=2)
