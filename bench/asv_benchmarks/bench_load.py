"""asv: ``load_positions`` of one generated book's rows in random, account and market order
(each into a fresh exchange), and numpy's stable argsort of the random-order account column.

Sized by ``DELEVERAGE_BENCH_POSITIONS`` (rows, default 1_000_000 here), like bench/test_load.py
(bench/load_workload.py).
"""

from __future__ import annotations

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import load_workload as lw  # noqa: E402

_SPEC = lw.LoadSpec.from_env(positions=1_000_000)
_BOOK: "lw.Book | None" = None


def _book() -> lw.Book:
    """One book per process (asv runs each benchmark in its own process)."""
    global _BOOK
    if _BOOK is None:
        _BOOK = lw.Book(_SPEC)
    return _BOOK


class LoadPositions:
    timeout = 900.0
    number = 1
    warmup_time = 0.0
    repeat = (3, 10, 60.0)
    params = [list(lw.ORDERS)]
    param_names = ["order"]

    def setup(self, order):
        self.rows = _book().rows(order)
        self.ex = _book().fresh_exchange()  # a fresh exchange per sample: the load is not repeatable

    def time_load_positions(self, order):
        lw.load(self.ex, self.rows)

    def track_load_over_argsort(self, order):
        load = lw.best_fresh(_book(), self.rows, 3)
        argsort = lw.best_of(lambda: lw.numpy_argsort(_book().rows("random")), 3)
        return load / argsort

    track_load_over_argsort.unit = "ratio"


class NumpyArgsort:
    timeout = 900.0
    repeat = (3, 10, 60.0)

    def setup(self):
        self.rows = _book().rows("random")

    def time_stable_argsort_of_accounts(self):
        lw.numpy_argsort(self.rows)
