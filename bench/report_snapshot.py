"""Snapshot save/load against copying the same bytes, with plain time.perf_counter.

    python bench/report_snapshot.py                        # 10M positions / 1M accounts / 10 markets
    python bench/report_snapshot.py --positions 1000000 --repeat 5

Operations are timed round-robin (one call of each per round) so noise on a shared machine
hits all of them alike; the best round of each is reported. Baselines: bench/snapshot_workload.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import snapshot_workload as sw  # noqa: E402

from deleverage import Exchange  # noqa: E402
from deleverage.books import sample_exchange  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=10_000_000)
    ap.add_argument("--accounts", type=int, default=None, help="default: positions / 10")
    ap.add_argument("--markets", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="folder for the files (default: a temporary folder)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    accounts = args.accounts or max(1, args.positions // 10)
    print(f"# snapshot: {args.positions:,} positions, {accounts:,} accounts, {args.markets} markets")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    t = time.perf_counter()
    ex = sample_exchange(args.positions, accounts, args.markets)
    print(f"# book built in {time.perf_counter() - t:.1f} s: {ex}", flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ops = sw.operations(ex, Path(tmp))
        size = ops["_size"]()
        names = ["save", "load", "copy", "file_write", "file_read", "engine_copy"]
        best = {n: float("inf") for n in names}
        for _ in range(args.repeat):
            for n in names:
                gc.collect()
                t = time.perf_counter()
                result = ops[n]()
                best[n] = min(best[n], time.perf_counter() - t)
                if n == "load":
                    assert isinstance(result, Exchange) and result.state_hash() == ex.state_hash()
                del result
        print(f"# snapshot size {size / 1e6:.1f} MB ({size / max(1, ex.position_count):.1f} bytes per position)")
        print(f"{'operation':<12} {'best s':>8} {'GB/s':>7}")
        for n in names:
            print(f"{n:<12} {best[n]:8.3f} {size / best[n] / 1e9:7.2f}")
        r = sw.ratios(best)
        for k, v in r.items():
            print(f"{k:<22} {v:6.2f}x")
        print("# target (issue 'durability'): save and load each <= 2x of copying the same bytes")
        if args.json:
            Path(args.json).write_text(json.dumps({"size": size, "best": best, "ratios": r}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
