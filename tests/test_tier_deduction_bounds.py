"""The tiered full check at the bound of its 64-bit deductions, against the reference model.

When every tier deduction of the book (money x 1e8 units) fits int64, the tiered pass keeps
the deductions, and their sum over each account, in 64 bits (checked: an account whose sum
overflows takes the general path) and multiplies the sums by S once; otherwise it uses
128-bit deductions times S. Each schedule below has two tiers and a top deduction of
exactly INT64_MAX (the largest that fits) or 2^63 (the smallest that does not), and some
accounts hold the top tier of two markets, so that their sum passes 2^63: a bound off by
one, or an unchecked sum, would wrap and the requirements would differ from the reference
model's (both mutations were seen to fail this test).
"""

import pytest
from conftest import make_impl
from scenario import assert_same_margin

INT64_MAX = 2**63 - 1
MAKER = 1000
Q = 10**6  # one quote unit in money units (money_decimals = 6; qd + pd = 5, so S = 1)

# deduction = cap * (rate step): INT64_MAX = (7 * 92737 * 649657) * (7 * 73 * 127 * 337)
INSIDE = (7 * 92_737 * 649_657, 7 * 73 * 127 * 337)
OUTSIDE = (2**37, 2**26)  # 2^63
assert INSIDE[0] * INSIDE[1] == INT64_MAX and OUTSIDE[0] * OUTSIDE[1] == 2**63


def schedule(cap: int, step: int) -> list:
    """Two tiers: 0.5% / 1% to the cap, then both rates one step higher."""
    mmr, imr = 500_000, 1_000_000
    return [(cap, mmr, imr), (None, mmr + step, imr + step)]


def build(name: str, bounds: list):
    """One market per (cap, step) bound; lots of 2 quote; an account per market in each
    tier, and accounts holding the top tier of two markets (two top deductions in one sum)."""
    ex = make_impl(name)
    markets = [ex.add_market(f"M{i}", 3, 2, 500_000, 1_000_000, tiers=schedule(*b)) for i, b in enumerate(bounds)]
    ex.deposit(MAKER, 10**18)
    account = 0
    for m, (cap, _) in zip(markets, bounds):
        cap_lots = cap // (2 * Q)  # 2 quote a lot at 2,000.00
        for size in (cap_lots - 1, cap_lots, cap_lots + 1, 3 * cap_lots):
            account += 1
            ex.deposit(account, 10**7 * Q)
            ex.trade(account, MAKER, m, size, 200_000)
    for size in (1, 7_919):
        account += 1
        ex.deposit(account, 10**7 * Q)
        for m, (cap, _) in zip(markets, bounds):
            ex.trade(MAKER, account, m, 3 * (cap // (2 * Q)) + size, 200_000)
    ex.set_marks(markets, [200_000] * len(markets))
    return ex, markets


@pytest.mark.parametrize("bounds", [[INSIDE], [OUTSIDE], [INSIDE, INSIDE], [INSIDE, OUTSIDE]],
                         ids=["max-fits", "just-past", "two-max-in-one-sum", "mixed"])
def test_deductions_at_the_64_bit_bound(bounds) -> None:
    ref, markets = build("reference", bounds)
    eng, _ = build("engine", bounds)
    assert_same_margin(ref.check_margin(), eng.check_margin(), "at the trade price")
    # the marks move across the caps both ways: positions change tier
    for price in (190_001, 260_000, 200_000):
        for ex in (ref, eng):
            ex.set_marks(markets, [price] * len(markets))
        assert_same_margin(ref.check_margin(), eng.check_margin(), f"mark {price}")
    eng.check_invariants()
