"""Stress-path benchmarks (pytest-benchmark): one path stepped in the core against the same
number of bare full margin checks of the same book, and a multi-path, multi-policy run.

Full size (1M positions, 100k accounts, 1,000 steps)::

    pytest bench/test_stress.py --benchmark-columns=min,median,max,rounds

Smoke run (CI)::

    DELEVERAGE_BENCH_POSITIONS=20000 DELEVERAGE_BENCH_ACCOUNTS=2000 pytest bench/test_stress.py --benchmark-disable

Sizes: ``DELEVERAGE_BENCH_POSITIONS`` / ``_ACCOUNTS`` (default 1M / 100k),
``DELEVERAGE_BENCH_STRESS_STEPS`` (default 1000), ``DELEVERAGE_BENCH_STRESS_MARKETS`` (20).
The path follows the CLI's default market model (0.5% vol per step, correlation 0.6, rare
-8% jumps). ``extra_info`` holds the ratio path / checks (target <= 2) and the path's
liquidations; ``DELEVERAGE_BENCH_ENFORCE=1`` asserts the target.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import ENFORCE

import deleverage as dl
from deleverage.books import BookSpec
from deleverage.scenarios import GBMPaths


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


POSITIONS = _env_int("DELEVERAGE_BENCH_POSITIONS", 1_000_000)
ACCOUNTS = _env_int("DELEVERAGE_BENCH_ACCOUNTS", max(1, POSITIONS // 10))
STEPS = _env_int("DELEVERAGE_BENCH_STRESS_STEPS", 1000)
MARKETS = _env_int("DELEVERAGE_BENCH_STRESS_MARKETS", 20)
MM = dl.MarketClose(counterparty=0, slippage_bps=20)


@pytest.fixture(scope="module")
def book() -> dl.Exchange:
    return BookSpec(positions=POSITIONS, accounts=ACCOUNTS, markets=MARKETS, seed=3).build()


def _scenario(paths: int, steps: int) -> GBMPaths:
    return GBMPaths(paths=paths, steps=steps, vol=0.005, correlation=0.6, jump_rate=0.002, jump_mean=-0.08,
                    jump_std=0.03, seed=3)


def test_stress_path_vs_bare_margin_checks(benchmark, book: dl.Exchange) -> None:
    engine = book.core
    engine.check_margin(None)
    t = time.perf_counter()
    for _ in range(STEPS):
        engine.check_margin(None)
    checks = time.perf_counter() - t
    sc = _scenario(1, STEPS)
    rounds = 1 if benchmark.disabled else 3
    result = benchmark.pedantic(lambda: dl.stress(book, sc, policies=["queue"], executor=MM), rounds=rounds, iterations=1)
    path = result.elapsed if benchmark.disabled else float(benchmark.stats.stats.min)
    ratio = path / checks
    pp = result.per_path("queue")
    benchmark.extra_info.update({"positions": book.position_count, "steps": STEPS, "checks_s": checks, "path_s": path,
                                 "ratio_path_over_checks": ratio, "target_met": ratio <= 2.0,
                                 "liquidations": int(pp["liquidated_accounts"][0])})
    # the path ran every step and left the exchange untouched
    assert result.series["queue"]["deficit"].shape == (1, STEPS)
    assert book.step == 0
    if ENFORCE:
        assert ratio <= 2.0, f"stress path {path:.2f} s is {ratio:.2f}x {STEPS} margin checks ({checks:.2f} s)"


def test_stress_many_paths_two_policies(benchmark, book: dl.Exchange) -> None:
    paths = 4 if not benchmark.disabled else 2
    steps = max(1, STEPS // 10)
    sc = _scenario(paths, steps)
    rounds = 1 if benchmark.disabled else 3
    result = benchmark.pedantic(lambda: dl.stress(book, sc, policies=["queue", {"policy": "pro_rata", "mode": "haircut"}],
                                                  executor=MM), rounds=rounds, iterations=1)
    benchmark.extra_info.update({"paths": paths, "steps": steps, "policies": 2})
    assert set(result.policies) == {"queue", "haircut/pro_rata"}
    assert result.summary().loc["queue", "paths"] == paths
