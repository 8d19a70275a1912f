"""Built-in sample data: a generated book with a realistic shape, for demos and benchmarks.

Sizes are heavy-tailed (log-normal), leverage is log-normal around ``leverage`` x, longs and
shorts are drawn with a configurable imbalance, and each account holds positions in several
distinct markets. The imbalance per market is taken by a market-maker account (id 0), so the
book nets to zero as every real book does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..exchange import Exchange

MARKET_MAKER = 0


@dataclass(frozen=True)
class SampleBook:
    """Columns of a generated book, in human units."""

    accounts: np.ndarray  # int64 ids, 1..n_accounts
    markets: np.ndarray  # int32 market ids
    sizes: np.ndarray  # float64 base units, signed
    entry_prices: np.ndarray  # float64
    collateral: np.ndarray  # float64 per account id 1..n_accounts (index i -> account i+1)
    marks: np.ndarray  # float64 per market


def generate_book(
    positions: int = 100_000,
    accounts: int = 10_000,
    markets: int = 10,
    *,
    seed: int = 0,
    leverage: float = 5.0,
    long_share: float = 0.5,
) -> SampleBook:
    """Generate a book of about ``positions`` positions over ``accounts`` accounts.

    Every account holds between 1 and ``markets`` positions in distinct markets (on average
    positions / accounts). Prices have 2 decimals, sizes 3 decimals.
    """
    if positions < 1 or accounts < 1 or markets < 1:
        raise ValueError("positions, accounts and markets must be at least 1")
    rng = np.random.default_rng(seed)
    per_account = min(markets, max(1, round(positions / accounts)))
    counts = np.full(accounts, per_account, dtype=np.int64)
    # spread the remainder so the total is exactly `positions` when possible
    extra = min(positions - per_account * accounts, accounts * (markets - per_account))
    if extra > 0:
        counts[rng.choice(accounts, size=extra, replace=False)] += 1
    elif extra < 0:
        drop = min(-extra, accounts * (per_account - 1))
        counts[rng.choice(accounts, size=drop, replace=False)] -= 1
    account_index = np.repeat(np.arange(accounts, dtype=np.int64), counts)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    slot = np.arange(len(account_index), dtype=np.int64) - np.repeat(first, counts)
    base_market = rng.integers(0, markets, size=accounts)
    market = ((np.repeat(base_market, counts) + slot) % markets).astype(np.int32)

    marks = np.round(10.0 ** rng.uniform(0, 4.5, size=markets), 2)
    marks = np.maximum(marks, 1.0)
    notional = np.exp(rng.normal(np.log(2_000.0), 1.2, size=len(market)))  # quote currency
    side = np.where(rng.random(len(market)) < long_share, 1.0, -1.0)
    sizes = np.maximum(np.round(notional / marks[market], 3), 0.001) * side
    entry = np.maximum(np.round(marks[market] * np.exp(rng.normal(0.0, 0.05, size=len(market))), 2), 0.01)

    account_notional = np.bincount(account_index, weights=np.abs(sizes) * marks[market], minlength=accounts)
    lev = np.exp(rng.normal(np.log(leverage), 0.6, size=accounts))
    collateral = np.round(account_notional / lev + 10.0, 2)
    return SampleBook(account_index + 1, market, sizes, entry, collateral, marks)


def sample_exchange(
    positions: int = 100_000,
    accounts: int = 10_000,
    markets: int = 10,
    *,
    seed: int = 0,
    leverage: float = 5.0,
    maintenance_margin: float = 0.005,
    initial_margin: float = 0.01,
    threads: int = 0,
) -> Exchange:
    """An Exchange loaded with :func:`generate_book`, marks set, the market maker (id 0)
    holding the net imbalance of every market with ample collateral."""
    book = generate_book(positions, accounts, markets, seed=seed, leverage=leverage)
    ex = Exchange(threads=threads)
    for m in range(markets):
        ex.add_market(f"M{m:03d}", qty_decimals=3, price_decimals=2, maintenance_margin=maintenance_margin,
                      initial_margin=initial_margin, liquidation_fee=0.005, mark_price=float(book.marks[m]))
    ids = np.arange(1, accounts + 1, dtype=np.int64)
    ex.deposit(MARKET_MAKER, 1e12)
    ex.deposit(ids, book.collateral)
    ex.load_positions(book.accounts, book.markets, book.sizes, book.entry_prices, counterparty=MARKET_MAKER)
    return ex
