"""The full margin check's fast path for tiered markets (the tier chosen by comparing |q|
with each cap in lots) against the general per-position valuation that one account's
margin uses (contribution(): the notional compared with each cap)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deleverage import Exchange


@st.composite
def tiered_books(draw):
    markets = draw(st.integers(1, 3))
    ex = Exchange(6, threads=draw(st.sampled_from([1, 2])))
    caps_lots = []
    for m in range(markets):
        price = draw(st.integers(1, 500))
        n_tiers = draw(st.integers(1, 17))  # up to 6 tiers: 5 caps counted; up to 16: 15; then the general path
        step = draw(st.integers(1, 50))
        caps = [price * step * (j + 1) for j in range(n_tiers - 1)]  # whole lots at this mark
        rates = sorted(draw(st.lists(st.integers(1, 20), min_size=n_tiers, max_size=n_tiers)))
        tiers = [(caps[j] if j < n_tiers - 1 else None, rates[j] / 1000, 2 * rates[j] / 1000) for j in range(n_tiers)]
        ex.add_market(f"M{m}", qty_decimals=0, price_decimals=0, maintenance_margin=rates[0] / 1000,
                      initial_margin=2 * rates[0] / 1000, tiers=tiers, mark_price=float(price))
        caps_lots.append([c // price for c in caps])
    accounts = draw(st.integers(2, 12))
    ex.deposit(list(range(1, accounts + 1)), 1e6)
    rows = set()
    for a in range(2, accounts + 1):
        for m in range(markets):
            if draw(st.booleans()):
                edge = draw(st.sampled_from(caps_lots[m] or [5]))
                size = max(1, edge + draw(st.sampled_from([-1, 0, 1, 2])))  # at and around a cap
                rows.add((a, m, size * draw(st.sampled_from([1, -1]))))
    if rows:
        acc, mk, q = zip(*sorted(rows))
        prices = [float(ex.marks()[m]) for m in mk]
        ex.load_positions(list(acc), list(mk), list(q), prices, counterparty=1)
    return ex, markets


@settings(max_examples=150, deadline=None)
@given(book=tiered_books(), move=st.lists(st.integers(-40, 40), min_size=3, max_size=3))
def test_full_check_equals_the_per_account_valuation(book, move) -> None:
    ex, markets = book
    # new marks: the caps in lots change with them
    ex.set_marks(list(range(markets)), [max(1.0, float(p) * (1 + move[m] / 100)) // 1 for m, p in enumerate(ex.marks())])
    full = ex.check_margin(exact=True)
    for i, account in enumerate(full.account.tolist()):
        one = ex.account_margin(account, exact=True)
        assert (full.equity[i], full.maintenance[i], full.initial[i]) == (one["equity"], one["maintenance"], one["initial"]), account
    ex.check_invariants()
    assert np.array_equal(full.liquidatable, full.equity < full.maintenance)
