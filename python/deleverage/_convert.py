"""Checked conversions between human units (floats) and the engine's integer fixed point.

Floats exist only here, at the boundary. Sizes and prices must lie on their market's grid
(lots and ticks) up to float noise; money amounts are rounded to the nearest unit (ties to
even). Anything that is not finite, not representable in int64, or of the wrong kind
raises InvalidInput / ArithmeticOverflow naming the field and the index.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

from .errors import ArithmeticOverflow, InvalidInput

# Largest float strictly below 2**63: floats at or above it do not fit in int64.
_FLOAT_LIMIT = float(2**63)
# Relative tolerance for "on the grid": float noise of a decimal literal, not a real offset.
_GRID_TOLERANCE = 1e-9


def plain(value: Any) -> str:
    """A value as the user would write it: ``-5.0``, ``3``, ``'BTC'``; never a numpy repr."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, (str, float)) else str(value)


def as_1d(values: Any, field: str) -> np.ndarray:
    """Scalars become length-1 arrays; anything deeper than 1-d is refused."""
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidInput(f"{field}: expected a scalar or a 1-d array, got {arr.ndim} dimensions")
    return arr


def check_lengths(**arrays: np.ndarray) -> int:
    """All arrays must have the same length; returns it."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, arr in items[1:]:
        if len(arr) != len(first):
            raise InvalidInput(f"{name} has {len(arr)} entries but {first_name} has {len(first)}")
    return len(first)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def integers(values: Any, field: str, dtype: type = np.int64) -> np.ndarray:
    """Integer ids or exact fixed-point values: integer dtypes only, no float casts."""
    if isinstance(values, (list, tuple)):
        if len(values) == 0:
            return np.empty(0, dtype=dtype)
        # numpy turns a list of Python ints beyond int64 into float64: check such lists exactly
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            values = np.array(values, dtype=object) if any(abs(int(v)) >= 2**62 for v in values) else np.array(values, dtype=np.int64)
    arr = as_1d(values, field)
    if arr.dtype == object:
        # Python ints too large for int64 land here (and mixed lists): check each element.
        for i, v in enumerate(arr):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidInput(f"{field}[{i}]: expected an integer, got {type(v).__name__} {plain(v)}")
            if not np.iinfo(dtype).min <= int(v) <= np.iinfo(dtype).max:
                raise ArithmeticOverflow(f"{field}[{i}]: {v} does not fit in {np.dtype(dtype).name}")
        return np.array([int(v) for v in arr], dtype=dtype)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise InvalidInput(f"{field}: expected integers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(dtype).max:
        i = _first_bad(arr > np.iinfo(dtype).max)
        raise ArithmeticOverflow(f"{field}[{i}]: {arr[i]} does not fit in {np.dtype(dtype).name}")
    if np.dtype(dtype).itemsize < arr.dtype.itemsize and arr.size:
        info = np.iinfo(dtype)
        bad = (arr < info.min) | (arr > info.max)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidInput(f"{field}[{i}]: {arr[i]} is out of range")
    return np.ascontiguousarray(arr, dtype=dtype)


def _field_at(field: str, where: Optional[Callable[[int], str]]) -> Callable[[int], str]:
    """``field[i]``, followed by what row i is about when the caller says so."""
    if where is None:
        return lambda i: f"{field}[{i}]"
    return lambda i: f"{field}[{i}] ({where(i)})"


def to_fixed(values: Any, decimals: int | npt.ArrayLike, field: str, *, exact: bool, on_grid: bool,
             where: Optional[Callable[[int], str]] = None) -> np.ndarray:
    """Human units -> int64 units of 10**-decimals (decimals may differ per row).

    exact=True: the values already are integer units and must have an integer dtype.
    on_grid=True: a float must be a whole number of units (sizes, prices); otherwise it is
    rounded to the nearest unit (money). ``where(i)`` names row i's account or market in
    messages (e.g. ``"market 'BTC-PERP'"``).
    """
    if exact:
        return integers(values, field)
    field_at = _field_at(field, where)
    if isinstance(values, (list, tuple)) and len(values) == 0:
        return np.empty(0, dtype=np.int64)
    arr = as_1d(values, field)
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise InvalidInput(f"{field}: expected numbers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind in "iu":
        scale = np.power(10.0, np.asarray(decimals, dtype=np.float64))
        # integers in human units: scale exactly with Python ints when they might overflow
        big = np.abs(arr.astype(np.float64)) * scale >= _FLOAT_LIMIT / 2
        if big.any():
            i = _first_bad(np.broadcast_to(big, arr.shape))
            raise ArithmeticOverflow(f"{field_at(i)}: {plain(arr[i])} does not fit the fixed-point range")
        mult = np.power(10, np.asarray(decimals, dtype=np.int64)).astype(np.int64)
        return np.ascontiguousarray(arr.astype(np.int64) * mult)
    from . import _core  # floats: one compiled pass, rint(x * 10**d) with the checks (2 columns of a load)

    arr = np.ascontiguousarray(arr, dtype=np.float64)
    d = np.ascontiguousarray(np.atleast_1d(np.asarray(decimals, dtype=np.int64)))
    units, kind, i = _core.to_fixed(arr, d, on_grid, _GRID_TOLERANCE, _FLOAT_LIMIT)
    if kind == 1:
        raise InvalidInput(f"{field_at(i)}: {plain(arr[i])} is not a finite number")
    if kind == 2:
        unit = 10.0 ** -float(d[0] if len(d) == 1 else d[i])
        raise InvalidInput(f"{field_at(i)}: {plain(arr[i])} is not a multiple of the unit {unit:g}")
    if kind == 3:
        raise ArithmeticOverflow(f"{field_at(i)}: {plain(arr[i])} does not fit the fixed-point range")
    return units


def from_fixed(values: np.ndarray, decimals: int | np.ndarray) -> np.ndarray:
    """int64 units -> float64 human units (value / 10**decimals, correctly rounded)."""
    if values.dtype == np.int64 and values.ndim == 1 and len(values) >= 1 << 16:
        from . import _core  # large columns: the same division on every core

        d = np.ascontiguousarray(np.atleast_1d(np.asarray(decimals, dtype=np.int64)))
        return _core.to_float(np.ascontiguousarray(values), d)
    return values.astype(np.float64) / np.power(10.0, np.asarray(decimals, dtype=np.float64))


def money_scalar(value: Any, decimals: int, field: str) -> int:
    """One money amount in human units -> integer units of 10**-decimals, ConfigError naming
    ``field`` otherwise. Ints, Decimals, Fractions and decimal strings are converted exactly
    (a cap of 18 significant digits keeps all of them); a non-integral result is rounded to
    the nearest unit, ties to even. Floats are rounded the same way from their binary value.
    """
    from decimal import Decimal, InvalidOperation
    from fractions import Fraction

    from .errors import ConfigError

    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{field} must be a number (got {value!r})")
    try:
        if isinstance(value, (int, np.integer)):
            exact = Fraction(int(value))
        elif isinstance(value, (float, np.floating)):
            if not np.isfinite(value):
                raise ConfigError(f"{field} must be a finite number (got {plain(value)})")
            exact = Fraction(float(value))
        elif isinstance(value, (Decimal, Fraction, str)):
            exact = Fraction(Decimal(value)) if isinstance(value, str) else Fraction(value)
        else:
            raise ConfigError(f"{field} must be a number (got {value!r})")
    except (InvalidOperation, ValueError, OverflowError):
        raise ConfigError(f"{field} must be a finite number (got {value!r})") from None
    units = round(exact * 10**decimals)  # Fraction rounding: nearest, ties to even
    if not -(2**63) <= units < 2**63:
        raise ArithmeticOverflow(f"{field}: {plain(value)} does not fit the fixed-point range")
    return int(units)


def rate_to_fixed(rate: float, field: str) -> int:
    """A fraction in [0, 1] -> integer units of 1e-8, rounded to nearest."""
    from .errors import ConfigError

    r = float(rate)
    if not np.isfinite(r) or r < 0 or r > 1:
        raise ConfigError(f"{field} must be a fraction between 0 and 1 (got {plain(rate)})")
    return int(round(r * 100_000_000))


def small_int(value: Any, field: str, lo: int, hi: int) -> int:
    """An integer setting (a Python or numpy int, not a bool or float) in [lo, hi], else
    ConfigError naming ``field``: the compiled code takes 32-bit ints, and a silently
    truncated 6.5 or a pybind TypeError for 2**40 would hide the mistake."""
    from .errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{field} must be an integer (got {value!r})")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{field} must be between {lo} and {hi} (got {value!r})")
    return int(value)
