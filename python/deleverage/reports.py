"""Result tables: small frozen dataclasses of numpy columns with ``to_pandas()``."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np


class Table:
    """Columns of equal length: the base of every result table of the package (``len``,
    ``columns()``, ``to_pandas()``); subclasses are frozen dataclasses of numpy columns."""

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "exact"}  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(next(iter(self.columns().values())))

    def to_pandas(self) -> Any:
        """The columns as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.columns())


@dataclasses.dataclass(frozen=True, repr=False)
class MarginReport(Table):
    """Result of :meth:`Exchange.check_margin`, one row per account.

    Money columns are in quote currency (float64), or integer units of
    ``10**-money_decimals`` when ``exact`` is true. ``margin_ratio`` is maintenance / equity
    (+inf when equity <= 0 and something is owed, 0 for an empty account), computed from the
    exact values the first time it is read.
    """

    account: np.ndarray  #: account ids (int64)
    equity: np.ndarray  #: balance + unrealized PnL, rounded down
    maintenance: np.ndarray  #: maintenance margin, rounded up
    initial: np.ndarray  #: initial margin, rounded up
    liquidatable: np.ndarray  #: equity < maintenance (bool)
    bankrupt: np.ndarray  #: equity < 0 (bool)
    exact: bool = False
    # the exact int64 columns the ratio is computed from (the same arrays when exact)
    _equity_units: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)
    _maintenance_units: Optional[np.ndarray] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def margin_ratio(self) -> np.ndarray:
        """maintenance / equity (float64)."""
        cached = self.__dict__.get("_ratio")
        if cached is None:
            from . import _core

            assert self._equity_units is not None and self._maintenance_units is not None
            cached = _core.margin_ratio(self._equity_units, self._maintenance_units)
            object.__setattr__(self, "_ratio", cached)
        return cached

    def columns(self) -> dict[str, np.ndarray]:
        return {"account": self.account, "equity": self.equity, "maintenance": self.maintenance, "initial": self.initial,
                "margin_ratio": self.margin_ratio, "liquidatable": self.liquidatable, "bankrupt": self.bankrupt}

    def __repr__(self) -> str:
        return (f"MarginReport({len(self)} accounts, {int(self.liquidatable.sum())} liquidatable, "
                f"{int(self.bankrupt.sum())} bankrupt, exact={self.exact})")


@dataclasses.dataclass(frozen=True, repr=False)
class PositionReport(Table):
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
