"""A worked replay (docs/replay.md): a generated event written in the shape of real exchange
data (a positions table with entry prices, signed balances, fine marks), replayed under
every last-resort policy with the counterfactual columns over a later horizon.

    python docs/examples/replay_event.py                # print the tables
    python docs/examples/replay_event.py --update-doc   # also refresh docs/replay.md

The event: 1,500 accounts in two markets (BTC-PERP and ALT-PERP, many accounts in both,
a few with negative balances, as real snapshots have), loaded with load_book; BTC falls 25%
in one step while ALT barely moves, then recovers over the next steps. Every policy runs
the same path on its own copy (deleverage.compare); horizon_steps measures what each one
cost its winners by the last step against the same path without a last resort
(policy="none"). A second table counts ADL closes per market in the crash step under the
two deficit placements.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

import deleverage
from deleverage import MarketClose

DOCS = Path(__file__).resolve().parent.parent
SEED = 13
ACCOUNTS = 1_500
MAKER = 0  # holds each market's imbalance and is the liquidation counterparty
FUND = 2_000.0  # insurance fund, quote currency
# fine marks: more digits than the order tick (0.1 and 0.0001), as published marks have
MARKS = {"BTC-PERP": 60_012.3456, "ALT-PERP": 1.3409577}
# the path: the crash step, then BTC recovers to 90% of its old mark; ALT drifts within 1%
PATH_BTC = [0.75, 0.78, 0.82, 0.85, 0.88, 0.90]
PATH_ALT = [1.000, 0.995, 1.004, 0.998, 1.006, 1.002]
HORIZON = len(PATH_BTC) - 1
EXECUTOR = MarketClose(MAKER, slippage_bps=20)
POLICIES = [
    {"policy": "queue", "ranking": "bitmex", "label": "queue (BitMEX)"},
    {"policy": "pro_rata", "label": "pro_rata"},
    {"policy": "capped_pro_rata", "cap": 0.25, "label": "capped_pro_rata (25%)"},
    {"policy": "risk_aware", "label": "risk_aware (linear)"},
    {"policy": "min_max_lots", "label": "min_max_lots"},
    {"policy": "random_walk", "seed": 1, "label": "random_walk"},
    {"policy": "none", "label": "none (bad debt)"},
]
COLUMNS = ("accounts_touched", "largest_fraction", "taken", "needed", "overshoot_net", "bad_debt",
           "winners_cost_at_horizon", "overshoot_at_horizon")


def book() -> pd.DataFrame:
    """One row per position: account, market, size, entry_price, collateral (signed)."""
    rng = np.random.default_rng(SEED)
    rows = []
    for a in range(1, ACCOUNTS + 1):
        markets = [m for m in MARKS if rng.random() < (0.8 if m == "BTC-PERP" else 0.6)] or ["BTC-PERP"]
        lev = float(rng.uniform(2.0, 20.0))
        notional = float(rng.lognormal(np.log(20_000.0), 1.0))
        in_debt = rng.random() < 0.02
        collateral = round(-0.02 * notional if in_debt else notional / lev, 2)
        for m in markets:
            side = 1 if rng.random() < 0.5 else -1
            mark = MARKS[m]
            # accounts in debt entered well in the money; the others near the mark
            spread = 0.03 if m == "BTC-PERP" else 0.002  # ALT has traded in a narrow range
            entry = mark * (1.0 - side * 0.2) if in_debt else mark * float(rng.uniform(1.0 - spread, 1.0 + spread))
            entry = round(entry, 1) if m == "BTC-PERP" else round(entry, 4)
            size = round(side * notional / len(markets) / mark, 3 if m == "BTC-PERP" else 0)
            if size != 0:
                rows.append((a, m, size, entry, collateral))
    return pd.DataFrame(rows, columns=["account", "market", "size", "entry_price", "collateral"])


def exchange() -> deleverage.Exchange:
    markets = [
        # order ticks 0.1 and 0.0001 (entries are on them); marks default to 4 decimals finer
        {"symbol": "BTC-PERP", "qty_decimals": 3, "price_decimals": 1, "maintenance_margin": 0.005, "initial_margin": 0.01,
         "liquidation_fee": 0.005, "mark_price": MARKS["BTC-PERP"]},
        {"symbol": "ALT-PERP", "qty_decimals": 0, "price_decimals": 4, "maintenance_margin": 0.01, "initial_margin": 0.02,
         "liquidation_fee": 0.005, "mark_price": MARKS["ALT-PERP"]},
    ]
    return deleverage.load_book(book(), markets=markets, counterparty=MAKER, counterparty_collateral=1e10, fund=FUND, threads=1)


def path() -> np.ndarray:
    """steps x markets, marks in quote with the digits of published marks (4 and 7 decimals)."""
    return np.array([[round(MARKS["BTC-PERP"] * b, 4), round(MARKS["ALT-PERP"] * c, 7)] for b, c in zip(PATH_BTC, PATH_ALT)])


def policy_table() -> deleverage.ComparisonTable:
    return deleverage.compare(exchange(), path(), POLICIES, executor=EXECUTOR, horizon_steps=HORIZON)


def placement_table() -> str:
    """ADL closes per market in the crash step, queue policy, by deficit placement."""
    lines = ["| deficit_split | executor slippage (bps) | ADL closes BTC-PERP | ADL closes ALT-PERP | bad debt |",
             "|---|---:|---:|---:|---:|"]
    for bps in (EXECUTOR.slippage_bps, 0):
        for split in ("loss", "maintenance"):
            ex = exchange()
            ex.set_marks(list(MARKS), path()[0])
            res = ex.liquidate(executor=MarketClose(MAKER, slippage_bps=bps), deficit_split=split)
            kinds, markets = res.events.kind, res.events.market
            counts = [int(np.sum((kinds == "adl_close") & (markets == ex.market_id(m)))) for m in MARKS]
            lines.append(f"| {split} | {bps:g} | {counts[0]} | {counts[1]} | {res.totals.bad_debt:.2f} |")
    return "\n".join(lines)


def blocks() -> dict[str, str]:
    ex = exchange()
    debt = sum(1 for a in ex.account_ids() if ex.balance(int(a)) < 0)
    header = (f"{ex.position_count:,} positions, {ex.account_count:,} accounts ({debt} with a negative balance), "
              f"fund {FUND:,.2f}; horizon {HORIZON} steps")
    return {"policies": header + "\n\n" + policy_table().to_markdown(columns=COLUMNS), "placement": placement_table()}


def update_doc(found: dict[str, str]) -> None:
    """The tables into docs/replay.md, between their markers (compare_policies.py's writer)."""
    spec = importlib.util.spec_from_file_location("compare_policies", Path(__file__).resolve().parent / "compare_policies.py")
    assert spec is not None and spec.loader is not None
    writer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writer)
    writer.update_doc(found, DOCS / "replay.md", "replay_event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-doc", action="store_true", help="write the tables into docs/replay.md")
    args = parser.parse_args()
    found = blocks()
    for name, body in found.items():
        print(f"## {name}\n\n{body}\n")
    if args.update_doc:
        update_doc(found)
        print(f"updated {DOCS / 'replay.md'}")


if __name__ == "__main__":
    main()
