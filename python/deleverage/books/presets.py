"""Generated books with a named shape: :class:`BookSpec` and its presets (:data:`BOOK_PRESETS`,
:func:`book_preset`), built with :func:`deleverage.books.generate_book`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .sample import MARKET_MAKER, generate_book

if TYPE_CHECKING:
    from ..exchange import Exchange

__all__ = ["BookSpec", "BOOK_PRESETS", "book_preset"]


@dataclasses.dataclass(frozen=True)
class BookSpec:
    """A generated book (see :func:`generate_book`): heavy-tailed (log-normal) position
    notionals, log-normal account leverage around ``leverage``, a share ``long_share`` of
    long positions (the imbalance is held by a well-funded market maker, account 0, which
    is also the liquidation counterparty), each account holding several distinct markets.
    ``fund`` is the shared insurance fund in quote currency. The same spec and seed give the
    same book on any machine, so a Dask worker can rebuild it instead of receiving it."""

    positions: int = 100_000
    accounts: int = 10_000
    markets: int = 10
    leverage: float = 5.0
    long_share: float = 0.5
    maintenance_margin: float = 0.005
    initial_margin: float = 0.01
    fund: float = 50_000.0
    seed: int = 0

    def build(self, *, threads: int = 0) -> "Exchange":
        """An Exchange holding this book, marks set and the fund deposited."""
        from ..exchange import Exchange

        if not 0.0 <= self.long_share <= 1.0:
            raise ConfigError(f"long_share must be between 0 and 1 (got {self.long_share})")
        if not self.leverage > 0:
            raise ConfigError(f"leverage must be positive (got {self.leverage})")
        book = generate_book(self.positions, self.accounts, self.markets, seed=self.seed, leverage=self.leverage,
                             long_share=self.long_share)
        ex = Exchange(threads=threads)
        for m in range(self.markets):
            ex.add_market(f"M{m:03d}", qty_decimals=3, price_decimals=2, maintenance_margin=self.maintenance_margin,
                          initial_margin=self.initial_margin, liquidation_fee=0.005, mark_price=float(book.marks[m]))
        ex.deposit(MARKET_MAKER, 1e12)
        ex.deposit(np.arange(1, self.accounts + 1, dtype=np.int64), book.collateral)
        ex.load_positions(book.accounts, book.markets, book.sizes, book.entry_prices, counterparty=MARKET_MAKER)
        if self.fund > 0:
            ex.insurance.deposit(self.fund)
        return ex


#: Named book shapes: ``balanced`` (5x, half long), ``long_heavy`` (70% long, as after a
#: rally), ``high_leverage`` (20x typical leverage), ``retail`` (many small accounts, 10x).
BOOK_PRESETS: dict[str, dict[str, Any]] = {
    "balanced": {"leverage": 5.0, "long_share": 0.5},
    "long_heavy": {"leverage": 8.0, "long_share": 0.7},
    "high_leverage": {"leverage": 20.0, "long_share": 0.55},
    "retail": {"leverage": 10.0, "long_share": 0.6},
}


def book_preset(name: str, **overrides: Any) -> BookSpec:
    """A :class:`BookSpec` from a named preset (:data:`BOOK_PRESETS`), with overrides."""
    if name not in BOOK_PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(BOOK_PRESETS)} (got {name!r})")
    return BookSpec(**{**BOOK_PRESETS[name], **overrides})
