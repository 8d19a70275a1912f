"""Allocation-kernel benchmarks (pytest-benchmark): every policy of deleverage.allocate on
one set of winners, next to an obvious numpy implementation of the same policy.

Full size (1M winners; target: any policy at most 20 ms)::

    pytest bench/test_allocate.py --benchmark-columns=min,median,max,rounds

Smoke run (CI)::

    DELEVERAGE_BENCH_WINNERS=20000 pytest bench/test_allocate.py --benchmark-disable

Every policy runs in exact (int64) and float mode (``<policy>_float``), and so do the optional
inputs (``pro_rata+weights``, ``capped_pro_rata+base``, ``risk_aware+base``,
``min_max_lots+lots`` with a lot size per winner, ``min_max_lots+base``). ``extra_info`` holds
``winners``, ``ms``, ``numpy_ms``, ``numpy_over_kernel`` (how many times faster the kernel
is), ``stream_ms`` (a plain compiled read of the policy's input arrays on every thread),
``kernel_over_stream`` and ``target_met``; ``DELEVERAGE_BENCH_ENFORCE=1`` asserts the 20 ms
target (full size only makes sense). The numpy baselines sort (argsort) where the kernel
selects, and work in float64. ``python bench/report_allocate.py`` prints the same numbers
as one table (best of N, timed round-robin).
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
    """Best of k timed calls after one untimed call (which leaves the allocator warm)."""
    fn()
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
        # the optional inputs: weights (pro_rata), a lot per winner and a base (e.g. equity)
        self.weights = rng.integers(0, 10**6, n, dtype=np.int64)
        self.lots = rng.integers(500, 2000, n, dtype=np.int64)
        self.base = rng.integers(1, 10**9, n, dtype=np.int64)
        self.weightsf, self.lotsf, self.basef = (a.astype(np.float64) for a in (self.weights, self.lots, self.base))
        self.capped_base_budget = int(np.minimum(self.w, self.base * self.cap // S).sum() // 3)
        self.risk_base_budget = int(np.minimum(self.w, self.base).sum() // 3)


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


def np_pro_rata_rounded(z: Winners) -> np.ndarray:
    """pro_rata rounded like the exact kernel (floor + largest remainder, ties by index), in
    float64: what numpy needs an argsort for."""
    y = z.budget * (z.wf / z.wf.sum())
    x = np.floor(y)
    extra = int(round(z.budget - x.sum()))
    x[np.argsort(x - y, kind="stable")[:extra]] += 1
    return x


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


def np_lots_general(z: Winners, lots: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Bisection on the level h: the amount sum lot_i * min(L_i, floor(h*base_i/lot_i)) >= B."""
    L = np.floor(z.wf / lots)
    lo, hi = 0.0, float((L * lots / base).max()) * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if (lots * np.minimum(L, np.floor(mid * base / lots))).sum() >= z.budget:
            hi = mid
        else:
            lo = mid
    return lots * np.minimum(L, np.floor(hi * base / lots))


def np_random_walk(z: Winners) -> np.ndarray:
    n = len(z.w)
    start = int(deleverage._core.random_walk_start(11, n))
    return np_greedy(z.wf, np.roll(np.arange(n), -start), float(z.budget))


def stream(arrays: list[np.ndarray]) -> int:
    """A plain compiled read of the inputs a policy takes (every thread): the floor for any
    kernel that must look at each winner once."""
    return sum(deleverage._core.stream_sum(a.view(np.int64), 0) for a in arrays)


def budget_of(policy: str, z: Winners) -> int:
    if policy == "capped_pro_rata+base":
        return z.capped_base_budget
    if policy == "risk_aware+base":
        return z.risk_base_budget
    return z.capped_budget if policy == "capped_pro_rata" else z.budget


def _kernel(case: str, exact: bool) -> Callable[[Winners], np.ndarray]:
    policy, _, variant = case.partition("+")

    def call(z: Winners) -> np.ndarray:
        budget = budget_of(case, z)
        kw: dict[str, Any] = {}
        if variant == "weights":
            kw["weights"] = z.weights if exact else z.weightsf
        if variant == "base":
            kw["base"] = z.base if exact else z.basef
        if variant == "lots":
            kw["lot"] = z.lots if exact else z.lotsf
        if policy == "queue":
            kw["score"] = z.score
        if policy == "capped_pro_rata":
            kw["cap"] = z.cap if exact else z.capf
        if policy == "risk_aware":
            kw["leverage"] = z.lev if exact else z.levf
        if policy == "min_max_lots" and variant != "lots":
            kw["lot"] = z.lot if exact else float(z.lot)
        if policy == "random_walk":
            kw["seed"] = 11
        return deleverage.allocate(budget if exact else float(budget), z.w if exact else z.wf, policy, **kw)

    return call


def inputs(case: str, exact: bool, z: Winners) -> list[np.ndarray]:
    """The per-winner arrays the kernel reads for this policy."""
    policy, _, variant = case.partition("+")
    extra = {"queue": [z.score], "capped_pro_rata": [z.cap if exact else z.capf], "risk_aware": [z.lev if exact else z.levf]}
    more = {"weights": [z.weights if exact else z.weightsf], "base": [z.base if exact else z.basef], "lots": [z.lots if exact else z.lotsf]}
    return [z.w if exact else z.wf, *extra.get(policy, []), *more.get(variant, [])]


BASELINES: dict[str, Callable[[Winners], np.ndarray]] = {
    "queue": np_queue,
    "pro_rata": np_pro_rata,
    "capped_pro_rata": np_capped,
    "risk_aware": np_risk,
    "min_max_lots": np_min_max_lots,
    "random_walk": np_random_walk,
    # the optional inputs (policy+input)
    "pro_rata+weights": lambda z: np_water_fill(z.wf, z.weightsf, float(z.budget)),
    "capped_pro_rata+base": lambda z: np_water_fill(np.minimum(z.wf, z.basef * z.capf), z.basef, float(z.capped_base_budget)),
    "risk_aware+base": lambda z: np_water_fill(np.minimum(z.wf, z.basef), z.basef * z.levf * z.levf, float(z.risk_base_budget)),
    "min_max_lots+lots": lambda z: np_lots_general(z, z.lotsf, z.wf),
    "min_max_lots+base": lambda z: np_lots_general(z, np.full(len(z.wf), float(z.lot)), z.basef),
}

# name -> (policy, exact mode): every policy in both numeric modes
CASES: dict[str, tuple[str, bool]] = {
    **{p: (p, True) for p in BASELINES},
    **{f"{p}_float": (p, False) for p in BASELINES},
}


def check(name: str, x: np.ndarray, z: Winners) -> None:
    """Bounds and sums of a kernel result (the unit tests check the values)."""
    case, exact = CASES[name]
    policy = case.partition("+")[0]
    budget = budget_of(case, z)
    lot = int(z.lots.max()) if case == "min_max_lots+lots" else z.lot
    assert len(x) == len(z.w)
    if exact:
        assert x.dtype == np.int64
        assert np.all(x >= 0) and np.all(x <= z.w)
        if policy == "min_max_lots":
            assert budget <= int(x.sum()) < budget + lot
        else:
            assert int(x.sum()) == budget
    else:
        assert x.dtype == np.float64
        assert np.all(x >= 0) and np.all(x <= z.wf * (1 + 1e-12))
        if policy == "min_max_lots":
            assert budget * (1 - 1e-9) <= x.sum() < budget + lot
        else:
            assert abs(x.sum() - budget) <= 1e-6 * budget + 1


def baseline_for(policy: str, exact: bool) -> Callable[[Winners], np.ndarray]:
    """The numpy alternative: the same as float mode, except that exact pro_rata also rounds."""
    return np_pro_rata_rounded if exact and policy == "pro_rata" else BASELINES[policy]


@pytest.mark.parametrize("name", list(CASES))
def test_allocate(name, winners, run, benchmark):
    policy, exact = CASES[name]
    kernel, baseline = _kernel(policy, exact), baseline_for(policy, exact)
    x, best = run(lambda: kernel(winners))
    check(name, x, winners)
    k = 1 if benchmark.disabled else 3
    np_best = _best(lambda: baseline(winners), k)
    arrays = inputs(policy, exact, winners)
    stream_best = _best(lambda: stream(arrays), k)
    benchmark.extra_info.update(
        winners=len(winners.w),
        ms=round(best * 1e3, 3),
        numpy_ms=round(np_best * 1e3, 3),
        numpy_over_kernel=round(np_best / best, 2) if best > 0 else None,
        stream_ms=round(stream_best * 1e3, 3),
        kernel_over_stream=round(best / stream_best, 2) if stream_best > 0 else None,
        target_met=best <= TARGET_S,
    )
    if ENFORCE:
        assert best <= TARGET_S, f"{name}: {best * 1e3:.1f} ms > {TARGET_S * 1e3:.0f} ms"
