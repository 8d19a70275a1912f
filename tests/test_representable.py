"""The representable range (docs/semantics.md): no call can put the engine in a state where
it cannot run (an account's equity or requirement beyond int64), and a refused check leaves
every cache as it was. Each test reproduces a defect found by an adversarial run (issue 12)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from long_mode import deadline, examples

from deleverage import Exchange, MarketClose
from deleverage.errors import ArithmeticOverflow

BIG = 2**62 - 1  # a mark at which one lot is worth just under 2^62 money units (0 decimals)


def big_book() -> Exchange:
    """Account 2 is long one lot in each of three markets, account 4 short; both within every
    per-position limit. Account 1 (created first) is long 10 lots of M at 100 with 100 of
    collateral; account 3 is short them."""
    ex = Exchange(0, threads=1)
    ex.add_market("M", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02, mark_price=100)
    for s in ("X", "Y", "Z"):
        ex.add_market(s, qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02, mark_price=1)
    ex.deposit([1, 3, 2, 4], [100, 10**6, 0, 10**6], exact=True)
    ex.trade(1, 3, "M", 10, 100, exact=True)
    for s in ("X", "Y", "Z"):
        ex.trade(2, 4, s, 1, 1, exact=True)
    ex.check_margin()
    return ex


def still_runs(ex: Exchange) -> None:
    """Every whole-book call works: the engine is not bricked."""
    ex.check_invariants()
    ex.check_margin()
    ex.check_margin(["M"])
    ex.positions()
    ex.liquidate(executor=MarketClose(3))
    ex.check_invariants()


# ------------------------------------------------------------------ every state change


def test_marks_putting_equity_beyond_int64_are_refused() -> None:
    ex = big_book()
    before = ex.state_hash()
    # three profits just under 2^62 each: account 2's equity would be ~1.5 x 2^63
    with pytest.raises(ArithmeticOverflow, match="account 2|account 4"):
        ex.set_marks(["X", "Y", "Z"], [BIG, BIG, BIG], exact=True)
    assert ex.state_hash() == before
    still_runs(ex)


def test_marks_one_at_a_time_stop_at_the_limit() -> None:
    ex = big_book()
    ex.set_marks(["X"], [BIG], exact=True)
    ex.set_marks(["Y"], [BIG], exact=True)  # account 2: just under 2^63; account 4 just above -2^63
    with pytest.raises(ArithmeticOverflow):
        ex.set_marks(["Z"], [BIG], exact=True)
    still_runs(ex)


def test_deposit_taking_equity_beyond_int64_is_refused() -> None:
    ex = big_book()
    ex.set_marks(["X"], [BIG], exact=True)  # account 2 has ~2^62 of unrealized profit
    before = ex.state_hash()
    with pytest.raises(ArithmeticOverflow, match="amounts\\[0\\]"):
        ex.deposit([2], [2**63 - 1], exact=True)
    assert ex.state_hash() == before
    still_runs(ex)


def test_requirement_beyond_int64_is_refused() -> None:
    """Maintenance 100%: three positions of ~2^62 each need ~1.5 x 2^63 of margin."""
    ex = Exchange(0, threads=1)
    for s in ("X", "Y", "Z"):
        ex.add_market(s, qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=1.0, initial_margin=1.0)
    ex.set_marks(["X", "Y", "Z"], [BIG, BIG, BIG], exact=True)
    ex.deposit([1, 2], [2**62, 2**62], exact=True)
    ex.trade(1, 2, "X", 1, BIG, exact=True)
    ex.trade(1, 2, "Y", 1, BIG, exact=True)
    before = ex.state_hash()
    with pytest.raises(ArithmeticOverflow, match="account 1|account 2"):
        ex.trade(1, 2, "Z", 1, BIG, exact=True)
    with pytest.raises(ArithmeticOverflow):
        ex.trades([1], [2], ["Z"], [1], [BIG], exact=True)
    assert ex.state_hash() == before
    ex.check_margin()
    ex.positions()
    ex.check_invariants()


def test_liquidation_pushing_the_executor_beyond_int64_is_refused() -> None:
    """The executor (9) holds ~2^62 of profit and a balance that leaves its equity 6 units
    under int64's maximum; buying account 1's long 1% under the mark would add 1000."""
    ex = Exchange(0, threads=1)
    ex.add_market("M", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02, mark_price=100)
    ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02)
    ex.set_marks(["X"], [BIG], exact=True)
    ex.deposit([1, 3, 8, 9], [9000, 10**9, 2**62, 2**62 - 5], exact=True)
    ex.insurance.deposit(10**6, exact=True)
    ex.trade(1, 3, "M", 1000, 100, exact=True)
    ex.trade(8, 9, "X", 1, BIG, exact=True)
    ex.set_marks(["X", "M"], [1, 90], exact=True)
    assert ex.account_margin(9, exact=True)["equity"] == 2**63 - 7
    before = ex.state_hash()
    with pytest.raises(ArithmeticOverflow, match="account 9"):
        ex.liquidate(executor=MarketClose(9, slippage_bps=100))
    assert ex.state_hash() == before
    ex.check_invariants()
    ex.check_margin()
    ex.liquidate(executor=MarketClose(3, slippage_bps=100))  # another executor can still close it
    ex.check_invariants()


# ------------------------------------------------------------------ atomic checks


def test_refused_full_check_leaves_every_cache_as_it_was() -> None:
    """The full check used to update the caches of the accounts before the failing one and
    then throw, leaving the valued marks behind: the next incremental check added the move
    twice. Now the mark is refused up front; either way, afterwards the caches are fresh."""
    ex = big_book()
    with pytest.raises(ArithmeticOverflow):
        ex.set_marks(["M", "X", "Y", "Z"], [105, BIG, BIG, BIG], exact=True)
        ex.check_margin()
    ex.set_marks(["X", "Y", "Z"], [1, 1, 1], exact=True)  # account 2 back in range
    ex.check_invariants()
    ex.set_marks(["M"], [85], exact=True)  # account 1: 100 + 10 x (85 - 100) = -50
    report = ex.check_margin(["M"], exact=True)
    row = list(report.account).index(1)
    assert report.equity[row] == -50 == ex.account_margin(1, exact=True)["equity"]
    assert report.bankrupt[row]
    ex.check_invariants()


# ------------------------------------------------------------------ set_marks' range bounds

INT64_MAX = 2**63 - 1
RATE_MM, RATE_IM = 1_000_000, 2_000_000  # 1% and 2% in 1e-8


def _in_range_at(ex: Exchange, marks: dict[str, int]) -> bool:
    """Whether every account's equity, maintenance and initial margin fit in int64 at `marks`
    (0 decimals everywhere: value = size * price exactly), computed here from the positions
    and balances, independently of the engine's arithmetic."""
    pos = ex.positions(exact=True).to_pandas()
    accounts = set(pos["account"]) | {1, 2, 3, 4}
    for a in accounts:
        mine = pos[pos["account"] == a]
        equity = ex.balance(int(a), exact=True)
        mm = im = 0
        for _, row in mine.iterrows():
            q, p = int(row["size"]), marks[("X", "Y", "Z")[int(row["market"])]]
            equity += q * p - int(row["entry_notional"])
            mm += abs(q) * p * RATE_MM
            im += abs(q) * p * RATE_IM
        if not (-(2**63) <= equity <= INT64_MAX and -(-mm // 10**8) <= INT64_MAX and -(-im // 10**8) <= INT64_MAX):
            return False
    return True


@settings(max_examples=examples(150), deadline=deadline())
@given(
    sizes=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    moves=st.lists(st.tuples(st.sampled_from(["X", "Y", "Z"]), st.one_of(st.integers(0, 1000), st.integers(650, 1000))), min_size=1, max_size=12),
)
def test_set_marks_refuses_exactly_the_moves_that_leave_the_range(sizes: list[int], moves: list[tuple[str, int]]) -> None:
    """Whether set_marks skips the pass over holders (range bounds) or not, it accepts a move
    exactly when every account stays in range at the new marks, and an accepted move never
    leaves the engine unable to check."""
    ex = Exchange(0, threads=1)
    for s in ("X", "Y", "Z"):
        ex.add_market(s, qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01, initial_margin=0.02, mark_price=1)
    ex.deposit([1, 2, 3, 4], [10**6] * 4, exact=True)
    for s, q in zip(("X", "Y", "Z"), sizes):
        ex.trade(1, 2, s, q, 1, exact=True)
        ex.trade(3, 4, s, 1, 1, exact=True)
    marks = {"X": 1, "Y": 1, "Z": 1}
    for symbol, per_mille in moves:
        # up to just over the per-position limit of the market's largest position: three large
        # marks put an account past int64 while each position stays within its own limit
        price = max(1, (2**62 // max(sizes[("X", "Y", "Z").index(symbol)], 1)) * per_mille // 990)
        target = {**marks, symbol: price}
        per_position_ok = all(q * target[s] <= 2**62 for s, q in zip(("X", "Y", "Z"), sizes))
        expected = per_position_ok and _in_range_at(ex, target)
        try:
            ex.set_marks([symbol], [price], exact=True)
            accepted = True
        except ArithmeticOverflow:
            accepted = False
        assert accepted == expected, (symbol, price, marks)
        if accepted:
            marks = target
            ex.check_margin()  # never bricked


def executor_at_the_limit(room: int, fund: int, deposits: dict[int, int], lots: int, price: int,
                          crash: int) -> Exchange:
    """Market M (1% maintenance and fee, marked `price`): the accounts of `deposits` other than
    3 buy `lots` of M at `price` from the winner 3, then M is marked `crash`. The executor 9's
    equity is `room` units under int64's maximum: it is short one lot of X bought at BIG by 8
    and marked at 1."""
    ex = Exchange(0, threads=1)
    ex.add_market("M", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01,
                  initial_margin=0.02, liquidation_fee=0.01, mark_price=price)
    ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=0, maintenance_margin=0.01,
                  initial_margin=0.02)
    ex.set_marks(["X"], [BIG], exact=True)
    accounts = [*deposits, 8, 9]
    ex.deposit(accounts, [*deposits.values(), 2**62, 2**62 + 1 - room], exact=True)
    if fund:
        ex.insurance.deposit(fund, exact=True)
    for a in deposits:
        if a != 3:
            ex.trade(a, 3, "M", lots, price, exact=True)
    ex.trade(8, 9, "X", 1, BIG, exact=True)
    ex.set_marks(["X", "M"], [1, crash], exact=True)
    assert ex.account_margin(9, exact=True)["equity"] == 2**63 - 1 - room
    return ex


# (mode, fund, room): in close mode without a fund the bankrupt account 2's position goes to
# ADL, not to the executor, so the executor takes two closes instead of three
@pytest.mark.parametrize("mode, fund, room", [("close", 10**6, 2012), ("close", 0, 1012), ("haircut", 0, 2012)])
def test_step_refused_part_way_undoes_every_kind_of_change(mode: str, fund: int, room: int) -> None:
    """The executor (9) has room for `room` more units of equity; each close it takes gains it
    900 (100 lots bought 9 under the mark), so its close of account 4, liquidated last,
    overflows it. By then the step has covered account 2's deficit (from the fund, by ADL
    against the winner 3, or by haircutting 3) and charged account 1 a fee out of its surplus:
    the undo log must put every balance and position back."""
    # at mark 9000 (maintenance 9000 each): account 2's equity is -10000, account 1's 5000,
    # account 4's 6000; liquidated worst first: 2, 1, 4
    accounts = [1, 2, 3, 4, 8, 9]
    ex = executor_at_the_limit(room, fund, {1: 105_000, 2: 90_000, 3: 10**9, 4: 106_000}, 100, 10_000, 9_000)

    def state() -> tuple:
        return (ex.state_hash(), [ex.balance(a, exact=True) for a in accounts],
                ex.insurance.balance(exact=True), [ex.account_margin(a, exact=True) for a in accounts[:4]])

    before = state()
    with pytest.raises(ArithmeticOverflow):
        ex.liquidate(executor=MarketClose(9, slippage_bps=10), mode=mode, exact=True)
    assert state() == before
    ex.check_invariants()
    # the same step with another executor runs: a fee, and account 2's deficit covered
    res = ex.liquidate(executor=MarketClose(8, slippage_bps=10), mode=mode, exact=True)
    assert res.totals.liquidated_accounts == 3 and res.totals.fund_fees > 0
    assert res.totals.fund_used + res.totals.adl_notional + res.totals.haircut_total > 0


# (without a fund, close mode sends both accounts to ADL: the executor takes nothing)
@pytest.mark.parametrize("mode, fund", [("close", 10**6), ("haircut", 0), ("haircut", 10**6)])
@pytest.mark.parametrize("policy", ["queue", "pro_rata", "risk_aware", "min_max_lots", "random_walk"])
def test_executor_pushed_out_of_range_mid_step_is_named(mode: str, fund: int, policy: str) -> None:
    """The executor (9) has 6 units of room; its first close exceeds it, so any margin or ADL
    score the step computes for it afterwards (a haircut's pass over the winners, the kept
    queue's re-scoring, the end-of-step check) must refuse the step naming the account, not
    with a bare "equity does not fit"; and the step changes nothing."""
    ex = executor_at_the_limit(6, fund, {1: 10_500, 2: 9_000, 3: 10**9}, 1000, 100, 90)
    before = ex.state_hash()
    with pytest.raises(ArithmeticOverflow, match="account 9"):
        ex.liquidate(executor=MarketClose(9, slippage_bps=10), mode=mode, policy=policy, exact=True)
    assert ex.state_hash() == before
    ex.check_invariants()
