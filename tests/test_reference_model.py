"""Hand-computed cases for docs/semantics.md.

Every expected number below is worked out by hand in the comments from the formulas of
docs/semantics.md; none is produced by the code under test. The cases run against both the
pure-Python reference model and the engine (the ``impl`` fixture in conftest.py), so they
check the reference model first and then serve as a fixed, readable regression suite for
the engine.

Notation in the comments: md = money_decimals, qd/pd = qty/price decimals,
D = max(md, qd+pd), S = 10^(D-md), k = D - qd - pd, R = 10^8.
"""

import math

import pytest
from reference_model import (
    R,
    ReferenceExchange,
    ceil_div,
    floor_div,
    margin_ratio,
    trunc_div,
)

PCT = R // 100  # 1% in 1e-8 units
Q = 10**6  # one quote unit in money units when md = 6


def raises(ex, name):
    """pytest.raises for the implementation's own error class called ``name``."""
    return pytest.raises(getattr(ex.errors, name))


# ------------------------------------------------------------------ integer helpers


def test_floor_ceil_trunc_div():
    assert floor_div(7, 2) == 3 and ceil_div(7, 2) == 4 and trunc_div(7, 2) == 3
    assert floor_div(-7, 2) == -4 and ceil_div(-7, 2) == -3 and trunc_div(-7, 2) == -3
    assert floor_div(7, -2) == -4 and ceil_div(7, -2) == -3 and trunc_div(7, -2) == -3
    assert floor_div(-7, -2) == 3 and ceil_div(-7, -2) == 4 and trunc_div(-7, -2) == 3
    assert floor_div(6, 3) == ceil_div(6, 3) == trunc_div(6, 3) == 2
    assert floor_div(-6, 3) == ceil_div(-6, 3) == trunc_div(-6, 3) == -2
    assert floor_div(0, -5) == ceil_div(0, -5) == trunc_div(0, -5) == 0
    big = 10**40 + 1
    assert floor_div(-big, 10) == -(10**39) - 1
    assert trunc_div(-big, 10) == -(10**39)
    assert ceil_div(big, 10) == 10**39 + 1


def test_margin_ratio_conventions():
    assert margin_ratio(10, 9) == 0.9
    assert margin_ratio(0, 0) == 0.0
    assert margin_ratio(0, 5) == math.inf
    assert margin_ratio(-1, 0) == math.inf
    assert margin_ratio(-3, 7) == math.inf
    assert margin_ratio(4, 0) == 0.0


def test_reference_tier_deductions():
    ex = ReferenceExchange(money_decimals=6)
    m = ex.add_market(
        "ETH", 2, 2, PCT, 2 * PCT,
        tiers=[(10_000 * Q, PCT, 2 * PCT), (50_000 * Q, 250 * PCT // 100, 5 * PCT), (None, 5 * PCT, 10 * PCT)],
    )
    tiers = ex.markets[m].tiers
    # A_1 = 10_000e6 * (2.5% - 1%) = 1e10 * 1.5e6 = 1.5e16 (= 150 quote x R)
    # A_2 = A_1 + 50_000e6 * (5% - 2.5%) = 1.5e16 + 5e10 * 2.5e6 = 1.4e17 (= 1400 quote x R)
    assert [t.A for t in tiers] == [0, 150 * Q * R, 1400 * Q * R]
    # B_1 = 1e10 * 3e6 = 3e16 (300 quote), B_2 = 3e16 + 5e10 * 5e6 = 2.8e17 (2800 quote)
    assert [t.B for t in tiers] == [0, 300 * Q * R, 2800 * Q * R]


def test_reference_scales():
    ex = ReferenceExchange(money_decimals=2)
    a = ex.add_market("A", 3, 3, PCT, PCT)  # qd+pd = 6 -> D = 6, S = 10^4
    b = ex.add_market("B", 0, 1, PCT, PCT)  # k = 6 - 1 = 5
    assert (ex.D, ex.S, ex.k(a), ex.k(b)) == (6, 10**4, 0, 5)
    # value_money(A, 1500, 1001) = floor(1_501_500 / 10^4) = 150
    assert ex.value_money(a, 1500, 1001) == 150
    # a short rounds down too (more negative): floor(-150.15) = -151
    assert ex.value_money(a, -1500, 1001) == -151
    with pytest.raises(ex.errors.ConfigError):
        ex.add_market("C", 6, 5, PCT, PCT)  # 11 - 2 = 9 > 8


def test_reference_invariant_checker_detects_corruption():
    ex = ReferenceExchange(money_decimals=0)
    m = ex.add_market("X", 0, 0, 10 * PCT, 20 * PCT)
    ex.deposit(1, 100)
    ex.deposit(2, 100)
    ex.trade(1, 2, m, 3, 10)
    ex.check_invariants()
    ex.accounts[1].balance += 1  # money created from nothing
    with pytest.raises(ex.errors.InvariantViolation):
        ex.check_invariants()
    ex.accounts[1].balance -= 1
    ex.accounts[1].positions[m].size += 1  # a long without a short
    with pytest.raises(ex.errors.InvariantViolation):
        ex.check_invariants()


# ------------------------------------------------------------------ hand cases


def btc_case(make):
    """md = 6, BTC: qd = 3 (0.001 BTC lots), pd = 1 (0.1 ticks), mmr 5%, imr 10%.
    D = max(6, 4) = 6, S = 1, k = 2. A (balance 30 quote) buys 2 BTC at 100 from B
    (balance 1000 quote)."""
    ex = make(6)
    m = ex.add_market("BTC", 3, 1, 5 * PCT, 10 * PCT)
    ex.deposit(1, 30 * Q)
    ex.deposit(2, 1000 * Q)
    # v = floor(2000 * 1000 * 10^2 / 1) = 2e8 money = 200 quote
    ex.trade(1, 2, m, 2000, 1000)
    return ex, m


def test_long_two_btc_mark_90(impl):
    ex, m = btc_case(impl)
    ex.set_mark(m, 900)
    # A: value_V = 2000 * 900 * 100 = 180e6; u = 180e6 - 200e6 = -20e6
    #    equity = 30e6 - 20e6 = 10e6; maintenance = ceil(180e6 * 5e6 / 1e8) = 9e6;
    #    initial = 18e6; 10e6 < 9e6 is false: not liquidatable, not bankrupt
    assert ex.margin(1) == (10 * Q, 9 * Q, 18 * Q, False, False)
    assert ex.margin_ratio(1) == (9 * Q) / (10 * Q)
    # liquidation: Eo = 30e6, Mo = 0, E*S = 200e6
    #   x = (0 - 0 - (30e6 - 200e6) * 1e8) / (100 * (2000e8 - 2000 * 5e6))
    #     = 1.7e16 / 1.9e13 = 894.73... -> ceil (long) = 895 ticks (89.5)
    # bankruptcy: share = equity = 10e6; x = (180e6 - 10e6) / (2000 * 100) = 850 ticks
    assert ex.position_view(1, m) == (2000, 200 * Q, -20 * Q, 895, 850)
    # B (short): u = -180e6 + 200e6 = +20e6, equity = 1020e6, same requirements
    assert ex.margin(2) == (1020 * Q, 9 * Q, 18 * Q, False, False)
    # liquidation: Eo - E*S = 1000e6 + 200e6 = 1200e6;
    #   x = -1.2e17 / (100 * (-2000e8 - 2000 * 5e6)) = 1.2e17 / 2.1e13 = 5714.28 -> floor 5714
    # bankruptcy: x = (-180e6 - 1020e6) / (-2000 * 100) = 6000 ticks exactly
    assert ex.position_view(2, m) == (-2000, -200 * Q, 20 * Q, 5714, 6000)
    ex.check_invariants()


def test_long_two_btc_crash_to_liquidation_and_bankruptcy(impl):
    ex, m = btc_case(impl)
    # mark 89.4: value 178.8, equity 30 - 21.2 = 8.8 quote, mm = ceil(8.94) quote
    ex.set_mark(m, 894)
    assert ex.margin(1) == (8_800_000, 8_940_000, 17_880_000, True, False)
    # the liquidation and bankruptcy prices of a lone position do not depend on the mark:
    # bankruptcy share = 8.8e6: x = (178.8e6 - 8.8e6) / 2e5 = 850
    assert ex.position_view(1, m) == (2000, 200 * Q, -21_200_000, 895, 850)
    # mark 84.9: equity = 30 - 30.2 = -0.2 quote -> bankrupt
    ex.set_mark(m, 849)
    assert ex.margin(1) == (-200_000, 8_490_000, 16_980_000, True, True)
    assert ex.margin_ratio(1) == math.inf
    # bankruptcy: share = -0.2e6: x = (169.8e6 + 0.2e6) / 2e5 = 850
    assert ex.position_view(1, m) == (2000, 200 * Q, -30_200_000, 895, 850)
    ex.check_invariants()


def tiered_case(make):
    """md = 6, ETH: qd = 2, pd = 2 (D = 6, S = 1, k = 2) with the tier table
    [<= 10_000 quote: 1% / 2%], [<= 50_000: 2.5% / 5%], [above: 5% / 10%];
    deductions A = (0, 150, 1400) quote and B = (0, 300, 2800) quote (x R).
    A (1000 quote) buys 10 ETH (1000 lots) at 2000 (200_000 ticks) from B (100_000 quote):
    v = 1000 * 200_000 * 100 = 2e10 = 20_000 quote."""
    ex = make(6)
    m = ex.add_market(
        "ETH", 2, 2, PCT, 2 * PCT,
        tiers=[(10_000 * Q, PCT, 2 * PCT), (50_000 * Q, 250 * PCT // 100, 5 * PCT), (None, 5 * PCT, 10 * PCT)],
    )
    ex.deposit(1, 1000 * Q)
    ex.deposit(2, 100_000 * Q)
    ex.trade(1, 2, m, 1000, 200_000)
    return ex, m


def test_tiered_market_middle_band(impl):
    ex, m = tiered_case(impl)
    ex.set_mark(m, 200_000)
    # notional 20_000 quote is in tier 1: mm = 20_000 * 2.5% - 150 = 350; im = 1000 - 300 = 700
    assert ex.margin(1) == (1000 * Q, 350 * Q, 700 * Q, False, False)
    # A's liquidation price (long 1000 lots, Eo = 1000e6, E*S = 20_000e6):
    #  tier 0: x = (0 - 0 + 19_000e6 * 1e8) / (100 * (1000e8 - 1000 * 1e6)) = 1.9e18 / 9.9e12
    #          = 191919.19 -> ceil 191920; band: 1000 * 191920 * 100 = 1.9192e10 > 1e10: no
    #  tier 1: x = (-1.5e16 + 1.9e18) / (100 * (1000e8 - 1000 * 2.5e6)) = 1.885e18 / 9.75e12
    #          = 193333.33 -> ceil 193334; band: 1.93334e10 <= 5e10: yes
    # bankruptcy: x = (2e10 - 1000e6) / (1000 * 100) = 190_000 (1900 quote)
    assert ex.position_view(1, m) == (1000, 20_000 * Q, 0, 193_334, 190_000)
    # B (short): equity 100_000, same requirements.
    assert ex.margin(2) == (100_000 * Q, 350 * Q, 700 * Q, False, False)
    # liquidation: Eo - E*S = 100_000e6 + 20_000e6 = 1.2e11
    #  tier 0: x = -1.2e19 / (100 * (-1000e8 - 1000 * 1e6)) = 1188118.8 -> floor 1188118,
    #          band 1.188e11 > 1e10: no
    #  tier 1: x = (-1.5e16 - 1.2e19) / (100 * (-1000e8 - 1000 * 2.5e6)) = 1172195.1 -> 1172195,
    #          band 1.172e11 > 5e10: no
    #  tier 2 (last): x = (-1.4e17 - 1.2e19) / (100 * (-1000e8 - 1000 * 5e6)) = 1156190.47
    #          -> floor 1156190 (11561.90 quote)
    # bankruptcy: x = (-2e10 - 1e11) / (-1000 * 100) = 1_200_000
    assert ex.position_view(2, m) == (-1000, -20_000 * Q, 0, 1_156_190, 1_200_000)
    ex.check_invariants()


def test_tiered_market_crossing_into_top_band(impl):
    ex, m = tiered_case(impl)
    ex.set_mark(m, 600_000)
    # notional 60_000 quote, tier 2: mm = 60_000 * 5% - 1400 = 1600; im = 6000 - 2800 = 3200
    # (continuity check at 50_000: tier 1 gives 1250 - 150 = 1100, tier 2 2500 - 1400 = 1100)
    # A: equity = 1000 + 10 * (6000 - 2000) = 41_000; B: 100_000 - 40_000 = 60_000
    assert ex.margin(1) == (41_000 * Q, 1600 * Q, 3200 * Q, False, False)
    assert ex.margin(2) == (60_000 * Q, 1600 * Q, 3200 * Q, False, False)
    # A's bankruptcy: x = (1000 * 600_000 * 100 - 41_000e6) / 1e5 = (6e10 - 4.1e10) / 1e5 = 190_000
    assert ex.position_view(1, m) == (1000, 20_000 * Q, 40_000 * Q, 193_334, 190_000)
    ex.check_invariants()


def test_tiered_market_bottom_band_and_cap_boundary(impl):
    ex, m = tiered_case(impl)
    ex.set_mark(m, 90_000)
    # notional 9000 quote, tier 0: mm = 90, im = 180.
    # A: equity = 1000 + 10 * (900 - 2000) = -10_000 -> liquidatable and bankrupt
    assert ex.margin(1) == (-10_000 * Q, 90 * Q, 180 * Q, True, True)
    assert ex.margin(2) == (111_000 * Q, 90 * Q, 180 * Q, False, False)
    # bankruptcy: x = (1000 * 90_000 * 100 + 10_000e6) / 1e5 = 190_000
    assert ex.position_view(1, m) == (1000, 20_000 * Q, -11_000 * Q, 193_334, 190_000)
    # exactly at the cap (notional 10_000 quote <= cap_0): tier 0: mm = 100, im = 200
    ex.set_mark(m, 100_000)
    assert ex.margin(1) == (-9_000 * Q, 100 * Q, 200 * Q, True, True)
    # one tick above the cap: notional 10_000.1 quote, tier 1: mm = 250.0025 - 150 = 100.0025,
    # im = 500.005 - 300 = 200.005 quote (money units: 100_002_500 and 200_005_000)
    ex.set_mark(m, 100_001)
    assert ex.margin(1) == (-8_999_900_000, 100_002_500, 200_005_000, True, True)
    ex.check_invariants()


def test_reduce_and_flip_realized_pnl(impl):
    # md = 6, qd = pd = 0: D = 6, S = 1, k = 6, value = q * p * 1e6
    ex = impl(6)
    m = ex.add_market("SOL", 0, 0, 10 * PCT, 20 * PCT)
    for a in (1, 2, 3):
        ex.deposit(a, 1000 * Q)
    # A buys 10 at 100 from B: A (10, 1000e6); B (-10, -1000e6); balances unchanged
    ex.trade(1, 2, m, 10, 100)
    ex.set_mark(m, 100)
    assert ex.position_view(1, m)[:2] == (10, 1000 * Q)
    assert ex.margin(1)[0] == 1000 * Q
    # C buys 4 at 120 from A: v = 480e6, A reduces: E1 = trunc(1000e6 * 6 / 10) = 600e6,
    # balance += (600e6 - 1000e6) + 480e6 = +80e6 (realized 4 * (120 - 100) = 80)
    ex.trade(3, 1, m, 4, 120)
    assert ex.position_view(1, m)[:3] == (6, 600 * Q, 0)
    assert ex.margin(1)[0] == 1080 * Q  # balance 1080, u = 600 - 600 = 0
    assert ex.position_view(3, m)[:3] == (4, 480 * Q, -80 * Q)
    # C buys 10 at 90 from A: v = 900e6, A flips 6 -> -4: E1 = trunc(-900e6 * -4 / -10) = -360e6,
    # balance += (-360e6 - 600e6) + 900e6 = -60e6 (realized 6 * (90 - 100) = -60) -> 1020e6
    ex.trade(3, 1, m, 10, 90)
    ex.set_mark(m, 90)
    assert ex.position_view(1, m)[:3] == (-4, -360 * Q, 0)
    assert ex.margin(1)[0] == 1020 * Q
    # C increased: E = 480e6 + 900e6 = 1380e6
    assert ex.position_view(3, m)[:2] == (14, 1380 * Q)
    # A buys 4 at 95 from B: A closes (E1 = 0), balance += (0 + 360e6) - 380e6 = -20e6 -> 1000e6;
    # B increases its short: (-14, -1000e6 - 380e6)
    ex.trade(1, 2, m, 4, 95)
    assert ex.position_view(1, m) is None
    assert ex.position_view(2, m)[:2] == (-14, -1380 * Q)
    ex.set_mark(m, 100)
    # A flat: equity = balance = 1000; C: u = 1400 - 1380 = 20; B: u = -1400 + 1380 = -20
    assert ex.margin(1) == (1000 * Q, 0, 0, False, False)
    # C: mm = 1400 * 10% = 140, im = 280
    assert ex.margin(3) == (1020 * Q, 140 * Q, 280 * Q, False, False)
    assert ex.margin(2) == (980 * Q, 140 * Q, 280 * Q, False, False)
    ex.check_invariants()


def test_truncation_toward_zero_on_reduce_and_flip(impl):
    # md = 0, qd = 1, pd = 0: D = 1, S = 10, k = 0: value_money = floor(q * p / 10)
    ex = impl(0)
    m = ex.add_market("X", 1, 0, 10 * PCT, 20 * PCT)
    ex.deposit(1, 100)
    ex.deposit(2, 100)
    # A buys 3 lots at 7: v = floor(21 / 10) = 2 -> A (3, 2), B (-3, -2)
    ex.trade(1, 2, m, 3, 7)
    # B buys 1 lot at 7 from A: v = floor(7 / 10) = 0
    #  A reduces: E1 = trunc(2 * 2 / 3) = 1; balance += (1 - 2) - (-0) = -1 -> 99
    #  B reduces: E1 = trunc(-2 * -2 / -3) = trunc(-1.33) = -1 (floor would be -2);
    #             balance += (-1 + 2) - 0 = +1 -> 101
    ex.trade(2, 1, m, 1, 7)
    ex.set_mark(m, 7)
    # A: value_V = 2 * 7 = 14, u_V = 14 - 1 * 10 = 4 -> upnl floor(0.4) = 0, equity 99
    # B: u_V = -14 + 10 = -4 -> upnl floor(-0.4) = -1, equity 101 - 1 = 100
    assert ex.position_view(1, m)[:3] == (2, 1, 0)
    assert ex.position_view(2, m)[:3] == (-2, -1, -1)
    # mm_VR = 14 * 1e7 -> maintenance ceil(1.4e8 / (10 * 1e8)) = 1; initial ceil(0.28) = 1
    assert ex.margin(1) == (99, 1, 1, False, False)
    assert ex.margin(2) == (100, 1, 1, False, False)
    # B buys 3 lots at 7 from A: v = 2
    #  A flips 2 -> -1: E1 = trunc(-2 * -1 / -3) = trunc(-0.67) = 0; balance += (0 - 1) + 2 -> 100
    #  B flips -2 -> 1: E1 = trunc(2 * 1 / 3) = 0; balance += (0 + 1) - 2 -> 100
    ex.trade(2, 1, m, 3, 7)
    # A: u_V = -7 - 0 -> upnl floor(-0.7) = -1, equity 99; B: u_V = 7 -> upnl 0, equity 100
    assert ex.position_view(1, m)[:3] == (-1, 0, -1)
    assert ex.position_view(2, m)[:3] == (1, 0, 0)
    # mm_VR = 7e7 -> maintenance ceil(0.07) = 1, initial ceil(0.14) = 1
    assert ex.margin(1) == (99, 1, 1, False, False)
    assert ex.margin(2) == (100, 1, 1, False, False)
    ex.check_invariants()


def test_equity_rounds_down_requirements_round_up(impl):
    # md = 2, qd = 3, pd = 3: D = 6, S = 10^4, k = 0; mmr 1%, imr 2%
    ex = impl(2)
    m = ex.add_market("Y", 3, 3, PCT, 2 * PCT)
    ex.deposit(1, 10)  # 0.10 quote
    ex.deposit(2, 1000)  # 10.00 quote
    # A buys 1500 lots (1.5) at 1001 (1.001): v = floor(1_501_500 / 10^4) = 150
    ex.trade(1, 2, m, 1500, 1001)
    ex.set_mark(m, 999)
    # A: value_V = 1_498_500, u_V = 1_498_500 - 150e4 = -1500 -> upnl floor(-0.15) = -1
    #    equity = 10 - 1 = 9; maintenance = ceil(1_498_500 * 1e6 / (1e4 * 1e8)) = ceil(1.4985) = 2
    #    initial = ceil(2.997) = 3
    assert ex.margin(1) == (9, 2, 3, False, False)
    assert ex.margin_ratio(1) == 2 / 9
    # liquidation: Eo = 10 * 1e4 = 1e5, E*S = 1.5e6:
    #   x = 1.4e6 * 1e8 / (1500e8 - 1500 * 1e6) = 1.4e14 / 1.485e11 = 942.76 -> ceil 943
    # bankruptcy: x = (1_498_500 - 9 * 1e4) / 1500 = 939 exactly
    assert ex.position_view(1, m) == (1500, 150, -1, 943, 939)
    # B: u_V = +1500 -> upnl floor(0.15) = 0, equity 1000
    assert ex.margin(2) == (1000, 2, 3, False, False)
    # liquidation: Eo - E*S = 1e7 + 1.5e6 = 1.15e7:
    #   x = -1.15e15 / (-1500e8 - 1500 * 1e6) = 7590.76 -> floor 7590
    # bankruptcy: x = (-1_498_500 - 1000e4) / -1500 = 7665.67 -> ceil 7666
    assert ex.position_view(2, m) == (-1500, -150, 0, 7590, 7666)
    ex.check_invariants()


def two_market_case(make):
    """md = 0, X and Y with qd = pd = 0 (D = 0, S = 1, k = 0: value = q * p).
    X: mmr 10%, imr 20%; Y: mmr 5%, imr 10%. C (300) is long 10 X at 100 and short 20 Y
    at 50; D (10_000) holds the opposite. Marks: X 90, Y 55."""
    ex = make(0)
    x = ex.add_market("X", 0, 0, 10 * PCT, 20 * PCT)
    y = ex.add_market("Y", 0, 0, 5 * PCT, 10 * PCT)
    ex.deposit(1, 300)
    ex.deposit(2, 10_000)
    ex.load_positions([(1, x, 10, 100), (1, y, -20, 50), (2, x, -10, 100), (2, y, 20, 50)])
    ex.set_marks([x, y], [90, 55])
    return ex, x, y


def test_two_markets_cross_margin_and_split_bankruptcy(impl):
    ex, x, y = two_market_case(impl)
    # C: u_X = 900 - 1000 = -100, u_Y = -1100 + 1000 = -100 -> equity 100
    #    mm = 900 * 10% + 1100 * 5% = 90 + 55 = 145; im = 180 + 110 = 290
    assert ex.margin(1) == (100, 145, 290, True, False)
    # C's bankruptcy split by mm: share_X = floor(100 * 90 / 145) = 62, share_Y = floor(100 * 55 / 145) = 37
    #   X (long): x = (900 - 62) / 10 = 83.8 -> floor 83
    #   Y (short): x = (-1100 - 37) / -20 = 56.85 -> ceil 57
    # C's liquidation prices, the other market held at its mark:
    #   X: Eo = 300 - 100 = 200, Mo = 1100 * 5e6 = 5.5e9, E = 1000:
    #      x = (5.5e9 + 800 * 1e8) / (10e8 - 10 * 1e7) = 8.55e10 / 9e8 = 95
    #   Y: Eo = 200, Mo = 900 * 1e7 = 9e9, E = -1000:
    #      x = (9e9 - 1200e8) / (-20e8 - 20 * 5e6) = -1.11e11 / -2.1e9 = 52.86 -> floor 52
    assert ex.position_view(1, x) == (10, 1000, -100, 95, 83)
    assert ex.position_view(1, y) == (-20, -1000, -100, 52, 57)
    # D: u_X = +100, u_Y = +100 -> equity 10_200, same requirements
    assert ex.margin(2) == (10_200, 145, 290, False, False)
    # D's bankruptcy: share_X = floor(10_200 * 90 / 145) = 6331, share_Y = floor(10_200 * 55 / 145) = 3868
    #   X (short): x = (-900 - 6331) / -10 = 723.1 -> ceil 724
    #   Y (long): x = (1100 - 3868) / 20 = -138.4 -> <= 0: none
    # D's liquidation: X: Eo = 10_100, Mo = 5.5e9, E = -1000:
    #      x = (5.5e9 - 11_100e8) / (-10e8 - 10 * 1e7) = -1.1045e12 / -1.1e9 = 1004.09 -> 1004
    #   Y: Eo = 10_100, Mo = 9e9, E = 1000: x = (9e9 - 9100e8) / (20e8 - 20 * 5e6) = -474.2
    #      -> none
    assert ex.position_view(2, x) == (-10, -1000, 100, 1004, 724)
    assert ex.position_view(2, y) == (20, 1000, 100, 0, 0)
    ex.check_invariants()


def test_bankruptcy_split_fallback_weights(impl):
    # maintenance rate 0 everywhere: the split falls back to floor(notional_V / S), and
    # when that is 0 too, to equal weights.
    ex = impl(0)
    big = ex.add_market("BIG", 0, 0, 0, 0)  # qd = pd = 0
    t = [ex.add_market(f"T{i}", 2, 0, 0, 0) for i in range(3)]  # qd = 2: D = 2, S = 100
    ex.deposit(1, 0)
    ex.deposit(2, 100)
    # BIG: k = 2, v = floor(1 * 10 * 100 / 100) = 10; then A sells back at 5: v = 5
    # A: (1, 10), then close: balance += (0 - 10) + 5 = -5.  B: balance += 10 - 5 = +5 -> 105
    ex.trade(1, 2, big, 1, 10)
    ex.trade(2, 1, big, 1, 5)
    # A buys 1 lot (0.01) of each T at 50: v = floor(50 / 100) = 0 -> E = 0
    for m in t:
        ex.trade(1, 2, m, 1, 50)
    ex.set_marks([big] + t, [5, 50, 50, 50])
    # A: u_V = 50 each, U = 150 -> equity = -5 + floor(1.5) = -4; mm 0, im 0
    assert ex.margin(1) == (-4, 0, 0, True, True)
    # weights: mm all 0; floor(notional_V / S) = floor(50 / 100) = 0; so equal:
    # share = floor(-4 / 3) = -2 each: x = (50 + 2 * 100) / 1 = 250
    # liquidation (mmr 0): Eo = -500 + 100 = -400, x = 400e8 / 1e8 = 400
    # displayed upnl = floor(50 / 100) = 0 per position
    for m in t:
        assert ex.position_view(1, m) == (1, 0, 0, 400, 250)
    # B: U = -150 -> equity = 105 + floor(-1.5) = 103; shares floor(103 / 3) = 34:
    # x = (-50 - 3400) / -1 = 3450; liquidation: Eo = 10_500 - 100, E = 0:
    # x = -10_400e8 / -1e8 = 10_400
    assert ex.margin(2) == (103, 0, 0, False, False)
    for m in t:
        assert ex.position_view(2, m) == (-1, 0, -1, 10_400, 3450)
    ex.check_invariants()


def test_bankruptcy_split_by_notional_when_no_maintenance(impl):
    # md = 0, qd = pd = 0, mmr 0: weights floor(notional_V / S) = notional
    ex = impl(0)
    x = ex.add_market("X", 0, 0, 0, 0)
    y = ex.add_market("Y", 0, 0, 0, 0)
    ex.deposit(1, 50)
    ex.deposit(2, 10_000)
    ex.load_positions([(1, x, 10, 100), (1, y, 5, 40)], counterparty=2)
    ex.set_marks([x, y], [100, 40])
    assert ex.margin(1) == (50, 0, 0, False, False)
    # weights 1000 and 200: share_X = floor(50 * 1000 / 1200) = 41, share_Y = floor(50 * 200 / 1200) = 8
    # X: x = (1000 - 41) / 10 = 95.9 -> 95; Y: x = (200 - 8) / 5 = 38.4 -> 38
    # liquidation (mmr 0): X: Eo = 50, E = 1000: x = 950e8 / 10e8 = 95; Y: E = 200: 150e8 / 5e8 = 30
    assert ex.position_view(1, x) == (10, 1000, 0, 95, 95)
    assert ex.position_view(1, y) == (5, 200, 0, 30, 38)
    # the counterparty took the other side at the same entry notional
    assert ex.position_view(2, x)[:3] == (-10, -1000, 0)
    assert ex.position_view(2, y)[:3] == (-5, -200, 0)
    ex.check_invariants()


def test_load_with_counterparty_and_external_entry_flow(impl):
    ex = impl(0)
    x = ex.add_market("X", 0, 0, 10 * PCT, 20 * PCT)
    y = ex.add_market("Y", 0, 0, 5 * PCT, 10 * PCT)
    ex.deposit(1, 300)  # C
    ex.deposit(2, 500)  # D
    ex.deposit(3, 10_000)  # K, the counterparty
    # X rows: C +10 at 100 (E 1000), D -4 at 90 (E -360): net size 6, net E 640;
    # K receives (-6, -640). Y rows balance in size but E = 100 and -110: net flow -10.
    ex.load_positions([(1, x, 10, 100), (2, x, -4, 90), (1, y, 5, 20), (2, y, -5, 22)], counterparty=3)
    ex.check_invariants()
    ex.set_marks([x, y], [100, 21])
    assert ex.position_view(3, y) is None
    assert ex.position_view(3, x)[:3] == (-6, -640, 40)  # u = -600 + 640
    # C: u_X = 0, u_Y = 105 - 100 = 5 -> equity 305; mm = 100 + 5.25 -> 106; im = 200 + 10.5 -> 211
    assert ex.margin(1) == (305, 106, 211, False, False)
    # D: u_X = -400 + 360 = -40, u_Y = -105 + 110 = 5 -> 465; mm = 40 + 5.25 -> 46; im 80 + 10.5 -> 91
    assert ex.margin(2) == (465, 46, 91, False, False)
    # K: u = 40 -> 10_040; mm 60, im 120
    assert ex.margin(3) == (10_040, 60, 120, False, False)


def test_load_errors_change_nothing(impl):
    ex = impl(0)
    x = ex.add_market("X", 0, 0, 10 * PCT, 20 * PCT)
    ex.deposit(1, 300)
    ex.deposit(2, 300)
    ex.deposit(3, 300)
    ex.load_positions([(1, x, 3, 10), (2, x, -3, 10)])
    ex.set_mark(x, 10)
    before = (ex.margin(1), ex.margin(2), ex.position_view(1, x), ex.position_view(2, x))
    with raises(ex, "DeleverageError"):  # unbalanced and no counterparty
        ex.load_positions([(3, x, 1, 10)])
    with raises(ex, "DeleverageError"):  # the same pair twice
        ex.load_positions([(3, x, 1, 10), (3, x, -1, 10)])
    with raises(ex, "DeleverageError"):  # (1, X) already holds a position
        ex.load_positions([(1, x, 1, 10), (2, x, -1, 10)])
    with raises(ex, "DeleverageError"):  # unknown account
        ex.load_positions([(99, x, 1, 10), (1, x, -1, 10)])
    assert (ex.margin(1), ex.margin(2), ex.position_view(1, x), ex.position_view(2, x)) == before
    ex.check_invariants()


def test_withdrawals_against_initial_margin(impl):
    ex, m = btc_case(impl)
    ex.set_mark(m, 1000)
    # A at mark 100: equity 30, maintenance 10, initial 20 (quote)
    assert ex.margin(1) == (30 * Q, 10 * Q, 20 * Q, False, False)
    ex.withdraw(1, 10 * Q)  # afterwards equity 20 == initial 20: allowed
    assert ex.margin(1) == (20 * Q, 10 * Q, 20 * Q, False, False)
    with raises(ex, "InsufficientMargin"):
        ex.withdraw(1, 1)  # 20e6 - 1 < 20e6
    assert ex.margin(1) == (20 * Q, 10 * Q, 20 * Q, False, False)
    # a flat account may go to exactly 0, not below
    ex.deposit(7, 5)
    ex.withdraw(7, 5)
    assert ex.margin(7) == (0, 0, 0, False, False)
    with raises(ex, "InsufficientMargin"):
        ex.withdraw(7, 1)
    assert ex.margin(7) == (0, 0, 0, False, False)
    # batches are atomic and processed in order (an id may repeat)
    ex.deposit(8, 10)
    with raises(ex, "InsufficientMargin"):
        ex.withdrawals_batch([8, 8], [6, 6])
    assert ex.margin(8) == (10, 0, 0, False, False)
    ex.withdrawals_batch([8, 8], [4, 6])
    assert ex.margin(8) == (0, 0, 0, False, False)
    with raises(ex, "UnknownId"):
        ex.withdraw(12345, 0)
    ex.check_invariants()


def test_deposit_batches(impl):
    ex = impl(6)
    ex.deposits_batch([5, 6, 5], [1, 2, 3])
    assert ex.margin(5) == (4, 0, 0, False, False)
    assert ex.margin(6) == (2, 0, 0, False, False)
    with raises(ex, "InvalidInput"):
        ex.deposits_batch([5, 7], [1, -1])  # negative amount: nothing applied
    assert ex.margin(5) == (4, 0, 0, False, False)
    with raises(ex, "UnknownId"):
        ex.margin(7)
    ex.check_invariants()


def test_trade_validation_and_batch_atomicity(impl):
    ex, m = btc_case(impl)
    ex.set_mark(m, 1000)
    ex.deposit(3, 50 * Q)
    before = [ex.margin(a) for a in (1, 2, 3)] + [ex.position_view(a, m) for a in (1, 2, 3)]
    with raises(ex, "DeleverageError"):
        ex.trade(1, 1, m, 1, 1000)  # buyer == seller
    with raises(ex, "DeleverageError"):
        ex.trade(1, 99, m, 1, 1000)  # unknown seller
    with raises(ex, "DeleverageError"):
        ex.trade(1, 2, m, 0, 1000)  # size must be > 0
    with raises(ex, "DeleverageError"):
        ex.trade(1, 2, m, 1, 0)  # price must be > 0
    with raises(ex, "DeleverageError"):
        # the first two trades are fine, the last one is not: none is applied
        ex.trades([(3, 1, m, 500, 1000), (3, 2, m, 700, 990), (3, 3, m, 1, 1000)])
    after = [ex.margin(a) for a in (1, 2, 3)] + [ex.position_view(a, m) for a in (1, 2, 3)]
    assert after == before
    # a valid batch:
    # 1) C buys 500 lots from A at 100: v = 500 * 1000 * 100 = 50e6; C (500, 50e6);
    #    A reduces to 1500 lots: E = trunc(200e6 * 1500 / 2000) = 150e6, realized 0
    # 2) B buys 700 lots from C at 99: v = 700 * 990 * 100 = 69.3e6;
    #    B reduces to -1300: E = trunc(-200e6 * -1300 / -2000) = -130e6,
    #      balance += 70e6 - 69.3e6 = +0.7e6 (realized 700 * (100 - 99))
    #    C flips 500 -> -200: E = trunc(-69.3e6 * -200 / -700) = -19.8e6,
    #      balance += (-19.8e6 - 50e6) + 69.3e6 = -0.5e6 (realized 500 * (99 - 100))
    ex.trades([(3, 1, m, 500, 1000), (2, 3, m, 700, 990)])
    assert ex.position_view(1, m)[:2] == (1500, 150 * Q)
    assert ex.position_view(2, m)[:2] == (-1300, -130 * Q)
    assert ex.position_view(3, m)[:2] == (-200, -19_800_000)
    # at mark 100: B equity = 1000.7 + (-130 + 130) ; C = 49.5 + (-20 + 19.8) = 49.3
    assert ex.margin(2)[0] == 1000 * Q + 700_000
    assert ex.margin(3)[0] == 49_300_000
    ex.check_invariants()


def test_overflow_is_refused_and_changes_nothing(impl):
    ex = impl(0)
    m = ex.add_market("X", 0, 0, PCT, PCT)
    ex.deposit(1, 0)
    ex.deposit(2, 0)
    with raises(ex, "ArithmeticOverflow"):
        ex.trade(1, 2, m, 2**62, 3)  # value 3 * 2^62 money units > 2^62
    ex.trade(1, 2, m, 2**40, 1)
    ex.set_mark(m, 1)
    with raises(ex, "ArithmeticOverflow"):
        ex.set_mark(m, 2**23)  # value at that mark: 2^63 > 2^62
    assert ex.position_view(1, m)[:3] == (2**40, 2**40, 0)
    assert ex.margin(1) == (0, ceil_div(2**40, 100), ceil_div(2**40, 100), True, False)
    ex.check_invariants()


def test_entry_notional_beyond_2_62_is_refused(impl):
    # md = 0, qd = pd = 0: value = q * p. "The absolute value of any position's value, at its
    # entry and at every mark, must fit in 2^62 money units."
    ex = impl(0)
    m = ex.add_market("X", 0, 0, PCT, 2 * PCT)
    ex.deposit(1, 0)
    ex.deposit(2, 0)
    ex.set_mark(m, 1)
    ex.trade(1, 2, m, 2**61, 1)  # E = 2^61
    # v = 9 * 2^58 = 1.125 * 2^61 fits, the value at the mark (2^61 + 2^58) fits, but the
    # entry notional would become 2^61 + 9 * 2^58 = 1.0625 * 2^62: refused, nothing changes
    with raises(ex, "ArithmeticOverflow"):
        ex.trade(1, 2, m, 2**58, 9)
    assert ex.position_view(1, m)[:2] == (2**61, 2**61)
    assert ex.position_view(2, m)[:2] == (-(2**61), -(2**61))
    ex.check_invariants()


def test_missing_mark_refuses_margin_check(impl):
    ex = impl(6)
    m = ex.add_market("X", 0, 0, PCT, PCT)
    ex.deposit(1, Q)
    ex.deposit(2, Q)
    ex.trade(1, 2, m, 1, 1)
    with raises(ex, "DeleverageError"):
        ex.check_margin()
    ex.set_mark(m, 1)
    assert ex.margin(1) == (Q, 10_000, 10_000, False, False)


def test_incremental_check_reports_exposed_accounts_at_current_marks(impl):
    ex, x, y = two_market_case(impl)  # accounts 1 and 2 hold X and Y
    ex.deposit(3, 1000)
    ex.deposit(4, 1000)
    ex.deposit(5, 7)  # flat
    ex.trade(4, 3, y, 2, 55)  # 3: short 2 Y, 4: long 2 Y (both only in Y)
    full = ex.check_margin()
    assert [r.account for r in full] == [1, 2, 3, 4, 5]
    assert [r.account for r in ex.check_margin([x])] == [1, 2]
    assert [r.account for r in ex.check_margin([y])] == [1, 2, 3, 4]
    assert [r.account for r in ex.check_margin([x, y])] == [1, 2, 3, 4]
    # move Y's mark, then ask for X only: Y moved since it was last valued, so it is
    # revalued too and the accounts in X or Y are reported, all at the current marks.
    ex.set_mark(y, 50)
    rows = ex.check_margin([x])
    # C: u_X = -100, u_Y = -1000 + 1000 = 0 -> equity 200; mm = 90 + 50 = 140; im = 180 + 100 = 280
    # D: u_X = +100, u_Y = 0 -> 10_100
    # 3 (short 2 Y at 55 -> u = +10) and 4 (u = -10): mm = 100 * 5% = 5, im = 10
    expected = [
        (1, 200, 140, 280, False, False),
        (2, 10_100, 140, 280, False, False),
        (3, 1010, 5, 10, False, False),
        (4, 990, 5, 10, False, False),
    ]
    assert [(r.account,) + r.as_tuple() for r in rows] == expected
    # Y has been valued now: asking for X again reports the X accounts only
    assert [(r.account,) + r.as_tuple() for r in ex.check_margin([x])] == expected[:2]
    # moving X and asking for Y reports the accounts in X or Y
    ex.set_mark(x, 100)
    # C: u_X = 0 -> equity 300, mm = 100 + 50 = 150, im = 200 + 100 = 300; D: 10_000
    assert [(r.account,) + r.as_tuple() for r in ex.check_margin([y])] == [
        (1, 300, 150, 300, False, False),
        (2, 10_000, 150, 300, False, False),
    ] + expected[2:]
    # a following full check agrees
    assert [(r.account,) + r.as_tuple() for r in ex.check_margin()] == [
        (1, 300, 150, 300, False, False),
        (2, 10_000, 150, 300, False, False),
    ] + expected[2:] + [(5, 7, 0, 0, False, False)]


def test_incremental_check_refuses_unmarked_market_with_positions(impl):
    ex = impl(0)
    x = ex.add_market("X", 0, 0, 10 * PCT, 20 * PCT)
    y = ex.add_market("Y", 0, 0, 10 * PCT, 20 * PCT)
    ex.deposit(1, 100)
    ex.deposit(2, 100)
    ex.load_positions([(1, x, 1, 10), (2, x, -1, 10), (1, y, 1, 10), (2, y, -1, 10)])
    ex.set_mark(y, 10)
    # X has open positions and no mark: the margin check refuses to run, even when only
    # Y is asked for (accounts 1 and 2 hold X too)
    with raises(ex, "DeleverageError"):
        ex.check_margin([y])
    with raises(ex, "DeleverageError"):
        ex.check_margin()


def test_positions_listing_order(impl):
    ex, x, y = two_market_case(impl)
    ex.deposit(-3, 1000)  # account ids are any int64 chosen by the user
    ex.deposit(2**62, 1000)
    ex.trade(2**62, -3, y, 1, 55)
    ex.trade(-3, 2**62, x, 1, 90)
    # account creation order (1, 2, -3, 2^62), then market id (X before Y)
    assert [(r.account, r.market) for r in ex.positions()] == [
        (1, x), (1, y), (2, x), (2, y), (-3, x), (-3, y), (2**62, x), (2**62, y),
    ]
    assert [r.account for r in ex.check_margin()] == [1, 2, -3, 2**62]
    ex.check_invariants()
