"""pytest-benchmark setup for the margin-check benchmarks.

One book is built per session (sized by ``DELEVERAGE_BENCH_*``, see margin_workload.py) and
shared by every benchmark, so the engine, numpy and streaming numbers come from the same
run on the same data. ``DELEVERAGE_BENCH_ROUNDS`` sets the timed rounds per benchmark
(default 10); ``DELEVERAGE_BENCH_ENFORCE=1`` turns the performance targets into assertions
(off by default: the numbers depend on the machine).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import margin_workload as mw  # noqa: E402

ROUNDS = max(1, mw._env_int("DELEVERAGE_BENCH_ROUNDS", 10))
ENFORCE = os.environ.get("DELEVERAGE_BENCH_ENFORCE", "") not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def workload(request) -> mw.Workload:
    sizes = mw.Sizes.from_env()
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def log(msg: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[deleverage bench] {msg}")

    log(f"building {sizes.label()} (seed {sizes.seed})")
    return mw.build_workload(sizes, log)


class Timings(dict):
    """Best time per benchmark name in this session, to compute ratios between benchmarks.

    A ratio needs its other side: if that benchmark did not run (``-k``), it is measured
    here with plain perf_counter (best of 3)."""

    def get_or_measure(self, name: str, fn: Callable[[], Any]) -> float:
        if name not in self:
            self[name] = mw.best_of(fn, 3)
        return self[name]


def record_target(info: dict, name: str, ratio: float, target: float) -> None:
    """``info[name] = ratio`` with its target (at most ``target``) for extra_info; asserted
    under DELEVERAGE_BENCH_ENFORCE=1."""
    info.update({name: round(ratio, 3), "target": f"<= {target:g}", "target_met": ratio <= target})
    if ENFORCE:
        assert ratio <= target, (name, ratio, target)


@pytest.fixture(scope="session")
def timings() -> Timings:
    return Timings()


@pytest.fixture
def run(benchmark):
    """``run(fn) -> (result, best_seconds)``: benchmark ``fn`` for ROUNDS rounds (one warmup),
    or call it once and time it when benchmarks are disabled (smoke runs)."""

    def _run(fn: Callable[[], Any]) -> tuple[Any, float]:
        if benchmark.disabled:
            t = time.perf_counter()
            result = benchmark.pedantic(fn, rounds=1, iterations=1)
            return result, time.perf_counter() - t
        result = benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        return result, float(benchmark.stats.stats.min)

    return _run
