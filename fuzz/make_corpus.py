"""Writes the seed corpora in fuzz/corpus/ (run once; the seeds are committed)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import JOURNAL_HEADER, small_exchange  # noqa: E402

from deleverage import Backstop, MarketClose  # noqa: E402

HERE = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    ex = small_exchange()
    snap = ex.to_bytes()
    (HERE / "snapshot").mkdir(parents=True, exist_ok=True)
    (HERE / "snapshot" / "valid").write_bytes(b"\x00" + snap)
    (HERE / "snapshot" / "valid_repair").write_bytes(b"\x01" + snap)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.log"
        ex.open_journal(path)
        ex.add_market("C", qty_decimals=2, price_decimals=2, maintenance_margin=0.1, initial_margin=0.2)
        ex.deposit([1, 4], [10.0, 50.0])
        ex.withdraw([1], [1.0])
        ex.set_marks(["A", "C"], [90, 1.5])
        ex.load_positions([4], ["C"], [1.25], [1.5], counterparty=99)
        ex.trade(1, 2, "A", 1, 95)
        ex.trades([2, 4], [1, 99], ["A", "C"], [1, 0.5], [96, 1.6])
        ex.check_margin()
        ex.check_margin(["A"])
        ex.insurance.use_own_pool("C")
        ex.insurance.deposit(3.0, "C")
        ex.insurance.set_drawdown_rule(0.5, 3)
        ex.adl_ranking("A")
        ex.set_marks(["A"], [40])
        ex.liquidate(executor=MarketClose(99, slippage_bps=20, partial=True), mode="haircut", policy="pro_rata")
        ex.liquidate(executor=Backstop(99), adl_price="previous_mark")
        ex.close_journal()
        records = path.read_bytes()[JOURNAL_HEADER:]
    (HERE / "journal").mkdir(parents=True, exist_ok=True)
    (HERE / "journal" / "every_op").write_bytes(records)
    (HERE / "journal" / "cut").write_bytes(records[: len(records) // 2])
    # the C++ libFuzzer target (cpp/fuzz): first byte 0 / 2 = snapshot as is / repaired, 1 = journal
    cpp = HERE.parent.parent / "cpp" / "fuzz" / "corpus"
    cpp.mkdir(parents=True, exist_ok=True)
    (cpp / "snapshot").write_bytes(b"\x00" + snap)
    (cpp / "snapshot_repair").write_bytes(b"\x02" + snap)
    (cpp / "journal").write_bytes(b"\x01" + records)
    (HERE / "batch").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (HERE / "batch" / f"seed{i}").write_bytes(bytes((i * 37 + k * 11) % 256 for k in range(64)))


if __name__ == "__main__":
    main()
