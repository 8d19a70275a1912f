"""The engine's Python API at its edges, against hand-computed values: exact-mode input
checking, rate conversion, the error hierarchy, margin_ratio and the report tables."""

import math

import numpy as np
import pytest

import deleverage
from deleverage import errors


def i64(*values):
    return np.array(values, dtype=np.int64)


def btc_exchange():
    """The hand case of test_reference_model.btc_case: A (30 quote) long 2 BTC at 100
    from B (1000 quote), md 6, qd 3, pd 1, mmr 5%, imr 10%."""
    ex = deleverage.Exchange(money_decimals=6)
    m = ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=1, maintenance_margin=0.05,
                      initial_margin=0.10)
    ex.deposit(i64(1, 2), i64(30_000_000, 1_000_000_000), exact=True)
    ex.trade(1, 2, m, 2000, 1000, exact=True)
    return ex, m


def test_error_hierarchy():
    for name in ("ConfigError", "InvalidInput", "ArithmeticOverflow", "UnknownId",
                 "InsufficientMargin", "CorruptSnapshot", "InvariantViolation"):
        assert issubclass(getattr(errors, name), errors.DeleverageError), name
    assert issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InvalidInput, ValueError)
    assert issubclass(errors.ArithmeticOverflow, OverflowError)
    assert issubclass(errors.UnknownId, KeyError)


def test_float_input_refused_in_exact_mode_and_changes_nothing():
    ex, m = btc_exchange()
    ex.set_marks(i64(m), i64(900), exact=True)
    before = (ex.positions(exact=True).to_pandas(), ex.check_margin(exact=True).to_pandas())
    with pytest.raises(errors.InvalidInput):
        ex.deposit(i64(1), np.array([1.0]), exact=True)
    with pytest.raises(errors.InvalidInput):
        ex.withdraw(i64(1), np.array([1.0]), exact=True)
    with pytest.raises(errors.InvalidInput):
        ex.trade(1, 2, m, 1.0, 1000, exact=True)
    with pytest.raises(errors.InvalidInput):
        ex.trades(i64(1), i64(2), i64(m), i64(1), np.array([1000.0]), exact=True)
    with pytest.raises(errors.InvalidInput):
        ex.set_marks(i64(m), np.array([950.0]), exact=True)
    with pytest.raises(errors.InvalidInput):
        ex.load_positions(i64(1), i64(m), np.array([1.0]), i64(1000), counterparty=2, exact=True)
    after = (ex.positions(exact=True).to_pandas(), ex.check_margin(exact=True).to_pandas())
    for b, a in zip(before, after):
        assert b.equals(a)
    ex.check_invariants()


def test_rates_round_to_nearest_1e8():
    ex = deleverage.Exchange(money_decimals=6)
    # 0.0123456789 -> 1_234_567.89 -> 1_234_568 (1e-8 units); imr 0.02000000049 -> 2_000_000
    m = ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=0,
                      maintenance_margin=0.0123456789, initial_margin=0.02000000049)
    ex.deposit(i64(1, 2), i64(10**9, 10**9), exact=True)
    ex.trade(1, 2, m, 1, 100, exact=True)  # value 100 quote = 1e8 money units
    ex.set_marks(i64(m), i64(100), exact=True)
    rep = ex.check_margin(exact=True)
    # maintenance = ceil(1e8 * 1_234_568 / 1e8) = 1_234_568; initial = 2_000_000
    assert rep.maintenance.tolist() == [1_234_568, 1_234_568]
    assert rep.initial.tolist() == [2_000_000, 2_000_000]


def test_config_errors():
    ex = deleverage.Exchange(money_decimals=6)
    with pytest.raises(errors.ConfigError):
        ex.add_market("A", qty_decimals=0, price_decimals=0, maintenance_margin=0.05, initial_margin=0.01)
    with pytest.raises(errors.ConfigError):  # qd + pd - md = 9 > 8
        ex.add_market("B", qty_decimals=8, price_decimals=7, maintenance_margin=0.01, initial_margin=0.02)
    with pytest.raises(errors.ConfigError):  # rates decrease from one tier to the next
        ex.add_market("C", qty_decimals=0, price_decimals=0, maintenance_margin=0.02, initial_margin=0.04,
                      tiers=[(1000.0, 0.02, 0.04), (None, 0.01, 0.04)])
    with pytest.raises(errors.ConfigError):  # only the last cap is unbounded
        ex.add_market("D", qty_decimals=0, price_decimals=0, maintenance_margin=0.01, initial_margin=0.02,
                      tiers=[(None, 0.01, 0.02), (1000.0, 0.02, 0.04)])


def test_marks_validation():
    ex, m = btc_exchange()
    with pytest.raises(errors.InvalidInput):
        ex.set_marks(i64(m, m), i64(900, 910), exact=True)  # markets must be distinct
    with pytest.raises(errors.InvalidInput):
        ex.set_marks(i64(m), i64(0), exact=True)  # prices > 0
    with pytest.raises(errors.UnknownId):
        ex.set_marks(i64(m + 5), i64(900), exact=True)


def test_margin_report_hand_values():
    ex, m = btc_exchange()
    ex.deposit(i64(3), i64(0), exact=True)  # an empty account
    ex.set_marks(i64(m), i64(900), exact=True)
    rep = ex.check_margin(exact=True)
    assert rep.account.tolist() == [1, 2, 3]
    assert rep.account.dtype == np.int64
    # see test_reference_model.test_long_two_btc_mark_90
    assert rep.equity.tolist() == [10_000_000, 1_020_000_000, 0]
    assert rep.maintenance.tolist() == [9_000_000, 9_000_000, 0]
    assert rep.initial.tolist() == [18_000_000, 18_000_000, 0]
    assert rep.liquidatable.tolist() == [False, False, False]
    assert rep.bankrupt.tolist() == [False, False, False]
    assert rep.margin_ratio.tolist() == [0.9, 9 / 1020, 0.0]
    df = rep.to_pandas()
    assert list(df["equity"]) == [10_000_000, 1_020_000_000, 0]
    assert {"account", "equity", "maintenance", "initial", "margin_ratio", "liquidatable", "bankrupt"} <= set(df.columns)
    # float mode: quote currency
    frep = ex.check_margin()
    assert frep.equity.tolist() == pytest.approx([10.0, 1020.0, 0.0], rel=1e-12)
    assert frep.maintenance.tolist() == pytest.approx([9.0, 9.0, 0.0], rel=1e-12)
    # bankrupt: mark 84.9 -> A's equity -0.2 quote
    ex.set_marks(i64(m), i64(849), exact=True)
    rep = ex.check_margin(exact=True)
    assert rep.equity.tolist()[0] == -200_000
    assert rep.bankrupt.tolist() == [True, False, False]
    assert math.isinf(rep.margin_ratio[0]) and rep.margin_ratio[0] > 0


def test_positions_report_hand_values():
    ex, m = btc_exchange()
    ex.set_marks(i64(m), i64(900), exact=True)
    pos = ex.positions(exact=True)
    assert pos.account.tolist() == [1, 2]
    assert pos.market.tolist() == [m, m]
    assert pos.size.tolist() == [2000, -2000]
    assert pos.entry_notional.tolist() == [200_000_000, -200_000_000]
    assert pos.unrealized_pnl.tolist() == [-20_000_000, 20_000_000]
    assert pos.liquidation_price.tolist() == [895, 5714]
    assert pos.bankruptcy_price.tolist() == [850, 6000]
    # average entry 100 quote = 1000 ticks
    assert pos.entry_price.tolist() == [1000.0, 1000.0]
    df = pos.to_pandas()
    assert list(df["size"]) == [2000, -2000]
    # float mode: base units, quote, quote per base unit
    fpos = ex.positions()
    assert fpos.size.tolist() == pytest.approx([2.0, -2.0], rel=1e-12)
    assert fpos.liquidation_price.tolist() == pytest.approx([89.5, 571.4], rel=1e-12)
    assert fpos.bankruptcy_price.tolist() == pytest.approx([85.0, 600.0], rel=1e-12)


def test_copy_is_deep_and_independent():
    from books import two_market_exchange

    ex = two_market_exchange()
    ex.insurance.deposit(5.0)
    twin = ex.copy()
    # Same state: positions, balances, marks, fund.
    a, b = ex.positions(exact=True), twin.positions(exact=True)
    for col in ("account", "market", "size", "entry_notional"):
        assert np.array_equal(getattr(a, col), getattr(b, col))
    assert twin.balance(2, exact=True) == ex.balance(2, exact=True) == 1_000_000_000 - 0  # $1000, no fees
    assert twin.insurance.balance(exact=True) == ex.insurance.balance(exact=True) == 5_000_000
    assert twin.markets == ex.markets
    # Changing the copy leaves the original as it was, and the other way round.
    twin.set_marks(["BTC"], [50.0])
    twin.deposit(4, 1.0)
    twin.trade(4, 2, "ETH", 0.5, 21.0)
    assert ex.marks(exact=True).tolist() == [900, 2100]
    assert ex.balance(4, exact=True) == 10_000_000
    assert ex.position_count == 4
    assert twin.position_count == 5
    ex.deposit(1, 3.0)
    assert twin.balance(1, exact=True) == 50_000_000
    ex.check_invariants()
    twin.check_invariants()
