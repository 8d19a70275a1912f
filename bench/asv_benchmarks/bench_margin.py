"""asv: the margin check (engine full and incremental, numpy baseline, the Numba peer,
streaming read).

Sized by the same environment variables as the pytest benchmarks, with smaller defaults:
``DELEVERAGE_BENCH_POSITIONS`` (1_000_000), ``DELEVERAGE_BENCH_ACCOUNTS`` (positions / 10),
``DELEVERAGE_BENCH_MARKETS`` (100). The workload code is shared with bench/margin_workload.py.
"""

from __future__ import annotations

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import margin_workload as mw  # noqa: E402
import numba_peer  # noqa: E402

_WORKLOAD: "mw.Workload | None" = None


def _workload() -> mw.Workload:
    """One book per process (asv runs each benchmark in its own process)."""
    global _WORKLOAD
    if _WORKLOAD is None:
        _WORKLOAD = mw.build_workload(mw.Sizes.from_env(positions=1_000_000, accounts=100_000, markets=100))
    return _WORKLOAD


def _sizes_label() -> str:
    return mw.Sizes.from_env(positions=1_000_000, accounts=100_000, markets=100).label()


class FullCheck:
    """Every account revalued; the numpy and streaming baselines on the same book."""

    timeout = 900.0
    rounds = 2
    repeat = (3, 10, 30.0)

    def setup(self):
        self.w = _workload()
        self.report = self.w.ex.check_margin()  # out=: written into by time_engine_check_margin_into_report

    def teardown(self):
        self.w.ex.check_invariants()

    def time_engine_check_margin_exact(self):
        self.w.ex.check_margin(exact=True)

    def time_engine_check_margin_float(self):
        self.w.ex.check_margin(exact=False)

    def time_engine_check_margin_into_report(self):
        self.w.ex.check_margin(out=self.report)

    def track_default_over_exact(self):
        exact = mw.best_of(lambda: self.w.ex.check_margin(exact=True), 5)
        return mw.best_of(lambda: self.w.ex.check_margin(), 5) / exact

    track_default_over_exact.unit = "ratio"

    def time_numpy_margin_check(self):
        mw.numpy_margin_check(self.w.cols)

    def time_stream_read_24_bytes_per_position(self):
        mw.stream_sum(self.w.stream)

    def track_bytes_per_position(self):
        return self.w.bytes_per_position

    track_bytes_per_position.unit = "bytes"

    def track_numpy_over_engine(self):
        w = self.w
        return mw.best_of(lambda: mw.numpy_margin_check(w.cols), 5) / mw.best_of(lambda: w.ex.check_margin(exact=True), 5)

    track_numpy_over_engine.unit = "ratio"

    def track_engine_over_stream(self):
        w = self.w
        return mw.best_of(lambda: w.ex.check_margin(exact=True), 5) / mw.best_of(lambda: mw.stream_sum(w.stream), 5)

    track_engine_over_stream.unit = "ratio"

    def track_numpy_flag_mismatches(self):
        w = self.w
        return mw.compare_flags(w.ex.check_margin(exact=True), mw.numpy_margin_check(w.cols))["flag_mismatches"]

    track_numpy_flag_mismatches.unit = "accounts"


class NumbaPeer:
    """The same check as a Numba loop over the account-sorted columns (bench/numba_peer.py), one
    thread and prange, against the engine's default (float) check on the same book."""

    timeout = 900.0
    rounds = 2
    repeat = (3, 10, 30.0)
    params = [False, True]
    param_names = ["parallel"]

    def setup(self, parallel):
        if not numba_peer.available():
            raise NotImplementedError(numba_peer.MISSING)  # asv skips the benchmark
        self.w = _workload()
        self.peer = numba_peer.NumbaCheck(self.w.cols, parallel=parallel)

    def time_numba_margin_check(self, parallel):
        self.peer()

    def track_numba_over_engine_default(self, parallel):
        w = self.w
        return mw.best_of(self.peer, 5) / mw.best_of(lambda: w.ex.check_margin(exact=False), 5)

    track_numba_over_engine_default.unit = "ratio"


class IncrementalCheck:
    """One of the markets moves: ``set_marks([m], [p]); check_margin(markets=[m])``."""

    timeout = 900.0
    rounds = 2
    repeat = (3, 10, 30.0)

    def setup(self):
        self.w = _workload()
        self.move = mw.IncrementalMove(self.w.ex, self.w.incremental_market)

    def teardown(self):
        self.move.restore()
        self.w.ex.check_invariants()

    def time_one_market_moves(self):
        self.move()

    def track_incremental_over_full(self):
        w = self.w
        return mw.best_of(self.move, 5) / mw.best_of(lambda: w.ex.check_margin(exact=True), 5)

    track_incremental_over_full.unit = "ratio"

    def track_moved_market_share_of_positions(self):
        return self.w.incremental_positions / self.w.ex.position_count

    track_moved_market_share_of_positions.unit = "ratio"
