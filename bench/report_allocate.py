"""Allocation-kernel comparison table with plain time.perf_counter (best of N), for the closing note.

    python bench/report_allocate.py                   # 1M winners, every policy, exact and float
    python bench/report_allocate.py --winners 100000 --repeat 15 --json out.json

For each policy and numeric mode: the kernel (deleverage.allocate), the obvious numpy
implementation of the same policy (bench/test_allocate.py: sorts where the kernel selects,
float64) and a plain compiled read of the policy's input arrays on every thread (the floor
for anything that looks at each winner once). The candidates are timed round-robin (one call
of each per round, each timed call right after an untimed one of the same candidate, whose
allocations the allocator then reuses) so that noise on a shared machine hits all of them
alike; the table shows the best round of each and the ratios numpy / kernel and kernel /
stream. Exact pro_rata is compared with numpy's floor + largest remainder (an argsort), the
float modes and the other policies with the float64 policy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_allocate as ta  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--winners", type=int, default=ta.N)
    ap.add_argument("--repeat", type=int, default=11, help="timed rounds (best is reported)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)

    z = ta.Winners(args.winners)
    print(f"# allocate: {args.winners:_} winners, target {ta.TARGET_S * 1e3:.0f} ms per call")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")

    candidates: dict[tuple[str, str], Callable[[], Any]] = {}
    for name, (policy, exact) in ta.CASES.items():
        kernel = ta._kernel(policy, exact)
        ta.check(name, kernel(z), z)  # correctness first
        arrays = ta.inputs(policy, exact, z)
        candidates[(name, "kernel")] = lambda k=kernel: k(z)
        candidates[(name, "stream")] = lambda a=arrays: ta.stream(a)
        baseline = ta.baseline_for(policy, exact)
        candidates[(name, "numpy")] = lambda b=baseline: b(z)
    best = {k: float("inf") for k in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    t0 = time.perf_counter()
    for _ in range(max(1, args.repeat)):
        for key, fn in candidates.items():
            fn()  # untimed: the previous candidate's big temporaries leave the allocator cold
            t = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t)
    print(f"# timed {args.repeat} rounds in {time.perf_counter() - t0:.1f} s")
    print()
    print(f"| {'policy':22} | {'kernel ms':>9} | {'numpy ms':>9} | {'stream ms':>9} | {'numpy/kernel':>12} | {'kernel/stream':>13} | {'<= 20 ms':8} |")
    print(f"|{'-' * 24}|{'-' * 10}:|{'-' * 10}:|{'-' * 10}:|{'-' * 13}:|{'-' * 14}:|{'-' * 10}|")
    rows = {}
    for name in ta.CASES:
        k, npy, st = best[(name, "kernel")], best[(name, "numpy")], best[(name, "stream")]
        ok = k <= ta.TARGET_S
        rows[name] = {"kernel_ms": k * 1e3, "numpy_ms": npy * 1e3, "stream_ms": st * 1e3,
                      "numpy_over_kernel": npy / k, "kernel_over_stream": k / st, "target_met": ok}
        print(f"| {name:22} | {k * 1e3:9.2f} | {npy * 1e3:9.2f} | {st * 1e3:9.2f} | {npy / k:12.1f} | {k / st:13.1f} | {'yes' if ok else 'NO':8} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"winners": args.winners, "repeat": args.repeat, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
