"""asv: the allocation kernel (``deleverage.allocate``) on one set of winners, every policy
in exact mode, and the numpy baseline of two of them.

Sized by ``DELEVERAGE_BENCH_WINNERS`` (default 1_000_000), like bench/test_allocate.py, whose
winners, kernel calls and numpy baselines these reuse.
"""

from __future__ import annotations

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import test_allocate as ta  # noqa: E402

_POLICIES = ["queue", "pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk"]


class Allocate:
    timeout = 600.0
    repeat = (3, 20, 30.0)
    params = [_POLICIES]
    param_names = ["policy"]

    def setup_cache(self):
        return ta.Winners(ta.N)

    def setup(self, winners, policy):
        self.z = winners
        self.kernel = ta._kernel(policy, True)
        ta.check(policy, self.kernel(self.z), self.z)  # a wrong result is not timed

    def time_kernel(self, winners, policy):
        self.kernel(self.z)


class AllocateNumpy:
    """The obvious numpy implementations (float64, sorting where the kernel selects)."""

    timeout = 600.0
    repeat = (3, 10, 30.0)
    params = [["queue", "capped_pro_rata"]]
    param_names = ["policy"]

    def setup_cache(self):
        return ta.Winners(ta.N)

    def time_numpy(self, winners, policy):
        ta.BASELINES[policy](winners)
