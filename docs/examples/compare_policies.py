"""Compare the last-resort policies on one crash of a generated book (docs/policy_lab.md).

    python docs/examples/compare_policies.py                 # print the tables, write the PNGs
    python docs/examples/compare_policies.py --update-doc    # also refresh docs/policy_lab.md

The book is deleverage.books.sample_exchange (20,000 positions over 2,000 accounts in 5
markets, 8x leverage on average); the market maker (account 0, which holds each market's
imbalance) is also the liquidation counterparty. Every market falls 25% at once. Policies the
installed engine does not run yet are listed and skipped, so the script can be re-run as
policies land.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import deleverage
from deleverage import Impact, MarketClose
from deleverage.books import sample_exchange

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
IMG = DOCS / "img"

BOOK = dict(positions=20_000, accounts=2_000, markets=5, seed=7, leverage=8.0)
FUND = 20_000.0  # insurance fund, quote currency
MOVE = -0.25  # every market
EXECUTOR = MarketClose(0, slippage_bps=50, impact=Impact(depth=1_000_000.0, bps_per_depth=25))

CLOSE = [
    {"policy": "queue", "ranking": "bitmex", "label": "queue (BitMEX)"},
    {"policy": "queue", "ranking": "hyperliquid", "label": "queue (Hyperliquid)"},
    {"policy": "pro_rata", "label": "pro_rata"},
    {"policy": "capped_pro_rata", "cap": 0.25, "label": "capped_pro_rata (25%)"},
    {"policy": "risk_aware", "g": "linear", "label": "risk_aware (linear)"},
    {"policy": "min_max_lots", "label": "min_max_lots"},
    {"policy": "random_walk", "seed": 1, "label": "random_walk"},
    {"policy": "pro_rata", "theta": 1.0, "label": "pro_rata, theta = 1"},
]
HAIRCUT = [
    {"policy": "queue", "ranking": "bitmex", "label": "queue (BitMEX)"},
    {"policy": "pro_rata", "label": "pro_rata"},
    {"policy": "capped_pro_rata", "cap": 0.25, "label": "capped_pro_rata (25%)"},
    {"policy": "risk_aware", "g": "linear", "label": "risk_aware (linear)"},
    {"policy": "min_max_lots", "lot": 1.0, "label": "min_max_lots (1.00)"},
    {"policy": "random_walk", "seed": 1, "label": "random_walk"},
    {"policy": "pro_rata", "theta": 1.0, "label": "pro_rata, theta = 1"},
    {"policy": "funding_index", "label": "funding_index"},
]


def supported(specs: list[dict], mode: str) -> tuple[list[dict], list[str]]:
    """The specs whose policy this engine build runs (waterfall.POLICIES lists them)."""
    runs = set(deleverage.waterfall.POLICIES)
    keep = [s for s in specs if s["policy"] in runs]
    return keep, [s["label"] for s in specs if s["policy"] not in runs]


def compare_mode(mode: str, specs: list[dict]) -> tuple[deleverage.ComparisonTable, list[str]]:
    """The comparison of one mode (no files written; tests/test_docs_numbers.py checks the
    page's tables against it)."""
    ex = sample_exchange(**BOOK, threads=1)
    ex.insurance.deposit(FUND)
    keep, skipped = supported(specs, mode)
    shock = {m: MOVE for m in ex.markets}
    return deleverage.compare(ex, shock, keep, executor=EXECUTOR, mode=mode), skipped


def run(mode: str, specs: list[dict]) -> tuple[deleverage.ComparisonTable, list[str]]:
    table, skipped = compare_mode(mode, specs)
    fig = table.plot(title=f"{mode} mode: every market -25%, {BOOK['positions']:,} positions")
    IMG.mkdir(exist_ok=True)
    fig.savefig(IMG / f"policy_lab_{mode}.png", dpi=110)
    return table, skipped


def block(mode: str, table: deleverage.ComparisonTable, skipped: list[str]) -> str:
    text = table.to_markdown()
    if skipped:
        text += f"\n\nNot run (not in this engine build yet): {', '.join(skipped)}."
    return text


def update_doc(blocks: dict[str, str], doc: Path | None = None, prefix: str = "compare_policies") -> None:
    """Rewrite each block between its ``<!-- prefix:name:begin/end -->`` markers of ``doc``
    (default docs/policy_lab.md); docs/examples/replay_event.py uses it for docs/replay.md."""
    doc = DOCS / "policy_lab.md" if doc is None else doc
    text = doc.read_text()
    for mode, body in blocks.items():
        begin, end = f"<!-- {prefix}:{mode}:begin -->", f"<!-- {prefix}:{mode}:end -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            sys.exit(f"{doc}: markers {begin} ... {end} not found")
        replacement = f"{begin}\n{body}\n{end}"
        text = pattern.sub(lambda _, r=replacement: r, text)
    doc.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update-doc", action="store_true", help="write the tables into docs/policy_lab.md")
    args = parser.parse_args()
    blocks = {}
    for mode, specs in (("close", CLOSE), ("haircut", HAIRCUT)):
        table, skipped = run(mode, specs)
        blocks[mode] = block(mode, table, skipped)
        print(f"## {mode} mode\n\n{blocks[mode]}\n")
    print(f"figures: {IMG / 'policy_lab_close.png'}, {IMG / 'policy_lab_haircut.png'}")
    if args.update_doc:
        update_doc(blocks)
        print(f"updated {DOCS / 'policy_lab.md'}")


if __name__ == "__main__":
    main()
