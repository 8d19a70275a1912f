"""Bulk-load table with plain time.perf_counter (best of N), for the closing note and the README.

    python bench/report_load.py                        # 10M rows / 1M accounts / 100 markets
    python bench/report_load.py --positions 1000000 --repeat 5

For each row order (random, as a dump may arrive; account; market): ``load_positions`` into a
fresh exchange (built untimed), timed round-robin with numpy's stable argsort of the
random-order account column, so that load on a shared machine hits all of them alike. The
table shows the best of each, the ratio to the argsort (target: random order within 1.5x),
and the engine's memory after the load (the same for every order).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load_workload as lw  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    spec, args = lw.report_spec(__doc__, 3, argv)
    repeat = args.repeat
    book = lw.Book(spec)
    rows = {order: book.rows(order) for order in lw.ORDERS}
    best = {name: float("inf") for name in ("argsort", *lw.ORDERS)}
    memory: dict[str, int] = {}
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        lw.numpy_argsort(rows["random"])
        best["argsort"] = min(best["argsort"], time.perf_counter() - t)
        for order in lw.ORDERS:
            ex = book.fresh_exchange()
            t = time.perf_counter()
            lw.load(ex, rows[order])
            best[order] = min(best[order], time.perf_counter() - t)
            memory[order] = ex.memory_bytes
            del ex
    print(f"# bulk load: {spec.label()}; best of {repeat}, round-robin, fresh exchanges")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    print()
    print(f"| {'what':42} | {'best s':>7} | {'/ argsort':>9} | {'engine memory (bytes)':>21} |")
    print(f"|{'-' * 44}|{'-' * 8}:|{'-' * 10}:|{'-' * 22}:|")
    print(f"| {'numpy stable argsort of the account column':42} | {best['argsort']:7.3f} | {1.0:9.2f} | {'':>21} |")
    for order in lw.ORDERS:
        print(f"| {'load_positions, ' + order + ' order':42} | {best[order]:7.3f} | {best[order] / best['argsort']:9.2f} | "
              f"{memory[order]:>21_} |")
    print()
    ratio = best["random"] / best["argsort"]
    print(f"# random order / argsort = {ratio:.2f} (target <= {lw.TARGET_OVER_ARGSORT:g}: "
          f"{'met' if ratio <= lw.TARGET_OVER_ARGSORT else 'NOT met'}); memory the same for every order: "
          f"{'yes' if len(set(memory.values())) == 1 else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
