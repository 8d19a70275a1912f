"""Stress-run figures for the closing note (plain time.perf_counter).

    python bench/report_stress.py                           # 1M positions, 1,000 steps, and the CLI run
    python bench/report_stress.py --positions 200000 --steps 200 --no-cli

1. One stress path of ``--steps`` steps over the generated book (every step: all marks set
   from a seeded GBM path with jumps, one waterfall step, its totals recorded; all inside
   the core) against ``--steps`` bare full margin checks of the same book
   (``Engine.check_margin``, exact integers, no float conversion). Target: ratio <= 2.
2. The wall time of ``deleverage stress --positions 100000 --accounts 20000 --paths 100
   --steps 500`` (default policies), run as a subprocess. Target: < 120 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import deleverage as dl
from deleverage.books import BookSpec
from deleverage.scenarios import GBMPaths

CLI_ARGS = ["--positions", "100000", "--accounts", "20000", "--paths", "100", "--steps", "500", "--seed", "1"]


def path_vs_checks(positions: int, accounts: int, markets: int, steps: int, seed: int, policy: str,
                   log=print) -> dict[str, float]:
    t = time.perf_counter()
    ex = BookSpec(positions=positions, accounts=accounts, markets=markets, seed=seed).build()
    log(f"# book: {ex.position_count:,} positions, {ex.account_count:,} accounts, {markets} markets "
        f"({time.perf_counter() - t:.1f} s to build)")
    # the CLI's default market model: 0.5% vol per step, correlation 0.6, rare jumps of -8%
    sc = GBMPaths(paths=1, steps=steps, vol=0.005, correlation=0.6, jump_rate=0.002, jump_mean=-0.08, jump_std=0.03,
                  seed=seed)
    mm = dl.MarketClose(counterparty=0, slippage_bps=20)
    engine = ex.core
    engine.check_margin(None)  # warm
    t = time.perf_counter()
    for _ in range(steps):
        engine.check_margin(None)
    t_checks = time.perf_counter() - t
    t = time.perf_counter()
    r = dl.stress(ex, sc, policies=[policy], executor=mm)
    t_path = time.perf_counter() - t
    pp = r.per_path(policy)
    return {"positions": ex.position_count, "steps": steps, "checks_s": t_checks, "path_s": t_path,
            "ratio": t_path / t_checks, "liquidations": int(pp["liquidated_accounts"][0]),
            "adl_closes": int(pp["adl_closes"][0])}


def cli_time(extra: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system, all threads) of the CLI run. On a shared
    machine the wall time depends on the other load; CPU time / cores bounds it from below."""
    with tempfile.TemporaryDirectory() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deleverage.cli", "stress", *CLI_ARGS, *extra, "--out", out, "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=int(os.environ.get("DELEVERAGE_BENCH_POSITIONS", 1_000_000)))
    ap.add_argument("--accounts", type=int, default=int(os.environ.get("DELEVERAGE_BENCH_ACCOUNTS", 100_000)))
    ap.add_argument("--markets", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000, help="steps of the path and number of bare checks (default 1000)")
    ap.add_argument("--policy", default="queue")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI run")
    ap.add_argument("--cli-args", default="", help="extra arguments for the CLI run, e.g. '--policies queue'")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    res: dict[str, object] = {}
    p = path_vs_checks(args.positions, args.accounts, args.markets, args.steps, args.seed, args.policy)
    res["path"] = p
    print(f"stress path ({args.policy}), {p['steps']} steps over {p['positions']:,} positions: {p['path_s']:.2f} s "
          f"({p['liquidations']:,} liquidations, {p['adl_closes']:,} ADL closes)")
    print(f"{p['steps']} bare full margin checks of the same book:        {p['checks_s']:.2f} s")
    print(f"ratio path / checks: {p['ratio']:.2f}x (target <= 2x)")
    if not args.no_cli:
        extra = args.cli_args.split()
        wall, cpu = cli_time(extra)
        res["cli_s"], res["cli_cpu_s"] = wall, cpu
        print(f"deleverage stress {' '.join(CLI_ARGS + extra)}: {wall:.1f} s wall (target < 120 s), "
              f"{cpu:.1f} s CPU over {os.cpu_count()} cores; load average now {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
