"""How a liquidated position is closed.

The other side of every fill is an account in the exchange, so conservation and zero net
size keep holding. Pass an executor to :meth:`Exchange.liquidate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

from .errors import ConfigError

__all__ = ["MarketClose", "Backstop", "Impact", "Executor"]


def _check_fraction(value: float, field: str, upper: float = 1.0) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= upper:
        raise ConfigError(f"{field} must be a number between 0 and {upper:g} (got {value!r})")


@dataclass(frozen=True)
class Impact:
    """Extra slippage that grows with the closed notional: ``bps_per_depth`` basis points
    for every ``depth`` of notional (quote currency) closed in one fill."""

    depth: float
    bps_per_depth: float

    def __post_init__(self) -> None:
        if not isinstance(self.depth, (int, float)) or not math.isfinite(self.depth) or self.depth <= 0:
            raise ConfigError(f"Impact.depth must be a positive amount of quote currency (got {self.depth!r})")
        _check_fraction(self.bps_per_depth, "Impact.bps_per_depth", upper=10_000.0)


@dataclass(frozen=True)
class MarketClose:
    """A liquidity account (``counterparty``) takes the position at the mark moved against
    the liquidated trader by ``slippage_bps`` basis points (plus ``impact``). The fill price
    is rounded against the trader, in whole ticks.

    ``partial=True`` first tries to close only the fraction of every position that restores
    maintenance margin (Bybit and Drift do this); an account that cannot be saved that way,
    or is bankrupt, is closed in full.
    """

    counterparty: int
    slippage_bps: float = 0.0
    impact: Optional[Impact] = None
    partial: bool = False

    def __post_init__(self) -> None:
        _check_fraction(self.slippage_bps, "slippage_bps", upper=10_000.0)


@dataclass(frozen=True)
class Backstop:
    """A backstop vault (``account``) takes every position over at its bankruptcy price
    (Hyperliquid's liquidator vault): no deficit, no surplus."""

    account: int


Executor = Union[MarketClose, Backstop]
