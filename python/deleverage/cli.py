"""The ``deleverage`` console command.

``deleverage demo`` generates a book, runs the batch margin check and prints a summary a
risk manager would want to see. Later subcommands grow from here.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deleverage", description="Exact loss-waterfall engine for derivatives exchanges.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate a book, run the margin check and print a summary",
                          description="Generate a sample book (heavy-tailed sizes, log-normal leverage, several "
                                      "markets per account), move the marks of one market by --shock, run the "
                                      "batch margin check and print a summary.")
    demo.add_argument("--positions", type=_positive_int, default=1_000_000, help="number of positions (default 1,000,000)")
    demo.add_argument("--accounts", type=_positive_int, default=100_000, help="number of accounts (default 100,000)")
    demo.add_argument("--markets", type=_positive_int, default=20, help="number of markets (default 20)")
    demo.add_argument("--shock", type=float, default=-0.30, help="relative move of market 0's mark, e.g. -0.3 (default)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    return parser


def _money(x: float) -> str:
    return f"{x:,.2f}"


def run_demo(args: argparse.Namespace) -> int:
    from .sample import MARKET_MAKER, sample_exchange

    if not -1.0 < args.shock < 10.0:
        print("error: --shock must be between -1 and 10", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    ex = sample_exchange(args.positions, args.accounts, args.markets, seed=args.seed)
    t_load = time.perf_counter() - t0
    before = ex.check_margin()

    marks = ex.marks()
    symbol = ex.markets[0]
    new_mark = round(float(marks[0]) * (1.0 + args.shock), 2)
    ex.set_marks([0], [max(new_mark, 0.01)])
    t0 = time.perf_counter()
    after = ex.check_margin()
    t_check = time.perf_counter() - t0
    ex.check_invariants()

    # the market maker holding the book's imbalance is not a trader: leave it out of the totals
    b_mask = before.account != MARKET_MAKER
    a_mask = after.account != MARKET_MAKER
    deficit = -after.equity[after.bankrupt & a_mask].sum()
    print(f"deleverage demo: {ex.position_count:,} positions, {ex.account_count:,} accounts, {len(ex.markets)} markets")
    print(f"  book loaded in {t_load:.2f} s; engine memory {ex.memory_bytes / ex.position_count:.1f} bytes/position")
    print(f"  shock: {symbol} mark {float(marks[0]):,.2f} -> {max(new_mark, 0.01):,.2f} ({args.shock:+.0%})")
    print(f"  margin check over all accounts: {t_check * 1e3:.1f} ms")
    print()
    print(f"  {'traders (market maker excluded)':32}{'before':>18}{'after':>18}")
    rows = [
        ("liquidatable accounts", f"{int(before.liquidatable[b_mask].sum()):,}", f"{int(after.liquidatable[a_mask].sum()):,}"),
        ("bankrupt accounts", f"{int(before.bankrupt[b_mask].sum()):,}", f"{int(after.bankrupt[a_mask].sum()):,}"),
        ("total equity", _money(before.equity[b_mask].sum()), _money(after.equity[a_mask].sum())),
        ("total maintenance margin", _money(before.maintenance[b_mask].sum()), _money(after.maintenance[a_mask].sum())),
        ("bad debt (negative equity)", _money(-before.equity[before.bankrupt & b_mask].sum()), _money(deficit)),
    ]
    for name, b, a in rows:
        print(f"  {name:32}{b:>18}{a:>18}")
    ratio = after.margin_ratio[np.isfinite(after.margin_ratio) & a_mask]
    if ratio.size:
        p50, p99 = np.percentile(ratio, [50, 99])
        print(f"  margin ratio (finite) p50 {p50:.3f}, p99 {p99:.3f}")
    print("  invariants: conservation and zero net size hold")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        return run_demo(args)
    return 2  # argparse rejects unknown commands before this


if __name__ == "__main__":
    sys.exit(main())
