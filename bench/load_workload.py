"""Shared workload of the bulk-load benchmarks (bench/test_load.py, bench/report_load.py, asv
bench_load.py): a generated book's rows in the order a dump may arrive in, loaded with
``Exchange.load_positions`` into a fresh exchange, next to numpy's stable argsort of the
account column (the least work that puts rows in account order).

Sizes: ``DELEVERAGE_BENCH_POSITIONS`` (rows, default 10_000_000), ``DELEVERAGE_BENCH_ACCOUNTS``
(rows / 10), ``DELEVERAGE_BENCH_MARKETS`` (100), ``DELEVERAGE_BENCH_SEED`` (7).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from margin_workload import _env_int, best_of  # noqa: F401  (one timer for every report)

from deleverage import Exchange

try:
    from deleverage.books import MARKET_MAKER, generate_book
except ImportError:  # asv also times the parent commit, which may predate the books package
    from deleverage.sample import MARKET_MAKER, generate_book  # type: ignore[no-redef]

ORDERS = ("random", "account", "market")
TIERS = 5  # tiers per market of the tiered book (report_tiers.py --tiers)
TARGET_OVER_ARGSORT = 1.5  # load_positions of random-order rows / numpy stable argsort of their accounts


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    positions: int
    accounts: int
    markets: int = 100
    seed: int = 7

    @classmethod
    def from_env(cls, positions: int = 10_000_000) -> "LoadSpec":
        n = _env_int("DELEVERAGE_BENCH_POSITIONS", positions)
        return cls(positions=n, accounts=_env_int("DELEVERAGE_BENCH_ACCOUNTS", max(1, n // 10)),
                   markets=_env_int("DELEVERAGE_BENCH_MARKETS", 100), seed=_env_int("DELEVERAGE_BENCH_SEED", 7))

    def label(self) -> str:
        return f"{self.positions:_} rows / {self.accounts:_} accounts / {self.markets} markets"


@dataclasses.dataclass
class Rows:
    """The book's rows (human units, as a dump gives them) in one order."""

    order: str
    accounts: np.ndarray
    markets: np.ndarray
    sizes: np.ndarray
    entry_prices: np.ndarray


class Book:
    """One generated book: its rows in any of ORDERS, and fresh exchanges to load them into."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.book = generate_book(spec.positions, spec.accounts, spec.markets, seed=spec.seed)

    def rows(self, order: str) -> Rows:
        b = self.book
        n = len(b.accounts)
        if order == "account":
            perm = np.arange(n)  # generate_book gives rows in account order
        elif order == "random":
            perm = np.random.default_rng(self.spec.seed + 1).permutation(n)
        elif order == "market":
            perm = np.argsort(np.asarray(b.markets), kind="stable")
        else:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        cols = (np.ascontiguousarray(np.asarray(x)[perm]) for x in (b.accounts, b.markets, b.sizes, b.entry_prices))
        return Rows(order, *cols)

    def tier_schedule(self, m: int, tiers: int = TIERS) -> list:
        """``tiers`` tiers, maintenance 0.5% doubling every quarter of the schedule (0.5% to 8%;
        initial twice that), caps at the quantiles of market m's position notionals (quote) so
        that every tier holds about as many positions."""
        b = self.book
        sel = np.asarray(b.markets) == m
        notional = np.abs(np.asarray(b.sizes)[sel]) * float(b.marks[m])
        k = tiers - 1
        qs = np.quantile(notional, [(j + 1) / tiers for j in range(k)]) if notional.size else np.arange(1.0, tiers)
        caps = np.maximum.accumulate(np.maximum(np.round(qs, 2), 0.01) + 0.01 * np.arange(k))  # strictly increasing
        rates = [0.005 * 2.0 ** (4 * j / k) if k else 0.005 for j in range(tiers)]
        return [(float(caps[j]) if j < k else None, rates[j], 2 * rates[j]) for j in range(tiers)]

    def fresh_exchange(self, tiers: int = 0) -> Exchange:
        """Markets and deposits, no positions (not timed). ``tiers`` > 0: every market on a
        risk-limit schedule of that many tiers (tier_schedule); 0: flat 0.5% markets."""
        b, s = self.book, self.spec
        ex = Exchange()
        for m in range(s.markets):
            schedule = self.tier_schedule(m, tiers) if tiers else None
            ex.add_market(f"M{m:03d}", qty_decimals=3, price_decimals=2, maintenance_margin=0.005, initial_margin=0.01,
                          liquidation_fee=0.005, mark_price=float(b.marks[m]), tiers=schedule)
        ex.deposit(MARKET_MAKER, 1e12)
        ex.deposit(np.arange(1, s.accounts + 1, dtype=np.int64), b.collateral)
        return ex


def flat_and_tiered(book: Book, tiers: int = TIERS) -> dict[str, Exchange]:
    """The book's rows (account order) loaded into a flat and into a tiered exchange."""
    rows = book.rows("account")
    out = {}
    for name, count in (("flat", 0), ("tiered", tiers)):
        ex = book.fresh_exchange(count)
        load(ex, rows)
        out[name] = ex
    return out


def report_spec(doc: str, repeat: int, argv: list[str] | None, tiers: bool = False) -> tuple[LoadSpec, Any]:
    """The report scripts' command line: ``--positions`` (accounts a tenth), ``--repeat`` and,
    with ``tiers``, ``--tiers``; returns the spec and the parsed arguments."""
    import argparse

    env = LoadSpec.from_env()
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=env.positions)
    ap.add_argument("--repeat", type=int, default=repeat, help="timed rounds (best is reported)")
    if tiers:
        ap.add_argument("--tiers", type=int, default=TIERS, help="tiers per market of the tiered book")
    args = ap.parse_args(argv)
    return LoadSpec(positions=args.positions, accounts=max(1, args.positions // 10), markets=env.markets, seed=env.seed), args


def load(ex: Exchange, rows: Rows) -> None:
    """The timed call."""
    ex.load_positions(rows.accounts, rows.markets, rows.sizes, rows.entry_prices, counterparty=MARKET_MAKER)


def numpy_argsort(rows: Rows) -> np.ndarray:
    """The baseline: numpy's stable argsort of the account column."""
    return np.argsort(rows.accounts, kind="stable")


def best_fresh(book: Book, rows: Rows, repeat: int) -> float:
    """Best of ``repeat`` loads of ``rows``, each into a fresh exchange (built untimed)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        ex = book.fresh_exchange()
        t = time.perf_counter()
        load(ex, rows)
        best = min(best, time.perf_counter() - t)
        del ex
    return best
