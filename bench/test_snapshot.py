"""Snapshot benchmarks (pytest-benchmark) on the shared book (conftest ``workload``): save and
load of the whole state, against copying / writing / reading the same number of bytes.

    pytest bench/test_snapshot.py --benchmark-columns=min,median,max,rounds

Target (issue "durability", item 1): save and load each within 2x of copying the same bytes.
Ratios go to ``extra_info``; ``DELEVERAGE_BENCH_ENFORCE=1`` asserts them. The closing table:
``python bench/report_snapshot.py``.
"""

from __future__ import annotations

import pytest
import snapshot_workload as sw
from conftest import ENFORCE

pytestmark = pytest.mark.benchmark(group="snapshot")


@pytest.fixture(scope="module")
def ops(workload, tmp_path_factory):
    return sw.operations(workload.ex, tmp_path_factory.mktemp("snapshot"))


def _info(benchmark, workload, ops) -> None:
    benchmark.extra_info.update(positions=workload.ex.position_count, accounts=workload.ex.account_count,
                                snapshot_bytes=ops["_size"]())


def test_save(benchmark, run, timings, workload, ops) -> None:
    _, best = run(ops["save"])
    timings["save"] = best
    copy = timings.get_or_measure("copy", ops["copy"])
    write = timings.get_or_measure("file_write", ops["file_write"])
    _info(benchmark, workload, ops)
    benchmark.extra_info.update(save_over_copy=round(best / copy, 3), save_over_file_write=round(best / write, 3))
    if ENFORCE:
        assert best <= 2 * copy


def test_load(benchmark, run, timings, workload, ops) -> None:
    loaded, best = run(ops["load"])
    assert loaded.state_hash() == workload.ex.state_hash()  # correctness, every run
    timings["load"] = best
    copy = timings.get_or_measure("copy", ops["copy"])
    read = timings.get_or_measure("file_read", ops["file_read"])
    _info(benchmark, workload, ops)
    benchmark.extra_info.update(load_over_copy=round(best / copy, 3), load_over_file_read=round(best / read, 3))
    if ENFORCE:
        assert best <= 2 * copy


@pytest.mark.parametrize("name", ["copy", "file_write", "file_read", "engine_copy"])
def test_baseline(benchmark, run, timings, workload, ops, name) -> None:
    _, best = run(ops[name])
    timings[name] = best
    _info(benchmark, workload, ops)


def test_state_hash(benchmark, run, workload) -> None:
    h, _ = run(workload.ex.state_hash)
    assert h == workload.ex.state_hash()
