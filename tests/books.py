"""Small books shared by the API and bad-input tests; every number in their docstrings is
computed by hand from docs/semantics.md."""

from __future__ import annotations

import deleverage


def two_market_exchange() -> deleverage.Exchange:
    """BTC: lots of 0.001, ticks of 0.1, 5% / 10%.  ETH: lots of 0.01, ticks of 0.01, 2% / 4%.
    money_decimals 6: D = 6, S = 1, k = 2 in both markets (value = lots * ticks * 100 micro-$).

    1: $50, long 2 BTC at 100 (2000 lots, E = 2000 * 1000 * 100 = 200,000,000)
    3: $50, long 1.5 ETH at 20 (150 lots, E = 150 * 2000 * 100 = 30,000,000)
    2: $1000, short both.  4: $10, flat.  Marks: BTC 90 (900 ticks), ETH 21 (2100 ticks).
    At the marks: 1 has equity 50 - 20 = 30, maintenance 9, initial 18; 3 has equity 51.5,
    maintenance 0.63, initial 1.26.
    """
    ex = deleverage.Exchange(6, threads=1)
    # prices on the order tick (the hand computations above are in ticks); finer marks:
    # tests/test_mark_decimals.py
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=1, maintenance_margin=0.05, initial_margin=0.10)
    ex.add_market("ETH", qty_decimals=2, price_decimals=2, mark_decimals=2, maintenance_margin=0.02, initial_margin=0.04)
    ex.deposit([1, 2, 3], [50.0, 1000.0, 50.0])
    ex.trade(1, 2, "BTC", 2.0, 100.0)
    ex.trade(3, 2, "ETH", 1.5, 20.0)
    ex.set_marks(["BTC", "ETH"], [90.0, 21.0])
    ex.deposit(4, 10.0)
    return ex
