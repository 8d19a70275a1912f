"""Allocation-kernel benchmarks (pytest-benchmark): every policy of deleverage.allocate on
one set of winners, next to an obvious numpy implementation of the same policy.

Full size (1M winners; target: any policy at most 20 ms)::

    pytest bench/test_allocate.py --benchmark-columns=min,median,max,rounds

Smoke run (CI)::

    DELEVERAGE_BENCH_WINNERS=20000 pytest bench/test_allocate.py --benchmark-disable

``extra_info`` holds ``winners``, ``ms``, ``numpy_ms``, ``numpy_over_kernel`` (how many times
faster the kernel is) and ``target_met``; ``DELEVERAGE_BENCH_ENFORCE=1`` asserts the 20 ms
target (full size only makes sense). The numpy baselines sort (argsort) where the kernel
selects, and work in float64.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import numpy as np
import pytest

from conftest import ENFORCE

import deleverage

N = max(1, int(os.environ.get("DELEVERAGE_BENCH_WINNERS", "1000000")))
TARGET_S = 0.020
S = 100_000_000


def _best(fn: Callable[[], Any], k: int) -> float:
    best = float("inf")
    for _ in range(k):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


class Winners:
    def __init__(self, n: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.integers(1, 10**9, n, dtype=np.int64)  # 1e-6 units: up to 1000 USD
        self.wf = self.w.astype(np.float64)
        self.score = rng.standard_normal(n)
        self.lev = rng.integers(S, 50 * S, n, dtype=np.int64)
        self.levf = self.lev / S
        self.cap = rng.integers(0, S + 1, n, dtype=np.int64)
        self.capf = self.cap / S
        self.budget = int(self.w.sum() // 3)
        self.capped_budget = int((self.w * self.cap // S).sum() // 3)
        self.lot = 1000


@pytest.fixture(scope="module")
def winners() -> Winners:
    return Winners(N)


# ---------------------------------------------------------------- numpy baselines


def np_greedy(w: np.ndarray, order: np.ndarray, budget: float) -> np.ndarray:
    ws = w[order]
    before = np.cumsum(ws) - ws
    x = np.empty_like(w)
    x[order] = np.clip(budget - before, 0, ws)
    return x


def np_queue(z: Winners) -> np.ndarray:
    return np_greedy(z.wf, np.argsort(-z.score, kind="stable"), float(z.budget))


def np_pro_rata(z: Winners) -> np.ndarray:
    return z.budget * (z.wf / z.wf.sum())


def np_water_fill(K: np.ndarray, v: np.ndarray, budget: float) -> np.ndarray:
    """min(K, tau*v) with tau from a sort of K/v and cumulative sums."""
    live = (K > 0) & (v > 0)
    t = np.where(live, K / np.where(v > 0, v, 1.0), np.inf)
    order = np.argsort(t)
    ts, Ks, vs = t[order], np.where(live, K, 0)[order], np.where(live, v, 0)[order]
    sat = np.concatenate(([0.0], np.cumsum(Ks)))  # sum of K for the first j
    rest = np.concatenate((np.cumsum(vs[::-1])[::-1], [0.0]))  # sum of v from j on
    # F(t_j) = sat[j+1] + t_j * rest[j+1]; the first j with F > budget is unsaturated
    f = sat[1:] + np.where(np.isfinite(ts), ts, 0) * rest[1:]
    j = int(np.searchsorted(f, budget, side="right"))
    tau = (budget - sat[j]) / rest[j] if rest[j] > 0 else 0.0
    return np.where(live, np.minimum(K, tau * v), 0.0)


def np_capped(z: Winners) -> np.ndarray:
    return np_water_fill(z.wf * z.capf, z.wf, float(z.capped_budget))


def np_risk(z: Winners) -> np.ndarray:
    return np_water_fill(z.wf, z.wf * z.levf * z.levf, float(z.budget))


def np_min_max_lots(z: Winners) -> np.ndarray:
    """Bisection on the level h: lots(h) = sum floor(h*w/lot) >= ceil(B/lot)."""
    need = -(-z.budget // z.lot)
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if np.floor(mid * z.wf / z.lot).sum() >= need:
            hi = mid
        else:
            lo = mid
    return z.lot * np.floor(hi * z.wf / z.lot)


def np_random_walk(z: Winners) -> np.ndarray:
    n = len(z.w)
    start = int(deleverage._core.random_walk_start(11, n))
    return np_greedy(z.wf, np.roll(np.arange(n), -start), float(z.budget))


CASES: dict[str, tuple[Callable[[Winners], np.ndarray], Callable[[Winners], np.ndarray], bool]] = {
    # name: (kernel call, numpy baseline, the kernel's sum is exactly the budget)
    "queue": (lambda z: deleverage.allocate(z.budget, z.w, "queue", score=z.score), np_queue, True),
    "pro_rata": (lambda z: deleverage.allocate(z.budget, z.w, "pro_rata"), np_pro_rata, True),
    "capped_pro_rata": (lambda z: deleverage.allocate(z.capped_budget, z.w, "capped_pro_rata", cap=z.cap), np_capped, True),
    "risk_aware": (lambda z: deleverage.allocate(z.budget, z.w, "risk_aware", leverage=z.lev), np_risk, True),
    "min_max_lots": (lambda z: deleverage.allocate(z.budget, z.w, "min_max_lots", lot=z.lot), np_min_max_lots, False),
    "random_walk": (lambda z: deleverage.allocate(z.budget, z.w, "random_walk", seed=11), np_random_walk, True),
    "pro_rata_float": (lambda z: deleverage.allocate(float(z.budget), z.wf, "pro_rata"), np_pro_rata, False),
    "risk_aware_float": (lambda z: deleverage.allocate(float(z.budget), z.wf, "risk_aware", leverage=z.levf), np_risk, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_allocate(name, winners, run, benchmark):
    kernel, baseline, exact_sum = CASES[name]
    x, best = run(lambda: kernel(winners))
    w = winners.w
    assert len(x) == len(w)
    assert np.all(x >= 0) and np.all(x <= w)
    budget = winners.capped_budget if name == "capped_pro_rata" else winners.budget
    if exact_sum:
        assert int(x.sum()) == budget
    elif name == "min_max_lots":
        assert budget <= int(x.sum()) < budget + winners.lot
    np_best = _best(lambda: baseline(winners), 1 if benchmark.disabled else 3)
    benchmark.extra_info.update(
        winners=len(w),
        ms=round(best * 1e3, 3),
        numpy_ms=round(np_best * 1e3, 3),
        numpy_over_kernel=round(np_best / best, 2) if best > 0 else None,
        target_met=best <= TARGET_S,
    )
    if ENFORCE:
        assert best <= TARGET_S, f"{name}: {best * 1e3:.1f} ms > {TARGET_S * 1e3:.0f} ms"
