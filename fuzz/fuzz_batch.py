"""Fuzz target: the batch input paths (deposit, withdraw, load_positions, trades, set_marks,
check_margin) with arrays of random dtypes, lengths and values (NaN, inf, huge, negative,
off-grid), lists, scalars and symbols, in human units or exact.

Oracle: a call either succeeds, leaving a state that passes check_invariants, or raises a
deleverage error and leaves the state exactly as it was (same state hash).
"""

from __future__ import annotations

import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports():
    import numpy as np
    from common import small_exchange

    from deleverage.errors import DeleverageError

BASE = small_exchange()
DTYPES = [np.int64, np.int32, np.uint64, np.float64, np.float32, np.bool_, np.int8, object]
SPECIAL = [0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, -0.5, 1e300, float("nan"), float("inf"), 1e-9, 99, 3]


def draw_value(fdp: atheris.FuzzedDataProvider) -> object:
    k = fdp.ConsumeIntInRange(0, 3)
    if k == 0:
        return SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)]
    if k == 1:
        return fdp.ConsumeIntInRange(-1000, 1000)
    if k == 2:
        return fdp.ConsumeRegularFloat()
    return ["A", "B", "C", ""][fdp.ConsumeIntInRange(0, 3)]


def draw_array(fdp: atheris.FuzzedDataProvider, n: int) -> object:
    values = [draw_value(fdp) for _ in range(n)]
    form = fdp.ConsumeIntInRange(0, 3)
    if form == 0:
        return values
    if form == 1:
        return values[0] if values else 0
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    try:
        return np.array(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        return np.array(values, dtype=object)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    ex = BASE.copy()
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 5)
        n = fdp.ConsumeIntInRange(0, 4)
        args = [draw_array(fdp, n if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 4)) for _ in range(5)]
        exact = fdp.ConsumeBool()
        before = ex.state_hash()
        try:
            if op == 0:
                ex.deposit(args[0], args[1], exact=exact)
            elif op == 1:
                ex.withdraw(args[0], args[1], exact=exact)
            elif op == 2:
                cp = [None, 99, 1][fdp.ConsumeIntInRange(0, 2)]
                ex.load_positions(args[0], args[1], args[2], args[3], counterparty=cp, exact=exact)
            elif op == 3:
                ex.trades(args[0], args[1], args[2], args[3], args[4], exact=exact)
            elif op == 4:
                ex.set_marks(args[0], args[1], exact=exact)
            else:
                ex.check_margin(args[0], exact=exact)
        except DeleverageError:
            assert ex.state_hash() == before, "a call that raised changed the state"
            continue
        ex.check_invariants()


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
