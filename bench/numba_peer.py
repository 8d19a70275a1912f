"""The margin check a quant would write instead of calling the engine: a Numba loop over the
book's account-sorted position columns (margin_workload.Columns), once on one thread and once
with ``prange`` over accounts. Same float64 formulas as margin_workload.numpy_margin_check
(docs/semantics.md without the exact rounding); the benchmarks time it next to the engine in
the same run.

Numba is optional (the ``bench`` extra). Without it ``available()`` is False and the reason is
in ``MISSING``; the benchmarks skip, or fail when ``DELEVERAGE_REQUIRE_NUMBA=1`` (CI).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import margin_workload as mw
import numpy as np

MISSING = "numba is not installed (pip install '.[bench]' or pip install numba)"
REQUIRED = os.environ.get("DELEVERAGE_REQUIRE_NUMBA", "") not in ("", "0", "false", "no")

try:
    import numba

    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the environment
    numba = None
    _IMPORT_ERROR = str(exc)


def available() -> bool:
    return numba is not None


def _check(start, market, size, entry, balance, px, mmr, imr, equity, maintenance, initial, liquidatable):
    # one account per iteration: its positions are start[a] .. start[a + 1] in the columns
    for a in numba.prange(len(balance)):
        u = 0.0
        mm = 0.0
        im = 0.0
        for p in range(start[a], start[a + 1]):
            m = market[p]
            value = size[p] * px[m]
            u += value - entry[p]
            notional = abs(value)
            mm += notional * mmr[m]
            im += notional * imr[m]
        e = balance[a] + u
        equity[a] = e
        maintenance[a] = mm
        initial[a] = im
        liquidatable[a] = e < mm


class NumbaCheck:
    """The compiled loop and its inputs, prepared once (untimed, like the engine's load):
    account offsets into the account-sorted columns and the per-market price per lot."""

    def __init__(self, cols: mw.Columns, parallel: bool):
        if numba is None:
            raise RuntimeError(MISSING)
        self.cols = cols
        self.start = np.searchsorted(cols.account, np.arange(cols.n_accounts + 1)).astype(np.int64)
        self.market = cols.market.astype(np.int64)
        self.size = cols.size.astype(np.float64)
        self.entry = cols.entry.astype(np.float64)
        self.balance = cols.balance.astype(np.float64)
        self.px = cols.mark * cols.money_per_lot_tick  # money units per lot at the mark
        self.parallel = parallel
        self._fn = numba.njit(parallel=parallel, fastmath=False, cache=False)(_check)
        self()  # compile outside the timings

    def __call__(self) -> dict[str, np.ndarray]:
        n = self.cols.n_accounts
        out = {k: np.empty(n) for k in ("equity", "maintenance", "initial")}
        out["liquidatable"] = np.empty(n, dtype=np.bool_)
        self._fn(self.start, self.market, self.size, self.entry, self.balance, self.px, self.cols.mmr, self.cols.imr,
                 out["equity"], out["maintenance"], out["initial"], out["liquidatable"])
        out["bankrupt"] = out["equity"] < 0
        return out


def threads() -> int:
    return int(numba.get_num_threads()) if numba is not None else 0


def candidates(cols: mw.Columns) -> dict[str, Callable[[], Any]]:
    """The two peers by name, for a report's candidate table (empty without numba)."""
    if numba is None:
        return {}
    return {"numba loop (1 thread)": NumbaCheck(cols, parallel=False),
            f"numba prange ({threads()} threads)": NumbaCheck(cols, parallel=True)}
