"""Workload of the online-liquidation benchmarks (issue 10): one account liquidated with
``Exchange.liquidate(..., accounts=[a])`` against a whole-book step on the same book.

The book mirrors bench/latency/online_liquidation.cpp: ``positions`` positions over
``markets`` markets (``positions / accounts`` per account, sides alternating, 100..199 lots,
entry prices spread so the ranking scores differ), the imbalance with the executor's account
(``MM``, huge collateral), an empty insurance fund, and flat *victim* accounts. Before each
timed per-account call a victim buys 0.7 unit of market 0 at 20% over the mark from ``MM``
(untimed): it is then bankrupt, and with the executor's 50 bp slippage and the empty fund
all its lots go to ADL (4 to 8 winners of 100..199 lots). The mark does not move, so the
book has nothing else to liquidate.

Sizes: ``DELEVERAGE_BENCH_ONLINE_POSITIONS`` (default ``DELEVERAGE_BENCH_POSITIONS`` or
1,000,000) in one market; ``DELEVERAGE_BENCH_ONLINE_BIG=1`` adds the 10M positions / 1M
accounts / 100 markets book.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np

import deleverage
from deleverage import Exchange, MarketClose

MM = 1
PRICE = 20_000  # order ticks (2000.0); exact prices are these times units_per_tick(ex)
VICTIM_LOTS = 700  # 0.7 unit: 4 to 8 winners of 100..199 lots
VICTIM0 = 2_000_000_000
TARGET_FRESH_P99_SECONDS_CPP = 20e-6
TARGET_PYTHON_STEP_OVER_ONE = 100.0
TARGET_FIRST_OVER_STEP = 0.6


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


@dataclasses.dataclass(frozen=True)
class OnlineSpec:
    positions: int = 1_000_000
    markets: int = 1
    accounts: int = 1_000_000
    victims: int = 3_000
    threads: int = 0
    victim_lots: int = VICTIM_LOTS

    def label(self) -> str:
        return f"{self.positions:_} positions / {self.accounts:_} accounts / {self.markets} market(s)"

    @classmethod
    def one_market(cls) -> "OnlineSpec":
        n = _env_int("DELEVERAGE_BENCH_ONLINE_POSITIONS", _env_int("DELEVERAGE_BENCH_POSITIONS", 1_000_000))
        return cls(positions=n, markets=1, accounts=n, threads=_env_int("DELEVERAGE_BENCH_THREADS", 0))

    @classmethod
    def big(cls) -> "OnlineSpec":
        return cls(positions=10_000_000, markets=100, accounts=1_000_000, threads=_env_int("DELEVERAGE_BENCH_THREADS", 0),
                   victim_lots=300)  # the winners' lots are spread over 10 markets: <= 10 counterparties


def specs() -> list[OnlineSpec]:
    out = [OnlineSpec.one_market()]
    if os.environ.get("DELEVERAGE_BENCH_ONLINE_BIG", "") not in ("", "0", "false", "no"):
        out.append(OnlineSpec.big())
    return out


def units_per_tick(ex: Exchange) -> int:
    """Price units per order tick: marks are finer than the tick by default (builds before
    mark_decimals, which asv also times, have one unit per tick)."""
    info = ex.market_info(0)
    return 10 ** (int(info.get("mark_decimals", info["price_decimals"])) - int(info["price_decimals"]))


def build(spec: OnlineSpec) -> Exchange:
    ex = Exchange(money_decimals=6, threads=spec.threads)
    for m in range(spec.markets):
        ex.add_market(f"M{m}", qty_decimals=3, price_decimals=1, maintenance_margin=0.05, initial_margin=0.10,
                      mark_price=PRICE / 10)
    per = spec.positions // spec.accounts
    ids = np.arange(1_000, 1_000 + spec.accounts, dtype=np.int64)
    ex.deposit(np.append(np.int64(MM), ids), np.append(np.int64(1 << 61), np.full(spec.accounts, per * 10**9, dtype=np.int64)),
               exact=True)
    a = np.repeat(np.arange(spec.accounts, dtype=np.int64), per)
    k = np.tile(np.arange(per, dtype=np.int64), spec.accounts)
    stride = spec.markets // per
    size = 100 + (a * 31 + k * 17) % 100
    size = np.where((a + k) % 2 == 0, size, -size)
    markets = ((a + k * stride) % spec.markets).astype(np.int32)
    entry = PRICE - 200 + (a * 13 + k) % 400
    ex.load_positions(a + 1_000, markets, size, entry * units_per_tick(ex), counterparty=MM, exact=True)
    del a, k, size, markets, entry
    victims = np.arange(VICTIM0, VICTIM0 + spec.victims, dtype=np.int64)
    ex.deposit(victims, np.full(spec.victims, 100 * 10**6, dtype=np.int64), exact=True)
    ex.check_margin(exact=True)
    return ex


EXECUTOR = MarketClose(MM, slippage_bps=50)


class Victims:
    """Hands out the next victim, made bankrupt by an untimed trade."""

    def __init__(self, ex: Exchange, lots: int = VICTIM_LOTS):
        self.ex, self.next, self.lots = ex, VICTIM0, lots
        self.price = PRICE * 12 // 10 * units_per_tick(ex)

    def arm(self) -> int:
        v = self.next
        self.next += 1
        self.ex.trade(v, MM, 0, self.lots, self.price, exact=True)
        return v


def liquidate_one(ex: Exchange, victims: Victims) -> tuple[float, deleverage.WaterfallResult]:
    v = victims.arm()
    t0 = time.perf_counter()
    r = ex.liquidate(executor=EXECUTOR, accounts=[v])
    t = time.perf_counter() - t0
    assert r.totals.liquidated_accounts == 1 and 1 <= r.totals.adl_closes <= 10 and len(r.skipped) == 0, r
    return t, r


@dataclasses.dataclass
class OnlineTimes:
    fresh: list[float]
    first_after_move: list[float]
    step_after_move: list[float]
    check_margin: list[float]
    max_adl_closes: int

    def summary(self) -> dict[str, float]:
        f = np.array(self.fresh)
        step = min(self.step_after_move)
        first = min(self.first_after_move)
        return {
            "fresh_p50_s": float(np.percentile(f, 50)),
            "fresh_p99_s": float(np.percentile(f, 99)),
            "first_after_move_best_s": first,
            "step_after_move_best_s": step,
            "check_margin_best_s": min(self.check_margin),
            "step_over_fresh_p50": step / float(np.percentile(f, 50)),
            "first_over_step": first / step,
            "step_over_check_margin": step / min(self.check_margin),
            "max_adl_closes": float(self.max_adl_closes),
        }


def measure(ex: Exchange, samples: int, moves: int, log: Callable[[str], None] = lambda s: None,
            victim_lots: int = VICTIM_LOTS) -> OnlineTimes:
    """Every measurement in one run on the same book: ``samples`` fresh-queue calls, then
    ``moves`` mark moves of market 0 each followed by the whole-book step (nothing to
    liquidate), and again a move, the margin check of the moved market, the first
    per-account call (the queue refresh) and a full margin check."""
    victims = Victims(ex, victim_lots)
    liquidate_one(ex, victims)  # the first use builds the queue
    fresh, closes = [], 0
    for _ in range(samples):
        t, r = liquidate_one(ex, victims)
        fresh.append(t)
        closes = max(closes, r.totals.adl_closes)
    first, step, check = [], [], []
    for i in range(moves):
        px = (PRICE + (1 if i % 2 == 0 else -1) * (1 + i)) * units_per_tick(ex)
        ex.set_marks([0], np.array([px], dtype=np.int64), exact=True)
        t0 = time.perf_counter()
        w = ex.liquidate(executor=EXECUTOR)
        step.append(time.perf_counter() - t0)
        assert w.totals.liquidated_accounts == 0, w
        ex.set_marks([0], np.array([px + units_per_tick(ex)], dtype=np.int64), exact=True)
        ex.check_margin(markets=[0], exact=True)  # the margin check already run
        t, r = liquidate_one(ex, victims)
        first.append(t)
        t0 = time.perf_counter()
        ex.check_margin(exact=True)
        check.append(time.perf_counter() - t0)
        log(f"move {i}: step {step[-1] * 1e3:.2f} ms, first {first[-1] * 1e3:.2f} ms, check {check[-1] * 1e3:.2f} ms")
    ex.check_invariants()
    return OnlineTimes(fresh, first, step, check, closes)
