"""Tiered against flat markets in the full margin check (pytest-benchmark): one generated book
loaded twice, flat and on a five-tier schedule per market (bench/load_workload.py), each
``check_margin(exact=True)`` timed. Target: tiered within 1.3x of flat per position.

    pytest bench/test_tiers.py --benchmark-columns=min,median,max,rounds
    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench/test_tiers.py --benchmark-disable   # smoke

``extra_info``: ``ns_per_position``, ``tiered_over_flat`` (on the tiered run), ``target_met``;
``DELEVERAGE_BENCH_ENFORCE=1`` asserts the target. ``python bench/report_tiers.py`` prints the
same as a table.
"""

from __future__ import annotations

import load_workload as lw
import numpy as np
import pytest
import report_tiers
from conftest import record_target

pytestmark = pytest.mark.benchmark(group="tiered-markets")
SPEC = lw.LoadSpec.from_env()


@pytest.fixture(scope="module")
def books() -> dict:
    return lw.flat_and_tiered(lw.Book(SPEC))

@pytest.mark.parametrize("name", ["flat", "tiered"])
def test_full_check(run, benchmark, books, timings, name):
    ex = books[name]
    report, best = run(lambda: ex.check_margin(exact=True))
    for i in np.random.default_rng(0).integers(0, len(report.account), 50):  # the per-account valuation agrees
        one = ex.account_margin(int(report.account[i]), exact=True)
        assert (report.maintenance[i], report.initial[i]) == (one["maintenance"], one["initial"])
    timings[f"check_{name}"] = best
    info = {"ns_per_position": round(best / ex.position_count * 1e9, 3)}
    if name == "tiered":
        flat = timings.get_or_measure("check_flat", lambda: books["flat"].check_margin(exact=True))
        record_target(info, "tiered_over_flat", best / flat, report_tiers.TARGET_TIERED_OVER_FLAT)
    benchmark.extra_info.update(info)
