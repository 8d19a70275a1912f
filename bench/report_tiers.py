"""Tiered against flat markets in the full margin check, per position, for the closing note
and the README.

    python bench/report_tiers.py                      # 10M positions / 1M accounts / 100 markets
    python bench/report_tiers.py --positions 1000000 --repeat 9

One generated book (bench/load_workload.py) loaded twice in account order: once with flat
0.5% markets, once with every market on a five-tier risk-limit schedule (0.5% to 8%, caps at
the quintiles of the market's position notionals, so every tier holds positions). Both full
checks (``check_margin(exact=True)``) are timed round-robin, best of N; the table shows ns per
position and the ratio tiered / flat (target: at most 1.3).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import load_workload as lw  # noqa: E402

TARGET_TIERED_OVER_FLAT = 1.3


def main(argv: list[str] | None = None) -> int:
    env = lw.LoadSpec.from_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=env.positions)
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds (best is reported)")
    args = ap.parse_args(argv)
    spec = lw.LoadSpec(positions=args.positions, accounts=max(1, args.positions // 10), markets=env.markets, seed=env.seed)
    book = lw.Book(spec)
    rows = book.rows("account")
    books = {}
    for name, tiered in (("flat", False), ("tiered", True)):
        ex = book.fresh_exchange(tiered=tiered)
        lw.load(ex, rows)
        ex.check_margin(exact=True)  # warm
        books[name] = ex
    # the tiers are in use: requirements differ from the flat book's on most accounts
    flat, tiered = (books[k].check_margin(exact=True) for k in ("flat", "tiered"))
    differs = float(np.mean(flat.maintenance != tiered.maintenance))
    best = {name: float("inf") for name in books}
    for _ in range(max(1, args.repeat)):
        for name, ex in books.items():
            t = time.perf_counter()
            ex.check_margin(exact=True)
            best[name] = min(best[name], time.perf_counter() - t)
    n = books["flat"].position_count
    print(f"# full margin check, flat vs tiered markets: {spec.label()}; best of {args.repeat}, round-robin")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    print(f"# tiered book: {len(lw.TIER_RATES)} tiers per market; maintenance differs from the flat book on {differs:.0%} of accounts")
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
