"""Shared workload for the margin-check benchmarks (pytest-benchmark, asv and the report script).

One generated book is loaded into an :class:`~deleverage.Exchange`; the engine's own exact
columns are then read back so that the numpy baseline computes the same margin check on the
same numbers:

* ``engine_full``: ``ex.check_margin(exact=True)``, every account revalued (all cores).
* ``numpy_full``: the same computation in vectorized numpy (float64, one core): per position
  value, unrealized PnL, maintenance and initial requirement at the mark, ``np.bincount`` per
  account, equity and flags.
* ``stream``: ``deleverage._core.stream_sum`` over ``3 * n_positions`` int64 (24 bytes per
  position, the size, entry notional and account columns), read once on all threads: the
  memory-bandwidth floor for any full check.
* ``engine_incremental``: one market's mark moves, ``ex.check_margin(markets=[m])``.

Sizes come from environment variables so that CI can run everything tiny:

``DELEVERAGE_BENCH_POSITIONS``, ``DELEVERAGE_BENCH_ACCOUNTS``, ``DELEVERAGE_BENCH_MARKETS``,
``DELEVERAGE_BENCH_SEED``, ``DELEVERAGE_BENCH_THREADS`` (0 = every core).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional

import numpy as np

from deleverage import _core

try:
    from deleverage.books import sample_exchange
except ImportError:  # asv also times the parent commit, which may predate the books package
    from deleverage.sample import sample_exchange  # type: ignore[no-redef]
from deleverage.exchange import Exchange

RATE_SCALE = 10**8

#: Targets of issue "engine core" item 7.
TARGET_NUMPY_OVER_ENGINE = 10.0  # engine at least 10x faster than numpy
TARGET_ENGINE_OVER_STREAM = 2.0  # engine within 2x of a 24 bytes/position streaming read
TARGET_BYTES_PER_POSITION = 40.0  # engine memory per position
TARGET_DEFAULT_OVER_EXACT = 1.15  # the default (float) report within 1.15x of check_margin(exact=True)
TARGET_NUMBA_ONE_THREAD_OVER_DEFAULT = 2.0  # a one-thread Numba loop at least 2x slower than the default check
TARGET_NUMBA_PRANGE_OVER_DEFAULT = 1.0  # and the prange one slower


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    return int(raw) if raw else default


@dataclasses.dataclass(frozen=True)
class Sizes:
    positions: int
    accounts: int
    markets: int
    seed: int = 7
    threads: int = 0

    @classmethod
    def from_env(cls, positions: int = 10_000_000, accounts: int = 1_000_000, markets: int = 100) -> "Sizes":
        """Sizes from ``DELEVERAGE_BENCH_*``, with the given defaults. If only the positions
        are set, the accounts default to a tenth of them (10 positions per account)."""
        n_pos = _env_int("DELEVERAGE_BENCH_POSITIONS", positions)
        default_acc = accounts if "DELEVERAGE_BENCH_POSITIONS" not in os.environ else max(1, n_pos // 10)
        return cls(
            positions=n_pos,
            accounts=_env_int("DELEVERAGE_BENCH_ACCOUNTS", default_acc),
            markets=_env_int("DELEVERAGE_BENCH_MARKETS", markets),
            seed=_env_int("DELEVERAGE_BENCH_SEED", 7),
            threads=_env_int("DELEVERAGE_BENCH_THREADS", 0),
        )

    def label(self) -> str:
        return f"{self.positions:_} positions / {self.accounts:_} accounts / {self.markets} markets"


@dataclasses.dataclass
class Columns:
    """The engine's book as numpy columns (exact integers), positions in account order."""

    account: np.ndarray  # intp: dense account index (creation order), non-decreasing
    market: np.ndarray  # intp
    size: np.ndarray  # int64 lots, signed
    entry: np.ndarray  # int64 money units, signed
    balance: np.ndarray  # int64 money units per account (creation order)
    mark: np.ndarray  # int64 ticks per market
    money_per_lot_tick: np.ndarray  # float64 per market: 10**(money - qty - mark decimals: the price unit)
    mmr: np.ndarray  # float64 per market (fraction)
    imr: np.ndarray  # float64 per market (fraction)

    @property
    def n_accounts(self) -> int:
        return len(self.balance)


def engine_columns(ex: Exchange) -> Columns:
    """Read the exact engine state back into numpy columns (not timed; a few seconds at 10M)."""
    ids = np.asarray(ex.account_ids(), dtype=np.int64)
    pos = ex.positions(exact=True)
    order = np.argsort(ids, kind="stable")
    account = order[np.searchsorted(ids[order], pos.account)].astype(np.intp)
    if len(account) > 1 and np.any(np.diff(account) < 0):
        raise AssertionError("positions() is expected in account creation order")
    balance = np.fromiter((ex.balance(int(a), exact=True) for a in ids), dtype=np.int64, count=len(ids))
    n_markets = len(ex.markets)
    md = ex.money_decimals
    factor = np.empty(n_markets)
    mmr = np.empty(n_markets)
    imr = np.empty(n_markets)
    for m in range(n_markets):
        info = ex.market_info(m)
        tiers = info["tiers"]
        if len(tiers) != 1:
            raise NotImplementedError("the numpy baseline handles flat-rate markets only (one tier)")
        factor[m] = 10.0 ** (md - info["qty_decimals"] - info.get("mark_decimals", info["price_decimals"]))
        mmr[m] = tiers[0][1] / RATE_SCALE
        imr[m] = tiers[0][2] / RATE_SCALE
    cols = Columns(account=account, market=np.asarray(pos.market, dtype=np.intp),
                   size=np.ascontiguousarray(pos.size, dtype=np.int64),
                   entry=np.ascontiguousarray(pos.entry_notional, dtype=np.int64),
                   balance=balance, mark=np.asarray(ex.marks(exact=True), dtype=np.int64).copy(),
                   money_per_lot_tick=factor, mmr=mmr, imr=imr)
    del pos
    return cols


def numpy_margin_check(c: Columns) -> dict[str, np.ndarray]:
    """The full margin check written the obvious way in vectorized numpy (float64).

    Money in money units; maintenance = sum |value| * mmr, initial likewise, equity = balance +
    sum (value - entry). Same formulas as docs/semantics.md, without the exact rounding.
    """
    n = c.n_accounts
    px = c.mark * c.money_per_lot_tick  # money units per lot at the mark, per market
    value = c.size * px[c.market]
    notional = np.abs(value)
    upnl = value - c.entry
    mm = notional * c.mmr[c.market]
    im = notional * c.imr[c.market]
    u_acc = np.bincount(c.account, weights=upnl, minlength=n)
    mm_acc = np.bincount(c.account, weights=mm, minlength=n)
    im_acc = np.bincount(c.account, weights=im, minlength=n)
    equity = c.balance + u_acc
    return {"equity": equity, "maintenance": mm_acc, "initial": im_acc,
            "liquidatable": equity < mm_acc, "bankrupt": equity < 0}


def compare_flags(engine_report: Any, np_result: dict[str, np.ndarray]) -> dict[str, float]:
    """How far the float numpy baseline is from the exact engine (report in creation order)."""
    n = len(engine_report.liquidatable)
    liq_mismatch = int(np.count_nonzero(engine_report.liquidatable != np_result["liquidatable"]))
    bk_mismatch = int(np.count_nonzero(engine_report.bankrupt != np_result["bankrupt"]))
    eq_err = np.abs(np.asarray(engine_report.equity, dtype=np.float64) - np_result["equity"])
    mm_err = np.abs(np.asarray(engine_report.maintenance, dtype=np.float64) - np_result["maintenance"])
    return {
        "accounts": n,
        "liquidatable_engine": int(np.count_nonzero(engine_report.liquidatable)),
        "liquidatable_numpy": int(np.count_nonzero(np_result["liquidatable"])),
        "flag_mismatches": liq_mismatch + bk_mismatch,
        "flag_agreement": 1.0 - (liq_mismatch + bk_mismatch) / max(1, 2 * n),
        "max_equity_diff_units": float(eq_err.max()) if n else 0.0,
        "max_maintenance_diff_units": float(mm_err.max()) if n else 0.0,
    }


def assert_numpy_agrees(engine_report: Any, np_result: dict[str, np.ndarray], min_agreement: float = 0.9999) -> dict[str, float]:
    """The numpy baseline must compute the same thing: flags equal on (nearly) every account
    (float rounding may flip an account sitting exactly on its maintenance), and money within
    a few units of the exact engine."""
    cmp = compare_flags(engine_report, np_result)
    assert cmp["flag_agreement"] >= min_agreement, cmp
    # equity = balance + floor(U): float error is tiny relative to the magnitudes involved
    scale = max(1.0, float(np.max(np.abs(np_result["equity"]))) if len(np_result["equity"]) else 1.0)
    assert cmp["max_equity_diff_units"] <= 2.0 + 1e-12 * scale, cmp
    assert cmp["max_maintenance_diff_units"] <= 2.0 + 1e-12 * scale, cmp
    return cmp


def stream_array(c: Columns) -> np.ndarray:
    """3 * n_positions int64: the size, entry notional and account columns back to back."""
    return np.concatenate([c.size, c.entry, c.account.astype(np.int64)])


def stream_sum(arr: np.ndarray, threads: int = 0) -> int:
    return int(_core.stream_sum(arr, threads))


def expected_stream_sum(arr: np.ndarray) -> int:
    return int(arr.view(np.uint64).sum(dtype=np.uint64))


def busiest_market(c: Columns) -> int:
    """The market with the median position count (the typical market, not an outlier)."""
    counts = np.bincount(c.market, minlength=len(c.mark))
    return int(np.argsort(counts, kind="stable")[len(counts) // 2])


class IncrementalMove:
    """Callable: move the marks of market ``m`` (or of every market in ``m`` when it is a list)
    by +-1% alternately, then check just those markets."""

    def __init__(self, ex: Exchange, m: Any):
        self.ex = ex
        self.markets = [int(x) for x in (m if isinstance(m, (list, tuple)) else [m])]
        self.m = self.markets[0]
        marks = ex.marks(exact=True)
        self.p0 = [int(marks[x]) for x in self.markets]
        self.p1 = [max(1, p + max(1, p // 100)) for p in self.p0]
        self.flip = False

    def __call__(self) -> Any:
        self.flip = not self.flip
        self.ex.set_marks(self.markets, self.p1 if self.flip else self.p0, exact=True)
        return self.ex.check_margin(markets=self.markets, exact=True)

    def restore(self) -> None:
        self.ex.set_marks(self.markets, self.p0, exact=True)
        self.ex.check_margin(markets=self.markets, exact=True)
        self.flip = False


def assert_incremental_matches_full(ex: Exchange, inc_report: Any) -> None:
    """The incremental report equals a fresh full check on the accounts it reports."""
    full = ex.check_margin(exact=True)
    order = np.argsort(full.account, kind="stable")
    idx = order[np.searchsorted(full.account[order], inc_report.account)]
    for name in ("equity", "maintenance", "initial", "liquidatable", "bankrupt"):
        a, b = getattr(full, name)[idx], getattr(inc_report, name)
        assert np.array_equal(a, b), f"incremental {name} differs from the full check"


@dataclasses.dataclass
class Workload:
    sizes: Sizes
    ex: Exchange
    cols: Columns
    stream: np.ndarray
    build_seconds: float
    incremental_market: int
    incremental_positions: int

    @property
    def bytes_per_position(self) -> float:
        return self.ex.memory_bytes / max(1, self.ex.position_count)


def build_workload(sizes: Sizes, log: Optional[Callable[[str], None]] = None) -> Workload:
    t0 = time.perf_counter()
    ex = sample_exchange(sizes.positions, sizes.accounts, sizes.markets, seed=sizes.seed, threads=sizes.threads)
    build = time.perf_counter() - t0
    if log:
        log(f"built {ex!r} in {build:.1f} s")
    ex.check_margin()  # establish valued marks / caches
    cols = engine_columns(ex)
    arr = stream_array(cols)
    m = busiest_market(cols)
    n_m = int(np.count_nonzero(cols.market == m))
    if log:
        log(f"columns read back in {time.perf_counter() - t0 - build:.1f} s")
    return Workload(sizes, ex, cols, arr, build, m, n_m)


def best_of(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Best wall time of ``repeat`` calls (after ``warmup`` untimed calls), in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
