"""Marks finer than the order tick (add_market's mark_decimals, docs/semantics.md, Units).

Hand cases: a BTC market with a 0.1 tick (price_decimals 1) and marks to 10^-5 (the default,
the tick's decimals plus 4), money in 10^-6. Account 1 (50 quote) buys 2 BTC at 100.0 from
account 2 (1000 quote). Every expected value below is worked out by hand in its comment.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest

import deleverage
from deleverage import Exchange
from deleverage.errors import ConfigError, InvalidInput

DATA = os.path.join(os.path.dirname(__file__), "data")


def btc(**kw) -> Exchange:
    ex = Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.10, **kw)
    ex.deposit([1, 2], [50.0, 1000.0])
    ex.trade(1, 2, "BTC", 2.0, 100.0)
    return ex


def test_default_is_four_decimals_finer_than_the_tick() -> None:
    ex = btc()
    info = ex.market_info("BTC")
    assert (info["price_decimals"], info["mark_decimals"]) == (1, 5)
    ex.add_market("ALT", qty_decimals=0, price_decimals=4, maintenance_margin=0.01, initial_margin=0.02)
    assert ex.market_info("ALT")["mark_decimals"] == 8
    # explicit: any value from price_decimals to 18
    ex.add_market("ETH", qty_decimals=2, price_decimals=2, mark_decimals=2, maintenance_margin=0.02, initial_margin=0.04)
    assert ex.market_info("ETH")["mark_decimals"] == 2
    # the same, from the public scales accessor (what exact values are in)
    s = ex.scales
    assert isinstance(s, deleverage.MarketScales)
    assert (s.money_decimals, s.qty_decimals, s.tick_decimals, s.mark_decimals) == (6, (3, 0, 2), (1, 4, 2), (5, 8, 2))
    assert [s.units_per_tick(m) for m in range(3)] == [10_000, 10_000, 1]
    assert Exchange.from_bytes(ex.to_bytes()).scales == s and ex.copy().scales == s


def test_a_published_mark_with_more_digits_than_the_tick_is_taken_exactly() -> None:
    ex = btc()
    ex.add_market("ALT", qty_decimals=0, price_decimals=4, maintenance_margin=0.01, initial_margin=0.02)
    ex.set_marks(["BTC", "ALT"], [90.12345, 1.3409577])
    # in price units: 90.12345 * 10^5 and 1.3409577 * 10^8
    assert ex.marks(exact=True).tolist() == [9_012_345, 134_095_770]
    assert ex.marks().tolist() == [90.12345, 1.3409577]
    # account 1: 50 + 2 * (90.12345 - 100) = 30.2469; maintenance 5% of 2 * 90.12345 = 9.012345;
    # initial 18.02469. Account 2: 1000 + 19.7531 = 1019.7531. All exact in 10^-6 money units.
    m = ex.check_margin(exact=True)
    assert m.equity.tolist() == [30_246_900, 1_019_753_100]
    assert m.maintenance.tolist() == [9_012_345, 9_012_345]
    assert m.initial.tolist() == [18_024_690, 18_024_690]
    ex.check_invariants()


def test_marks_beyond_mark_decimals_are_refused_and_change_nothing() -> None:
    ex = btc()
    ex.set_marks("BTC", 90.12345)
    before = ex.state_hash()
    with pytest.raises(InvalidInput, match=r"prices\[0\].*not a multiple of the unit 1e-05"):
        ex.set_marks("BTC", 90.123456)
    assert ex.state_hash() == before


def test_liquidation_price_is_rounded_in_the_mark_unit() -> None:
    # equity(x) = 50 + 2 (x - 100) = 2x - 150; maintenance(x) = 0.05 * 2x = 0.1x; they meet at
    # x = 150 / 1.9 = 78.947368...; rounded against the long holder (up) to 10^-5: 78.94737.
    # With marks on the 0.1 tick the same position's liquidation price is 79.0.
    fine, on_tick = btc(), btc(mark_decimals=1)
    for ex in (fine, on_tick):
        ex.set_marks("BTC", 100.0)
    assert int(fine.positions(exact=True).liquidation_price[0]) == math.ceil(Fraction(150) / Fraction(19, 10) * 10**5)
    assert fine.positions(exact=True).liquidation_price[0] == 7_894_737
    assert fine.positions().liquidation_price[0] == 78.94737
    assert on_tick.positions(exact=True).liquidation_price[0] == 790


def test_trade_and_entry_prices_must_be_whole_ticks() -> None:
    ex = btc()
    ex.set_marks("BTC", 90.12345)
    before = ex.state_hash()
    # human units: the tick is 0.1
    with pytest.raises(InvalidInput, match=r"prices\[0\] \(buyer 1, seller 2, market 'BTC'\): 100.05 is not a multiple of "
                                           r"the unit 0.1"):
        ex.trade(1, 2, "BTC", 1.0, 100.05)
    # exact: price units of 10^-5, so a tick is 10^4 units; 100.05 is 10_005_000
    with pytest.raises(InvalidInput, match=r"prices\[1\]: price 10005000 is not a whole order tick of market 'BTC'.*"
                                           r"a multiple of 10000"):
        ex.trades([1, 1], [2, 2], ["BTC", "BTC"], [1000, 1000], [10_000_000, 10_005_000], exact=True)
    with pytest.raises(InvalidInput, match=r"entry_prices\[1\]: price 9000001 is not a whole order tick"):
        ex.load_positions([1, 2], ["BTC", "BTC"], [5, -5], [9_000_000, 9_000_001], exact=True)
    with pytest.raises(InvalidInput, match=r"entry_prices\[0\] \(account 1, market 'BTC'\): 90.01 is not a multiple"):
        ex.load_positions([1, 2], ["BTC", "BTC"], [0.005, -0.005], [90.01, 90.0])
    assert ex.state_hash() == before
    # on the tick, in either unit, the same fill
    a, b = ex.copy(), ex.copy()
    a.trade(1, 2, "BTC", 1.0, 100.1)
    b.trade(1, 2, "BTC", 1000, 10_010_000, exact=True)
    assert a.state_hash() == b.state_hash() != before


def test_bad_mark_decimals_are_refused_by_name() -> None:
    ex = Exchange(6, threads=1)
    for bad in (0, 19, 1.5, "5", True):
        with pytest.raises(ConfigError, match="mark_decimals"):
            ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=bad, maintenance_margin=0.05,
                          initial_margin=0.1)
    # the default must fit the value scale: 3 + (6 + 4) decimals exceed money_decimals 0 by more than 8
    small = Exchange(0, threads=1)
    with pytest.raises(ConfigError, match=r"mark_decimals: the default, price_decimals \+ 4 = 10, does not fit.*"
                                          r"from 6 to 5 here|mark_decimals: the default"):
        small.add_market("X", qty_decimals=3, price_decimals=6, maintenance_margin=0.05, initial_margin=0.1)
    with pytest.raises(ConfigError, match="qty_decimals \\+ mark_decimals may exceed money_decimals by at most 8"):
        small.add_market("X", qty_decimals=3, price_decimals=2, mark_decimals=6, maintenance_margin=0.05, initial_margin=0.1)
    assert ex.markets == [] and small.markets == []
    small.add_market("X", qty_decimals=3, price_decimals=2, mark_decimals=5, maintenance_margin=0.05, initial_margin=0.1)
    assert small.market_info("X")["mark_decimals"] == 5


def test_snapshot_and_journal_keep_mark_decimals(tmp_path) -> None:
    ex = Exchange(6, threads=1)
    ex.save(tmp_path / "base.dlv")
    ex.open_journal(tmp_path / "j.dlj")
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=3, maintenance_margin=0.05, initial_margin=0.1)
    ex.add_market("ALT", qty_decimals=0, price_decimals=4, maintenance_margin=0.01, initial_margin=0.02)
    ex.deposit([1, 2], [50.0, 1000.0])
    ex.trade(1, 2, "BTC", 2.0, 100.0)
    ex.set_marks(["BTC", "ALT"], [90.123, 1.3409577])
    ex.close_journal()
    for back in (Exchange.from_bytes(ex.to_bytes()), Exchange.replay(tmp_path / "base.dlv", tmp_path / "j.dlj")):
        assert [back.market_info(m)["mark_decimals"] for m in ("BTC", "ALT")] == [3, 8]
        assert back.state_hash() == ex.state_hash()
        assert back.marks().tolist() == [90.123, 1.3409577]
        back.check_invariants()
    # mark_decimals is part of the state: the same book with marks on the tick hashes differently
    other = Exchange(6, threads=1)
    other.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=1, maintenance_margin=0.05, initial_margin=0.1)
    finer = Exchange(6, threads=1)
    finer.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=2, maintenance_margin=0.05, initial_margin=0.1)
    assert other.state_hash() != finer.state_hash()


def test_version_2_snapshot_and_journal_still_load() -> None:
    # written by the build before mark_decimals (tests/data, snapshot and journal version 2): BTC
    # (tick 0.1) and ETH (tick 0.01), three accounts, two trades, marks 90 and 21
    snap = open(os.path.join(DATA, "snapshot_v2.dlv"), "rb").read()
    assert snap[8] == 2
    from_snapshot = Exchange.from_bytes(snap)
    replayed = Exchange.replay(os.path.join(DATA, "journal_v2_base.dlv"), os.path.join(DATA, "journal_v2.dlj"))
    for ex in (from_snapshot, replayed):
        # marks stay on the order tick: the price unit of those files
        assert [ex.market_info(m)["mark_decimals"] for m in ("BTC", "ETH")] == [1, 2]
        assert ex.marks(exact=True).tolist() == [900, 2100]
        # the state hash the old build printed for this state
        assert ex.state_hash() == 0x0EDE95D79B1BF734AE19F982FE92DA49
        ex.check_invariants()
    again = from_snapshot.to_bytes()
    assert again[8] == 3 and Exchange.from_bytes(again).state_hash() == from_snapshot.state_hash()


def test_load_book_takes_mark_decimals_from_the_market_table() -> None:
    import pandas as pd

    book = pd.DataFrame({"account": [1, 2], "market": ["ALT", "ALT"], "size": [100.0, -100.0],
                         "entry_price": [1.3409, 1.3409], "collateral": [50.0, 50.0]})
    markets = [{"symbol": "ALT", "qty_decimals": 0, "price_decimals": 4, "mark_price": 1.3409577}]
    ex = deleverage.load_book(book, markets=markets, threads=1)
    assert ex.market_info("ALT")["mark_decimals"] == 8 and ex.marks().tolist() == [1.3409577]
    ex2 = deleverage.load_book(book, markets=[dict(markets[0], mark_decimals=7)], threads=1)
    assert ex2.market_info("ALT")["mark_decimals"] == 7
    # unrealized PnL at the fine mark: 100 * (1.3409577 - 1.3409) = 0.00577, exact in 10^-6
    assert ex.positions(exact=True).unrealized_pnl.tolist() == [5770, -5770]
    with pytest.raises(InvalidInput, match="not a multiple of the unit 0.0001"):
        deleverage.load_book(book.assign(entry_price=[1.34095, 1.34095]), markets=markets, threads=1)


def test_overflow_scaling_a_tick_price_to_the_mark_unit_is_refused() -> None:
    ex = Exchange(6, threads=1)
    ex.add_market("X", qty_decimals=0, price_decimals=0, mark_decimals=8, maintenance_margin=0.01, initial_margin=0.02)
    ex.deposit([1, 2], [10.0, 10.0])
    before = ex.state_hash()
    with pytest.raises(deleverage.errors.ArithmeticOverflow, match=r"prices\[0\]"):
        ex.trade(1, 2, "X", 1, 2.0**62)
    assert ex.state_hash() == before
    np.testing.assert_array_equal(ex.marks(exact=True), [0])
