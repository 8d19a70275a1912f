"""Policy-lab benchmark: ``deleverage.metrics.measure`` against the ``liquidate`` step it
measures, on the same crash (pytest-benchmark).

    pytest bench/test_policy_lab.py --benchmark-columns=min,median,rounds
    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench/test_policy_lab.py --benchmark-disable   # smoke

A ``sample_exchange`` of ``DELEVERAGE_BENCH_POSITIONS`` positions (default 100,000) over
``DELEVERAGE_BENCH_ACCOUNTS`` accounts (default a tenth) in 10 markets; two markets fall 25%.
``extra_info``: the step's event rows, ``liquidate_s`` (one timed run) and
``measure_over_liquidate`` (best measure time over that). Pro-rata ADL writes one row per
(bankrupt position, opposite winner), so its rows grow with the product of the two.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import deleverage
from deleverage.books import sample_exchange
from deleverage.metrics import measure

POSITIONS = int(os.environ.get("DELEVERAGE_BENCH_POSITIONS", "100000"))
ACCOUNTS = int(os.environ.get("DELEVERAGE_BENCH_ACCOUNTS", str(max(10, POSITIONS // 10))))
EXECUTOR = deleverage.MarketClose(0, slippage_bps=50)


@pytest.mark.parametrize("mode, policy", [("close", "queue"), ("close", "pro_rata"), ("haircut", "pro_rata")])
def test_measure_vs_liquidate(benchmark, mode, policy):
    ex = sample_exchange(POSITIONS, ACCOUNTS, 10, seed=7, threads=1)
    ex.insurance.deposit(10_000.0)
    ticks = ex.marks(exact=True)[:2]
    ex.set_marks([0, 1], np.round(ticks * 0.75).astype(np.int64), exact=True)
    before = ex.copy()
    t = time.perf_counter()
    result = ex.liquidate(executor=EXECUTOR, mode=mode, policy=policy, exact=True)
    liquidate_s = time.perf_counter() - t
    t = time.perf_counter()
    m = benchmark.pedantic(measure, args=(before, ex, result), kwargs={"executor": EXECUTOR},
                           rounds=1 if benchmark.disabled else 3, iterations=1)
    measure_s = time.perf_counter() - t if benchmark.disabled else float(benchmark.stats.stats.min)
    benchmark.extra_info.update(rows=len(result.events), liquidate_s=liquidate_s,
                                measure_over_liquidate=measure_s / max(liquidate_s, 1e-9))
    assert m.accounts_touched == result.totals.accounts_touched > 0
