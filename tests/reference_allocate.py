"""Slow pure-Python reference of every allocation policy (exact mode), straight from the
definitions in python/deleverage/allocate.py: sorting, Fractions and heaps, no selection
tricks. Used to check the compiled kernel on random inputs."""

from __future__ import annotations

import heapq
import math
from fractions import Fraction
from typing import Optional, Sequence

SCALE = 100_000_000
MASK64 = 2**64 - 1


class Infeasible(Exception):
    pass


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _budget(budget: int, reachable: int, clip: bool) -> int:
    if budget <= reachable:
        return budget
    if clip:
        return reachable
    raise Infeasible(f"budget {budget} above {reachable}")


def queue(budget: int, w: Sequence[int], score: Sequence[float], clip: bool = False) -> list[int]:
    b = _budget(budget, sum(w), clip)
    order = sorted(range(len(w)), key=lambda i: (-score[i], i))
    x = [0] * len(w)
    for i in order:
        x[i] = min(w[i], b)
        b -= x[i]
    return x


def random_walk(budget: int, w: Sequence[int], seed: int, clip: bool = False) -> list[int]:
    b = _budget(budget, sum(w), clip)
    n = len(w)
    x = [0] * n
    if n == 0:
        return x
    start = splitmix64(seed) % n
    for k in range(n):
        i = (start + k) % n
        x[i] = min(w[i], b)
        b -= x[i]
    return x


def water_fill(budget: int, K: Sequence[int], v: Sequence[int], clip: bool = False) -> list[int]:
    """x_i = min(K_i, tau*v_i) with the exact rational tau making the sum `budget`, then
    floor + largest remainder (ties: smaller index)."""
    n = len(K)
    live = [i for i in range(n) if K[i] > 0 and v[i] > 0]
    b = _budget(budget, sum(K[i] for i in live), clip)
    x = [0] * n
    if b == 0:
        return x
    # saturation order: by K_i / v_i; walk it with exact fractions
    order = sorted(live, key=lambda i: Fraction(K[i], v[i]))
    left, vleft = Fraction(b), sum(v[i] for i in live)
    tau: Optional[Fraction] = None
    for i in order:
        t = Fraction(K[i], v[i])
        if t * vleft <= left:  # saturated at the level where the rest would share `left`
            left -= K[i]
            vleft -= v[i]
        else:
            tau = left / vleft
            break
    y = [Fraction(0)] * n
    for i in live:
        y[i] = Fraction(K[i]) if tau is None else min(Fraction(K[i]), tau * v[i])
    assert sum(y) == b
    x = [math.floor(yi) for yi in y]
    extra = b - sum(x)
    by_rem = sorted(live, key=lambda i: (-(y[i] - x[i]), i))
    for i in by_rem[:extra]:
        x[i] += 1
    return x


def pro_rata(budget: int, w: Sequence[int], clip: bool = False, weights: Optional[Sequence[int]] = None) -> list[int]:
    """x_i = min(w_i, tau * u_i) with u = weights (default: w itself)."""
    return water_fill(budget, w, w if weights is None else weights, clip)


def cap_amounts(w: Sequence[int], cap: Optional[Sequence[int]], base: Optional[Sequence[int]] = None) -> list[int]:
    """K_i = min(w_i, floor(b_i * cap_i / 1e8)), b = base (default: w), cap default 1."""
    b = w if base is None else base
    if cap is None:
        return [min(wi, bi) for wi, bi in zip(w, b)]
    if len(cap) == 1:
        cap = list(cap) * len(w)
    return [min(wi, bi * ci // SCALE) for wi, bi, ci in zip(w, b, cap)]


def capped_pro_rata(
    budget: int, w: Sequence[int], cap: Sequence[int], clip: bool = False, base: Optional[Sequence[int]] = None
) -> list[int]:
    return water_fill(budget, cap_amounts(w, cap, base), w if base is None else base, clip)


def risk_g(lam: float, g: str) -> float:
    if g == "linear":
        return lam
    kind, arg = g.split(":")
    p = float(arg)
    return lam**p if kind == "power" else max(lam - p, 0.0)


def risk_pull_weights(w: Sequence[int], leverage: Sequence[int], g: str) -> list[int]:
    r = [(lev / SCALE) * risk_g(lev / SCALE, g) for lev in leverage]
    rmax = max(r, default=0.0)
    rho = [ri / rmax if rmax > 0 else 0.0 for ri in r]
    rhohat = [math.floor(p * 2**32 + 0.5) for p in rho]
    s = min(max(62 - sum(w).bit_length(), 0), 32)
    if s == 32:
        return [wi * rh for wi, rh in zip(w, rhohat)]
    half = 1 << (31 - s)
    return [(wi * rh + half) >> (32 - s) for wi, rh in zip(w, rhohat)]


def risk_aware(
    budget: int,
    w: Sequence[int],
    leverage: Sequence[int],
    cap: Optional[Sequence[int]] = None,
    g: str = "linear",
    clip: bool = False,
    base: Optional[Sequence[int]] = None,
) -> list[int]:
    b = w if base is None else base
    return water_fill(budget, cap_amounts(w, cap, base), risk_pull_weights(b, leverage, g), clip)


def min_max_lots_one_by_one(
    budget: int, w: Sequence[int], lot: "int | Sequence[int]", clip: bool = False, base: Optional[Sequence[int]] = None
) -> list[int]:
    """The definition, literally: winner i holds floor(w_i / lot_i) lots (none if base_i == 0);
    its m-th lot (amount lot_i) sits at the fraction m*lot_i/base_i (base default: w). Lots are
    handed out one at a time in (fraction, index) order until their amounts reach the budget.
    One heap operation per lot: only for budgets of a few thousand lots."""
    lots = [lot] * len(w) if isinstance(lot, int) else list(lot)
    b_ = list(w) if base is None else list(base)
    maxl = [wi // li if bi > 0 else 0 for wi, li, bi in zip(w, lots, b_)]
    b = _budget(budget, sum(li * m for li, m in zip(lots, maxl)), clip)
    taken = [0] * len(w)
    heap = [(Fraction(lots[i], b_[i]), i) for i in range(len(w)) if maxl[i] > 0]
    heapq.heapify(heap)
    got = 0
    while got < b:
        _, i = heapq.heappop(heap)
        taken[i] += 1
        got += lots[i]
        if taken[i] < maxl[i]:
            heapq.heappush(heap, (Fraction((taken[i] + 1) * lots[i], b_[i]), i))
    return [li * t for li, t in zip(lots, taken)]


def min_max_lots(
    budget: int, w: Sequence[int], lot: "int | Sequence[int]", clip: bool = False, base: Optional[Sequence[int]] = None
) -> list[int]:
    """min_max_lots: by level for a few winners sharing a budget of many lots (the level
    search costs winners^2 per bisection step), lot by lot otherwise."""
    lots = [lot] * len(w) if isinstance(lot, int) else list(lot)
    if len(w) > 64 or budget // max(1, min(lots, default=1)) <= 100_000:
        return min_max_lots_one_by_one(budget, w, lot, clip, base)
    return min_max_lots_by_level(budget, w, lot, clip, base)


def min_max_lots_by_level(
    budget: int, w: Sequence[int], lot: "int | Sequence[int]", clip: bool = False, base: Optional[Sequence[int]] = None
) -> list[int]:
    """The same hand-out as :func:`min_max_lots_one_by_one` (tests check they agree), found
    by its last fraction instead of lot by lot, so that books with 2^40 lots stay testable.

    With A(t) = the amount of the lots at fractions < t, the last lot handed out sits at the
    largest fraction t* with A(t*) < budget (found per winner by bisection over its lots).
    Every lot below t* is taken; the lots exactly at t* go in index order until the budget."""
    lots = [lot] * len(w) if isinstance(lot, int) else list(lot)
    b_ = list(w) if base is None else list(base)
    n = len(w)
    maxl = [wi // li if bi > 0 else 0 for wi, li, bi in zip(w, lots, b_)]
    b = _budget(budget, sum(li * m for li, m in zip(lots, maxl)), clip)
    if b <= 0:
        return [0] * n

    def below(t: Fraction, i: int) -> int:  # lots of winner i at fractions < t
        return min(maxl[i], max(0, math.ceil(t * b_[i] / lots[i]) - 1))

    def amount_below(t: Fraction) -> int:
        return sum(lots[i] * below(t, i) for i in range(n) if maxl[i] > 0)

    t_star = None
    for i in range(n):
        if maxl[i] == 0:
            continue
        lo, hi = 0, maxl[i]  # largest m in [1, maxl] with A(m * lot / base) < b; 0: none
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if amount_below(Fraction(mid * lots[i], b_[i])) < b:
                lo = mid
            else:
                hi = mid - 1
        if lo > 0:
            f = Fraction(lo * lots[i], b_[i])
            t_star = f if t_star is None else max(t_star, f)
    taken = [below(t_star, i) if maxl[i] > 0 else 0 for i in range(n)]
    got = sum(lots[i] * taken[i] for i in range(n))
    for i in range(n):  # the lots exactly at t*, in index order
        if got >= b:
            break
        if maxl[i] == 0:
            continue
        m = t_star * b_[i] / lots[i]
        if m.denominator == 1 and 1 <= m.numerator <= maxl[i]:
            taken[i] += 1
            got += lots[i]
    return [li * t for li, t in zip(lots, taken)]


def allocate(
    budget: int,
    w: Sequence[int],
    policy: str,
    *,
    score: Optional[Sequence[float]] = None,
    leverage: Optional[Sequence[int]] = None,
    cap: Optional[Sequence[int]] = None,
    lot: "Optional[int | Sequence[int]]" = None,
    g: str = "linear",
    seed: int = 0,
    clip: bool = False,
    weights: Optional[Sequence[int]] = None,
    base: Optional[Sequence[int]] = None,
) -> list[int]:
    if policy == "queue":
        assert score is not None
        return queue(budget, w, score, clip)
    if policy == "pro_rata":
        return pro_rata(budget, w, clip, weights)
    if policy == "capped_pro_rata":
        assert cap is not None
        return capped_pro_rata(budget, w, cap, clip, base)
    if policy == "risk_aware":
        assert leverage is not None
        return risk_aware(budget, w, leverage, cap, g, clip, base)
    if policy == "min_max_lots":
        assert lot is not None
        return min_max_lots(budget, w, lot, clip, base)
    if policy == "random_walk":
        return random_walk(budget, w, seed, clip)
    raise ValueError(policy)
