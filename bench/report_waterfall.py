"""Waterfall figures with plain time.perf_counter (best of N), for the closing note.

    python bench/report_waterfall.py                     # crash 100k / 1M / 4M, lrvx 10k-1M, ADL 1M
    python bench/report_waterfall.py --positions 200000 --repeat 3 --json out.json

1. the crash step (``ex.liquidate(MarketClose(0, 50 bps), "close", "queue")`` after a -28%
   move of every market, ~30% of the accounts liquidated, ADL running) at a tenth, once and
   four times ``--positions``: best time, ns per position, the < 1 s target at 1M and the
   linearity ratio;
2. the same book and crash through deleverage and lrvx at a hundredth, a twentieth, a fifth
   and once ``--positions`` (10k, 50k, 200k, 1M; or each of ``--lrvx-sizes``), in two
   scenarios (every market -28%, market 0 only -50%): first with a fund that covers every
   deficit, where both engines do the same work (checked on every row: the same liquidated
   accounts, positions closed and fund used, no ADL), then with the issue's small fund, where
   ADL runs and the work differs; the ratio lrvx / deleverage, the counts side by side, and
   the issue's lrvx targets;
3. one ADL event over ``--adl-candidates`` (1M) candidates with 1,000 counterparties: the
   step as is, the step with the market's account list already sorted, ``check_margin()``
   alone and the incremental revaluation of the moved market alone, and the differences.

Every timed ``liquidate`` runs on a freshly built book (building is not timed); candidates
are timed round-robin (one of each per round) so that load on a shared machine hits them
alike. Defaults come from the ``DELEVERAGE_BENCH_*`` variables (bench/waterfall_workload.py).
lrvx must be installed (``pip install lrvx==0.11.0``): without it the script stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import waterfall_workload as ww  # noqa: E402  (imports lrvx before the engine starts threads)

import deleverage._core  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def engine_identity() -> str:
    """Which engine was measured: the extension's hash and the state of cpp/ in git."""
    so = deleverage._core.__file__
    with open(so, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(so)))
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "cpp"], capture_output=True, text=True).stdout.split("\n")
        dirty = [ln[3:] for ln in dirty if ln.strip()]
    except OSError:
        head, dirty = "?", []
    return (f"extension sha256 {digest} built {built}; git {head}"
            + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else " (cpp/ clean)"))


@dataclasses.dataclass
class Series:
    """Times of one candidate (seconds) plus whatever the last run reported."""

    times: list = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(self.times) if self.times else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def fresh_call(series: Series, build: Callable[[], Any], call: Callable[[Any], Any],
               after: Callable[[Any, Any], dict] | None = None) -> None:
    """One timed call on a freshly built state; ``after(state, result)`` (first time only)
    checks the result and returns the info to keep."""
    state = build()
    t = time.perf_counter()
    result = call(state)
    series.times.append(time.perf_counter() - t)
    if after is not None and not series.info:
        series.info = after(state, result)
    del state, result


def crash_section(spec: ww.CrashSpec, repeat: int, repeat_large: int, log) -> dict:
    sizes = ww.scaling_sizes(spec)
    specs = {p: spec.scaled(p) for p in sizes}
    shares = {}
    for p, s in specs.items():
        shares[p] = ww.probe_crash(s)
    series = {p: Series() for p in sizes}
    compiled = Series()
    main = specs[spec.positions]

    def after(s):
        def _after(ex, res):
            info = ww.check_after_step(ex, res)
            info["events"] = len(res.events)
            return info
        return _after

    t0 = time.perf_counter()
    for r in range(max(repeat, repeat_large)):
        for p in sizes:
            if r >= (repeat_large if p == sizes[-1] else repeat):
                continue
            s = specs[p]
            fresh_call(series[p], lambda s=s: ww.build_crash(s), lambda e, s=s: ww.run_crash(e, s), after(s))
        if r < repeat_large:  # the compiled call alone (no Python event table), informative
            ex = ww.build_crash(main)
            fn = ww.compiled_liquidate_call(ex, main)
            t = time.perf_counter()
            fn()
            compiled.times.append(time.perf_counter() - t)
            del ex, fn
        log(f"crash round {r + 1} done ({time.perf_counter() - t0:.0f} s)")

    print(f"## 1. crash step: {main.label()}")
    print(f"#  the same shock at {', '.join(f'{p:_}' for p in sizes)} positions (10 per account); best of "
          f"{repeat} ({repeat_large} at the largest), each call on a fresh book")
    print()
    print(f"| {'positions':>10} | {'accounts':>8} | {'liquidatable':>12} | {'liquidated':>16} | {'ADL closes':>10} | "
          f"{'events':>9} | {'best s':>7} | {'median s':>8} | {'ns/position':>11} | {'vs smallest':>11} |")
    print(f"|{'-' * 11}:|{'-' * 9}:|{'-' * 13}:|{'-' * 17}:|{'-' * 11}:|{'-' * 10}:|{'-' * 8}:|{'-' * 9}:|{'-' * 12}:|{'-' * 12}:|")
    base = series[sizes[0]].best / sizes[0]
    out = {}
    for p in sizes:
        s, sh, info = series[p], shares[p], series[p].info
        n_acc = sh.accounts
        liq = info["liquidated_accounts"]
        print(f"| {p:>10_} | {n_acc:>8_} | {sh.liquidatable_share:>12.1%} | {liq:>8_} ({liq / n_acc:5.1%}) | "
              f"{info['adl_closes']:>10_} | {info['events']:>9_} | {s.best:7.3f} | {s.median:8.3f} | "
              f"{s.best / p * 1e9:11.1f} | {s.best / p / base:11.2f} |")
        out[p] = {"best_s": s.best, "median_s": s.median, "times": s.times, "ns_per_position": s.best / p * 1e9,
                  "liquidatable_share": sh.liquidatable_share, "summary": info}
    big = series[sizes[-1]].best / sizes[-1] / base
    t1 = series[spec.positions].best
    print()
    print(f"| {'check':44} | {'measured':>9} | {'target':>8} | {'ok':3} |")
    print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 9}:|{'-' * 5}|")
    print(f"| {f'step at {spec.positions:_} positions (s)':44} | {t1:9.3f} | {'< 1':>8} | "
          f"{'yes' if t1 < ww.TARGET_CRASH_SECONDS_1M else 'NO':3} |")
    print(f"| {f'ns/position {sizes[-1]:_} over {sizes[0]:_}':44} | {big:9.2f} | "
          f"{f'<= {ww.TARGET_SCALING_RATIO:g}':>8} | {'yes' if big <= ww.TARGET_SCALING_RATIO else 'NO':3} |")
    print(f"| {f'ns/position {sizes[-1]:_} over {sizes[1]:_}':44} | "
          f"{series[sizes[-1]].best / sizes[-1] / (series[sizes[1]].best / sizes[1]):9.2f} | {'(info)':>8} |     |")
    # the batch-speed issue's targets: a faster step, and time growing at most ~linearly
    fast = ww.TARGET_CRASH_SECONDS_1M_FAST
    print(f"| {f'step at {spec.positions:_} positions (s), fast target':44} | {t1:9.3f} | {f'<= {fast:g}':>8} | "
          f"{'yes' if t1 <= fast else 'NO':3} |")
    growth = {}
    for (p0, p1), target in (((sizes[0], sizes[1]), ww.TARGET_GROWTH_TENFOLD),
                             ((sizes[1], sizes[2]), ww.TARGET_GROWTH_FOURFOLD)):
        g = series[p1].best / series[p0].best
        growth[f"{p0}->{p1}"] = g
        print(f"| {f'step time {p1:_} over {p0:_} (x)':44} | {g:9.2f} | {f'<= {target:g}':>8} | "
              f"{'yes' if g <= target else 'NO':3} |")
    print(f"| {'compiled call only at ' + f'{spec.positions:_}' + ' (s)':44} | {compiled.best:9.3f} | {'(info)':>8} |     |")
    print()
    return {"sizes": out, "compiled_call_best_s": compiled.best, "scaling_ratio": big, "growth": growth}


def lrvx_section(specs: list[ww.CrashSpec], repeat: int, log) -> dict:
    """Both engines on the same book and crash, for each size in ``specs``: the issue's crashes
    with the small fund (ADL runs; the engines then do different work) and the same crashes
    with a fund that covers every deficit (the engines do the same work, checked)."""
    different = _lrvx_runs(specs, repeat, log, equal=False)
    equal = _lrvx_runs(specs, repeat, log, equal=True)
    s0 = specs[0]
    print(f"## 2. deleverage vs lrvx {ww.LRVX_PIN}: {s0.markets} markets, 10 positions per account, leverage "
          f"{s0.leverage:g}, slippage {s0.slippage_bps:g} bps")
    print(f"#  the same generated book at each size (market maker 0 takes the imbalance), same slippage; best of "
          f"{repeat} (1 above 1M positions), interleaved, fresh books; lrvx timed on LiquidationEngine.on_marks(shocked "
          f"marks) only.")
    print()
    print(f"### 2a. equal work: fund {ww.EQUAL_WORK_FUND:,.0f} covers every deficit, so neither engine reaches ADL")
    print("#  'same work' is checked on every row: the same liquidated accounts, the same number of positions closed,")
    print(f"#  no ADL, and the same fund used (to a relative {ww.FUND_TOLERANCE:g}: lrvx sums float64, deleverage integers).")
    print()
    out = {"equal_work": _lrvx_table(equal, equal=True), "different_work": {}}
    print(f"### 2b. the issue's crashes: fund {s0.insurance_fund:,.0f}, ADL runs (not the same work)")
    print()
    out["different_work"] = _lrvx_table(different, equal=False)
    print("#  not the same work: lrvx closes whole positions until the account passes maintenance, has no fee,")
    print("#  ADL closes whole counterparty positions at the mark up to the deficit, and drops what is left;")
    print("#  deleverage closes every liquidated account at bankruptcy-value accounting, ADL by lots at the")
    print("#  bankruptcy price, haircuts the rest, re-checks ADL'd winners (cascade). See bench/LRVX_NOTES.md.")
    print()
    out["targets"] = _lrvx_targets(out)
    return out


def _lrvx_runs(specs: list[ww.CrashSpec], repeat: int, log, *, equal: bool) -> list:
    res = []
    for spec in specs:
        if equal:
            variants = {name: ww.equal_work_spec(spec, k, shock) for name, k, shock in ww.EQUAL_WORK_CRASHES}
        else:
            variants = {name: dataclasses.replace(spec, shocked_markets=k, shock=shock)
                        for name, k, shock in ww.EQUAL_WORK_CRASHES}
        rounds = repeat if spec.positions <= 1_000_000 else 1
        for name, s in variants.items():
            inp = ww.lrvx_crash_inputs(s)
            dlv, lrv = Series(), Series()

            def dlv_after(ex, r, equal=equal):
                # a small book's fund may cover the crash: ADL is counted there, not required
                info = ww.check_after_step(ex, r, expect_adl=False)
                return {**info, "work": ww.deleverage_work(r)} if equal else info

            def lrv_after(st, out, equal=equal):
                info = ww.lrvx_summary(st, out)
                return {**info, "work": ww.lrvx_work(st, out)} if equal else info

            for _ in range(rounds):
                fresh_call(dlv, lambda s=s: ww.build_crash(s), lambda e, s=s: ww.run_crash(e, s), dlv_after)
                fresh_call(lrv, lambda inp=inp: ww.build_lrvx(inp), lambda st, inp=inp: ww.run_lrvx(st, inp), lrv_after)
            res.append((name, s, rounds, dlv, lrv))
            log(f"lrvx{' (equal work)' if equal else ''}: {name} at {s.positions:_} positions done")
    return sorted(res, key=lambda r: (r[0], r[1].positions))


def _lrvx_table(runs: list, *, equal: bool) -> dict:
    last = "same work" if equal else "fund used"
    print(f"| {'crash':20} | {'positions':>9} | {'engine':10} | {'best ms':>9} | {'median ms':>9} | {'liquidated':>10} | "
          f"{'positions closed' if equal else 'ADL closes':>16} | {last:>9} | {'lrvx / dlv':>10} |")
    print(f"|{'-' * 22}|{'-' * 10}:|{'-' * 12}|{'-' * 10}:|{'-' * 10}:|{'-' * 11}:|{'-' * 17}:|{'-' * 10}:|{'-' * 11}:|")
    out = {}
    for name, s, rounds, dlv, lrv in runs:
        ratio = lrv.best / dlv.best
        di, li = dlv.info, lrv.info
        row = {"positions": s.positions, "rounds": rounds, "deleverage_best_s": dlv.best, "lrvx_best_s": lrv.best,
               "lrvx_over_deleverage": ratio}
        if equal:
            mismatch = ww.work_mismatch(di["work"], li["work"])
            same = "yes" if mismatch is None else "NO"
            if mismatch is not None:
                print(f"#  {name} at {s.positions:_}: {mismatch}")
            row["same_work"] = mismatch is None
            row["mismatch"] = mismatch
            d_cells = (di["liquidated_accounts"], di["work"].positions_closed, same)
            l_cells = (li["liquidated_accounts"], li["work"].positions_closed, "")
        else:
            d_cells = (di["liquidated_accounts"], di["adl_closes"], f"{di['fund_used']:,.0f}")
            l_cells = (li["liquidated_accounts"], li["adl_closeouts"], f"{li['insurance_fund_used']:,.0f}")
        print(f"| {name:20} | {s.positions:>9_} | {'deleverage':10} | {dlv.best * 1e3:9.1f} | {dlv.median * 1e3:9.1f} | "
              f"{d_cells[0]:>10_} | {d_cells[1]:>16_} | {d_cells[2]:>9} | {'':>10} |")
        print(f"| {'':20} | {'':>9} | {'lrvx':10} | {lrv.best * 1e3:9.1f} | {lrv.median * 1e3:9.1f} | "
              f"{l_cells[0]:>10_} | {l_cells[1]:>16_} | {l_cells[2]:>9} | {ratio:10.2f} |")
        out[f"{name} @ {s.positions}"] = {**row, "deleverage": _plain(di), "lrvx": _plain(li)}
    print()
    return out


def _plain(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "work"}


def _lrvx_targets(out: dict) -> dict:
    """The batch-speed issue's lrvx targets, from the rows above."""
    equal = out["equal_work"]
    all_same = all(r["same_work"] for r in equal.values())
    slowest = min((r["lrvx_over_deleverage"] for r in equal.values()), default=float("nan"))
    single = [r for k, r in out["different_work"].items() if k.startswith("market 0 only") and r["positions"] == 200_000]
    print(f"| {'lrvx target':58} | {'measured':>9} | {'target':>8} | met |")
    print(f"|{'-' * 60}|{'-' * 10}:|{'-' * 9}:|-----|")
    faster = all_same and slowest > 1.0
    print(f"| {'lrvx / deleverage at equal work, lowest over all rows':58} | {slowest:9.2f} | {'> 1':>8} | "
          f"{'yes' if faster else 'NO':3} |")
    targets = {"equal_work_everywhere": all_same, "equal_work_lowest_ratio": slowest, "equal_work_faster": faster}
    if single:
        r = single[0]["lrvx_over_deleverage"]
        targets["single_market_200k_ratio"] = r
        print(f"| {'lrvx / deleverage, market 0 only -50%, 200k, issue fund':58} | {r:9.2f} | {'>= ' + format(ww.TARGET_LRVX_RATIO, 'g'):>8} | "
              f"{'yes' if r >= ww.TARGET_LRVX_RATIO else 'NO':3} |")
    print()
    return targets


def adl_section(spec: ww.AdlSpec, repeat: int, log) -> dict:
    step, step_sorted, check, reval = Series(), Series(), Series(), Series()
    after = lambda ex, r: ww.check_adl_step(ex, r, spec)  # noqa: E731
    book = ww.build_adl_book(spec)
    book.check_margin()
    flip = ww.MarkFlip(book, spec.new_mark, spec.mark)
    flip()
    flip()
    for r in range(repeat):
        fresh_call(step, lambda: ww.build_adl_book(spec), lambda e: ww.run_adl(e, spec), after)
        fresh_call(step_sorted, lambda: ww.build_adl_book(spec, presort=True), lambda e: ww.run_adl(e, spec), after)
        for _ in range(3):
            t = time.perf_counter()
            book.check_margin()
            check.times.append(time.perf_counter() - t)
            t = time.perf_counter()
            flip()
            reval.times.append(time.perf_counter() - t)
        log(f"adl round {r + 1} done")
    if flip.i == 1:
        flip()
    book.check_invariants()

    print(f"## 3. one ADL event: {spec.label()}")
    print(f"#  best of {repeat} steps on fresh books (3x as many margin checks on one book), interleaved")
    print()
    rows = [
        ("step: ex.liquidate(...)", step),
        ("step, market list sorted beforehand", step_sorted),
        ("ex.check_margin() (all accounts, all cores)", check),
        ("set_marks + check_margin(markets=[m]) (market)", reval),
    ]
    print(f"| {'candidate':48} | {'best ms':>8} | {'median ms':>9} |")
    print(f"|{'-' * 50}|{'-' * 9}:|{'-' * 10}:|")
    for name, s in rows:
        print(f"| {name:48} | {s.best * 1e3:8.2f} | {s.median * 1e3:9.2f} |")
    print()
    diffs = [
        ("step - check_margin()", step.best - check.best),
        ("step - incremental revaluation", step.best - reval.best),
        ("sorted step - incremental revaluation", step_sorted.best - reval.best),
        ("step - sorted step (re-sort of the 1M list)", step.best - step_sorted.best),
    ]
    print(f"| {'difference':48} | {'ms':>8} |")
    print(f"|{'-' * 50}|{'-' * 9}:|")
    for name, v in diffs:
        print(f"| {name:48} | {v * 1e3:8.2f} |")
    ok = step.best <= ww.TARGET_ADL_EVENT_SECONDS
    print()
    print(f"#  target <= {ww.TARGET_ADL_EVENT_SECONDS * 1e3:g} ms for the step: {'yes' if ok else 'NO'} "
          f"({step.best / ww.TARGET_ADL_EVENT_SECONDS:.0f}x over; sorted list: "
          f"{step_sorted.best / ww.TARGET_ADL_EVENT_SECONDS:.0f}x); {step.info['adl_closes']} ADL closes")
    print()
    return {"step_best_s": step.best, "step_presorted_best_s": step_sorted.best, "check_margin_best_s": check.best,
            "incremental_revaluation_best_s": reval.best, "differences_s": dict(diffs), "summary": step.info}


def main(argv: list[str] | None = None) -> int:
    env = ww.CrashSpec.from_env()
    adl_env = ww.AdlSpec.from_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=env.positions, help="crash size (scaling: /10, x1, x4)")
    ap.add_argument("--lrvx-positions", type=int, default=None, help="default: DELEVERAGE_BENCH_LRVX_POSITIONS or positions / 5")
    ap.add_argument("--lrvx-sizes", default=None,
                    help="comma-separated book sizes for the lrvx comparison, e.g. 10000,50000,200000,1000000 "
                         "(default: --lrvx-positions alone if given, else positions / 100, / 20, / 5 and x 1)")
    ap.add_argument("--adl-candidates", type=int, default=adl_env.candidates)
    ap.add_argument("--adl-counterparties", type=int, default=adl_env.counterparties)
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds (best is reported)")
    ap.add_argument("--repeat-large", type=int, default=3, help="rounds at the largest crash size")
    ap.add_argument("--lrvx-repeat", type=int, default=7)
    ap.add_argument("--adl-repeat", type=int, default=7)
    ap.add_argument("--skip", action="append", default=[], choices=["crash", "lrvx", "adl"])
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    if "lrvx" not in args.skip:
        ww.require_lrvx()
    spec = env.scaled(args.positions)
    if args.lrvx_sizes:
        lrvx_sizes = [int(x) for x in args.lrvx_sizes.split(",")]
    elif args.lrvx_positions:
        lrvx_sizes = [args.lrvx_positions]
    else:
        lrvx_sizes = ww.lrvx_sizes(spec)
    lrvx_specs = [spec.scaled(n) for n in lrvx_sizes]
    adl = dataclasses.replace(adl_env, candidates=args.adl_candidates, counterparties=min(args.adl_counterparties, args.adl_candidates))

    def log(msg: str) -> None:
        print(f"#   {msg}", file=sys.stderr, flush=True)

    print(f"# waterfall benchmarks; {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"numpy {np.__version__}")
    print(f"# engine: {engine_identity()}")
    print()
    results: dict[str, Any] = {"engine": engine_identity()}
    t0 = time.perf_counter()
    if "crash" not in args.skip:
        results["crash"] = crash_section(spec, args.repeat, args.repeat_large, log)
    if "lrvx" not in args.skip:
        results["lrvx"] = lrvx_section(lrvx_specs, args.lrvx_repeat, log)
    if "adl" not in args.skip:
        results["adl"] = adl_section(adl, args.adl_repeat, log)
    print(f"# total {time.perf_counter() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
