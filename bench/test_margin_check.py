"""Margin-check benchmarks (pytest-benchmark), all on one shared book.

Full size (the default: 10M positions, 1M accounts, 100 markets)::

    pytest bench/test_margin_check.py --benchmark-columns=min,median,max,rounds

Smoke run (CI)::

    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench --benchmark-disable

Each benchmark records ratios in ``extra_info`` (see ``--benchmark-json``):
``numpy_over_engine`` (target >= 10), ``engine_over_stream`` (target <= 2),
``bytes_per_position`` (target <= 40) and, for the incremental check, ``incremental_over_full``
next to the moved market's share of the positions (expected about equal, ~1/100).
"""

from __future__ import annotations

import margin_workload as mw
import numba_peer
import numpy as np
import pytest
from conftest import ENFORCE

pytestmark = pytest.mark.benchmark(group="margin-check")


def _common_info(benchmark, w: mw.Workload) -> None:
    benchmark.extra_info.update(
        positions=w.ex.position_count,
        accounts=w.ex.account_count,
        markets=len(w.ex.markets),
        engine_memory_bytes=w.ex.memory_bytes,
        bytes_per_position=round(w.bytes_per_position, 2),
    )


def _engine_full(w: mw.Workload, exact: bool = True):
    return lambda: w.ex.check_margin(exact=exact)


def _numpy_full(w: mw.Workload):
    return lambda: mw.numpy_margin_check(w.cols)


def _stream(w: mw.Workload):
    return lambda: mw.stream_sum(w.stream)


def test_stream_read_24_bytes_per_position(run, benchmark, workload, timings):
    """Compiled streaming read of 3 int64 per position on all threads: the bandwidth floor."""
    w = workload
    total, best = run(_stream(w))
    assert total == mw.expected_stream_sum(w.stream)
    timings["stream"] = best
    _common_info(benchmark, w)
    benchmark.extra_info.update(bytes_read=int(w.stream.nbytes), gb_per_s=round(w.stream.nbytes / best / 1e9, 2),
                                ns_per_position=round(best / w.ex.position_count * 1e9, 3))


def test_numpy_margin_check(run, benchmark, workload, timings):
    """The same full check in vectorized numpy (float64) on the engine's exact columns."""
    w = workload
    result, best = run(_numpy_full(w))
    timings["numpy"] = best
    engine = w.ex.check_margin(exact=True)
    cmp = mw.assert_numpy_agrees(engine, result)
    _common_info(benchmark, w)
    benchmark.extra_info.update(cmp)
    benchmark.extra_info["ns_per_position"] = round(best / w.ex.position_count * 1e9, 3)
    w.ex.check_invariants()


@pytest.mark.parametrize("parallel", [False, True], ids=["numba-1-thread", "numba-prange"])
def test_numba_margin_check(run, benchmark, workload, timings, parallel):
    """The peer a quant would write: the same check as a Numba loop over the account-sorted
    columns (bench/numba_peer.py), timed next to the engine's default (float) check. Without
    numba it is skipped with the reason; DELEVERAGE_REQUIRE_NUMBA=1 (CI) makes that a failure."""
    if not numba_peer.available():
        if numba_peer.REQUIRED:
            pytest.fail("DELEVERAGE_REQUIRE_NUMBA is set but " + numba_peer.MISSING, pytrace=False)
        pytest.skip(numba_peer.MISSING)
    w = workload
    peer = numba_peer.NumbaCheck(w.cols, parallel=parallel)
    result, best = run(peer)
    cmp = mw.assert_numpy_agrees(w.ex.check_margin(exact=True), result)  # the same numbers as the engine
    t_engine = timings.get_or_measure("engine_float", _engine_full(w, False))
    _common_info(benchmark, w)
    benchmark.extra_info.update(cmp)
    benchmark.extra_info.update(threads=numba_peer.threads() if parallel else 1,
                                numba_over_engine_default=round(best / t_engine, 3),
                                ns_per_position=round(best / w.ex.position_count * 1e9, 3))


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "float"])
def test_engine_check_margin(run, benchmark, workload, timings, exact):
    """The engine's full margin check, every account revalued (``ex.check_margin()``)."""
    w = workload
    report, best = run(_engine_full(w, exact))
    assert len(report.account) == w.ex.account_count
    w.ex.check_invariants()
    timings[f"engine_{'exact' if exact else 'float'}"] = best
    t_numpy = timings.get_or_measure("numpy", _numpy_full(w))
    t_stream = timings.get_or_measure("stream", _stream(w))
    ratios = {
        "numpy_over_engine": round(t_numpy / best, 3),
        "engine_over_stream": round(best / t_stream, 3),
    }
    _common_info(benchmark, w)
    benchmark.extra_info.update(ratios)
    benchmark.extra_info["ns_per_position"] = round(best / w.ex.position_count * 1e9, 3)
    # same numbers as numpy on this book (cheap compared to building it)
    if exact:
        mw.assert_numpy_agrees(report, mw.numpy_margin_check(w.cols))
    else:  # the default report is converted in the compiled pass: about the exact check's cost
        ratios["default_over_exact"] = round(best / timings.get_or_measure("engine_exact", _engine_full(w, True)), 3)
        benchmark.extra_info["default_over_exact"] = ratios["default_over_exact"]
        if ENFORCE:
            assert ratios["default_over_exact"] <= mw.TARGET_DEFAULT_OVER_EXACT, ratios
    if ENFORCE:
        assert ratios["numpy_over_engine"] >= mw.TARGET_NUMPY_OVER_ENGINE, ratios
        assert ratios["engine_over_stream"] <= mw.TARGET_ENGINE_OVER_STREAM, ratios


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "float"])
def test_engine_check_margin_into_earlier_report(run, benchmark, workload, timings, exact):
    """``ex.check_margin(out=report)``: the full check written into an earlier report's arrays
    (a loop of checks allocates nothing per call); next to the default call."""
    w = workload
    report = w.ex.check_margin(exact=exact)
    again, best = run(lambda: w.ex.check_margin(exact=exact, out=report))
    assert again is report
    fresh = w.ex.check_margin(exact=exact)
    assert np.array_equal(report.equity, fresh.equity) and np.array_equal(report.liquidatable, fresh.liquidatable)
    t_default = timings.get_or_measure(f"engine_{'exact' if exact else 'float'}", _engine_full(w, exact))
    t_exact = timings.get_or_measure("engine_exact", _engine_full(w, True))
    _common_info(benchmark, w)
    benchmark.extra_info.update(out_over_new_report=round(best / t_default, 3), over_exact=round(best / t_exact, 3))


def test_engine_incremental_one_market(run, benchmark, workload, timings):
    """One of the markets moves: ``set_marks([m], [p]); check_margin(markets=[m])``.

    The mark alternates between the original price and +1% so every call revalues."""
    w = workload
    move = mw.IncrementalMove(w.ex, w.incremental_market)
    try:
        report, best = run(move)
        mw.assert_incremental_matches_full(w.ex, report)
    finally:
        move.restore()
    w.ex.check_invariants()
    t_full = timings.get_or_measure("engine_exact", _engine_full(w, True))
    share = w.incremental_positions / max(1, w.ex.position_count)
    _common_info(benchmark, w)
    benchmark.extra_info.update(
        market=w.incremental_market,
        market_positions=w.incremental_positions,
        market_share_of_positions=round(share, 5),
        reported_accounts=len(report.account),
        incremental_over_full=round(best / t_full, 5),
        cost_vs_share=round(best / t_full / share, 2) if share else None,
        ns_per_moved_position=round(best / max(1, w.incremental_positions) * 1e9, 1),
    )


def test_memory_per_position(workload, record_property):
    """Engine bytes per position (columns, index, per-market lists), target <= 40."""
    w = workload
    bpp = w.bytes_per_position
    record_property("bytes_per_position", bpp)
    assert bpp > 0
    if ENFORCE:
        assert bpp <= mw.TARGET_BYTES_PER_POSITION, bpp


def test_numpy_columns_are_the_engine_book(workload):
    """Sanity: the numpy columns really are the engine's book."""
    c = workload.cols
    assert len(c.size) == workload.ex.position_count
    assert len(c.balance) == workload.ex.account_count
    assert np.all(c.size != 0)
    net = np.zeros(len(c.mark), dtype=np.int64)
    np.add.at(net, c.market, c.size)
    assert not net.any()
    assert all(workload.ex.net_size(m, exact=True) == 0 for m in range(len(c.mark)))
