"""The insurance fund, seen from Python: pools, deposits, the ledger and the history.

Pool 0 is shared by every market; a market given its own pool pays its deficits from it.
Every movement is in the ledger; the closing balance of every pool after every waterfall
step is in the history.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from . import _convert as cv
from .errors import InvalidInput
from .reports import Table

if TYPE_CHECKING:
    from .exchange import Exchange

LEDGER_REASONS = ("deposit", "liquidation_fee", "deficit_payment")

SHARED_POOL = 0


@dataclasses.dataclass(frozen=True, repr=False)
class LedgerTable(Table):
    """Every fund movement: ``amount`` > 0 into the fund. Money in quote currency, or integer
    units when ``exact``. ``market`` is -1 and ``account`` 0 when not tied to one."""

    step: np.ndarray
    pool: np.ndarray
    market: np.ndarray
    account: np.ndarray
    amount: np.ndarray
    reason: np.ndarray  #: one of LEDGER_REASONS (object array of str)
    exact: bool = False

    def __repr__(self) -> str:
        return f"LedgerTable({len(self)} movements)"


@dataclasses.dataclass(frozen=True, repr=False)
class HistoryTable(Table):
    """Closing balance of every pool after every waterfall step."""

    step: np.ndarray
    pool: np.ndarray
    balance: np.ndarray
    exact: bool = False

    def __repr__(self) -> str:
        return f"HistoryTable({len(self)} rows)"


class InsuranceFund:
    """The fund of one :class:`~deleverage.Exchange` (``exchange.insurance``)."""

    def __init__(self, exchange: "Exchange") -> None:
        self._ex = exchange

    def _pool(self, pool: Optional[Union[int, str]]) -> int:
        if pool is None:
            return SHARED_POOL
        if isinstance(pool, str):
            return int(self._ex.core.market_pool(self._ex.market_id(pool)))
        return int(cv.integers(pool, "pool")[0])

    @property
    def pool_count(self) -> int:
        """Number of pools (the shared pool included)."""
        return int(self._ex.core.insurance_pool_count())

    def use_own_pool(self, market: Union[int, str]) -> int:
        """Give a market its own pool (idempotent); returns the pool id."""
        return int(self._ex.core.give_market_own_pool(self._ex.market_id(market)))

    def pool_of(self, market: Union[int, str]) -> int:
        """The pool that pays a market's deficits."""
        return int(self._ex.core.market_pool(self._ex.market_id(market)))

    def deposit(self, amount: float, pool: Optional[Union[int, str]] = None, *, exact: bool = False) -> None:
        """Add money to a pool (default: the shared pool; a market symbol means its pool)."""
        units = int(cv.to_fixed(amount, self._ex.money_decimals, "amount", exact=exact, on_grid=False)[0])
        if units < 0:
            raise InvalidInput(f"amount: an insurance deposit must not be negative (got {cv.plain(amount)})")
        self._ex.core.insurance_deposit(units, self._pool(pool))

    def balance(self, pool: Optional[Union[int, str]] = None, *, exact: bool = False) -> Union[float, int]:
        """Balance of a pool (default: the shared pool)."""
        units = int(self._ex.core.insurance_balance(self._pool(pool)))
        return units if exact else units / 10**self._ex.money_decimals

    def set_drawdown_rule(self, max_drawdown: float, window: int) -> None:
        """Stop paying once a pool would fall more than ``max_drawdown`` (e.g. 0.3) below its
        peak closing balance over the last ``window`` steps; the last resort takes over
        (Bybit and OKX trigger ADL this way). ``max_drawdown=1`` disables the rule."""
        window = cv.small_int(window, "window", 1, 2**31 - 1)
        self._ex.core.set_drawdown_rule(cv.rate_to_fixed(max_drawdown, "max_drawdown"), window)

    def ledger(self, *, exact: bool = False) -> LedgerTable:
        """Every movement of every pool, in order."""
        raw = self._ex.core.insurance_ledger()
        amount = raw["amount"] if exact else cv.from_fixed(raw["amount"], self._ex.money_decimals)
        reason = np.array([LEDGER_REASONS[r] for r in raw["reason"]], dtype=object)
        return LedgerTable(raw["step"], raw["pool"], raw["market"], raw["account"], amount, reason, exact)

    def history(self, *, exact: bool = False) -> HistoryTable:
        """Closing balance of every pool after every waterfall step."""
        raw = self._ex.core.insurance_history()
        bal = raw["balance"] if exact else cv.from_fixed(raw["balance"], self._ex.money_decimals)
        return HistoryTable(raw["step"], raw["pool"], bal, exact)

    def __repr__(self) -> str:
        return f"InsuranceFund({self.pool_count} pools, shared balance {self.balance():,.2f})"


