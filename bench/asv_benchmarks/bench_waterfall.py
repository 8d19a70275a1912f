"""asv: the waterfall step (crash and scaling, lrvx comparison, one ADL event over 1M).

Sized by the same environment variables as the pytest benchmarks (bench/waterfall_workload.py):
``DELEVERAGE_BENCH_POSITIONS`` (crash book, 1_000_000; the scaling parameter is a tenth,
once and four times it; lrvx a fifth; the ADL candidates as many), and the other
``DELEVERAGE_BENCH_*`` knobs documented there.

``liquidate`` mutates the exchange, so every timed sample gets a fresh book: the asv runner
re-runs ``setup`` before each timed call when a benchmark has setup hooks, and ``number = 1``
with ``warmup_time = 0`` makes sure no call runs on a used book. Building is never timed.
lrvx is required for ``LrvxCrash``: without it its setup raises (the benchmark fails, it is
not skipped).
"""

from __future__ import annotations

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import waterfall_workload as ww  # noqa: E402  (imports lrvx first, see there)

_SPEC = ww.CrashSpec.from_env()
_ADL = ww.AdlSpec.from_env()


class _Fresh:
    """Common settings: one call per sample on a freshly built state."""

    timeout = 1800.0
    number = 1
    warmup_time = 0.0
    repeat = (2, 5, 300.0)
    rounds = 1


class CrashStep(_Fresh):
    """The whole step after the crash (~30% of the accounts liquidated, ADL running), for
    books of a tenth, once and four times ``DELEVERAGE_BENCH_POSITIONS`` positions."""

    params = [ww.scaling_sizes(_SPEC)]
    param_names = ["positions"]

    def setup(self, positions):
        self.spec = _SPEC.scaled(positions)
        self.ex = ww.build_crash(self.spec)

    def teardown(self, positions):
        self.ex = None

    def time_liquidate(self, positions):
        ww.run_crash(self.ex, self.spec)

    def track_ns_per_position(self, positions):
        best = ww.timed_fresh(lambda: ww.build_crash(self.spec), lambda e: ww.run_crash(e, self.spec), 2)[0]
        return best / self.spec.positions * 1e9

    track_ns_per_position.unit = "ns"

    def track_liquidated_share(self, positions):
        r = ww.run_crash(self.ex, self.spec)
        ww.check_after_step(self.ex, r)
        return r.totals.liquidated_accounts / self.ex.account_count

    track_liquidated_share.unit = "ratio"

    def track_adl_closes(self, positions):
        r = ww.run_crash(self.ex, self.spec)
        return r.totals.adl_closes

    track_adl_closes.unit = "closes"


class LrvxCrash(_Fresh):
    """The same generated book and crash through deleverage and through lrvx
    (``LiquidationEngine.on_marks``), at a hundredth, a twentieth and a fifth of the crash size
    (10k, 50k and 200k positions by default; ``bench/report_waterfall.py --lrvx-sizes`` goes
    to 1M)."""

    params = [[max(100, _SPEC.positions // 100), max(100, _SPEC.positions // 20), ww.lrvx_positions(_SPEC)]]
    param_names = ["positions"]

    def setup(self, positions):
        ww.require_lrvx()  # raises: CI installs lrvx, a missing one must fail loudly
        self.spec = _SPEC.scaled(positions)
        self.inp = ww.lrvx_crash_inputs(self.spec)
        self.ex = ww.build_crash(self.spec)
        self.state = ww.build_lrvx(self.inp)

    def teardown(self, positions):
        self.ex = self.state = None

    def time_deleverage(self, positions):
        ww.run_crash(self.ex, self.spec)

    def time_lrvx(self, positions):
        ww.run_lrvx(self.state, self.inp)

    def track_lrvx_over_deleverage(self, positions):
        dlv = ww.timed_fresh(lambda: ww.build_crash(self.spec), lambda e: ww.run_crash(e, self.spec), 3)[0]
        lrv = ww.timed_fresh(lambda: ww.build_lrvx(self.inp), lambda s: ww.run_lrvx(s, self.inp), 3)[0]
        return lrv / dlv

    track_lrvx_over_deleverage.unit = "ratio"


class LrvxEqualWork(_Fresh):
    """The lrvx comparison with a fund that covers every deficit: neither engine reaches ADL,
    so both do the same work (``track_lrvx_over_deleverage`` raises if they did not)."""

    params = [[name for name, _, _ in ww.EQUAL_WORK_CRASHES],
              [max(100, _SPEC.positions // 100), ww.lrvx_positions(_SPEC)]]
    param_names = ["crash", "positions"]

    def setup(self, crash, positions):
        ww.require_lrvx()
        k, shock = {name: (k, shock) for name, k, shock in ww.EQUAL_WORK_CRASHES}[crash]
        self.spec = ww.equal_work_spec(_SPEC.scaled(positions), k, shock)
        self.inp = ww.lrvx_crash_inputs(self.spec)
        self.ex = ww.build_crash(self.spec)
        self.state = ww.build_lrvx(self.inp)

    def teardown(self, crash, positions):
        self.ex = self.state = None

    def time_deleverage(self, crash, positions):
        ww.run_crash(self.ex, self.spec)

    def time_lrvx(self, crash, positions):
        ww.run_lrvx(self.state, self.inp)

    def track_lrvx_over_deleverage(self, crash, positions):
        dlv = ww.timed_fresh(lambda: ww.build_crash(self.spec), lambda e: ww.run_crash(e, self.spec), 3)
        lrv = ww.timed_fresh(lambda: ww.build_lrvx(self.inp), lambda s: ww.run_lrvx(s, self.inp), 3)
        mismatch = ww.work_mismatch(ww.deleverage_work(dlv[3]), ww.lrvx_work(lrv[2], lrv[3]))
        if mismatch is not None:
            raise AssertionError(f"not the same work: {mismatch}")
        return lrv[0] / dlv[0]

    track_lrvx_over_deleverage.unit = "ratio"


class AdlEvent(_Fresh):
    """One bankrupt long deleveraged against 1,000 of 1M one-unit shorts, empty fund: the
    whole step (it also revalues the moved market, re-sorting the market's account list that
    the load left unsorted, and scans every account). Target <= 2 ms."""

    def setup(self):
        self.ex = ww.build_adl_book(_ADL)

    def teardown(self):
        self.ex = None

    def time_step(self):
        ww.run_adl(self.ex, _ADL)

    def track_step_minus_check_margin_ms(self):
        step = ww.timed_fresh(lambda: ww.build_adl_book(_ADL), lambda e: ww.run_adl(e, _ADL), 3)[0]
        self.ex.check_margin()
        check = ww.best_of(lambda: self.ex.check_margin(), 5)
        return (step - check) * 1e3

    track_step_minus_check_margin_ms.unit = "ms"


class AdlEventPresorted(_Fresh):
    """The same step on a book whose market account list was sorted beforehand."""

    def setup(self):
        self.ex = ww.build_adl_book(_ADL, presort=True)

    def teardown(self):
        self.ex = None

    def time_step(self):
        ww.run_adl(self.ex, _ADL)


class AdlBookMargin:
    """Margin valuation alone on the ADL book (neither call changes the book beyond the
    mark, so one book serves every sample): ``check_margin()`` (every account, all cores),
    and the step's own kind of revaluation, the mark moving (99 <-> 100) then
    ``check_margin(markets=[0])`` over the market's 1M positions."""

    timeout = 900.0
    repeat = (3, 10, 60.0)

    def setup(self):
        self.ex = ww.build_adl_book(_ADL)
        self.ex.check_margin()
        self.flip = ww.MarkFlip(self.ex, _ADL.new_mark, _ADL.mark)

    def teardown(self):
        self.ex.check_invariants()

    def time_check_margin(self):
        self.ex.check_margin()

    def time_incremental_revaluation(self):
        self.flip()


import online_workload as ow  # noqa: E402


class OnlineLiquidation:
    """One account liquidated with ADL against <= 10 counterparties (``liquidate(accounts=[a])``,
    kept queue fresh) on the one-market book of ``DELEVERAGE_BENCH_ONLINE_POSITIONS`` (default
    ``DELEVERAGE_BENCH_POSITIONS``) positions, and the whole-book step with nothing to
    liquidate right after a mark move on the same book (bench/online_workload.py)."""

    timeout = 1800.0
    number = 1
    warmup_time = 0.0
    repeat = (20, 200, 120.0)

    def setup_cache(self):
        return None

    def setup(self, *args):
        self.spec = ow.OnlineSpec.one_market()
        self.ex = ow.build(self.spec)
        self.victims = ow.Victims(self.ex)
        ow.liquidate_one(self.ex, self.victims)  # the queue is built
        self.victim = self.victims.arm()
        self.flip = 0

    def time_one_account_fresh_queue(self, *args):
        self.ex.liquidate(executor=ow.EXECUTOR, accounts=[self.victim])

    def time_whole_step_after_move(self, *args):
        self.flip ^= 1
        self.ex.set_marks([0], [(ow.PRICE + self.flip) * ow.units_per_tick(self.ex)], exact=True)
        self.ex.liquidate(executor=ow.EXECUTOR)

    def track_step_over_one_account(self, *args):
        s = ow.measure(self.ex, 200, 3).summary()
        return s["step_over_fresh_p50"]

    track_step_over_one_account.unit = "ratio"

    def track_first_after_move_over_step(self, *args):
        s = ow.measure(self.ex, 50, 3).summary()
        return s["first_over_step"]

    track_first_after_move_over_step.unit = "ratio"
