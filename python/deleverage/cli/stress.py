"""``deleverage stress``: the command behind the CLI, and the report it writes.

Files written to ``--out``: ``summary.json`` (totals per policy, machine-readable),
``report.md`` or ``report.html`` (the summary table, the fund size needed, the plots) and
the PNG plots ``fund.png``, ``bad_debt.png``, ``adl.png``, ``haircuts.png``; with
``--parquet`` also ``series.parquet``, ``accounts.parquet`` and ``summary.parquet``.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import sys
import time
from typing import Any

from ..waterfall import policy_spec
from ._args import fraction, nonnegative_int, policy_list, positive_int, theta

PLOTS = (("fund", "fund.png", "Insurance fund over time (mean, 5-95% band)"),
         ("bad_debt", "bad_debt.png", "Cumulative bad debt (mean over paths)"),
         ("adl", "adl.png", "Cumulative ADL notional per policy (mean over paths)"),
         ("haircuts", "haircuts.png", "Distribution of winners' losses (ADL vs mark + haircuts)"))

_COLUMNS = (("liquidations_mean", "liquidations", "{:,.0f}"), ("deficit_mean", "deficit", "{:,.0f}"),
            ("fund_used_mean", "fund used", "{:,.0f}"), ("fund_needed_var", "fund needed VaR", "{:,.0f}"),
            ("fund_needed_es", "fund needed ES", "{:,.0f}"), ("bad_debt_mean", "bad debt", "{:,.0f}"),
            ("paths_with_bad_debt", "paths w/ bad debt", "{:,}"), ("adl_notional_mean", "ADL notional", "{:,.0f}"),
            ("haircut_mean", "haircuts", "{:,.0f}"), ("winner_loss_mean", "winners' loss", "{:,.0f}"),
            ("accounts_hit", "winners hit", "{:,}"), ("max_account_loss", "max loss (1 acct)", "{:,.0f}"))


def _err(msg: str) -> int:
    print(f"deleverage stress: error: {msg}", file=sys.stderr)
    return 2


def _table(totals: dict[str, dict[str, Any]], confidence: float) -> tuple[list[str], list[list[str]]]:
    head = ["policy"] + [label for _, label, _ in _COLUMNS]
    rows = []
    for policy, t in totals.items():
        row = [policy]
        for key, _, fmt in _COLUMNS:
            if key.startswith("fund_needed_"):
                key = f"{key}_{confidence:g}"
            row.append(fmt.format(t[key]))
        rows.append(row)
    return head, rows


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    # transposed: one line per metric, one column per policy (fits a terminal)
    width = max(len(h) for h in head)
    colw = [max(len(r[0]), *(len(r[i]) for i in range(1, len(r)))) + 2 for r in rows]
    lines = [" " * (width + 2) + "".join(r[0].rjust(w) for r, w in zip(rows, colw))]
    for i, h in enumerate(head[1:], start=1):
        lines.append(f"  {h:<{width}}" + "".join(r[i].rjust(w) for r, w in zip(rows, colw)))
    return "\n".join(lines)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| metric | " + " | ".join(r[0] for r in rows) + " |", "|---|" + "---:|" * len(rows)]
    for i, h in enumerate(head[1:], start=1):
        out.append(f"| {h} | " + " | ".join(r[i] for r in rows) + " |")
    return "\n".join(out)


def write_outputs(result: Any, out: str, meta: dict[str, Any], *, fmt: str = "md", confidence: float = 0.99,
                  parquet: bool = False) -> list[str]:
    """Write summary.json, the report and the PNG plots of a StressResult to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    written = []
    totals = result.totals(confidence)
    summary_path = os.path.join(out, "summary.json")
    with open(summary_path, "w") as f:
        json.dump({"money": "quote currency", "confidence": confidence, "run": meta, "policies": totals}, f, indent=2)
    written.append(summary_path)
    for kind, name, _ in PLOTS:
        fig = result.plot(kind)
        path = os.path.join(out, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    head, rows = _table(totals, confidence)
    intro = [f"Book: {meta['book']}", f"Scenario: {meta['scenario']}",
             f"Policies: {', '.join(result.policies)}; executor: {meta['executor']}",
             f"Run: {result.paths} paths x {result.steps} steps per policy in {meta['elapsed_s']:.1f} s ({meta['where']})",
             f"Money in quote currency; per-path means unless stated. Fund needed = the largest cumulative deficit net of "
             f"fees on a path (the fund that would have paid everything without ADL, haircuts or bad debt); VaR is its "
             f"{confidence:g} quantile across paths, ES the mean at or beyond it."]
    if fmt == "md":
        text = ["# deleverage stress report", ""] + [f"- {line}" for line in intro] + ["", _md_table(head, rows), ""]
        for _, name, title in PLOTS:
            text += [f"## {title}", "", f"![{title}]({name})", ""]
        path = os.path.join(out, "report.md")
        with open(path, "w") as f:
            f.write("\n".join(text))
    else:
        cells = "".join(f"<th>{html.escape(r[0])}</th>" for r in rows)
        body = [f"<tr><th>metric</th>{cells}</tr>"]
        for i, h in enumerate(head[1:], start=1):
            body.append(f"<tr><td>{html.escape(h)}</td>" + "".join(f"<td align=right>{html.escape(r[i])}</td>" for r in rows) + "</tr>")
        imgs = []
        for _, name, title in PLOTS:
            with open(os.path.join(out, name), "rb") as f:
                data = base64.b64encode(f.read()).decode()
            imgs.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>")
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>deleverage stress report</title></head><body>"
                "<h1>deleverage stress report</h1><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in intro) +
                "</ul><table border=1 cellspacing=0 cellpadding=4>" + "".join(body) + "</table>" + "".join(imgs) + "</body></html>")
        path = os.path.join(out, "report.html")
        with open(path, "w") as f:
            f.write(page)
    written.append(path)
    if parquet:
        written += result.to_parquet(out)
    return written


def _spec(name: str, args: argparse.Namespace, executor: Any) -> Any:
    """The waterfall of one ``--policies`` entry, labelled as written."""
    from ..waterfall_spec import WaterfallSpec

    options: dict[str, Any] = {"ranking": args.ranking}
    if policy_spec(name)["policy"] == "capped_pro_rata":
        options["cap"] = args.cap
    if args.theta != "deficit":
        options["theta"] = float(args.theta)
    return WaterfallSpec.parse(name, executor=executor, label=name, **options)


def run(args: argparse.Namespace) -> int:
    from .. import MarketClose
    from .._stress import stress
    from ..books import book_preset, load_book
    from ..errors import DeleverageError
    from ..scenarios import GBMPaths, Shock

    if args.shock is not None and not -1.0 < args.shock < 10.0:
        return _err("--shock must be between -1 and 10")
    paths = args.paths if args.paths is not None else (0 if args.shock is not None else 10)
    if paths == 0 and args.shock is None:
        return _err("nothing to run: give --shock and/or --paths of at least 1")
    if not 0.0 < args.confidence < 1.0:
        return _err("--confidence must be between 0 and 1")
    if args.vol < 0 or args.jump_rate < 0 or args.jump_std < 0 or not -1.0 <= args.correlation <= 1.0:
        return _err("--vol, --jump-rate and --jump-std must not be negative; --correlation in [-1, 1]")
    if args.fund < 0:
        return _err("--fund must not be negative")
    t0 = time.perf_counter()
    try:
        if args.book:
            ex = load_book(args.book, markets=args.market_table, counterparty=args.counterparty, fund=args.fund)
            book_desc = f"{args.book}: {ex.position_count:,} positions, {ex.account_count:,} accounts, {len(ex.markets)} markets"
        else:
            overrides: dict[str, Any] = {"positions": args.positions, "accounts": args.accounts, "markets": args.markets,
                                         "seed": args.seed, "fund": args.fund}
            if args.leverage is not None:
                overrides["leverage"] = args.leverage
            spec = book_preset(args.preset, **overrides)
            ex = spec.build()
            book_desc = (f"generated ({args.preset}, leverage {spec.leverage:g}x, {spec.long_share:.0%} long, seed {args.seed}): "
                         f"{ex.position_count:,} positions, {ex.account_count:,} accounts, {len(ex.markets)} markets")
        if paths > 0:
            scenario: Any = GBMPaths(paths=paths, steps=args.steps, vol=args.vol, correlation=args.correlation,
                                     jump_rate=args.jump_rate, jump_mean=args.jump_mean, jump_std=args.jump_std,
                                     seed=args.seed, shock=args.shock)
            sc_desc = (f"{'shock %+.0f%% then ' % (100 * args.shock) if args.shock is not None else ''}{paths} GBM paths x "
                       f"{args.steps} steps, vol {args.vol:g}/step, correlation {args.correlation:g}, jumps "
                       f"{args.jump_rate:g}/step of mean {args.jump_mean:g} (std {args.jump_std:g}), seed {args.seed}")
        else:
            scenario = Shock(args.shock)
            sc_desc = f"instantaneous shock {args.shock:+.0%} of every mark (one path of one step)"
        if not ex.account_ids().size or args.counterparty not in set(ex.account_ids().tolist()):
            return _err(f"--counterparty {args.counterparty} is not an account of the book")
        executor = MarketClose(counterparty=args.counterparty, slippage_bps=args.slippage_bps)
        policies = [_spec(name, args, executor) for name in args.policies]
        t_load = time.perf_counter() - t0
        client, cluster, where = None, None, f"local, {args.threads or os.cpu_count()} threads"
        if args.dask:
            from dask.distributed import Client, LocalCluster

            if args.dask == "local":
                cluster = LocalCluster(n_workers=min(2, os.cpu_count() or 1), threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
            else:
                client = Client(args.dask)
            where = f"Dask {args.dask}"
        try:
            result = stress(ex, scenario, policies=policies, executor=executor, client=client, threads=args.threads,
                            progress=not args.no_progress)
        finally:
            if client is not None:
                client.close()
            if cluster is not None:
                cluster.close()
    except (DeleverageError, ValueError, OSError) as err:
        return _err(str(err))
    meta = {"book": book_desc, "scenario": sc_desc, "executor": f"market close against account {args.counterparty} at "
            f"{args.slippage_bps:g} bps slippage", "elapsed_s": result.elapsed, "load_s": t_load, "where": where,
            "paths": result.paths, "steps": result.steps}
    totals = result.totals(args.confidence)
    head, rows = _table(totals, args.confidence)
    print(f"deleverage stress: {book_desc}")
    print(f"  scenario: {sc_desc}")
    print(f"  {result.paths} paths x {result.steps} steps x {len(result.policies)} policies in {result.elapsed:.1f} s "
          f"({where}); book built in {t_load:.1f} s; money in quote currency, means per path")
    print()
    print(_text_table(head, rows))
    print()
    written = write_outputs(result, args.out, meta, fmt=args.format, confidence=args.confidence, parquet=args.parquet)
    print(f"  wrote {', '.join(os.path.basename(p) for p in written)} to {args.out}")
    return 0


def add_parser(sub: Any) -> None:
    from ..books import BOOK_PRESETS

    st = sub.add_parser(
        "stress", help="stress a book over a shock and many random mark paths, per ADL policy",
        description="Generate a book (or load one with --book), apply an optional instantaneous shock to every "
                    "market's mark, then run --paths random paths of --steps steps (correlated geometric Brownian "
                    "motion with jumps), stepping the whole loss waterfall at every step, once per policy. A shock "
                    "alone is one path of one step. Prints a summary table and writes summary.json, a report and PNG "
                    "plots to --out. Money is in quote currency.")
    book = st.add_argument_group("book")
    book.add_argument("--positions", type=positive_int, default=100_000, help="positions of the generated book (default 100,000)")
    book.add_argument("--accounts", type=positive_int, default=20_000, help="accounts of the generated book (default 20,000)")
    book.add_argument("--markets", type=positive_int, default=10, help="markets of the generated book (default 10)")
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
    sc.add_argument("--paths", type=nonnegative_int, default=None,
                    help="random paths after the shock (default 10 without --shock, 0 with it)")
    sc.add_argument("--steps", type=positive_int, default=100, help="steps per random path (default 100)")
    sc.add_argument("--vol", type=float, default=0.005, help="volatility of log returns per step (default 0.005)")
    sc.add_argument("--correlation", type=float, default=0.6, help="correlation between markets (default 0.6)")
    sc.add_argument("--jump-rate", type=float, default=0.002, help="expected jumps per step (default 0.002)")
    sc.add_argument("--jump-mean", type=float, default=-0.08, help="mean log size of a jump (default -0.08)")
    sc.add_argument("--jump-std", type=float, default=0.03, help="standard deviation of a jump's log size (default 0.03)")
    sc.add_argument("--seed", type=int, default=7, help="seed of the book and of the paths (default 7)")
    wf = st.add_argument_group("waterfall")
    wf.add_argument("--policies", type=policy_list, default=["queue", "pro_rata", "risk_aware"],
                    help="comma-separated last-resort policies to compare, each NAME or MODE:NAME with MODE close or "
                         "haircut (NAME: queue, pro_rata, capped_pro_rata, risk_aware, min_max_lots, random_walk, "
                         "funding_index), e.g. queue,pro_rata,haircut:pro_rata,haircut:funding_index "
                         "(default queue,pro_rata,risk_aware)")
    wf.add_argument("--ranking", choices=["bitmex", "binance", "hyperliquid"], default="bitmex", help="ADL queue ranking (default bitmex)")
    wf.add_argument("--cap", type=fraction, default=0.25,
                    help="capped_pro_rata: the largest fraction of its capacity a winner may lose (default 0.25)")
    wf.add_argument("--theta", type=theta, default="deficit",
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
    run.add_argument("--threads", type=nonnegative_int, default=0, help="local threads for paths (default 0: every core)")
    run.add_argument("--confidence", type=float, default=0.99, help="confidence of the fund-size VaR / ES (default 0.99)")
    run.add_argument("--out", metavar="DIR", default="stress-out", help="output directory (default stress-out)")
    run.add_argument("--format", choices=["md", "html"], default="md", help="report format: report.md or report.html (default md)")
    run.add_argument("--parquet", action="store_true", help="also write the per-step series and per-account outcomes as Parquet")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
