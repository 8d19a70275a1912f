"""Where a bankrupt account's negative equity lands (docs/semantics.md, "Bankruptcy values"):
"loss" (default) on its positions at a loss in proportion to the loss, "maintenance" by
maintenance share. Hand cases on multi-market accounts."""

from __future__ import annotations

import pytest

from deleverage import Exchange
from deleverage.errors import ConfigError
from deleverage.executors import MarketClose

A, B, C, MM = 1, 2, 3, 9


def crashed(deficit_split: str = "loss") -> Exchange:
    """Account 1: long 1 BTC at 100 and long 10 ETH at 10 with 50 of collateral; BTC falls to
    30, ETH does not move: equity 50 - 70 = -20. Account 2 is short the BTC, 3 short the ETH."""
    ex = Exchange(6, threads=1, deficit_split=deficit_split)
    for sym in ("BTC", "ETH"):
        ex.add_market(sym, qty_decimals=0, price_decimals=2, mark_decimals=2, maintenance_margin=0.05, initial_margin=0.1, mark_price=100.0 if sym == "BTC" else 10.0)
    ex.deposit([A, B, C, MM], [50.0, 1000.0, 1000.0, 1e6])
    ex.trade(A, B, "BTC", 1, 100.0)
    ex.trade(A, C, "ETH", 10, 10.0)
    ex.set_marks(["BTC", "ETH"], [30.0, 10.0])
    return ex


def bankruptcy_prices(ex: Exchange) -> dict[str, float]:
    p = ex.positions()
    return {ex.markets[int(m)]: float(b) for a, m, b in zip(p.account, p.market, p.bankruptcy_price) if a == A}


def test_bankruptcy_prices_by_loss() -> None:
    # the whole -20 on BTC (loss 70; ETH has none): BTC's value 30 + 20 = 50 -> 50.00;
    # ETH keeps its mark 10.00
    assert bankruptcy_prices(crashed()) == {"BTC": 50.0, "ETH": 10.0}


def test_bankruptcy_prices_by_maintenance() -> None:
    # maintenance 1.5 (BTC: 5% of 30) and 5 (ETH: 5% of 100), shares of -20:
    # BTC floor(-20 * 1.5 / 6.5) = -4.615385 -> value 34.615385 -> 34.61 (down for a long);
    # ETH -15.384616 -> value 115.384616 -> 11.53
    assert bankruptcy_prices(crashed("maintenance")) == {"BTC": 34.61, "ETH": 11.53}


def adl_markets(ex: Exchange, **kw) -> list[str]:
    res = ex.liquidate(executor=MarketClose(MM), **kw)
    ev = res.events
    return sorted({ex.markets[int(m)] for k, m in zip(ev.kind, ev.market) if k == "adl_close"})


def test_a_crash_in_one_market_deleverages_only_that_market() -> None:
    # empty fund. By loss: BTC closes at 30 against a bankruptcy value of 50, so its deficit
    # of 20 goes to ADL in BTC; ETH's bankruptcy value is its mark value: no deficit, no ADL
    ex = crashed()
    assert adl_markets(ex) == ["BTC"]
    ex.check_invariants()
    assert ex.balance(C) == 1000.0  # the ETH short was not touched
    # by maintenance, ETH carries 15.38 of the deficit and its holder is deleveraged too
    ex = crashed("maintenance")
    assert adl_markets(ex) == ["BTC", "ETH"]
    ex.check_invariants()


def test_liquidate_overrides_the_exchange_setting() -> None:
    assert adl_markets(crashed("loss"), deficit_split="maintenance") == ["BTC", "ETH"]
    assert adl_markets(crashed("maintenance"), deficit_split="loss") == ["BTC"]


def test_two_markets_at_a_loss_share_by_loss() -> None:
    # both fall: BTC 100 -> 40 (loss 60), ETH 10 -> 8 (loss 20); equity 50 - 80 = -30,
    # BTC takes -30 * 60/80 = -22.5 -> value 62.5 -> 62.50; ETH -7.5 -> 87.5 -> 8.75
    ex = crashed()
    ex.set_marks(["BTC", "ETH"], [40.0, 8.0])
    assert bankruptcy_prices(ex) == {"BTC": 62.5, "ETH": 8.75}


def test_positive_equity_and_no_loss_fall_back_to_maintenance() -> None:
    # not bankrupt (equity 50 - 10 = 40 > 0): both rules give the maintenance split
    ex_l, ex_m = crashed(), crashed("maintenance")
    for ex in (ex_l, ex_m):
        ex.set_marks(["BTC", "ETH"], [90.0, 10.0])
    assert bankruptcy_prices(ex_l) == bankruptcy_prices(ex_m)


def test_bad_setting() -> None:
    with pytest.raises(ConfigError, match="deficit_split"):
        Exchange(6, deficit_split="equity")
    ex = crashed()
    with pytest.raises(ConfigError, match="deficit_split"):
        ex.liquidate(executor=MarketClose(MM), deficit_split="all")
