"""Tiered against flat markets in the full margin check, per position, for the closing note
and the README.

    python bench/report_tiers.py                      # 10M positions / 1M accounts / 100 markets
    python bench/report_tiers.py --positions 1000000 --repeat 9
    python bench/report_tiers.py --tiers 12            # a schedule as long as a large exchange's

One generated book (bench/load_workload.py) loaded twice in account order: once with flat
0.5% markets, once with every market on a risk-limit schedule of ``--tiers`` tiers (default 5;
0.5% to 8%, caps at quantiles of the market's position notionals, so every tier holds about
as many positions). Both full
checks (``check_margin(exact=True)``) are timed round-robin, best of N; the table shows ns per
position and the ratio tiered / flat (target: at most 1.3).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load_workload as lw  # noqa: E402

TARGET_TIERED_OVER_FLAT = 1.3


def main(argv: list[str] | None = None) -> int:
    spec, args = lw.report_spec(__doc__, 7, argv, tiers=True)
    repeat = args.repeat
    book = lw.Book(spec)
    books = lw.flat_and_tiered(book, args.tiers)
    for ex in books.values():
        ex.check_margin(exact=True)  # warm
    # the tiers are in use: requirements differ from the flat book's on most accounts
    flat, tiered = (books[k].check_margin(exact=True) for k in ("flat", "tiered"))
    differs = float(np.mean(flat.maintenance != tiered.maintenance))
    best = {name: float("inf") for name in books}
    for _ in range(max(1, repeat)):
        for name, ex in books.items():
            t = time.perf_counter()
            ex.check_margin(exact=True)
            best[name] = min(best[name], time.perf_counter() - t)
    n = books["flat"].position_count
    print(f"# full margin check, flat vs tiered markets: {spec.label()}; best of {repeat}, round-robin")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    print(f"# tiered book: {args.tiers} tiers per market; maintenance differs from the flat book on {differs:.0%} of accounts")
    print()
    print(f"| {'markets':8} | {'best ms':>8} | {'ns/position':>11} |")
    print(f"|{'-' * 10}|{'-' * 9}:|{'-' * 12}:|")
    for name, t in best.items():
        print(f"| {name:8} | {t * 1e3:8.2f} | {t / n * 1e9:11.2f} |")
    ratio = best["tiered"] / best["flat"]
    print()
    print(f"# tiered / flat = {ratio:.2f} (target <= {TARGET_TIERED_OVER_FLAT:g}: "
          f"{'met' if ratio <= TARGET_TIERED_OVER_FLAT else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
