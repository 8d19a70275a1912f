"""The Python API surface: float vs exact outputs, report tables, margin_ratio, scalar and
array inputs, symbols as market references, and concurrent use from Python threads.

Expected numbers are hand-computed from docs/semantics.md in the comments.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from books import two_market_exchange

import deleverage
from deleverage import MarginReport, PositionReport, errors

MONEY = 10**6  # money_decimals 6


def make_exchange() -> deleverage.Exchange:
    return two_market_exchange()


# Margin at the marks, in micro-dollars:
#   1: equity 50 + (180 - 200) = 30;   maintenance 5% of 180 = 9;    initial 18
#   2: equity 1000 + (200 - 180) + (30 - 31.5) = 1018.5; maintenance 9 + 2% of 31.5 = 9.63; initial 18 + 1.26 = 19.26
#   3: equity 50 + (31.5 - 30) = 51.5; maintenance 0.63; initial 1.26
#   4: equity 10, nothing owed
EQUITY = [30_000_000, 1_018_500_000, 51_500_000, 10_000_000]
MAINTENANCE = [9_000_000, 9_630_000, 630_000, 0]
INITIAL = [18_000_000, 19_260_000, 1_260_000, 0]

# Positions, ordered by account creation order then market id: (1, BTC), (2, BTC), (2, ETH), (3, ETH)
POS_ACCOUNT = [1, 2, 2, 3]
POS_MARKET = [0, 0, 1, 1]
POS_SIZE = [2000, -2000, -150, 150]  # lots
POS_ENTRY = [200_000_000, -200_000_000, -30_000_000, 30_000_000]
# value at the mark minus entry: 180 - 200, -180 + 200, -31.5 + 30, 31.5 - 30
POS_UPNL = [-20_000_000, 20_000_000, -1_500_000, 1_500_000]
# Liquidation prices (ticks):
#  (1, BTC): Eo = 50e6, Mo = 0, E*S = 200e6: x = -(50e6 - 200e6) * 1e8 / (100 * (2000e8 - 2000 * 5e6))
#            = 1.5e16 / 1.9e13 = 789.47 -> ceil 790
#  (2, BTC): Eo = 1000e6 + (-1.5e6) = 998.5e6, Mo = 31.5e6 * 2e6 = 6.3e13, E*S = -200e6
#            x = (6.3e13 - 1198.5e6 * 1e8) / (100 * (-2000e8 - 2000 * 5e6)) = -1.19787e17 / -2.1e13 = 5704.14 -> floor 5704
#  (2, ETH): Eo = 1000e6 + 20e6 = 1020e6, Mo = 180e6 * 5e6 = 9e14, E*S = -30e6
#            x = (9e14 - 1050e6 * 1e8) / (100 * (-150e8 - 150 * 2e6)) = -1.041e17 / -1.53e12 = 68039.2 -> floor 68039
#  (3, ETH): x = -(50e6 - 30e6) * 1e8 / (100 * (150e8 - 150 * 2e6)) = -2e15 / 1.47e12 < 0 -> none (0)
POS_LIQ = [790, 5704, 68039, 0]
# Bankruptcy prices (ticks):
#  (1, BTC): share = equity 30e6: x = (2000 * 900 * 100 - 30e6) / (2000 * 100) = 150e6 / 2e5 = 750
#  (2, *):   weights 9,000,000 and 630,000 (sum 9,630,000) of equity 1,018,500,000:
#            BTC share floor(1,018,500,000 * 9e6 / 9.63e6) = floor(951,869,158.88) = 951,869,158
#            ETH share floor(1,018,500,000 * 0.63e6 / 9.63e6) = floor(66,630,841.12) = 66,630,841
#            BTC x = (-180e6 - 951,869,158) / -2e5 = 5659.35 -> ceil 5660
#            ETH x = (-31.5e6 - 66,630,841) / -15,000 = 6542.06 -> ceil 6543
#  (3, ETH): x = (31.5e6 - 51.5e6) / 15,000 < 0 -> none (0)
POS_BK = [750, 5660, 6543, 0]


def test_exact_margin_is_the_hand_computed_one() -> None:
    m = make_exchange().check_margin(exact=True)
    np.testing.assert_array_equal(m.account, [1, 2, 3, 4])
    np.testing.assert_array_equal(m.equity, EQUITY)
    np.testing.assert_array_equal(m.maintenance, MAINTENANCE)
    np.testing.assert_array_equal(m.initial, INITIAL)
    np.testing.assert_array_equal(m.liquidatable, [False, False, False, False])
    np.testing.assert_array_equal(m.bankrupt, [False, False, False, False])
    assert m.exact is True
    assert m.equity.dtype == np.int64


def test_float_margin_equals_exact_over_the_money_scale() -> None:
    ex = make_exchange()
    f, e = ex.check_margin(), ex.check_margin(exact=True)
    assert f.exact is False
    for name in ("equity", "maintenance", "initial"):
        col = getattr(f, name)
        assert col.dtype == np.float64
        np.testing.assert_array_equal(col, getattr(e, name) / 10**6, err_msg=name)
    np.testing.assert_array_equal(f.equity, [30.0, 1018.5, 51.5, 10.0])
    np.testing.assert_allclose(f.maintenance, [9.0, 9.63, 0.63, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(f.margin_ratio, e.margin_ratio)
    np.testing.assert_array_equal(f.account, e.account)
    np.testing.assert_array_equal(f.liquidatable, e.liquidatable)
    # account_margin agrees in both modes
    one_f, one_e = ex.account_margin(2), ex.account_margin(2, exact=True)
    assert one_e == {"equity": 1_018_500_000, "maintenance": 9_630_000, "initial": 19_260_000,
                     "liquidatable": False, "bankrupt": False}
    assert one_f["equity"] == 1018.5 and one_f["initial"] == 19_260_000 / MONEY


def test_exact_positions_are_the_hand_computed_ones() -> None:
    p = make_exchange().positions(exact=True)
    np.testing.assert_array_equal(p.account, POS_ACCOUNT)
    np.testing.assert_array_equal(p.market, POS_MARKET)
    np.testing.assert_array_equal(p.size, POS_SIZE)
    np.testing.assert_array_equal(p.entry_notional, POS_ENTRY)
    np.testing.assert_array_equal(p.unrealized_pnl, POS_UPNL)
    np.testing.assert_array_equal(p.liquidation_price, POS_LIQ)
    np.testing.assert_array_equal(p.bankruptcy_price, POS_BK)
    # entry price in ticks: 200e6 / 2000 lots / 100 = 1000 ticks; 30e6 / 150 / 100 = 2000 ticks
    np.testing.assert_allclose(p.entry_price, [1000.0, 1000.0, 2000.0, 2000.0], rtol=1e-12)


def test_float_positions_equal_exact_over_each_markets_scale() -> None:
    ex = make_exchange()
    f, e = ex.positions(), ex.positions(exact=True)
    qd = np.array([3, 3, 2, 2])  # BTC, BTC, ETH, ETH
    pd_ = np.array([1, 1, 2, 2])
    np.testing.assert_array_equal(f.account, e.account)
    np.testing.assert_array_equal(f.market, e.market)
    np.testing.assert_array_equal(f.size, e.size / 10.0**qd)
    np.testing.assert_array_equal(f.size, [2.0, -2.0, -1.5, 1.5])
    np.testing.assert_array_equal(f.entry_notional, e.entry_notional / 10**6)
    np.testing.assert_array_equal(f.unrealized_pnl, [-20.0, 20.0, -1.5, 1.5])
    np.testing.assert_allclose(f.entry_price, [100.0, 100.0, 20.0, 20.0], rtol=1e-12)
    # prices: ticks / 10**price_decimals, NaN where the engine reports 0 (none)
    np.testing.assert_array_equal(f.liquidation_price[:3], e.liquidation_price[:3] / 10.0**pd_[:3])
    np.testing.assert_allclose(f.liquidation_price[:3], [79.0, 570.4, 680.39], rtol=1e-12)
    assert math.isnan(f.liquidation_price[3])
    np.testing.assert_allclose(f.bankruptcy_price[:3], [75.0, 566.0, 65.43], rtol=1e-12)
    assert math.isnan(f.bankruptcy_price[3])


def test_marks_and_balances_in_both_modes() -> None:
    ex = make_exchange()
    np.testing.assert_array_equal(ex.marks(exact=True), [900, 2100])
    np.testing.assert_array_equal(ex.marks(), [90.0, 21.0])
    assert ex.balance(2, exact=True) == 1_000_000_000 and ex.balance(2) == 1000.0
    ex.add_market("SOL", qty_decimals=0, price_decimals=3, maintenance_margin=0.1, initial_margin=0.2)
    assert ex.marks(exact=True)[2] == 0
    assert math.isnan(ex.marks()[2])  # no mark yet
    assert ex.net_size("BTC") == 0 and ex.net_size("ETH", exact=True) == 0


def test_to_pandas_columns() -> None:
    import pandas as pd

    ex = make_exchange()
    m = ex.check_margin(exact=True).to_pandas()
    assert isinstance(m, pd.DataFrame)
    assert list(m.columns) == ["account", "equity", "maintenance", "initial", "margin_ratio", "liquidatable", "bankrupt"]
    assert list(m["equity"]) == EQUITY
    assert m["liquidatable"].dtype == bool
    p = ex.positions().to_pandas()
    assert list(p.columns) == ["account", "market", "size", "entry_notional", "entry_price", "unrealized_pnl",
                               "liquidation_price", "bankruptcy_price"]
    assert len(p) == 4
    assert list(p["size"]) == [2.0, -2.0, -1.5, 1.5]


def test_reports_are_frozen_tables() -> None:
    ex = make_exchange()
    m, p = ex.check_margin(), ex.positions()
    assert isinstance(m, MarginReport) and isinstance(p, PositionReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.equity = np.zeros(4)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.size = np.zeros(4)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.exact = True  # type: ignore[misc]
    assert len(m) == 4 and len(p) == 4
    assert "4 accounts" in repr(m) and "4 positions" in repr(p)
    assert "exact" not in m.columns()


def test_margin_ratio_semantics() -> None:
    # BTC only; account 10: $10, long 1 BTC at 100 (E = 1000 * 1000 * 100 = 100e6)
    ex = deleverage.Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.10)
    ex.deposit([10, 11, 12, 13], [10.0, 1000.0, 0.0, 5.0])
    ex.trade(10, 11, "BTC", 1.0, 100.0)

    ex.set_marks("BTC", 90.0)
    m = ex.check_margin(exact=True)
    # 10: equity 10 - 10 = 0, maintenance 4.5 -> owing with no equity: +inf, liquidatable, not bankrupt
    # 11: equity 1010, maintenance 4.5 -> 4.5 / 1010
    # 12: empty (0 / 0) -> 0;  13: $5, nothing owed -> 0
    np.testing.assert_array_equal(m.equity, [0, 1_010_000_000, 0, 5_000_000])
    np.testing.assert_array_equal(m.maintenance, [4_500_000, 4_500_000, 0, 0])
    assert m.margin_ratio[0] == math.inf
    assert math.isclose(m.margin_ratio[1], 4.5 / 1010, rel_tol=1e-15)
    assert m.margin_ratio[2] == 0.0 and m.margin_ratio[3] == 0.0
    np.testing.assert_array_equal(m.liquidatable, [True, False, False, False])
    np.testing.assert_array_equal(m.bankrupt, [False, False, False, False])

    ex.set_marks("BTC", 80.0)
    m = ex.check_margin()
    # 10: equity 10 - 20 = -10 < 0: +inf and bankrupt; maintenance 4.0
    assert m.equity[0] == -10.0 and m.maintenance[0] == 4.0
    assert m.margin_ratio[0] == math.inf
    assert bool(m.bankrupt[0]) and bool(m.liquidatable[0])
    # 11: equity 1020, maintenance 4 -> 4 / 1020
    assert math.isclose(m.margin_ratio[1], 4 / 1020, rel_tol=1e-15)

    ex.set_marks("BTC", 120.0)
    m = ex.check_margin()
    # 10: equity 10 + 20 = 30, maintenance 6 -> 0.2
    assert math.isclose(m.margin_ratio[0], 0.2, rel_tol=1e-15)


def test_scalar_and_array_inputs_are_equivalent() -> None:
    a, b = make_exchange(), make_exchange()
    a.deposit(5, 2.5)
    b.deposit([5], [2.5])
    a.deposit(np.int64(6), np.float64(1.25))
    b.deposit(np.array([6]), np.array([1.25]))
    # a scalar account with several amounts, several accounts with one amount
    a.deposit(7, [1.0, 2.0])  # 7 gets 3.0
    b.deposit([7, 7], [1.0, 2.0])
    a.deposit([8, 9], 4.0)  # both get 4.0
    b.deposit([8, 9], [4.0, 4.0])
    a.withdraw(7, 0.5)
    b.withdraw([7], [0.5])
    a.trade(4, 3, "ETH", 0.5, 21.0)
    b.trades([4], [3], ["ETH"], [0.5], [21.0])
    a.set_marks("ETH", 22.0)
    b.set_marks(["ETH"], [22.0])
    for ex in (a, b):
        assert ex.balance(5, exact=True) == 2_500_000
        assert ex.balance(6, exact=True) == 1_250_000
        assert ex.balance(7, exact=True) == 2_500_000  # 1 + 2 - 0.5
        assert ex.balance(8, exact=True) == 4_000_000 and ex.balance(9, exact=True) == 4_000_000
    ma, mb = a.check_margin(exact=True), b.check_margin(exact=True)
    for name, col in ma.columns().items():
        np.testing.assert_array_equal(col, mb.columns()[name], err_msg=name)
    pa, pb = a.positions(exact=True), b.positions(exact=True)
    for name, col in pa.columns().items():
        np.testing.assert_array_equal(col, pb.columns()[name], err_msg=name)
    # account 4: long 50 lots ETH at 2100 -> E = 50 * 2100 * 100 = 10,500,000; at 22: value 11,000,000
    row = int(np.flatnonzero(pa.account == 4)[0])
    assert (pa.size[row], pa.entry_notional[row], pa.unrealized_pnl[row]) == (50, 10_500_000, 500_000)
    # exact scalars too
    a.trade(4, 3, 1, 50, 2200, exact=True)
    # 4 buys 50 more lots of ETH from 3 (long 150 - 50 - 50 = 50): still 5 positions
    # (1 BTC, 2 BTC, 2 ETH, 3 ETH, 4 ETH)
    assert a.position_count == 5
    pa = a.positions(exact=True)
    np.testing.assert_array_equal(pa.size[pa.market == 1], [-150, 50, 100])  # accounts 2, 3, 4
    # a scalar account id given as a float is refused
    with pytest.raises(errors.InvalidInput, match="accounts"):
        a.deposit(5.0, 1.0)


def test_symbols_and_ids_are_interchangeable_market_refs() -> None:
    a, b = make_exchange(), make_exchange()
    assert a.market_id("ETH") == 1 and a.market_id(1) == 1 and a.market_id(np.int32(0)) == 0
    assert a.markets == ["BTC", "ETH"]
    a.set_marks(["ETH", "BTC"], [22.0, 95.0])
    b.set_marks([1, 0], [22.0, 95.0])
    np.testing.assert_array_equal(a.marks(exact=True), [950, 2200])
    np.testing.assert_array_equal(b.marks(exact=True), [950, 2200])
    a.trades([4, 4], [3, 2], ["ETH", "BTC"], [0.5, 0.1], [22.0, 95.0])
    b.trades([4, 4], [3, 2], np.array([1, 0], dtype=np.int64), [0.5, 0.1], [22.0, 95.0])
    a.check_margin()  # value every market at its mark, so that only BTC moves below
    b.check_margin()
    a.set_marks("BTC", 96.0)
    b.set_marks(0, 96.0)
    ra, rb = a.check_margin(["BTC"], exact=True), b.check_margin([0], exact=True)
    for name, col in ra.columns().items():
        np.testing.assert_array_equal(col, rb.columns()[name], err_msg=name)
    # holders of BTC in creation order: 1, 2, 4
    np.testing.assert_array_equal(ra.account, [1, 2, 4])
    assert a.net_size("BTC", exact=True) == 0 and a.net_size(0) == 0
    info = a.market_info("ETH")
    assert info["qty_decimals"] == 2 and info["price_decimals"] == 2 and info["mark"] == 2200
    assert a.market_info(1)["symbol"] == "ETH"
    # incremental check by symbol scalar
    np.testing.assert_array_equal(a.check_margin("ETH", exact=True).account, [2, 3, 4])


def test_add_market_with_mark_price_and_tiers() -> None:
    ex = deleverage.Exchange(2, threads=1)
    # tiers in quote currency: up to 1000 at 1% / 2%, then 2% / 4%; continuity amount 1000 * 1% = 10
    mid = ex.add_market("T", qty_decimals=0, price_decimals=0, maintenance_margin=0.0, initial_margin=0.0,
                        tiers=[(1000, 0.01, 0.02), (None, 0.02, 0.04, 10.0)], mark_price=1500)
    # marks default to 4 decimals finer than the order tick: 1500 is 1500 * 10^4 price units
    assert ex.market_info("T")["price_decimals"] == 0 and ex.market_info("T")["mark_decimals"] == 4
    assert mid == 0 and ex.marks(exact=True)[0] == 1500 * 10**4 and ex.marks()[0] == 1500.0
    tiers = ex.market_info("T")["tiers"]
    # (cap in money units of 0.01, mmr, imr, maintenance deduction, initial deduction), deductions in money * 1e8:
    # A1 = 100,000 * (2e6 - 1e6) = 1e11, B1 = 100,000 * (4e6 - 2e6) = 2e11
    assert tiers[0][:3] == (100_000, 1_000_000, 2_000_000)
    assert tiers[1][1:] == (2_000_000, 4_000_000, 100_000_000_000, 200_000_000_000)
    ex.deposit([1, 2], [1000.0, 1000.0])
    ex.trade(1, 2, "T", 1, 1500)
    # notional 1500 in tier 1: maintenance = 1500 * 2% - 10 = 20; initial = 1500 * 4% - 20 = 40
    m = ex.account_margin(1)
    assert (m["maintenance"], m["initial"]) == (20.0, 40.0)


def test_tier_caps_and_amounts_given_exactly_are_taken_exactly() -> None:
    """A cap with more significant digits than a float holds (a Decimal, a Fraction or a
    decimal string) reaches the engine digit for digit, and so does a published maintenance
    amount; a float cap is rounded to the nearest money unit as before."""
    cap_units = 123_456_789_012_345_700  # 123456789012.3457 at money_decimals=6; a float gives ...696
    amount = Decimal("1234567890.123457")  # cap * (2% - 1%), a whole number of money units
    for cap in [Decimal("123456789012.3457"), Fraction(cap_units, 10**6), "123456789012.3457"]:
        ex = deleverage.Exchange(6, threads=1)
        ex.add_market("T", qty_decimals=0, price_decimals=0, maintenance_margin=0.0, initial_margin=0.0,
                      tiers=[(cap, 0.01, 0.02), (None, 0.02, 0.04, amount)])
        tiers = ex.market_info("T")["tiers"]
        assert tiers[0][0] == cap_units, cap
        assert tiers[1][3] == cap_units * 1_000_000, cap  # deduction in money x 1e8 units
    ex = deleverage.Exchange(6, threads=1)
    ex.add_market("I", qty_decimals=0, price_decimals=0, maintenance_margin=0.0, initial_margin=0.0,
                  tiers=[(9_000_000_000_123, 0.01, 0.02), (None, 0.02, 0.04)])
    assert ex.market_info("I")["tiers"][0][0] == 9_000_000_000_123_000_000  # int: exact human units
    ex.add_market("F", qty_decimals=0, price_decimals=0, maintenance_margin=0.0, initial_margin=0.0,
                  tiers=[(1000.0000004, 0.01, 0.02), (None, 0.02, 0.04)])
    assert ex.market_info("F")["tiers"][0][0] == 1_000_000_000  # float: nearest money unit
    for bad in [True, "12x", float("nan"), Decimal("NaN"), 2**80, [1]]:
        with pytest.raises(errors.DeleverageError, match=r"tiers\[0\]\.max_notional"):
            deleverage.Exchange(6, threads=1).add_market(
                "B", qty_decimals=0, price_decimals=0, maintenance_margin=0.0, initial_margin=0.0,
                tiers=[(bad, 0.01, 0.02), (None, 0.02, 0.04)])


def test_concurrent_check_margin_from_python_threads() -> None:
    """Several Python threads call check_margin() on one exchange at once; the binding
    serializes them on the engine's mutex (GIL released), so every result is identical
    and equal to the hand formula below."""
    n_pairs = 15_000
    ex = deleverage.Exchange(6, threads=2)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=1, maintenance_margin=0.05, initial_margin=0.10)
    ids = np.arange(100, 100 + 2 * n_pairs, dtype=np.int64)
    deposits = 1_000_000 + (ids % 1000) * 1_000
    ex.deposit(ids, deposits, exact=True)
    lots = (np.arange(2 * n_pairs) // 2) % 7 + 1  # pairs hold 1..7 lots
    sizes = np.where(np.arange(2 * n_pairs) % 2 == 0, lots, -lots).astype(np.int64)
    ex.load_positions(ids, np.zeros(2 * n_pairs, dtype=np.int64), sizes, np.full(2 * n_pairs, 1000, dtype=np.int64),
                      exact=True)
    ex.set_marks("BTC", 900, exact=True)
    # per account (S = 1, k = 2): E = q * 1000 * 100, value at 900 = q * 900 * 100
    #   equity = deposit + q * (900 - 1000) * 100 = deposit - 10,000 * q  (q signed)
    #   maintenance = |q| * 90,000 * 5% = 4,500 * |q|,  initial = 9,000 * |q|
    expected_equity = deposits - 10_000 * sizes
    expected_mm = 4_500 * np.abs(sizes)
    expected_im = 9_000 * np.abs(sizes)

    n_threads, rounds = 8, 15
    barrier = threading.Barrier(n_threads)
    results: list[list[MarginReport]] = [[] for _ in range(n_threads)]
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                results[k].append(ex.check_margin(exact=True))
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert all(len(r) == rounds for r in results)
    for per_thread in results:
        for r in per_thread:
            np.testing.assert_array_equal(r.account, ids)
            np.testing.assert_array_equal(r.equity, expected_equity)
            np.testing.assert_array_equal(r.maintenance, expected_mm)
            np.testing.assert_array_equal(r.initial, expected_im)
    ex.check_invariants()


def test_concurrent_mixed_calls_from_python_threads() -> None:
    """Readers (full and incremental checks, positions) run while a writer moves the mark
    back and forth between two prices; every reader result must be one of the two
    hand-computed states, never a mix."""
    ex = deleverage.Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.10)
    ex.deposit([1, 2], [1000.0, 1000.0])
    ex.trade(1, 2, "BTC", 2.0, 100.0)  # E = +-200e6
    ex.set_marks("BTC", 90.0)
    # mark 90: equity 1000 -+ 20 -> (980e6, 1020e6); mark 110: (1020e6, 980e6)
    states = {(980_000_000, 1_020_000_000), (1_020_000_000, 980_000_000)}
    stop = threading.Event()
    first_read = threading.Event()
    seen: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            first_read.wait(timeout=30)
            for i in range(300):
                ex.set_marks("BTC", 110.0 if i % 2 == 0 else 90.0)
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
        finally:
            stop.set()

    def reader(incremental: bool) -> None:
        try:
            while not stop.is_set():
                m = ex.check_margin(["BTC"] if incremental else None, exact=True)
                seen.append((int(m.equity[0]), int(m.equity[1])))
                first_read.set()
                p = ex.positions(exact=True)
                assert set(p.unrealized_pnl.tolist()) == {-20_000_000, 20_000_000}
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    threads = [threading.Thread(target=reader, args=(k % 2 == 1,)) for k in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert seen and set(seen) <= states
    ex.check_invariants()



def test_empty_batches_are_accepted() -> None:
    ex = make_exchange()
    ex.deposit([], [])
    ex.trades([], [], [], [], [])
    ex.set_marks([], [])
    # no market listed and none moved since the last check: nobody to report
    ex.check_margin()
    assert len(ex.check_margin([])) == 0


def test_large_float_conversion_is_the_same_division_as_numpy() -> None:
    # Columns of 2^16 rows and more are converted in compiled code: it must give exactly
    # value / 10**decimals as numpy computes it, with one decimals value or one per row.
    from deleverage import _convert

    rng = np.random.default_rng(5)
    values = rng.integers(-(2**62), 2**62, size=70_000, dtype=np.int64)
    for d in (0, 2, 6, 9):
        np.testing.assert_array_equal(_convert.from_fixed(values, d), values.astype(np.float64) / 10.0**d)
    per_row = rng.integers(0, 12, size=values.size, dtype=np.int64)
    np.testing.assert_array_equal(_convert.from_fixed(values, per_row), values.astype(np.float64) / np.power(10.0, per_row.astype(np.float64)))


def test_full_report_account_column_is_read_only_and_follows_new_accounts() -> None:
    # The full report's account column is a shared read-only copy of the ids: it must refuse
    # writes, list exactly the accounts that existed at the check, and grow with new ones.
    ex = make_exchange()  # accounts 1, 2, 3, 4 in creation order
    first = ex.check_margin()
    assert first.account.tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError):
        first.account[0] = 99
    ex.deposit([77, 5], [1.0, 2.0])
    second = ex.check_margin()
    assert second.account.tolist() == [1, 2, 3, 4, 77, 5]
    assert first.account.tolist() == [1, 2, 3, 4]
    assert second.equity[4] == 1.0 and second.equity[5] == 2.0
    assert deleverage.Exchange().check_margin().account.tolist() == []


def test_core_and_deficit_split_accessors() -> None:
    # the compiled engine behind an Exchange is public (read-only) and stays the same object;
    # the default deficit split is readable by name, kept by copy(), not by a snapshot
    ex = deleverage.Exchange(deficit_split="maintenance")
    assert isinstance(ex.core, deleverage._core.Engine) and ex.core is ex.core
    assert ex.deficit_split == "maintenance" and ex.copy().deficit_split == "maintenance"
    assert deleverage.Exchange.from_bytes(ex.to_bytes()).deficit_split == "loss"
    assert deleverage.Exchange().deficit_split == "loss"
    ex.core.insurance_deposit(5, 0)  # integer units, no conversion
    assert ex.insurance.balance(exact=True) == 5
    with pytest.raises(AttributeError):
        ex.core = None  # type: ignore[misc]
