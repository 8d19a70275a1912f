"""The ``deleverage`` console command.

``deleverage demo`` generates a book, crashes one market, runs the margin check and one step
of the loss waterfall, and prints the summary a risk manager would want to see.
``deleverage stress`` runs a generated or loaded book through an optional instantaneous shock
and many random mark paths, once per last-resort policy, and writes a report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, NoReturn, Optional, Sequence

#: exit status of every user error (bad options, bad input, an unwritable output, a closed pipe)
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: the message and where to find help, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .waterfall import ADL_PRICES, MODES, POLICIES, RANKINGS

    parser = _Parser(prog="deleverage", description="Exact loss-waterfall engine for derivatives exchanges.")
    parser.add_argument("--version", action="version", version=f"deleverage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="crash a generated book through the whole loss waterfall",
                          description="Generate a sample book (heavy-tailed sizes, log-normal leverage, several "
                                      "markets per account), crash one market's mark by --shock, run the margin "
                                      "check and one waterfall step (liquidation, insurance fund, ADL or haircut) "
                                      "and print a summary.")
    demo.add_argument("--positions", type=_positive_int, default=1_000_000, help="number of positions (default 1,000,000)")
    demo.add_argument("--accounts", type=_positive_int, default=100_000, help="number of accounts (default 100,000)")
    demo.add_argument("--markets", type=_positive_int, default=20, help="number of markets (default 20)")
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
    demo.add_argument("--cap", type=_fraction, default=None,
                      help="capped_pro_rata (default 0.25) and risk_aware (default none): the largest fraction of its "
                           "capacity a winner may lose")
    demo.add_argument("--lot", type=float, default=None,
                      help="min_max_lots: the lot, market lots in close mode (default 1), quote currency in haircut mode")
    demo.add_argument("--g", default="linear", help="risk_aware: risk function linear, power:k or excess:l0 (default linear)")
    demo.add_argument("--theta", type=_theta, default="deficit",
                      help="severity: 'deficit' (default) or a share in [0, 1] of every deficit sent to the last resort")
    _add_stress_parser(sub)
    return parser


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative (got {value})")
    return value


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (got {text})")
    return v


def _theta(text: str) -> str:
    return text if text == "deficit" else str(_fraction(text))


def _policy_list(text: str) -> list[str]:
    from .errors import InvalidInput
    from .waterfall import POLICIES, policy_spec

    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one policy")
    for name in names:
        try:
            policy_spec(name, POLICIES)
        except InvalidInput as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a policy is listed twice")
    return names


def _add_stress_parser(sub: Any) -> None:
    from .scenarios import BOOK_PRESETS

    st = sub.add_parser(
        "stress", help="stress a book over a shock and many random mark paths, per ADL policy",
        description="Generate a book (or load one with --book), apply an optional instantaneous shock to every "
                    "market's mark, then run --paths random paths of --steps steps (correlated geometric Brownian "
                    "motion with jumps), stepping the whole loss waterfall at every step, once per policy. A shock "
                    "alone is one path of one step. Prints a summary table and writes summary.json, a report and PNG "
                    "plots to --out. Money is in quote currency.")
    book = st.add_argument_group("book")
    book.add_argument("--positions", type=_positive_int, default=100_000, help="positions of the generated book (default 100,000)")
    book.add_argument("--accounts", type=_positive_int, default=20_000, help="accounts of the generated book (default 20,000)")
    book.add_argument("--markets", type=_positive_int, default=10, help="markets of the generated book (default 10)")
    book.add_argument("--preset", choices=sorted(BOOK_PRESETS), default="balanced",
                      help="shape of the generated book: leverage and long/short imbalance (default balanced)")
    book.add_argument("--leverage", type=float, default=None, help="typical account leverage, overrides the preset's")
    book.add_argument("--book", metavar="FILE", default=None,
                      help="load this book (.csv or .parquet; columns account, market, size, entry_price, collateral; "
                           "see docs/stress.md) instead of generating one")
    book.add_argument("--market-table", metavar="FILE", default=None,
                      help="with --book: market table (.csv/.parquet: symbol, qty_decimals, price_decimals, "
                           "mark_decimals, maintenance_margin, initial_margin, liquidation_fee, mark_price)")
    book.add_argument("--fund", type=float, default=50_000.0, help="insurance fund at the start, quote currency (default 50,000)")
    sc = st.add_argument_group("scenario")
    sc.add_argument("--shock", type=float, default=None, help="instantaneous relative move of every mark first, e.g. -0.3")
    sc.add_argument("--paths", type=_nonnegative_int, default=None,
                    help="random paths after the shock (default 10 without --shock, 0 with it)")
    sc.add_argument("--steps", type=_positive_int, default=100, help="steps per random path (default 100)")
    sc.add_argument("--vol", type=float, default=0.005, help="volatility of log returns per step (default 0.005)")
    sc.add_argument("--correlation", type=float, default=0.6, help="correlation between markets (default 0.6)")
    sc.add_argument("--jump-rate", type=float, default=0.002, help="expected jumps per step (default 0.002)")
    sc.add_argument("--jump-mean", type=float, default=-0.08, help="mean log size of a jump (default -0.08)")
    sc.add_argument("--jump-std", type=float, default=0.03, help="standard deviation of a jump's log size (default 0.03)")
    sc.add_argument("--seed", type=int, default=7, help="seed of the book and of the paths (default 7)")
    wf = st.add_argument_group("waterfall")
    wf.add_argument("--policies", type=_policy_list, default=["queue", "pro_rata", "risk_aware"],
                    help="comma-separated last-resort policies to compare, each NAME or MODE:NAME with MODE close or "
                         "haircut (NAME: queue, pro_rata, capped_pro_rata, risk_aware, min_max_lots, random_walk, "
                         "funding_index), e.g. queue,pro_rata,haircut:pro_rata,haircut:funding_index "
                         "(default queue,pro_rata,risk_aware)")
    wf.add_argument("--ranking", choices=["bitmex", "binance", "hyperliquid"], default="bitmex", help="ADL queue ranking (default bitmex)")
    wf.add_argument("--cap", type=_fraction, default=0.25,
                    help="capped_pro_rata: the largest fraction of its capacity a winner may lose (default 0.25)")
    wf.add_argument("--theta", type=_theta, default="deficit",
                    help="severity: 'deficit' (default: the last resort takes only what the fund cannot pay) or a "
                         "share in [0, 1] of every deficit sent to the last resort")
    wf.add_argument("--slippage-bps", type=float, default=20.0, help="liquidation fill slippage in basis points (default 20)")
    wf.add_argument("--counterparty", type=int, default=0,
                    help="liquidation counterparty account (default 0: the generated market maker; created with ample "
                         "collateral when a loaded book lacks it)")
    run = st.add_argument_group("run and output")
    run.add_argument("--dask", metavar="local|ADDRESS", default=None,
                     help="spread paths over Dask: 'local' starts a LocalCluster on this machine, otherwise the "
                          "scheduler address to connect to")
    run.add_argument("--threads", type=_nonnegative_int, default=0, help="local threads for paths (default 0: every core)")
    run.add_argument("--confidence", type=float, default=0.99, help="confidence of the fund-size VaR / ES (default 0.99)")
    run.add_argument("--out", metavar="DIR", default="stress-out", help="output directory (default stress-out)")
    run.add_argument("--format", choices=["md", "html"], default="md", help="report format: report.md or report.html (default md)")
    run.add_argument("--parquet", action="store_true", help="also write the per-step series and per-account outcomes as Parquet")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _money(x: float) -> str:
    return f"{x:,.2f}"


def run_demo(args: argparse.Namespace) -> int:
    from . import MarketClose
    from .sample import MARKET_MAKER, sample_exchange
    from .waterfall import default_mode

    if not -1.0 < args.shock < 10.0:
        print("deleverage demo: error: --shock must be between -1 and 10", file=sys.stderr)
        return USAGE_ERROR
    mode = args.mode or default_mode(args.policy)
    waterfall: dict[str, Any] = {"mode": mode, "policy": args.policy, "ranking": args.ranking, "adl_price": args.adl_price}
    if args.theta != "deficit":
        waterfall["theta"] = float(args.theta)
    if args.policy == "capped_pro_rata" or args.cap is not None:
        waterfall["cap"] = 0.25 if args.cap is None else args.cap
    if args.lot is not None:
        waterfall["lot"] = int(args.lot) if mode == "close" and float(args.lot).is_integer() else args.lot
    if args.g != "linear":
        waterfall["g"] = args.g
    if args.policy == "random_walk":
        waterfall["seed"] = args.seed
    # the waterfall's options are checked on an empty exchange first: a bad combination is
    # reported before the book is generated
    from . import Exchange

    Exchange()._waterfall_config(executor=MarketClose(counterparty=MARKET_MAKER, slippage_bps=args.slippage_bps),
                                 **waterfall)
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
    result = ex.liquidate(executor=MarketClose(counterparty=MARKET_MAKER, slippage_bps=args.slippage_bps), **waterfall)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; every user error ends in one line on stderr and exit status 2."""
    from .errors import DeleverageError

    args = _build_parser().parse_args(argv)
    prog = f"deleverage {args.command}"
    try:
        if args.command == "demo":
            status = run_demo(args)
        else:
            from .stress_cli import run_stress_command

            status = run_stress_command(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:
        # the reader went away (`deleverage stress ... | head -1`): stop writing, quietly for
        # stdout; Python would otherwise complain again when it flushes stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        _say(f"{prog}: error: output closed before the command finished")
        return USAGE_ERROR
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return 130
    except (DeleverageError, ValueError, OSError) as err:
        # bad input or options the parser cannot see (combinations, files): the library's
        # message names the field and the value as given
        message = " ".join(str(err).split()) or type(err).__name__
        _say(f"{prog}: error: {message}")
        return USAGE_ERROR


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except OSError:  # stderr closed as well: nothing left to tell
        pass


if __name__ == "__main__":
    sys.exit(main())
