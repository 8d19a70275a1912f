"""Waterfall benchmarks (pytest-benchmark): the crash step, its scaling, lrvx, one ADL event.

Full size (crash at 1M positions; scaling 100k / 1M / 4M; lrvx at 200k; ADL over 1M)::

    pytest bench/test_waterfall.py --benchmark-columns=min,median,max,rounds

Smoke run (CI installs lrvx and sets ``DELEVERAGE_REQUIRE_LRVX=1``, so there the comparison
fails without it; elsewhere the two lrvx benchmarks are skipped, with the reason, when lrvx is
not installed)::

    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench/test_waterfall.py --benchmark-disable

``liquidate`` mutates the exchange, so every round runs on a freshly built book (built in
pytest-benchmark's untimed ``setup``). Rounds: ``DELEVERAGE_BENCH_WATERFALL_ROUNDS`` (default
5; every round builds a book). Each benchmark ends with ``ex.check_invariants()``, no
bankrupt or liquidatable account left, ADL having run, no bad debt. ``extra_info`` holds
``ns_per_position``, ``liquidated_share``, ``adl_closes``, the ratios
(``per_position_over_smallest``, ``lrvx_over_deleverage``,
``adl_step_minus_check_margin_ms``) and whether the target is met;
``DELEVERAGE_BENCH_ENFORCE=1`` asserts the targets (full size only makes sense).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import pytest
import waterfall_workload as ww
from conftest import ENFORCE

ROUNDS = max(1, ww._env_int("DELEVERAGE_BENCH_WATERFALL_ROUNDS", 5))

SPEC = ww.CrashSpec.from_env()
SCALES = ww.scaling_sizes(SPEC)
ADL = ww.AdlSpec.from_env()


@pytest.fixture
def run_fresh(benchmark):
    """``run_fresh(build, call) -> (state, result, best_seconds)``: time ``call(state)`` for
    ROUNDS rounds, each on ``state = build()`` made in the untimed setup; once when
    benchmarks are disabled (smoke runs). Returns the last state and result."""

    def _run(build: Callable[[], Any], call: Callable[[Any], Any], rounds: int = ROUNDS):
        holder: dict[str, Any] = {}

        def setup():
            holder.clear()  # free the previous book before building the next
            holder["state"] = build()
            return (holder["state"],), {}

        def target(state):
            holder["result"] = call(state)
            return holder["result"]

        t = time.perf_counter()
        benchmark.pedantic(target, setup=setup, rounds=1 if benchmark.disabled else rounds, iterations=1)
        best = time.perf_counter() - t if benchmark.disabled else float(benchmark.stats.stats.min)
        return holder["state"], holder["result"], best

    return _run


def _shares_info(benchmark, spec: ww.CrashSpec, result) -> None:
    t = result.totals
    benchmark.extra_info.update(
        book=spec.label(),
        positions=spec.positions,
        accounts=spec.accounts + 1,
        liquidated_accounts=t.liquidated_accounts,
        liquidated_share=round(t.liquidated_accounts / (spec.accounts + 1), 4),
        adl_closes=t.adl_closes,
        fund_used=t.fund_used,
        haircut_total=t.haircut_total,
        events=len(result.events),
    )


@pytest.mark.benchmark(group="waterfall-crash")
@pytest.mark.parametrize("positions", SCALES, ids=[f"{p:_}-positions" for p in SCALES])
def test_crash_step(run_fresh, benchmark, timings, positions):
    """The whole step after a crash (~25% liquidatable, ~30% liquidated with the cascade,
    ADL running): ``ex.liquidate(MarketClose(0, 50 bps), "close", "queue")``. Target < 1 s at
    1M positions; ns/position about constant over 100k, 1M, 4M."""
    spec = SPEC.scaled(positions)
    ex, result, best = run_fresh(lambda: ww.build_crash(spec), lambda e: ww.run_crash(e, spec))
    ww.check_after_step(ex, result)
    del ex
    ns = best / spec.positions * 1e9
    timings[f"crash_{positions}"] = best
    _shares_info(benchmark, spec, result)
    benchmark.extra_info["ns_per_position"] = round(ns, 2)
    smallest = SCALES[0]
    if f"crash_{smallest}" in timings and positions != smallest:
        ratio = ns / (timings[f"crash_{smallest}"] / smallest * 1e9)
        benchmark.extra_info["per_position_over_smallest"] = round(ratio, 3)
        benchmark.extra_info["scaling_target"] = f"<= {ww.TARGET_SCALING_RATIO:g}"
        if ENFORCE and positions == SCALES[-1]:
            assert ratio <= ww.TARGET_SCALING_RATIO, ratio
    if positions == SPEC.positions:
        benchmark.extra_info["target_seconds"] = ww.TARGET_CRASH_SECONDS_1M
        benchmark.extra_info["meets_target"] = best < ww.TARGET_CRASH_SECONDS_1M
        if ENFORCE and positions >= 1_000_000:
            assert best < ww.TARGET_CRASH_SECONDS_1M, best


LRVX_SPEC = SPEC.scaled(ww.lrvx_positions(SPEC))
REQUIRE_LRVX = os.environ.get("DELEVERAGE_REQUIRE_LRVX", "") not in ("", "0", "false", "no")


def _need_lrvx() -> None:
    """The lrvx comparison needs lrvx (the `bench` extra). Absent, it is skipped with the
    reason; with DELEVERAGE_REQUIRE_LRVX=1 (CI) a missing lrvx fails instead."""
    if ww.lrvx_importable():
        return
    message = ww.LRVX_MISSING + f" (import error: {ww._LRVX_IMPORT_ERROR})"
    if REQUIRE_LRVX:
        pytest.fail("DELEVERAGE_REQUIRE_LRVX is set but " + message, pytrace=False)
    pytest.skip(message)


@pytest.mark.benchmark(group="waterfall-vs-lrvx")
def test_lrvx_crash_deleverage(run_fresh, benchmark, timings):
    """deleverage's step on the lrvx comparison book (200k positions by default)."""
    _need_lrvx()
    spec = LRVX_SPEC
    ex, result, best = run_fresh(lambda: ww.build_crash(spec), lambda e: ww.run_crash(e, spec))
    ww.check_after_step(ex, result)
    timings["lrvx_book_deleverage"] = best
    _shares_info(benchmark, spec, result)
    benchmark.extra_info["ns_per_position"] = round(best / spec.positions * 1e9, 2)


@pytest.mark.benchmark(group="waterfall-vs-lrvx")
def test_lrvx_crash_lrvx(run_fresh, benchmark, timings):
    """The same book and crash through lrvx (``LiquidationEngine.on_marks`` with every
    shocked mark, via bench/lrvx_adapter.py). Skipped without lrvx (failed in CI)."""
    _need_lrvx()
    spec = LRVX_SPEC
    inp = ww.lrvx_crash_inputs(spec)
    state, out, best = run_fresh(lambda: ww.build_lrvx(inp), lambda st: ww.run_lrvx(st, inp))
    summary = ww.lrvx_summary(state, out)
    assert summary["liquidated_accounts"] > 0, summary
    timings["lrvx_book_lrvx"] = best
    if "lrvx_book_deleverage" not in timings:  # -k ran this one alone: measure the other side here
        timings["lrvx_book_deleverage"] = ww.timed_fresh(lambda: ww.build_crash(spec), lambda e: ww.run_crash(e, spec), 3)[0]
    t_dlv = timings["lrvx_book_deleverage"]
    benchmark.extra_info.update({f"lrvx_{k}": v for k, v in summary.items()})
    benchmark.extra_info.update(
        book=spec.label(),
        positions=spec.positions,
        deleverage_seconds=round(t_dlv, 6),
        lrvx_over_deleverage=round(best / t_dlv, 3),
        lrvx_build_seconds=round(state.build_seconds, 3),
    )


EQUAL_WORK = {name: ww.equal_work_spec(LRVX_SPEC, k, shock) for name, k, shock in ww.EQUAL_WORK_CRASHES}


@pytest.mark.benchmark(group="waterfall-vs-lrvx-equal-work")
@pytest.mark.parametrize("crash", list(EQUAL_WORK))
def test_lrvx_equal_work_deleverage(run_fresh, benchmark, timings, crash):
    """deleverage's step on the lrvx comparison book with a fund that covers every deficit
    (no ADL in either engine, so both do the same work; checked in the lrvx benchmark)."""
    _need_lrvx()
    spec = EQUAL_WORK[crash]
    ex, result, best = run_fresh(lambda: ww.build_crash(spec), lambda e: ww.run_crash(e, spec))
    ww.check_after_step(ex, result, expect_adl=False)
    timings[f"equal_work_deleverage {crash}"] = (best, ww.deleverage_work(result))
    benchmark.extra_info.update(book=spec.label(), positions=spec.positions)


@pytest.mark.benchmark(group="waterfall-vs-lrvx-equal-work")
@pytest.mark.parametrize("crash", list(EQUAL_WORK))
def test_lrvx_equal_work_lrvx(run_fresh, benchmark, timings, crash):
    """The same crash through lrvx; fails if the two engines did not do the same work (the
    same liquidated accounts, positions closed and fund used, no ADL). Target: lrvx slower."""
    _need_lrvx()
    spec = EQUAL_WORK[crash]
    inp = ww.lrvx_crash_inputs(spec)
    state, out, best = run_fresh(lambda: ww.build_lrvx(inp), lambda st: ww.run_lrvx(st, inp))
    key = f"equal_work_deleverage {crash}"
    if key not in timings:  # -k ran this one alone: run the other side here
        ex = ww.build_crash(spec)
        t = time.perf_counter()
        result = ww.run_crash(ex, spec)
        timings[key] = (time.perf_counter() - t, ww.deleverage_work(result))
    t_dlv, dlv_work = timings[key]
    mismatch = ww.work_mismatch(dlv_work, ww.lrvx_work(state, out))
    assert mismatch is None, mismatch
    ratio = best / t_dlv
    benchmark.extra_info.update(book=spec.label(), positions=spec.positions, deleverage_seconds=round(t_dlv, 6),
                                lrvx_over_deleverage=round(ratio, 3), liquidated_accounts=len(dlv_work.accounts),
                                positions_closed=dlv_work.positions_closed, meets_target=ratio > 1.0)
    if ENFORCE:
        assert ratio > 1.0, ratio


def test_equal_work_check_sees_different_work():
    """The equal-work check is not vacuous: with the issue's small fund ADL runs in both
    engines and the work differs, and a dropped account or position is caught."""
    _need_lrvx()
    spec = LRVX_SPEC
    inp = ww.lrvx_crash_inputs(spec)
    state = ww.build_lrvx(inp)
    lrv = ww.lrvx_work(state, ww.run_lrvx(state, inp))
    dlv = ww.deleverage_work(ww.run_crash(ww.build_crash(spec), spec))
    assert ww.work_mismatch(dlv, lrv) is not None
    same = ww.equal_work_spec(spec, 1, -0.5)
    inp = ww.lrvx_crash_inputs(same)
    state = ww.build_lrvx(inp)
    lrv = ww.lrvx_work(state, ww.run_lrvx(state, inp))
    dlv = ww.deleverage_work(ww.run_crash(ww.build_crash(same), same))
    assert ww.work_mismatch(dlv, lrv) is None
    one_less = sorted(dlv.accounts)[1:]
    assert "accounts differ" in ww.work_mismatch(dlv, dataclasses.replace(lrv, accounts=frozenset(one_less)))
    assert "positions closed" in ww.work_mismatch(dlv, dataclasses.replace(lrv, positions_closed=lrv.positions_closed - 1))
    assert "fund used" in ww.work_mismatch(dlv, dataclasses.replace(lrv, fund_used=lrv.fund_used * (1 + 1e-5)))


@pytest.mark.benchmark(group="waterfall-adl-event")
def test_adl_event(run_fresh, benchmark, timings):
    """One bankrupt long deleveraged against 1,000 of 1M shorts (empty fund): the whole
    step, which also revalues the moved market and scans every account. Target <= 2 ms."""
    ex, result, best = run_fresh(lambda: ww.build_adl_book(ADL), lambda e: ww.run_adl(e, ADL))
    ww.check_adl_step(ex, result, ADL)
    del ex
    timings["adl_step"] = best
    benchmark.extra_info.update(
        book=ADL.label(), candidates=ADL.candidates, counterparties=ADL.counterparties,
        adl_closes=result.totals.adl_closes, target_seconds=ww.TARGET_ADL_EVENT_SECONDS,
        meets_target=best <= ww.TARGET_ADL_EVENT_SECONDS,
    )
    if "adl_check_margin" in timings:
        benchmark.extra_info["adl_step_minus_check_margin_ms"] = round((best - timings["adl_check_margin"]) * 1e3, 3)
    if ENFORCE and ADL.candidates >= 1_000_000:
        assert best <= ww.TARGET_ADL_EVENT_SECONDS, best


@pytest.mark.benchmark(group="waterfall-adl-event")
def test_adl_event_presorted(run_fresh, benchmark, timings):
    """The same step on a book whose market account list was sorted beforehand (one
    unchanged-mark incremental check before the move), so the step's revaluation does not
    re-sort the 1M-entry list that load_positions(counterparty=...) left unsorted."""
    ex, result, best = run_fresh(lambda: ww.build_adl_book(ADL, presort=True), lambda e: ww.run_adl(e, ADL))
    ww.check_adl_step(ex, result, ADL)
    del ex
    timings["adl_step_presorted"] = best
    benchmark.extra_info.update(candidates=ADL.candidates, counterparties=ADL.counterparties,
                                target_seconds=ww.TARGET_ADL_EVENT_SECONDS,
                                meets_target=best <= ww.TARGET_ADL_EVENT_SECONDS)


@pytest.fixture(scope="module")
def adl_book():
    """The ADL book at the moved mark, revalued once (check_margin does not mutate it)."""
    ex = ww.build_adl_book(ADL)
    ex.check_margin(exact=True)
    yield ex
    ex.check_invariants()


@pytest.mark.benchmark(group="waterfall-adl-event")
def test_adl_book_check_margin(benchmark, adl_book, timings):
    """``ex.check_margin()`` alone on the ADL book (every account revalued, all cores): the
    part of the step that any margin check pays; the difference is the waterfall's own."""
    rounds = 1 if benchmark.disabled else max(ROUNDS, 10)
    t = time.perf_counter()
    report = benchmark.pedantic(lambda: adl_book.check_margin(), rounds=rounds, iterations=1,
                                warmup_rounds=0 if benchmark.disabled else 1)
    best = time.perf_counter() - t if benchmark.disabled else float(benchmark.stats.stats.min)
    assert int(report.bankrupt.sum()) == 1 and int(report.liquidatable.sum()) == 1
    timings["adl_check_margin"] = best
    benchmark.extra_info.update(accounts=adl_book.account_count, positions=adl_book.position_count)
    if "adl_step" in timings:
        benchmark.extra_info["adl_step_minus_check_margin_ms"] = round((timings["adl_step"] - best) * 1e3, 3)


@pytest.mark.benchmark(group="waterfall-adl-event")
def test_adl_book_incremental_revaluation(benchmark, adl_book):
    """The revaluation the step does, alone: the mark moves (99 <-> 100) and
    ``check_margin(markets=[0])`` revalues the 1M positions of that market (list sorted)."""
    flip = ww.MarkFlip(adl_book, ADL.new_mark, ADL.mark)
    rounds = 1 if benchmark.disabled else max(ROUNDS, 10)
    try:
        benchmark.pedantic(flip, rounds=rounds, iterations=1, warmup_rounds=0 if benchmark.disabled else 1)
    finally:
        if flip.i == 1:  # back to the moved mark
            flip()
    benchmark.extra_info.update(positions=adl_book.position_count)
