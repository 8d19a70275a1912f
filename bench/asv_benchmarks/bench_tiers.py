"""asv: the full margin check on flat markets and on tiered ones (bench/load_workload.py: 5 or
12 tiers per market, every tier in use). Sized by ``DELEVERAGE_BENCH_POSITIONS`` (default 1_000_000)."""

from __future__ import annotations

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import load_workload as lw  # noqa: E402


class TieredCheck:
    timeout = 900.0
    repeat = (3, 10, 60.0)
    params = [[0, 5, 12]]
    param_names = ["tiers"]  # 0: flat markets

    def setup(self, tiers):
        book = lw.Book(lw.LoadSpec.from_env(positions=1_000_000))
        self.ex = book.fresh_exchange(tiers)
        lw.load(self.ex, book.rows("account"))

    def time_check_margin_exact(self, tiers):
        self.ex.check_margin(exact=True)
