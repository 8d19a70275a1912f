"""The policy lab's allocation kernel: split a budget over winners under one policy.

:func:`allocate` is pure (no exchange state) and runs in compiled code with the GIL
released. It works in one of two numeric modes, chosen by the dtype of ``capacity``:

* **exact** (integer ``capacity``): ``budget``, ``capacity`` and ``lot`` are integer money
  (or size) units; ``cap`` and ``leverage`` are integers in units of ``1e-8``
  (:data:`RATE_SCALE`: ``cap=50_000_000`` is 50%, ``leverage=250_000_000`` is 2.5x). The
  result is int64 and sums to the budget exactly; every money sum is integer arithmetic.
* **float** (float64 ``capacity``): everything is float64, ``cap`` a plain fraction and
  ``leverage`` a plain ratio; the result is float64.

Policies (``w`` = capacity, ``B`` = budget, ``x`` = the result, ``0 <= x_i <= w_i``):

``"queue"``
    Winners ordered by ``score`` descending (ties: smaller index first); each takes
    ``x_i = min(w_i, B - taken so far)``: a greedy prefix of the ranking.
``"pro_rata"``
    ``x_i = B * w_i / sum(w)``. Exact mode: ``floor`` of that, and the ``B - sum(floor)``
    leftover units go one each to the largest remainders (ties: smaller index).
``"capped_pro_rata"``
    One common level ``tau``, but no winner above its cap: ``x_i = min(K_i, tau * w_i)`` with
    ``K_i = cap_i * w_i`` (exact mode: ``floor(w_i * cap_i / 1e8)``) and ``tau`` found by
    water-filling so that ``sum(x) = B``; exact mode rounds the uncapped ones by largest
    remainder. ``cap`` is the largest fraction of its capacity a winner may lose.
``"risk_aware"``
    Fraction ``h_i = min(cap_i, tau * lambda_i * g(lambda_i))`` with ``g`` one of
    ``"linear"`` (``g(l) = l``), ``"power:k"`` (``l**k``), ``"excess:l0"`` (``max(l - l0, 0)``);
    ``tau`` by water-filling, ``cap`` optional (default 1). Uncapped, ``x_i`` is proportional
    to ``w_i * lambda_i * g(lambda_i)``. Exact mode: the risk weight ``r_i = l*g(l)`` (with
    ``l = leverage_i / 1e8``) is computed in float64, normalised ``rho_i = r_i / max(r)``,
    rounded to ``rhohat_i = floor(rho_i * 2**32 + 0.5)``; the pull weight is
    ``v_i = round_half_up(w_i * rhohat_i / 2**(32 - s))`` with
    ``s = clip(62 - bit_length(sum w), 0, 32)`` and ``x_i = min(K_i, tau * v_i)`` rounded by
    largest remainder. With constant leverage this is exactly (capped) pro-rata.
``"min_max_lots"``
    Close mode with whole lots of size ``lot``: winner ``i`` holds ``floor(w_i / lot)`` lots;
    ``ceil(B / lot)`` lots are handed out one at a time, each to the winner whose next lot
    gives the smallest fraction ``m * lot / w_i`` (ties: smaller index). This minimises the
    largest fraction ``max x_i / w_i`` subject to whole lots and ``sum(x) >= B``; the total
    overshoots ``B`` by less than one lot.
``"random_walk"``
    dYdX v4 style: start at ``splitmix64(seed) mod n`` and walk ``start, start+1, ...``
    (wrapping), ``x_i = min(w_i, B - taken so far)``.

Optional inputs: ``weights`` (``pro_rata``: ``x_i = min(w_i, tau * u_i)``, pro-rata by a weight
other than capacity, by water-filling), ``lot`` as one value or one per winner
(``min_max_lots``: winner ``i`` holds ``floor(w_i / lot_i)`` lots; its ``m``-th lot sits at the
fraction ``m * lot_i / base_i`` and lots go out in (fraction, index) order until their amounts
reach ``B``), and ``base`` (``capped_pro_rata``, ``risk_aware``, ``min_max_lots``: the
denominator of "fraction taken", e.g. equity; ``K_i = min(w_i, cap_i * base_i)`` and the
common level applies to ``base_i``). A winner whose capacity is below one lot, or whose
weight or base is 0, cannot pay.

A budget above what the policy can raise (``sum(w)``; ``sum(K_i)`` over the winners that can
pay for the capped policies; whole lots for ``min_max_lots``) raises :class:`InvalidInput`
unless ``clip=True``, which lowers the budget to that amount. Arguments a policy does not
use (``score`` outside ``queue``, ...) are refused rather than ignored.
"""

from __future__ import annotations

import operator
from typing import Any, Literal, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _core
from ._convert import as_1d, integers, small_int
from .errors import ArithmeticOverflow, InvalidInput

__all__ = ["allocate", "POLICIES", "RATE_SCALE"]

#: Units of ``cap`` and ``leverage`` in exact (integer) mode: 1e-8.
RATE_SCALE = 100_000_000

Policy = Literal["queue", "pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk"]
POLICIES: tuple[str, ...] = tuple(_core.KERNEL_POLICY_NAMES)  # the engine's name table, kernel subset

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_EXACT_INT = 2**53


def _exact_scalar(value: Any, field: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidInput(f"{field}: expected an integer in exact mode (integer capacity), got {type(value).__name__} {value!r}")
    v = int(value)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ArithmeticOverflow(f"{field}: {v} does not fit in int64")
    return v


def _float_scalar(value: Any, field: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInput(f"{field}: expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _float_array(values: Any, field: str) -> np.ndarray:
    """float64 as is; integer arrays are widened (exactly, up to 2**53); anything else refused."""
    arr = as_1d(values, field)
    if arr.dtype == np.float64:
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iu" and arr.dtype != np.bool_:
        if arr.size and int(np.abs(arr.astype(object)).max()) > _FLOAT_EXACT_INT:
            i = int(np.flatnonzero(np.abs(arr.astype(object)) > _FLOAT_EXACT_INT)[0])
            raise InvalidInput(f"{field}[{i}]: {arr[i]} is not exactly representable as float64")
        return arr.astype(np.float64)
    if arr.size == 0 and arr.dtype == object:
        return np.empty(0, dtype=np.float64)
    raise InvalidInput(f"{field}: expected float64 (or integer) values, got an array of dtype {arr.dtype}")


def _capacity(values: Any) -> tuple[np.ndarray, bool]:
    if isinstance(values, (list, tuple)) and len(values) == 0:
        raise InvalidInput("capacity: an empty list has no dtype; pass np.array([], dtype=np.int64) or float64")
    if isinstance(values, (list, tuple)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return integers(values, "capacity"), True
    arr = as_1d(values, "capacity")
    if arr.dtype.kind in "iu" and arr.dtype != np.bool_:
        return integers(arr, "capacity"), True
    if arr.dtype == np.float64:
        return np.ascontiguousarray(arr), False
    raise InvalidInput(f"capacity: expected an integer (exact mode) or float64 array, got dtype {arr.dtype}")


def allocate(
    budget: Union[int, float],
    capacity: npt.ArrayLike,
    policy: Policy,
    *,
    score: Optional[npt.ArrayLike] = None,
    leverage: Optional[npt.ArrayLike] = None,
    cap: Optional[npt.ArrayLike] = None,
    lot: Optional[Union[int, float, npt.ArrayLike]] = None,
    g: str = "linear",
    seed: int = 0,
    clip: bool = False,
    weights: Optional[npt.ArrayLike] = None,
    base: Optional[npt.ArrayLike] = None,
    threads: int = 0,
) -> np.ndarray:
    """Split ``budget`` over the winners under ``policy``; one amount per winner.

    Args:
        budget: the amount to raise (``>= 0``); an integer in exact mode.
        capacity: ``w_i >= 0`` per winner. Integer dtype -> exact mode (int64 result summing
            to ``budget`` exactly); float64 -> float mode (float64 result).
        policy: ``"queue"``, ``"pro_rata"``, ``"capped_pro_rata"``, ``"risk_aware"``,
            ``"min_max_lots"`` or ``"random_walk"`` (formulas in the module docstring).
        score: ``queue`` only: ranking key per winner, higher is taken first (float64;
            integers up to 2**53 accepted). No NaN.
        leverage: ``risk_aware`` only: effective leverage per winner (exact mode: int64 in
            units of 1e-8; float mode: float64), ``>= 0``.
        cap: ``capped_pro_rata`` (required) and ``risk_aware`` (optional): the largest
            fraction of its capacity each winner may lose, one value or one per winner
            (exact mode: int64 in ``[0, 1e8]``; float mode: float64 in ``[0, 1]``).
        lot: ``min_max_lots`` only: the lot size, ``> 0``: one value, or one per winner
            (positions in contracts of different sizes).
        g: ``risk_aware`` only: ``"linear"``, ``"power:k"`` or ``"excess:l0"`` (``k, l0 >= 0``).
        seed: ``random_walk``: the seed of the start offset (``0 <= seed < 2**64``).
        clip: lower a budget above what the policy can raise instead of raising.
        weights: ``pro_rata`` only: amounts in proportion to these weights (``>= 0``, one
            per winner, total within int64 in exact mode) instead of capacity, each capped by
            its capacity (water-filling); a winner of weight 0 pays nothing.
        base: ``capped_pro_rata``, ``risk_aware``, ``min_max_lots``: the denominator of the
            "fraction taken" (``>= 0``, one per winner, e.g. equity; default: capacity). The
            fraction of winner ``i`` is ``x_i / base_i`` and ``cap`` is a fraction of the base
            (risk_aware without ``cap``: at most the base). A winner with base 0 pays nothing.
        threads: threads for the long passes over the winners, as ``Exchange(threads=)``: 0
            (every core) or a count (at most 8 are used). The amounts never depend on it.

    Raises:
        InvalidInput: a bad argument (the message names the field and index), or a budget
            the policy cannot raise without ``clip``.
        ArithmeticOverflow: exact-mode values or the total capacity beyond int64.
    """
    if not isinstance(policy, str):
        raise InvalidInput(f"policy: expected a string, got {type(policy).__name__}")
    if not isinstance(g, str):
        raise InvalidInput(f"g: expected a string, got {type(g).__name__}")
    try:
        seed_int = operator.index(seed)
    except TypeError:
        raise InvalidInput(f"seed: expected an integer, got {type(seed).__name__}") from None
    if isinstance(seed, bool) or not 0 <= seed_int < 2**64:
        raise InvalidInput(f"seed: {seed!r} must be an integer in [0, 2**64)")
    n_threads = small_int(threads, "threads", 0, 2**16)
    w, exact = _capacity(capacity)
    score_arr = None if score is None else _float_array(score, "score")
    if exact:
        b = _exact_scalar(budget, "budget")
        lev = None if leverage is None else _exact_array(leverage, "leverage")
        cp = None if cap is None else _exact_array(cap, "cap")
        lt = None if lot is None or _is_array(lot) else _exact_scalar(lot, "lot")
        lts = _exact_array(lot, "lot", rate=False) if _is_array(lot) else None
        wts = None if weights is None else _exact_array(weights, "weights", rate=False)
        bs = None if base is None else _exact_array(base, "base", rate=False)
        return _core.allocate_exact(policy, b, w, score_arr, lev, cp, lt, g, seed_int, bool(clip), lts, wts, bs,
                                    n_threads)
    fb = _float_scalar(budget, "budget")
    flev = None if leverage is None else _float_array(leverage, "leverage")
    fcp = None if cap is None else _float_array(cap, "cap")
    flt = None if lot is None or _is_array(lot) else _float_scalar(lot, "lot")
    flts = _float_array(lot, "lot") if _is_array(lot) else None
    fw = None if weights is None else _float_array(weights, "weights")
    fbs = None if base is None else _float_array(base, "base")
    return _core.allocate_float(policy, fb, w, score_arr, flev, fcp, flt, g, seed_int, bool(clip), flts, fw, fbs,
                                n_threads)


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) > 0


def _exact_array(values: Any, field: str, rate: bool = True) -> np.ndarray:
    arr = values if isinstance(values, np.ndarray) else None
    if isinstance(values, (list, tuple)) and any(isinstance(v, (float, np.floating)) for v in values):
        arr = np.asarray(values, dtype=np.float64)
    elif not isinstance(values, (list, tuple, np.ndarray)):
        arr = np.asarray(values)
    if arr is not None and arr.dtype.kind == "f":
        if not rate:
            raise InvalidInput(f"{field}: exact mode (integer capacity) takes integers, got an array of dtype {arr.dtype}")
        raise InvalidInput(
            f"{field}: exact mode (integer capacity) takes integers in units of 1e-8 "
            f"(e.g. 0.5 -> {RATE_SCALE // 2}), got an array of dtype {arr.dtype}"
        )
    return integers(values, field)
