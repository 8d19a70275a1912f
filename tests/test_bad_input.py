"""Bad input through the Python API: the right exception type from deleverage.errors, a
message that names the offending field (and the row, for per-row errors), and no change
to the state afterwards (positions, margins, balances, marks, markets, flows).

Every batch puts the bad value in row 1 behind a valid row 0, so a non-atomic
implementation that applied row 0 before failing would be caught by the state comparison.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
from books import two_market_exchange

import deleverage
from deleverage import Exchange, Impact, MarketClose, errors
from deleverage.errors import ConfigError


def make_exchange() -> deleverage.Exchange:
    return two_market_exchange()


def snapshot(ex: deleverage.Exchange) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name, col in ex.positions(exact=True).columns().items():
        state["pos." + name] = np.array(col, copy=True)
    for name, col in ex.check_margin(exact=True).columns().items():
        state["margin." + name] = np.array(col, copy=True)
    ids = ex.account_ids()
    state["accounts"] = np.array(ids, copy=True)
    state["balances"] = np.array([ex.balance(int(a), exact=True) for a in ids])
    state["marks"] = np.array(ex.marks(exact=True), copy=True)
    state["markets"] = list(ex.markets)
    state["counts"] = (ex.account_count, ex.position_count)
    state["flows"] = dict(ex.core.flows())
    return state


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key in before:
        b, a = before[key], after[key]
        if isinstance(b, np.ndarray):
            assert b.dtype == a.dtype, key
            np.testing.assert_array_equal(a, b, err_msg=key)
        else:
            assert a == b, key


def test_fixture_state_is_the_hand_computed_one() -> None:
    ex = make_exchange()
    m = ex.check_margin(exact=True)
    # account order: 1, 2, 3, 4 (creation order)
    # account 2: U = (200 - 180) + (30 - 31.5) = 18.5 -> equity 1018.5;
    #            maintenance 9 + 0.63 = 9.63, initial 18 + 1.26 = 19.26
    np.testing.assert_array_equal(m.account, [1, 2, 3, 4])
    np.testing.assert_array_equal(m.equity, [30_000_000, 1_018_500_000, 51_500_000, 10_000_000])
    np.testing.assert_array_equal(m.maintenance, [9_000_000, 9_630_000, 630_000, 0])
    np.testing.assert_array_equal(m.initial, [18_000_000, 19_260_000, 1_260_000, 0])


Call = Callable[[deleverage.Exchange], Any]

NAN, INF = float("nan"), float("inf")

# (id, call, exception type, substrings the message must contain)
CASES: list[tuple[str, Call, type, tuple[str, ...]]] = [
    # ---- NaN, inf, zero and negative prices
    ("marks-nan", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, NAN]), errors.InvalidInput, ("prices[1]", "finite")),
    ("marks-inf", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, INF]), errors.InvalidInput, ("prices[1]", "finite")),
    ("marks-minus-inf", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, -INF]), errors.InvalidInput, ("prices[1]",)),
    ("marks-zero", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, 0.0]), errors.InvalidInput, ("prices[1]", "positive")),
    ("marks-negative", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, -21.0]), errors.InvalidInput, ("prices[1]", "positive")),
    ("marks-zero-exact", lambda ex: ex.set_marks([0, 1], np.array([950, 0]), exact=True), errors.InvalidInput, ("prices[1]", "positive")),
    ("marks-negative-exact", lambda ex: ex.set_marks([0, 1], np.array([950, -1]), exact=True), errors.InvalidInput, ("prices[1]", "positive")),
    ("trade-price-nan", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, NAN]), errors.InvalidInput, ("prices[1]", "finite")),
    ("trade-price-inf", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, INF]), errors.InvalidInput, ("prices[1]", "finite")),
    ("trade-size-nan", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, NAN], [100.0, 100.0]), errors.InvalidInput, ("sizes[1]", "finite")),
    ("trade-price-zero", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, 0.0]), errors.InvalidInput, ("prices[1]", "positive")),
    ("trade-price-negative", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, -100.0]), errors.InvalidInput, ("prices[1]", "positive")),
    ("trade-size-zero", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 0.0], [100.0, 100.0]), errors.InvalidInput, ("sizes[1]", "positive")),
    ("trade-size-negative", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, -1.0], [100.0, 100.0]), errors.InvalidInput, ("sizes[1]", "positive")),
    ("trade-single-nan", lambda ex: ex.trade(1, 2, "BTC", 1.0, NAN), errors.InvalidInput, ("prices[0]", "finite")),
    ("load-price-nan", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, NAN]), errors.InvalidInput, ("entry_prices[1]", "finite")),
    ("load-price-inf", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, INF]), errors.InvalidInput, ("entry_prices[1]", "finite")),
    ("load-price-zero", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, 0.0]), errors.InvalidInput, ("entry_prices[1]", "positive")),
    ("load-price-negative", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, -20.0]), errors.InvalidInput, ("entry_prices[1]", "positive")),
    ("load-size-nan", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, NAN], [20.0, 20.0]), errors.InvalidInput, ("sizes[1]", "finite")),
    # ---- negative and non-finite money
    ("deposit-negative", lambda ex: ex.deposit([1, 3], [5.0, -1.0]), errors.InvalidInput, ("amounts[1]", "negative")),
    ("deposit-negative-exact", lambda ex: ex.deposit([1, 3], np.array([5, -1]), exact=True), errors.InvalidInput, ("amounts[1]", "negative")),
    ("deposit-nan", lambda ex: ex.deposit([1, 3], [5.0, NAN]), errors.InvalidInput, ("amounts[1]", "finite")),
    ("deposit-new-account-then-negative", lambda ex: ex.deposit([77, 3], [5.0, -1.0]), errors.InvalidInput, ("amounts[1]",)),
    ("withdraw-negative", lambda ex: ex.withdraw([1, 3], [1.0, -1.0]), errors.InvalidInput, ("amounts[1]", "negative")),
    # ---- mismatched lengths (both names appear)
    ("len-deposit", lambda ex: ex.deposit([1, 3, 2], [5.0, 1.0]), errors.InvalidInput, ("amounts", "accounts")),
    ("len-withdraw", lambda ex: ex.withdraw([1, 3, 2], [1.0, 1.0]), errors.InvalidInput, ("amounts", "accounts")),
    ("len-trades-sizes", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0], [100.0, 100.0]), errors.InvalidInput, ("sizes", "buyers")),
    ("len-trades-sellers", lambda ex: ex.trades([1, 1], [2], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0]), errors.InvalidInput, ("sellers", "buyers")),
    ("len-marks", lambda ex: ex.set_marks(["BTC", "ETH"], [90.0]), errors.InvalidInput, ("prices", "markets")),
    ("len-load", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0]), errors.InvalidInput, ("entry_prices", "accounts")),
    ("two-dimensional", lambda ex: ex.deposit([[1, 3]], [[1.0, 1.0]]), errors.InvalidInput, ("accounts", "1-d")),
    # ---- wrong dtypes
    ("float-account-ids", lambda ex: ex.deposit([1.0, 3.0], [5.0, 1.0]), errors.InvalidInput, ("accounts", "float64")),
    ("float-buyers", lambda ex: ex.trades([1.0, 1.0], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0]), errors.InvalidInput, ("buyers", "float64")),
    ("float-counterparty", lambda ex: ex.load_positions([1], ["ETH"], [1.0], [20.0], counterparty=2.0), errors.InvalidInput, ("counterparty",)),
    ("float-market-ids", lambda ex: ex.set_marks([0.0, 1.0], [95.0, 21.0]), errors.InvalidInput, ("markets", "float64")),
    ("float-amounts-exact", lambda ex: ex.deposit([1, 3], [5.0, 1.0], exact=True), errors.InvalidInput, ("amounts", "float64")),
    ("float-prices-exact", lambda ex: ex.set_marks([0, 1], [950.0, 2100.0], exact=True), errors.InvalidInput, ("prices", "float64")),
    ("float-sizes-exact", lambda ex: ex.trades([1, 1], [2, 2], [0, 0], [1000.0, 1000.0], [900, 900], exact=True), errors.InvalidInput, ("sizes", "float64")),
    ("bool-amounts", lambda ex: ex.deposit([1, 3], [True, False]), errors.InvalidInput, ("amounts", "bool")),
    ("bool-amounts-exact", lambda ex: ex.deposit([1, 3], np.array([True, False]), exact=True), errors.InvalidInput, ("amounts", "bool")),
    ("bool-accounts", lambda ex: ex.deposit([True, False], [1.0, 1.0]), errors.InvalidInput, ("accounts", "bool")),
    ("bool-prices", lambda ex: ex.set_marks(["BTC", "ETH"], [True, True]), errors.InvalidInput, ("prices", "bool")),
    ("bool-market-ids", lambda ex: ex.set_marks([True], [95.0]), errors.InvalidInput, ("markets", "bool")),
    ("string-amounts", lambda ex: ex.deposit([1, 3], ["5", "1"]), errors.InvalidInput, ("amounts",)),
    ("string-accounts", lambda ex: ex.deposit(["a", "b"], [1.0, 1.0]), errors.InvalidInput, ("accounts",)),
    ("string-prices", lambda ex: ex.set_marks(["BTC"], ["95"]), errors.InvalidInput, ("prices",)),
    ("none-price", lambda ex: ex.set_marks(["BTC"], [None]), errors.InvalidInput, ("prices",)),
    ("mixed-int-string-accounts", lambda ex: ex.deposit([1, "x"], [1.0, 1.0]), errors.InvalidInput, ("accounts",)),
    # ---- unknown markets
    ("unknown-market-id", lambda ex: ex.set_marks([0, 5], [95.0, 1.0]), errors.UnknownId, ("markets[1]", "5")),
    ("negative-market-id", lambda ex: ex.set_marks([0, -1], [95.0, 1.0]), errors.UnknownId, ("markets[1]", "-1")),
    ("unknown-symbol-marks", lambda ex: ex.set_marks(["BTC", "XRP"], [95.0, 1.0]), errors.UnknownId, ("markets[1]", "XRP")),
    ("unknown-symbol-trade", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "XRP"], [1.0, 1.0], [100.0, 1.0]), errors.UnknownId, ("markets[1]", "XRP")),
    ("unknown-market-load", lambda ex: ex.load_positions([1, 4], [1, 7], [1.0, -1.0], [20.0, 20.0]), errors.UnknownId, ("markets[1]", "7")),
    ("unknown-symbol-check", lambda ex: ex.check_margin(["BTC", "XRP"]), errors.UnknownId, ("markets[1]", "XRP")),
    ("unknown-market-id-check", lambda ex: ex.check_margin([0, 2]), errors.UnknownId, ("markets[1]", "2")),
    # ---- unknown accounts
    ("unknown-buyer", lambda ex: ex.trades([1, 9], [2, 2], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0]), errors.UnknownId, ("buyers[1]", "9")),
    ("unknown-seller", lambda ex: ex.trades([1, 1], [2, 9], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0]), errors.UnknownId, ("sellers[1]", "9")),
    ("unknown-withdraw", lambda ex: ex.withdraw([1, 9], [1.0, 1.0]), errors.UnknownId, ("accounts[1]", "9")),
    ("unknown-load-account", lambda ex: ex.load_positions([1, 9], ["ETH", "ETH"], [1.0, -1.0], [20.0, 20.0]), errors.UnknownId, ("accounts[1]", "9")),
    ("unknown-counterparty", lambda ex: ex.load_positions([1], ["ETH"], [1.0], [20.0], counterparty=9), errors.UnknownId, ("counterparty", "9")),
    ("unknown-balance", lambda ex: ex.balance(9), errors.UnknownId, ("account", "9")),
    ("unknown-account-margin", lambda ex: ex.account_margin(9), errors.UnknownId, ("account", "9")),
    # ---- overflow of the fixed-point range
    # 1e17 BTC = 1e20 lots > 2^63
    ("size-beyond-int64", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1e17], [100.0, 100.0]), errors.ArithmeticOverflow, ("sizes[1]",)),
    ("price-beyond-int64", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, 1e30]), errors.ArithmeticOverflow, ("prices[1]",)),
    ("int-price-beyond-int64", lambda ex: ex.set_marks(["BTC", "ETH"], [95, 10**17]), errors.ArithmeticOverflow, ("prices[1]",)),
    # 10^13 dollars = 10^19 micro-dollars > 2^63 ~ 9.2e18
    ("int-amount-beyond-int64", lambda ex: ex.deposit([1, 3], [5, 10**13]), errors.ArithmeticOverflow, ("amounts[1]",)),
    ("amount-beyond-int64-exact", lambda ex: ex.deposit([1, 3], [5, 2**64], exact=True), errors.ArithmeticOverflow, ("amounts[1]",)),
    ("account-id-beyond-int64", lambda ex: ex.deposit([1, -(2**63) - 1], [1.0, 1.0]), errors.ArithmeticOverflow, ("accounts[1]",)),
    ("uint64-beyond-int64-exact", lambda ex: ex.deposit([1, 3], np.array([5, 2**63], dtype=np.uint64), exact=True), errors.ArithmeticOverflow, ("amounts[1]",)),
    # 2 BTC held by account 1: mark 1e15 -> 2000 lots * 1e16 ticks * 100 = 2e21 micro-$ > 2^62
    ("mark-notional-beyond-2^62", lambda ex: ex.set_marks(["ETH", "BTC"], [21.0, 1e15]), errors.ArithmeticOverflow, ("prices[1]",)),
    # 1e9 BTC at 1e9: 1e12 lots * 1e10 ticks * 100 = 1e24 > 2^62
    ("trade-notional-beyond-2^62", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1e9], [100.0, 1e9]), errors.ArithmeticOverflow, ("prices[1]",)),
    # 1 ETH at 1e16: 100 lots * 1e18 ticks * 100 = 1e22 > 2^62
    ("load-notional-beyond-2^62", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, 1e16]), errors.ArithmeticOverflow, ("entry_prices[1]",)),
    ("load-size-int64-min-exact", lambda ex: ex.load_positions([1, 4], [1, 1], np.array([5, -(2**63)]), np.array([10, 10]), exact=True), errors.ArithmeticOverflow, ("sizes[1]",)),
    # two deposits of 2^62 micro-$ into account 1 (which holds 5e7): the balance passes 2^63
    ("balance-beyond-int64", lambda ex: ex.deposit([1, 1], np.array([2**62, 2**62]), exact=True), errors.ArithmeticOverflow, ("amounts[1]", "balance")),
    # a batch that creates account 77 and then overflows account 1 (50e6 + 2^63 - 1): 77 must not exist after
    ("deposit-creates-then-overflows", lambda ex: ex.deposit([77, 1], np.array([5, 2**63 - 1]), exact=True), errors.ArithmeticOverflow, ("amounts[1]",)),
    # ---- duplicates, zero size, unbalanced book
    ("duplicate-market-in-marks", lambda ex: ex.set_marks(["BTC", "ETH", "BTC"], [95.0, 21.0, 96.0]), errors.InvalidInput, ("markets[2]", "twice")),
    ("duplicate-market-id-in-marks", lambda ex: ex.set_marks([1, 1], [21.0, 22.0]), errors.InvalidInput, ("markets[1]", "twice")),
    ("zero-size-position", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, 0.0], [20.0, 20.0]), errors.InvalidInput, ("sizes[1]", "zero")),
    ("duplicate-load-rows", lambda ex: ex.load_positions([1, 1, 4, 4], ["ETH"] * 4, [1.0, 1.0, -1.0, -1.0], [20.0] * 4), errors.InvalidInput, ("markets[1]",)),
    ("load-over-existing-position", lambda ex: ex.load_positions([2, 1], ["ETH", "BTC"], [-1.0, 1.0], [20.0, 90.0], counterparty=3), errors.InvalidInput, ("markets[1]", "already")),
    ("unbalanced-book", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -2.0], [20.0, 20.0]), errors.InvalidInput, ("ETH", "balanced", "counterparty")),
    ("same-buyer-and-seller", lambda ex: ex.trades([1, 1], [2, 1], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0]), errors.InvalidInput, ("sellers[1]", "same")),
    # ---- off-grid prices and sizes
    ("offgrid-trade-price", lambda ex: ex.trades([1, 3], [2, 2], ["BTC", "ETH"], [1.0, 1.0], [100.0, 100.001]), errors.InvalidInput, ("prices[1]", "multiple")),
    ("offgrid-trade-size", lambda ex: ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 1.0005], [100.0, 100.0]), errors.InvalidInput, ("sizes[1]", "multiple")),
    ("offgrid-mark", lambda ex: ex.set_marks(["BTC", "ETH"], [95.0, 21.001]), errors.InvalidInput, ("prices[1]", "multiple")),
    ("offgrid-load-price", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.0], [20.0, 20.001]), errors.InvalidInput, ("entry_prices[1]", "multiple")),
    ("offgrid-load-size", lambda ex: ex.load_positions([1, 4], ["ETH", "ETH"], [1.0, -1.001], [20.0, 20.0]), errors.InvalidInput, ("sizes[1]", "multiple")),
    # ---- withdrawals beyond margin
    # account 1: equity 30, initial 18 -> at most 12 may leave; row 0 (account 2, $1) is fine
    ("withdraw-below-initial", lambda ex: ex.withdraw([2, 1], [1.0, 12.000001]), errors.InsufficientMargin, ("amounts[1]", "account 1")),
    ("withdraw-below-initial-exact", lambda ex: ex.withdraw([2, 1], np.array([1, 12_000_001]), exact=True), errors.InsufficientMargin, ("amounts[1]", "account 1")),
    # the same account twice: 6 + 6.000001 > 12
    ("withdraw-cumulative", lambda ex: ex.withdraw([1, 1], [6.0, 6.000001]), errors.InsufficientMargin, ("amounts[1]",)),
]

CONFIG_CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("duplicate-symbol", dict(symbol="BTC"), ("BTC",)),
    ("empty-symbol", dict(symbol=""), ("symbol",)),
    ("maintenance-negative", dict(maintenance_margin=-0.01), ("maintenance_margin",)),
    ("maintenance-above-one", dict(maintenance_margin=1.5, initial_margin=1.5), ("maintenance_margin",)),
    ("initial-above-one", dict(initial_margin=1.0000001), ("initial_margin",)),
    ("maintenance-nan", dict(maintenance_margin=NAN), ("maintenance_margin",)),
    ("initial-inf", dict(initial_margin=INF), ("initial_margin",)),
    ("initial-below-maintenance", dict(maintenance_margin=0.10, initial_margin=0.05), ("initial_margin", "maintenance_margin")),
    ("liquidation-fee-above-one", dict(liquidation_fee=2.0), ("liquidation_fee",)),
    ("float-decimals", dict(qty_decimals=1.0), ("qty_decimals",)),
    ("too-many-decimals", dict(qty_decimals=10, price_decimals=8), ("qty_decimals", "price_decimals")),
    ("tier-decreasing-maintenance", dict(tiers=[(1000, 0.02, 0.04), (None, 0.01, 0.04)]), ("tiers[1]", "decrease")),
    ("tier-decreasing-initial", dict(tiers=[(1000, 0.02, 0.04), (None, 0.02, 0.03)]), ("tiers[1]", "decrease")),
    ("tier-initial-below-maintenance", dict(tiers=[(1000, 0.02, 0.04), (None, 0.05, 0.04)]), ("tiers[1].initial_margin",)),
    ("tier-negative-rate", dict(tiers=[(1000, -0.01, 0.04), (None, 0.05, 0.06)]), ("tiers[0].maintenance_margin",)),
    ("tier-nan-rate", dict(tiers=[(1000, 0.01, 0.04), (None, NAN, 0.06)]), ("tiers[1].maintenance_margin",)),
    ("tier-rate-above-one", dict(tiers=[(1000, 0.01, 0.04), (None, 0.05, 1.01)]), ("tiers[1].initial_margin",)),
    ("tier-caps-not-increasing", dict(tiers=[(1000, 0.01, 0.02), (1000, 0.02, 0.04), (None, 0.05, 0.1)]), ("tiers[1].max_notional",)),
    ("tier-open-cap-not-last", dict(tiers=[(None, 0.01, 0.02), (None, 0.02, 0.04)]), ("tiers[0].max_notional",)),
    ("tier-short-row", dict(tiers=[(1000, 0.01)]), ("tiers[0]",)),
    # continuity: A1 = 1000 * (0.02 - 0.01) = 10 quote; 11 is refused
    ("tier-wrong-maintenance-amount", dict(tiers=[(1000, 0.01, 0.02), (None, 0.02, 0.04, 11.0)]), ("tiers[1].maintenance_amount",)),
]


@pytest.mark.parametrize("name,call,exc,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(name: str, call: Call, exc: type, needles: tuple[str, ...]) -> None:
    ex = make_exchange()
    before = snapshot(ex)
    with pytest.raises(exc) as info:
        call(ex)
    assert type(info.value) is exc, f"{name}: got {type(info.value).__name__}"
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{name}: {needle!r} not in {message!r}"
    assert "np." not in message and "numpy" not in message, f"{name}: a numpy repr in {message!r}"
    assert_same_state(before, snapshot(ex))
    ex.check_invariants()


# Messages in the caller's units and names (issue 11). The fixture (tests/books.py): money in
# micro-units, BTC lots of 0.001 and ticks of 0.1, ETH lots of 0.01 and ticks of 0.01;
# account 1 has equity 30 and initial margin 18 at the marks, so withdrawing 15 leaves 15.
# (call, substrings the message must hold, substrings it must not: the engine's units)
UNIT_CASES: list[tuple[str, Call, tuple[str, ...], tuple[str, ...]]] = [
    ("mark", lambda ex: ex.set_marks(["BTC"], [-5.0]), ("prices[0]", "market 'BTC'", "got -5.0"), ("-50",)),
    ("mark-numpy", lambda ex: ex.set_marks(["ETH"], np.array([-2.5])), ("market 'ETH'", "got -2.5"), ("-250",)),
    ("mark-exact", lambda ex: ex.set_marks(["BTC"], np.array([-7]), exact=True), ("got -7)",), ("-7.0", "-0.7")),
    ("mark-twice", lambda ex: ex.set_marks(["BTC", "BTC"], [95.0, 96.0]), ("markets[1]", "market 'BTC' appears twice"), ("id 0",)),
    ("deposit", lambda ex: ex.deposit([1, 4], [5.0, -3.0]), ("amounts[1]", "got -3.0", "account 4"), ("3000000",)),
    ("withdraw-negative", lambda ex: ex.withdraw(1, -2.0), ("got -2.0", "account 1"), ("2000000",)),
    ("withdraw-margin", lambda ex: ex.withdraw([4, 1], [1.0, 15.0]),
     ("amounts[1]", "withdrawing 15.0 from account 1", "equity 15.0", "initial margin 18.0"), ("15000000", "18000000")),
    ("withdraw-margin-batch", lambda ex: ex.withdraw([1, 1], [10.0, 5.0]), ("amounts[1]", "withdrawing 5.0", "equity 15.0"), ()),
    ("withdraw-margin-exact", lambda ex: ex.withdraw(1, np.array([15_000_000]), exact=True),
     ("withdrawing 15000000", "equity 15000000", "initial margin 18000000"), ()),
    ("insurance-deposit", lambda ex: ex.insurance.deposit(-5.0), ("amount", "got -5.0"), ("5000000",)),
    ("trade-size", lambda ex: ex.trade(1, 2, "BTC", -1.0, 100.0), ("sizes[0]", "buyer 1, seller 2, market 'BTC'", "got -1.0"), ("1000",)),
    ("trade-price", lambda ex: ex.trade(1, 2, "ETH", 1.0, -20.0), ("prices[0]", "market 'ETH'", "got -20.0"), ("2000",)),
    ("trade-grid", lambda ex: ex.trade(1, 2, "BTC", 0.0001, 100.0), ("sizes[0]", "market 'BTC'", "0.0001", "0.001"), ()),
    ("load-zero", lambda ex: ex.load_positions([4, 4], ["BTC", "ETH"], [0.5, 0.0], [90.0, 21.0], counterparty=2),
     ("sizes[1]", "account 4, market 'ETH'", "zero size"), ()),
    ("load-entry", lambda ex: ex.load_positions([4], ["ETH"], [1.0], [-21.0], counterparty=2),
     ("entry_prices[0]", "account 4, market 'ETH'", "got -21.0"), ("2100",)),
    ("load-unbalanced", lambda ex: ex.load_positions([4], ["ETH"], [1.5], [21.0]),
     ("market 'ETH'", "net to 1.5", "counterparty="), ("150 lots", "lots")),
    ("load-unbalanced-exact", lambda ex: ex.load_positions([4], ["ETH"], np.array([150]), np.array([2100]), exact=True),
     ("market 'ETH'", "net to 150 lots"), ()),
    ("rate-numpy", lambda ex: ex.add_market("SOL", qty_decimals=1, price_decimals=2, maintenance_margin=np.float64(2.5),
                                             initial_margin=0.1), ("maintenance_margin", "got 2.5"), ("np.", "float64")),
    ("theta-numpy", lambda ex: ex.liquidate(executor=deleverage.MarketClose(2), theta=np.float64(1.5)), ("theta", "got 1.5"),
     ("np.", "float64")),
]


@pytest.mark.parametrize("name,call,needles,forbidden", UNIT_CASES, ids=[c[0] for c in UNIT_CASES])
def test_messages_quote_the_callers_units_and_names(name: str, call: Call, needles: tuple[str, ...],
                                                    forbidden: tuple[str, ...]) -> None:
    ex = make_exchange()
    before = snapshot(ex)
    with pytest.raises(errors.DeleverageError) as info:
        call(ex)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{name}: {needle!r} not in {message!r}"
    for bad in forbidden:
        assert bad not in message, f"{name}: {bad!r} in {message!r}"
    assert_same_state(before, snapshot(ex))


def test_errors_expose_field_and_index() -> None:
    ex = make_exchange()
    with pytest.raises(errors.InvalidInput) as info:
        ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1.0, 0.0001], [100.0, 100.0])
    assert (info.value.field, info.value.index) == ("sizes", 1)
    assert info.value.detail == "0.0001 is not a multiple of the unit 0.001"
    with pytest.raises(errors.UnknownId) as unknown:  # the engine's messages too
        ex.trades([1, 1], [2, 99], ["BTC", "BTC"], [1.0, 1.0], [100.0, 100.0])
    assert (unknown.value.field, unknown.value.index) == ("sellers", 1)


@pytest.mark.parametrize("name,overrides,needles", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_market_config_is_refused_and_changes_nothing(name: str, overrides: dict[str, Any], needles: tuple[str, ...]) -> None:
    ex = make_exchange()
    before = snapshot(ex)
    kwargs: dict[str, Any] = dict(symbol="SOL", qty_decimals=1, price_decimals=3, maintenance_margin=0.05, initial_margin=0.10)
    kwargs.update(overrides)
    symbol = kwargs.pop("symbol")
    with pytest.raises(errors.ConfigError) as info:
        ex.add_market(symbol, **kwargs)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{name}: {needle!r} not in {message!r}"
    assert_same_state(before, snapshot(ex))
    assert ex.markets == ["BTC", "ETH"]
    # the refused symbol is still free, and the next market gets id 2
    assert ex.add_market("SOL", qty_decimals=1, price_decimals=3, maintenance_margin=0.05, initial_margin=0.10) == 2


def test_the_valid_twin_of_each_boundary_case_is_accepted() -> None:
    """The edges of the refusals above: exactly on them is fine (hand-computed)."""
    ex = make_exchange()
    # account 1 may withdraw exactly 12: equity 30 - 12 = 18 == initial 18
    ex.withdraw([2, 1], [1.0, 12.0])
    assert ex.balance(1, exact=True) == 38_000_000  # 50 - 12
    assert ex.balance(2, exact=True) == 999_000_000
    m = ex.account_margin(1, exact=True)
    assert (m["equity"], m["initial"]) == (18_000_000, 18_000_000)
    # on-grid values written as floats with decimal noise are accepted: 0.1 + 0.2 ETH = 30 lots
    ex.trade(3, 2, "ETH", 0.1 + 0.2, 20.07)
    pos = ex.positions(exact=True)
    row = int(np.flatnonzero((pos.account == 3) & (pos.market == 1))[0])
    assert pos.size[row] == 180  # 150 + 30 lots
    # 30 lots * 2007 ticks * 100 = 6,021,000 added to 30,000,000
    assert pos.entry_notional[row] == 36_021_000
    # a market id and a symbol name the same market
    ex.set_marks([1], [21.5])
    assert ex.marks(exact=True)[1] == 2150
    ex.check_invariants()


def test_bad_input_after_a_refused_call_the_exchange_still_works() -> None:
    ex = make_exchange()
    with pytest.raises(errors.ArithmeticOverflow):
        ex.set_marks(["ETH", "BTC"], [21.0, 1e15])
    with pytest.raises(errors.InsufficientMargin):
        ex.withdraw(1, 13.0)
    # now move BTC to 80: account 1 equity 50 - 40 = 10, maintenance 5% of 160 = 8
    ex.set_marks("BTC", 80.0)
    m = ex.account_margin(1, exact=True)
    assert (m["equity"], m["maintenance"], m["initial"]) == (10_000_000, 8_000_000, 16_000_000)
    assert not m["liquidatable"]
    assert math.isclose(ex.check_margin().margin_ratio[0], 0.8)  # 8 / 10
    ex.check_invariants()



def test_python_int_just_beyond_int64_names_the_row() -> None:
    ex = make_exchange()
    before = snapshot(ex)
    with pytest.raises(errors.DeleverageError) as info:
        ex.deposit([1, 3], [5, 2**63], exact=True)
    assert_same_state(before, snapshot(ex))
    assert isinstance(info.value, errors.ArithmeticOverflow), f"got {type(info.value).__name__}: {info.value}"
    assert "amounts[1]" in str(info.value)


# --------------------------------------------- settings (integers, symbols, impact depth)


@pytest.mark.parametrize("value", [6.5, 2**40, -1, "6", True, np.float64(6.0)])
def test_money_decimals_must_be_a_small_int(value) -> None:
    with pytest.raises(ConfigError, match="money_decimals"):
        Exchange(value)


@pytest.mark.parametrize("value", [-1, 2**40, 1.5, "2"])
def test_threads_must_be_a_non_negative_int(value) -> None:
    with pytest.raises(ConfigError, match="threads"):
        Exchange(6, threads=value)


@pytest.mark.parametrize("name", ["qty_decimals", "price_decimals"])
@pytest.mark.parametrize("value", [2**40, -2**40, 2.5])
def test_market_decimals_must_be_small_ints(name, value) -> None:
    ex = Exchange(6)
    kw = dict(qty_decimals=0, price_decimals=0, maintenance_margin=0.01, initial_margin=0.02)
    kw[name] = value
    with pytest.raises(ConfigError, match=name):
        ex.add_market("A", **kw)
    assert ex.markets == []


def test_symbol_with_a_lone_surrogate_is_refused() -> None:
    ex = Exchange(6)
    with pytest.raises(ConfigError, match="symbol"):
        ex.add_market("A\ud800", qty_decimals=0, price_decimals=0, maintenance_margin=0.01, initial_margin=0.02)
    assert ex.markets == []


@pytest.mark.parametrize("window", [2**40, 2**31])
def test_drawdown_window_must_fit(window) -> None:
    ex = Exchange(6)
    with pytest.raises(ConfigError, match="window"):
        ex.insurance.set_drawdown_rule(0.5, window=window)


def test_impact_depth_rounding_to_zero_is_refused() -> None:
    ex = Exchange(6)
    ex.add_market("A", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.1, mark_price=100)
    ex.deposit([1, 2], [100.0, 1e6])
    ex.trade(1, 2, "A", 10, 100)
    ex.set_marks(["A"], [91])
    before = ex.state_hash()
    with pytest.raises(ConfigError, match="depth"):
        ex.liquidate(executor=MarketClose(2, impact=Impact(depth=1e-300, bps_per_depth=10)))
    assert ex.state_hash() == before


@pytest.mark.parametrize("first, second", [((18, 2), (0, 0)), ((0, 0), (18, 2))])
def test_markets_whose_value_scales_cannot_coexist_are_refused(first, second) -> None:
    """With money_decimals 12, a market of 18 + 2 decimals puts values in units of 1e-20: a
    market of 0 + 0 decimals would need 10^20 per lot-tick, past int64 (found by the fuzzer;
    it used to be accepted with an overflowed scale). Refused, nothing added."""
    ex = deleverage.Exchange(12)
    ex.add_market("A", qty_decimals=first[0], price_decimals=first[1], mark_decimals=first[1], maintenance_margin=0.01, initial_margin=0.02)
    with pytest.raises(errors.ConfigError, match="decimals"):
        ex.add_market("B", qty_decimals=second[0], price_decimals=second[1], mark_decimals=second[1], maintenance_margin=0.01, initial_margin=0.02)
    assert ex.markets == ["A"]
    ex.add_market("C", qty_decimals=first[0], price_decimals=first[1], mark_decimals=first[1], maintenance_margin=0.01, initial_margin=0.02)
