"""The full margin check on risk-limit schedules of every length its compiled pass tells
apart, against the reference model.

The pass counts as many tier caps as the book's longest schedule has (one loop each for
up to 6 tiers, one shared loop for 7 to 12 tiers and one for 13 to 16) and sends longer
schedules to the general 128-bit path; each length below lands on one of those loops, and
7, 12, 16 and 17 on each side of their bounds. The book mixes
the schedule under test with a two-tier market, so that shorter schedules are padded,
and holds positions in every tier of both. The marks then move (every market, then one),
which revalues each position through the change since the cached marks and moves
positions across caps.
"""

import pytest
from conftest import make_impl
from scenario import assert_same_margin

R = 10**8
PCT = R // 100  # 1% in 1e-8 units
Q = 10**6  # one quote unit in money units (money_decimals = 6)
MAKER = 1000  # the counterparty of every position, with ample collateral


def schedule(n_tiers: int) -> list:
    """n tiers with caps doubling from 1,000 quote and rates rising with the tier."""
    rates = [(PCT // 2 + j * PCT // 4, PCT + j * PCT // 2) for j in range(n_tiers)]
    caps = [1_000 * Q * 2**j for j in range(n_tiers - 1)] + [None]
    return [(cap, mmr, imr) for cap, (mmr, imr) in zip(caps, rates)]


def build(name: str, n_tiers: int):
    ex = make_impl(name)
    # qd = 3, pd = 2: one lot at 2,000.00 is worth 2 quote, so lots of 100 * 2^i reach
    # every cap up to 1,000 * 2^20 quote
    long_schedule = ex.add_market("LONG", 3, 2, PCT // 2, PCT, tiers=schedule(n_tiers) if n_tiers > 1 else None)
    two_tiers = ex.add_market("TWO", 3, 2, PCT // 2, PCT, tiers=schedule(2))
    ex.deposit(MAKER, 10**18)
    for i in range(24):
        account = i + 1
        ex.deposit(account, 10**6 * Q)
        size = 100 * 2**i + 7 * i
        buyer, seller = (account, MAKER) if i % 2 == 0 else (MAKER, account)
        ex.trade(buyer, seller, long_schedule, size, 200_000)
        ex.trade(seller, buyer, two_tiers, size // 3 + 1, 3_000 + i)
    ex.set_marks([long_schedule, two_tiers], [200_000, 3_050])
    return ex, long_schedule, two_tiers


@pytest.mark.parametrize("n_tiers", [1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 17])
def test_full_check_on_schedules_of_every_length(n_tiers: int) -> None:
    ref, long_schedule, two_tiers = build("reference", n_tiers)
    eng, _, _ = build("engine", n_tiers)
    assert_same_margin(ref.check_margin(), eng.check_margin(), f"{n_tiers} tiers, at the trade prices")
    for prices in ([131_170, 2_011], [288_830, 4_007]):
        for ex in (ref, eng):
            ex.set_marks([long_schedule, two_tiers], prices)
        assert_same_margin(ref.check_margin(), eng.check_margin(), f"{n_tiers} tiers, marks {prices}")
    for ex in (ref, eng):
        ex.set_marks([long_schedule], [77_000])
    assert_same_margin(ref.check_margin(), eng.check_margin(), f"{n_tiers} tiers, one mark moved")
    eng.check_invariants()
