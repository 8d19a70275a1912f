"""The fixed-point scales of an exchange's markets (docs/semantics.md, Units): what the other
modules and a user converting exact values need, read from one public place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MarketScales:
    """Decimals by market id. An exact value ``v`` is ``v / 10**decimals`` in human units:
    money in quote currency, sizes in base units, prices in quote per base unit.

    ``tick_decimals`` is each market's order tick (``add_market``'s ``price_decimals``): trade
    and entry prices are whole ticks. ``mark_decimals`` is the unit of every exact price in and
    out of the engine (marks, trade and entry prices, liquidation, bankruptcy and execution
    prices), at least as fine as the tick.
    """

    money_decimals: int
    qty_decimals: tuple[int, ...]
    tick_decimals: tuple[int, ...]
    mark_decimals: tuple[int, ...]

    def units_per_tick(self, market: int) -> int:
        """Price units in one order tick of ``market`` (an id)."""
        return 10 ** (self.mark_decimals[market] - self.tick_decimals[market])
