"""``deleverage demo``: generate a book, crash one market, run the margin check and one step
of the loss waterfall, and print the summary a risk manager would want to see."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._args import USAGE_ERROR, fraction, positive_int, theta


def add_parser(sub: Any) -> None:
    from ..waterfall import ADL_PRICES, MODES, POLICIES, RANKINGS

    demo = sub.add_parser("demo", help="crash a generated book through the whole loss waterfall",
                          description="Generate a sample book (heavy-tailed sizes, log-normal leverage, several "
                                      "markets per account), crash one market's mark by --shock, run the margin "
                                      "check and one waterfall step (liquidation, insurance fund, ADL or haircut) "
                                      "and print a summary.")
    demo.add_argument("--positions", type=positive_int, default=1_000_000, help="number of positions (default 1,000,000)")
    demo.add_argument("--accounts", type=positive_int, default=100_000, help="number of accounts (default 100,000)")
    demo.add_argument("--markets", type=positive_int, default=20, help="number of markets (default 20)")
    demo.add_argument("--shock", type=float, default=-0.30, help="relative move of market 0's mark, e.g. -0.3 (default)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument("--leverage", type=float, default=5.0, help="typical account leverage of the generated book (default 5)")
    demo.add_argument("--fund", type=float, default=50_000.0, help="insurance fund before the crash, quote currency (default 50,000)")
    demo.add_argument("--slippage-bps", type=float, default=20.0, help="liquidation fill slippage in basis points (default 20)")
    demo.add_argument("--mode", choices=MODES, default=None,
                      help="last resort: ADL close or haircut (default close; haircut for funding_index, a haircut-only "
                           "policy)")
    demo.add_argument("--policy", choices=POLICIES, default="queue",
                      help="who pays in the last resort (default queue; docs/policy_lab.md describes each)")
    demo.add_argument("--ranking", choices=RANKINGS, default="bitmex", help="ADL queue ranking (default bitmex)")
    demo.add_argument("--adl-price", choices=ADL_PRICES, default="bankruptcy",
                      help="price of the ADL closes (default bankruptcy)")
    demo.add_argument("--cap", type=fraction, default=None,
                      help="capped_pro_rata (default 0.25) and risk_aware (default none): the largest fraction of its "
                           "capacity a winner may lose")
    demo.add_argument("--lot", type=float, default=None,
                      help="min_max_lots: the lot, market lots in close mode (default 1), quote currency in haircut mode")
    demo.add_argument("--g", default="linear", help="risk_aware: risk function linear, power:k or excess:l0 (default linear)")
    demo.add_argument("--theta", type=theta, default="deficit",
                      help="severity: 'deficit' (default) or a share in [0, 1] of every deficit sent to the last resort")


def _money(x: float) -> str:
    return f"{x:,.2f}"


def run(args: argparse.Namespace) -> int:
    from .. import Exchange, MarketClose, WaterfallSpec
    from ..books import MARKET_MAKER, sample_exchange
    from ..waterfall import default_mode

    if not -1.0 < args.shock < 10.0:
        print("deleverage demo: error: --shock must be between -1 and 10", file=sys.stderr)
        return USAGE_ERROR
    mode = args.mode or default_mode(args.policy)
    options: dict[str, Any] = {}
    if args.theta != "deficit":
        options["theta"] = float(args.theta)
    if args.policy == "capped_pro_rata" or args.cap is not None:
        options["cap"] = 0.25 if args.cap is None else args.cap
    if args.lot is not None:
        options["lot"] = int(args.lot) if mode == "close" and float(args.lot).is_integer() else args.lot
    if args.g != "linear":
        options["g"] = args.g
    if args.policy == "random_walk":
        options["seed"] = args.seed
    # the waterfall is checked before the book is generated: its options on construction, the
    # units of a haircut-mode lot against an empty exchange of the same money decimals
    waterfall = WaterfallSpec(executor=MarketClose(counterparty=MARKET_MAKER, slippage_bps=args.slippage_bps), mode=mode,
                              policy=args.policy, ranking=args.ranking, adl_price=args.adl_price, **options)
    waterfall.engine_config(Exchange())
    t0 = time.perf_counter()
    ex = sample_exchange(args.positions, args.accounts, args.markets, seed=args.seed, leverage=args.leverage)
    ex.insurance.deposit(args.fund)
    t_load = time.perf_counter() - t0
    before = ex.check_margin()

    marks = ex.marks()
    symbol = ex.markets[0]
    new_mark = max(round(float(marks[0]) * (1.0 + args.shock), 2), 0.01)
    ex.set_marks([0], [new_mark])
    t0 = time.perf_counter()
    after = ex.check_margin()
    t_check = time.perf_counter() - t0
    fund_before = ex.insurance.balance()
    t0 = time.perf_counter()
    result = ex.liquidate(waterfall)
    t_waterfall = time.perf_counter() - t0
    ex.check_invariants()
    final = ex.check_margin()
    t = result.totals

    # the market maker holding the book's imbalance is not a trader: leave it out of the totals
    traders_before = before.account != MARKET_MAKER
    traders_after = after.account != MARKET_MAKER
    print(f"deleverage demo: {ex.position_count:,} positions open after the crash, {ex.account_count:,} accounts, "
          f"{len(ex.markets)} markets")
    print(f"  book generated and loaded in {t_load:.2f} s; engine memory {ex.memory_bytes / max(1, ex.position_count):.1f} "
          f"bytes/position")
    print(f"  crash: {symbol} mark {float(marks[0]):,.2f} -> {new_mark:,.2f} ({args.shock:+.0%}); "
          f"executor: market maker at {args.slippage_bps:g} bps slippage; last resort: {mode}/{args.policy}/{args.ranking}")
    print()
    print(f"  margin check of every account:   {t_check * 1e3:8.1f} ms")
    print(f"  waterfall step:                  {t_waterfall * 1e3:8.1f} ms")
    print()
    rows = [
        ("liquidatable accounts (before -> after crash)",
         f"{int(before.liquidatable[traders_before].sum()):,} -> {int(after.liquidatable[traders_after].sum()):,}"),
        ("bankrupt accounts after the crash", f"{int(after.bankrupt[traders_after].sum()):,}"),
        ("negative equity to cover", _money(-after.equity[after.bankrupt & traders_after].sum())),
        ("accounts liquidated (partial)", f"{t.liquidated_accounts:,} ({t.partial_liquidations:,})"),
        ("deficit of the liquidation fills", _money(t.deficit)),
        ("insurance fund: before -> after", f"{_money(fund_before)} -> {_money(ex.insurance.balance())}"),
        ("  paid out / fees received", f"{_money(t.fund_used)} / {_money(t.fund_fees)}"),
        ("ADL: closes / notional", f"{t.adl_closes:,} / {_money(t.adl_notional)}"),
        ("haircuts taken from winners", _money(t.haircut_total)),
        ("winners deleveraged or haircut", f"{t.accounts_touched:,}"),
        ("bad debt left", _money(t.bad_debt)),
        ("accounts still liquidatable", f"{int(final.liquidatable.sum()):,}"),
    ]
    width = max(len(name) for name, _ in rows) + 2
    for name, value in rows:
        print(f"  {name:<{width}}{value:>28}")
    print("  invariants: conservation (fund included) and zero net size hold; no negative equity left"
          if not final.bankrupt.any() else "  WARNING: accounts with negative equity remain")
    return 0
