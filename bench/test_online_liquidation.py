"""Online liquidation (issue 10), pytest-benchmark: one account liquidated with ADL against at
most 10 counterparties (``Exchange.liquidate(..., accounts=[a])``) on the 1M-position
one-market book (and the 10M/1M/100 book with ``DELEVERAGE_BENCH_ONLINE_BIG=1``), each quoted
against a whole-book step with nothing to liquidate right after a mark move, on the same book
in the same run (bench/online_workload.py). The C++ side is bench/latency/online_liquidation.cpp
(``bench/report_online.py`` runs both and prints the table of docs/waterfall.md).

    pytest bench/test_online_liquidation.py --benchmark-columns=min,median,max,rounds
    DELEVERAGE_BENCH_ONLINE_POSITIONS=20000 pytest bench/test_online_liquidation.py --benchmark-disable   # smoke

``extra_info`` holds p50 / p99 of the fresh-queue call, the first call after a move, the step
after a move and the ratios of the targets (Python: step / one call >= 100; first after a
move <= 0.6 x the step); ``DELEVERAGE_BENCH_ENFORCE=1`` asserts them.
"""

from __future__ import annotations

import online_workload as ow
import pytest
from conftest import ENFORCE

SPECS = ow.specs()
SAMPLES = ow._env_int("DELEVERAGE_BENCH_ONLINE_SAMPLES", 1_000)
MOVES = ow._env_int("DELEVERAGE_BENCH_ONLINE_MOVES", 5)


@pytest.fixture(scope="module", params=SPECS, ids=[s.label().replace(" ", "") for s in SPECS])
def online_book(request):
    spec = request.param
    return spec, ow.build(spec)


@pytest.mark.benchmark(group="online-liquidation")
def test_one_account_fresh_queue(benchmark, online_book):
    """One per-account call with the kept queue fresh (the timed call; a victim is made
    bankrupt in the untimed setup), then the comparison measurements on the same book."""
    spec, ex = online_book
    victims = ow.Victims(ex, spec.victim_lots)
    ow.liquidate_one(ex, victims)  # builds the queue

    def setup():
        return (victims.arm(),), {}

    def one(v):
        return ex.liquidate(executor=ow.EXECUTOR, accounts=[v])

    result = benchmark.pedantic(one, setup=setup, rounds=1 if benchmark.disabled else SAMPLES, iterations=1)
    assert result.totals.liquidated_accounts == 1 and 1 <= result.totals.adl_closes <= 10
    times = ow.measure(ex, max(50, SAMPLES // 4), MOVES, victim_lots=spec.victim_lots)
    s = times.summary()
    benchmark.extra_info.update(book=spec.label(), **{k: round(v, 9) for k, v in s.items()},
                                targets=f"step/one >= {ow.TARGET_PYTHON_STEP_OVER_ONE:g}, first/step <= {ow.TARGET_FIRST_OVER_STEP:g}")
    assert s["max_adl_closes"] <= 10
    if ENFORCE:
        assert s["step_over_fresh_p50"] >= ow.TARGET_PYTHON_STEP_OVER_ONE, s
        assert s["first_over_step"] <= ow.TARGET_FIRST_OVER_STEP, s
