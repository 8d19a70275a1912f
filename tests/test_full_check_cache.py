"""The full margin check adds each position's value change since the marks its account's
cached sums are at (docs/architecture.md, "How the full margin check runs"). These cases
change those caches in the ways the engine can, between checks, and compare every full
check with the reference model: a market added with finer prices (the caches are rescaled
to the new value unit), an incremental check (some markets revalued, others not), trades
and a withdrawal at marks not yet valued.
"""

from conftest import make_impl
from scenario import assert_same_margin

R = 10**8
PCT = R // 100
Q = 10**6
MAKER = 1000


def run(name: str) -> list:
    ex = make_impl(name)
    coarse = ex.add_market("COARSE", 3, 2, PCT // 2, PCT)
    flat = ex.add_market("FLAT", 2, 1, PCT, 2 * PCT)
    ex.deposit(MAKER, 10**15)
    for account in range(1, 13):
        ex.deposit(account, 50_000 * Q)
        ex.trade(account, MAKER, coarse, 1_000 * account, 200_000 + 37 * account)
        ex.trade(MAKER, account, flat, 10 * account + 3, 3_000 + account)
    ex.set_marks([coarse, flat], [201_000, 2_990])
    reports = [ex.check_margin()]
    # finer prices: every cached sum is rescaled to the new value unit
    fine = ex.add_market("FINE", 4, 6, PCT // 4, PCT // 2, mark_decimals=6)
    ex.set_marks([coarse, flat], [188_800, 3_110])
    reports.append(ex.check_margin())
    for account in range(1, 7):
        ex.trade(account, MAKER, fine, 5 + account, 12_345_678 + account)
    ex.set_marks([fine], [12_000_001])
    reports.append(ex.check_margin([fine]))  # the incremental check revalues FINE only
    ex.set_marks([coarse], [150_505])  # not revalued until the next check
    ex.trade(MAKER, 3, coarse, 77, 150_000)  # a fill at a mark the caches are not at
    ex.withdraw(4, 1_000 * Q)
    reports.append(ex.check_margin())
    ex.set_marks([coarse, flat, fine], [211_111, 2_500, 13_000_000])
    reports.append(ex.check_margin())
    ex.check_invariants()
    return reports


def test_full_check_after_every_kind_of_cache_change() -> None:
    want, got = run("reference"), run("engine")
    assert len(want) == len(got)
    for i, (w, g) in enumerate(zip(want, got)):
        assert_same_margin(w, g, f"check {i}")
