"""The full margin check's float report (converted in the compiled pass) and ``out=``
(writing a check into an earlier report's arrays)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deleverage import Exchange
from deleverage.books import sample_exchange
from deleverage.errors import InvalidInput


def reference_float_report(exact) -> dict[str, np.ndarray]:
    """The float columns from the exact report, in numpy: value / 10**d (one correctly
    rounded division of the int64 converted to float64) and maintenance / equity."""
    d = 10.0 ** EXCHANGE_DECIMALS
    e, mm = exact.equity, exact.maintenance
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(e > 0, mm.astype(np.float64) / e.astype(np.float64), np.where((mm > 0) | (e < 0), np.inf, 0.0))
    return {"equity": e.astype(np.float64) / d, "maintenance": mm.astype(np.float64) / d,
            "initial": exact.initial.astype(np.float64) / d, "margin_ratio": ratio}


EXCHANGE_DECIMALS = 6


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), shock=st.floats(-0.6, 0.6), leverage=st.sampled_from([2.0, 10.0, 40.0]))
def test_float_report_equals_the_exact_one_converted(seed, shock, leverage) -> None:
    ex = sample_exchange(3_000, 300, 5, seed=seed, leverage=leverage, threads=2)
    ex.deposit(999_999, 0.0)  # an empty account: ratio 0
    ex.set_marks(list(range(5)), [round(float(p) * (1 + shock), 2) or 0.01 for p in ex.marks()])
    exact = ex.check_margin(exact=True)
    floats = ex.check_margin()
    want = reference_float_report(exact)
    for col, values in want.items():
        assert _same(getattr(floats, col), values), col
    for col in ("account", "liquidatable", "bankrupt"):
        assert np.array_equal(getattr(floats, col), getattr(exact, col))
    assert floats.margin_ratio[-1] == 0.0  # the empty account


@pytest.mark.parametrize("exact", [False, True])
def test_out_overwrites_an_earlier_report_in_place(exact) -> None:
    ex = sample_exchange(5_000, 500, 5, seed=1, threads=2)
    report = ex.check_margin(exact=exact)
    buffers = [report.equity, report.maintenance, report.initial, report.liquidatable, report.bankrupt]
    ex.set_marks([0, 1], [round(float(p) * 0.7, 2) for p in ex.marks()[:2]])
    again = ex.check_margin(exact=exact, out=report)
    fresh = ex.check_margin(exact=exact)
    assert again is report
    assert all(x is y for x, y in zip(buffers, [report.equity, report.maintenance, report.initial,
                                               report.liquidatable, report.bankrupt]))
    for col in ("account", "equity", "maintenance", "initial", "liquidatable", "bankrupt", "margin_ratio"):
        assert _same(getattr(report, col), getattr(fresh, col)), col
    assert report.liquidatable.any()  # the move changed something that had to be rewritten


def test_bad_out_is_refused_and_changes_nothing() -> None:
    ex = sample_exchange(2_000, 200, 3, seed=2)
    floats, exact = ex.check_margin(), ex.check_margin(exact=True)
    before = floats.equity.copy()
    ex.set_marks([0], [round(float(ex.marks()[0]) * 0.5, 2)])
    with pytest.raises(InvalidInput, match="out: expected a MarginReport"):
        ex.check_margin(out={"equity": before})
    with pytest.raises(InvalidInput, match=r"out: the report has exact=True, the call asks for exact=False"):
        ex.check_margin(out=exact)
    with pytest.raises(InvalidInput, match=r"out: only a full check"):
        ex.check_margin([0], out=floats)
    ro = ex.check_margin()
    ro.equity.flags.writeable = False
    with pytest.raises(InvalidInput, match=r"out\.equity: the array is read-only"):
        ex.check_margin(out=ro)
    wrong = ex.check_margin()
    object.__setattr__(wrong, "maintenance", wrong.maintenance.astype(np.float32))
    with pytest.raises(InvalidInput, match=r"out\.maintenance: expected a numpy array of dtype float64, got float32"):
        ex.check_margin(out=wrong)
    assert _same(floats.equity, before)  # nothing was written
    ex.deposit(123_456, 10.0)  # one more account
    with pytest.raises(InvalidInput, match=r"out: the report has 201 accounts, the exchange has 202"):
        ex.check_margin(out=floats)
    assert _same(floats.equity, before)


def test_out_on_an_empty_exchange() -> None:
    ex = Exchange()
    r = ex.check_margin()
    assert len(r) == 0 and ex.check_margin(out=r) is r


@pytest.mark.parametrize("exact", [False, True])
def test_new_reports_reuse_freed_memory_but_never_a_held_report(exact) -> None:
    """A full report's columns come from a pool of freed report memory (blocks of 64 KiB and
    up, cpp/bindings/report_pool.hpp): a report still held is never written by a later
    check, and a report built on reused memory holds the new values."""
    ex = sample_exchange(140_000, 70_000, 5, seed=3, threads=2)
    cols = ("equity", "maintenance", "initial", "liquidatable", "bankrupt")
    held = ex.check_margin(exact=exact)
    kept = {c: getattr(held, c).copy() for c in cols}
    ex.check_margin(exact=exact)  # dropped at once: its blocks go back to the pool
    ex.set_marks([0, 1], [round(float(p) * 0.8, 2) for p in ex.marks()[:2]])
    after = ex.check_margin(exact=exact)  # on the dropped report's blocks
    again = ex.check_margin(exact=exact)
    for c in cols:
        assert _same(getattr(held, c), kept[c]), c
        assert _same(getattr(after, c), getattr(again, c)), c
        assert not np.shares_memory(getattr(after, c), getattr(again, c)), c
        assert not np.shares_memory(getattr(after, c), getattr(held, c)), c
    assert not np.array_equal(after.equity, held.equity)  # the marks moved
