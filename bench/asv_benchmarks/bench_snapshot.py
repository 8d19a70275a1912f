"""asv: snapshot save and load, and the baselines they are compared with (bench/snapshot_workload.py).

Sized like bench_margin.py (``DELEVERAGE_BENCH_POSITIONS``, default 1_000_000).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

_BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

import margin_workload as mw  # noqa: E402
import snapshot_workload as sw  # noqa: E402


class Snapshot:
    timeout = 900.0
    rounds = 2
    repeat = (3, 10, 30.0)

    def setup(self):
        self.w = mw.build_workload(mw.Sizes.from_env(positions=1_000_000, accounts=100_000, markets=100))
        self.dir = tempfile.mkdtemp()
        self.ops = sw.operations(self.w.ex, Path(self.dir))

    def teardown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def time_save(self):
        self.ops["save"]()

    def time_load(self):
        self.ops["load"]()

    def time_copy_same_bytes(self):
        self.ops["copy"]()

    def time_file_write_same_bytes(self):
        self.ops["file_write"]()

    def time_file_read_same_bytes(self):
        self.ops["file_read"]()

    def track_save_over_file_write(self):
        return mw.best_of(self.ops["save"], 3) / mw.best_of(self.ops["file_write"], 3)

    track_save_over_file_write.unit = "ratio"

    def track_load_over_engine_copy(self):
        return mw.best_of(self.ops["load"], 3) / mw.best_of(self.ops["engine_copy"], 3)

    track_load_over_engine_copy.unit = "ratio"
