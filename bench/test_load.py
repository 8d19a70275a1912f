"""Bulk-load benchmarks (pytest-benchmark): ``load_positions`` of one generated book's rows in
random, account and market order, each into a fresh exchange, next to numpy's stable argsort
of the random-order account column.

Full size (10M rows / 1M accounts / 100 markets; target: random order within 1.5x of the
argsort)::

    pytest bench/test_load.py --benchmark-columns=min,median,max,rounds

Smoke run (CI)::

    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench/test_load.py --benchmark-disable

``extra_info``: ``rows``, ``load_over_argsort`` (random order), ``memory_bytes`` (the engine
after the load: the same for every order), ``target_met``; ``DELEVERAGE_BENCH_ENFORCE=1``
asserts the target. ``python bench/report_load.py`` prints the same as one table.
"""

from __future__ import annotations

import time

import load_workload as lw
import numpy as np
import pytest
from conftest import ROUNDS, record_target

pytestmark = pytest.mark.benchmark(group="bulk-load")
SPEC = lw.LoadSpec.from_env()


@pytest.fixture(scope="module")
def book() -> lw.Book:
    return lw.Book(SPEC)


def _load_fresh(benchmark, book: lw.Book, rows: lw.Rows):
    """Times load(rows) on a fresh exchange per round (built untimed); returns (exchange, best)."""
    holder: dict = {}

    def setup():
        holder.clear()
        holder["ex"] = book.fresh_exchange()
        return (holder["ex"],), {}

    benchmark.pedantic(lambda ex: lw.load(ex, rows), setup=setup, rounds=1 if benchmark.disabled else ROUNDS, iterations=1)
    if benchmark.disabled:
        ex = book.fresh_exchange()
        t = time.perf_counter()
        lw.load(ex, rows)
        return ex, time.perf_counter() - t
    return holder["ex"], float(benchmark.stats.stats.min)


def test_numpy_stable_argsort(run, benchmark, book, timings):
    rows = book.rows("random")
    order, best = run(lambda: lw.numpy_argsort(rows))
    assert np.all(np.diff(rows.accounts[order]) >= 0)
    timings["argsort"] = best
    benchmark.extra_info.update(rows=SPEC.positions)


@pytest.mark.parametrize("order", lw.ORDERS)
def test_load_positions(benchmark, book, timings, order):
    rows = book.rows(order)
    ex, best = _load_fresh(benchmark, book, rows)
    ex.check_invariants()
    # every order gives the same book: the same positions, margins and memory
    r = ex.check_margin(exact=True)
    margins = (ex.position_count, r.equity.tobytes(), r.maintenance.tobytes(), r.initial.tobytes())
    assert ex.position_count >= len(rows.accounts)
    assert margins == timings.setdefault("margins", margins), f"{order}-order rows load a different book"
    memory = ex.memory_bytes
    assert memory == timings.setdefault("memory", memory), "the engine's memory after a load depends on the row order"
    info = dict(rows=SPEC.positions, memory_bytes=memory)
    if order == "random":
        argsort = timings.get_or_measure("argsort", lambda: lw.numpy_argsort(rows))
        record_target(info, "load_over_argsort", best / argsort, lw.TARGET_OVER_ARGSORT)
    benchmark.extra_info.update(info)
