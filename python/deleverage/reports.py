"""Result tables: small frozen dataclasses of numpy columns with ``to_pandas()``."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class _Table:
    """Columns of equal length; the mixin behind every report."""

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "exact"}  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(next(iter(self.columns().values())))

    def to_pandas(self) -> Any:
        """The columns as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.columns())


@dataclasses.dataclass(frozen=True, repr=False)
class MarginReport(_Table):
    """Result of :meth:`Exchange.check_margin`, one row per account.

    Money columns are in quote currency (float64), or integer units of
    ``10**-money_decimals`` when ``exact`` is true. ``margin_ratio`` is maintenance / equity
    (+inf when equity <= 0 and something is owed, 0 for an empty account).
    """

    account: np.ndarray  #: account ids (int64)
    equity: np.ndarray  #: balance + unrealized PnL, rounded down
    maintenance: np.ndarray  #: maintenance margin, rounded up
    initial: np.ndarray  #: initial margin, rounded up
    margin_ratio: np.ndarray  #: maintenance / equity (float64)
    liquidatable: np.ndarray  #: equity < maintenance (bool)
    bankrupt: np.ndarray  #: equity < 0 (bool)
    exact: bool = False

    def __repr__(self) -> str:
        return (f"MarginReport({len(self)} accounts, {int(self.liquidatable.sum())} liquidatable, "
                f"{int(self.bankrupt.sum())} bankrupt, exact={self.exact})")


@dataclasses.dataclass(frozen=True, repr=False)
class PositionReport(_Table):
    """Result of :meth:`Exchange.positions`, one row per open position.

    Rows are ordered by account creation order, then market id. In float mode sizes are in
    base units, money in quote currency and prices in quote per base unit, with NaN where a
    price does not exist. With ``exact`` true, sizes are lots, money is integer units,
    liquidation and bankruptcy prices are ticks with 0 meaning "none", and ``entry_price``
    is the (fractional) average entry in ticks.
    """

    account: np.ndarray  #: account ids (int64)
    market: np.ndarray  #: market ids (int32)
    size: np.ndarray  #: signed size, long > 0
    entry_notional: np.ndarray  #: what was paid for the position, signed like size
    entry_price: np.ndarray  #: entry_notional / size (float64)
    unrealized_pnl: np.ndarray  #: size * mark - entry_notional, rounded down
    liquidation_price: np.ndarray  #: mark at which the account reaches maintenance
    bankruptcy_price: np.ndarray  #: mark at which this position's share of equity is gone
    exact: bool = False

    def __repr__(self) -> str:
        return f"PositionReport({len(self)} positions, exact={self.exact})"
