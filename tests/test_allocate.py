"""deleverage.allocate: each policy on hand-worked cases, properties on random inputs, the
compiled kernel against tests/reference_allocate.py, and bad inputs."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import reference_allocate as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from deleverage import allocate
from deleverage.errors import ArithmeticOverflow, InvalidInput

S = 100_000_000  # 1e-8 units of cap and leverage in exact mode


def a64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


# ---------------------------------------------------------------- hand-worked cases


def test_queue_by_hand():
    # scores 0.5, 2.0, 2.0, 1.0 -> order #1, #2 (tie: smaller index first), #3, #0.
    # B = 12: #1 gives all 5, #2 gives all 4, #3 gives the remaining 3 of its 6.
    x = allocate(12, a64(7, 5, 4, 6), "queue", score=[0.5, 2.0, 2.0, 1.0])
    assert x.dtype == np.int64
    assert x.tolist() == [0, 5, 4, 3]


def test_pro_rata_by_hand():
    # sum w = 3 + 3 + 4 = 10, B = 7: exact shares 2.1, 2.1, 2.8 -> floors 2, 2, 2 = 6.
    # One unit left: remainders .1, .1, .8 -> #2. Result 2, 2, 3.
    assert allocate(7, a64(3, 3, 4), "pro_rata").tolist() == [2, 2, 3]
    # ties in the remainder go to the smaller index: w = 1, 1, 1, B = 2: shares 2/3 each,
    # floors 0, leftovers 2 -> #0 and #1.
    assert allocate(2, a64(1, 1, 1), "pro_rata").tolist() == [1, 1, 0]


def test_pro_rata_float_by_hand():
    # 6 * (1, 2, 3) / 6 = (1, 2, 3) halved by B = 3: (0.5, 1, 1.5)
    x = allocate(3.0, np.array([1.0, 2.0, 3.0]), "pro_rata")
    assert x.dtype == np.float64
    assert x.tolist() == [0.5, 1.0, 1.5]


def test_capped_pro_rata_by_hand():
    # w = 200, 100, 100; cap = 5%, 50%, 100% -> K = 10, 50, 100.
    # B = 130: try tau with #0 capped: 10 + tau*(100 + 100) = 130 -> tau = 0.6;
    # #1 would take 60 > 50, so #1 is capped too: 10 + 50 + 100*tau = 130 -> tau = 0.7;
    # #0 uncapped would take 140 > 10 (capped, fine), #2 takes 70 < 100. -> 10, 50, 70.
    x = allocate(130, a64(200, 100, 100), "capped_pro_rata", cap=a64(5_000_000, 50_000_000, S))
    assert x.tolist() == [10, 50, 70]
    # float mode, same numbers
    xf = allocate(130.0, np.array([200.0, 100.0, 100.0]), "capped_pro_rata", cap=np.array([0.05, 0.5, 1.0]))
    assert np.allclose(xf, [10.0, 50.0, 70.0], rtol=0, atol=1e-9)


def test_capped_integer_cap_is_floored():
    # w = 3, cap 50% -> K = floor(1.5) = 1; w = 10, cap 100% -> K = 10. B = 4:
    # 1 + 10*tau = 4 would need #0 capped: t_0 = 1/3 <= tau = 0.3? no -> nobody capped:
    # tau*(3 + 10) = 4 -> tau = 4/13: #0 takes 12/13 < 1 ok, #1 40/13 = 3.08.
    # floors 0, 3 = 3; leftover 1 -> remainders 12/13 vs 1/13 -> #0. Result 1, 3.
    assert allocate(4, a64(3, 10), "capped_pro_rata", cap=a64(S // 2, S)).tolist() == [1, 3]


def test_risk_aware_by_hand():
    # leverage 1, 2, 3 with g linear: weights lambda^2 = 1, 4, 9 (w equal).
    # B = 28 over w = 100 each: 28 * (1, 4, 9) / 14 = 2, 8, 18.
    x = allocate(28, a64(100, 100, 100), "risk_aware", leverage=a64(S, 2 * S, 3 * S))
    assert x.tolist() == [2, 8, 18]
    # excess:1.5: g = (0, 0.5, 1.5) -> weights lambda*g = 0, 1, 4.5 -> B = 11: 0, 2, 9
    x = allocate(11, a64(100, 100, 100), "risk_aware", leverage=a64(S, 2 * S, 3 * S), g="excess:1.5")
    assert x.tolist() == [0, 2, 9]
    # power:0 -> weights lambda = 1, 2, 3 -> B = 12: 2, 4, 6 (float mode)
    xf = allocate(12.0, np.array([100.0, 100.0, 100.0]), "risk_aware", leverage=np.array([1.0, 2.0, 3.0]), g="power:0")
    assert np.allclose(xf, [2.0, 4.0, 6.0], rtol=0, atol=1e-12)
    # with a cap of 10% on everyone: weights 1, 4, 9, B = 28 + ... : take B = 25.
    # uncapped tau: 25/14 per weight unit -> #2 would take 16.07 > 10 -> capped at 10;
    # the rest: 15 = tau*(1 + 4) -> 3, 12 -> #1 12 > 10 capped too; 5 = tau*1 -> #0 takes 5.
    x = allocate(25, a64(100, 100, 100), "risk_aware", leverage=a64(S, 2 * S, 3 * S), cap=S // 10)
    assert x.tolist() == [5, 10, 10]


def test_min_max_lots_by_hand():
    # lot 3, w = 9, 6, 12 -> lots 3, 2, 4. B = 10 -> ceil(10/3) = 4 lots.
    # next-lot fractions: #0 1/3, 2/3, 1; #1 1/2, 1; #2 1/4, 1/2, 3/4, 1.
    # smallest four: 1/4 (#2), 1/3 (#0), 1/2 (#1), 1/2 (#2) -> lots 1, 1, 2 -> 3, 3, 6 (= 12 >= 10)
    # largest fraction 1/2; e.g. (6, 0, 6) would be 2/3.
    assert allocate(10, a64(9, 6, 12), "min_max_lots", lot=3).tolist() == [3, 3, 6]
    # a tie at the level goes to the smaller index: w = 4, 4, lot 2, B = 2 -> one lot, both at 1/2 -> #0
    assert allocate(2, a64(4, 4), "min_max_lots", lot=2).tolist() == [2, 0]


def test_random_walk_by_hand():
    # splitmix64(0) = 0xE220A8397B1DCDAF (published first output of SplitMix64 seeded 0);
    # mod 4 = 3 -> start at #3: takes 2, wrap to #0: takes 3, #1 the remaining 1.
    assert 0xE220A8397B1DCDAF % 4 == 3
    assert allocate(6, a64(3, 3, 3, 2), "random_walk", seed=0).tolist() == [3, 1, 0, 2]


def test_clip():
    # B = 10 above sum w = 6: error, or everything with clip
    with pytest.raises(InvalidInput, match="clip"):
        allocate(10, a64(1, 2, 3), "pro_rata")
    assert allocate(10, a64(1, 2, 3), "pro_rata", clip=True).tolist() == [1, 2, 3]
    # capped: K = 0, 1 (50% of 2): reachable 1
    assert allocate(5, a64(1, 2), "capped_pro_rata", cap=S // 2, clip=True).tolist() == [0, 1]
    # whole lots: lots of 2 in 3 and 5 -> 2 + 4 = 6 reachable
    assert allocate(8, a64(3, 5), "min_max_lots", lot=2, clip=True).tolist() == [2, 4]
    with pytest.raises(InvalidInput):
        allocate(7, a64(3, 5), "min_max_lots", lot=2)


# ---------------------------------------------------------------- strategies

caps_st = st.lists(st.integers(0, 10**6), min_size=1, max_size=30)


@st.composite
def problem(draw, max_w=10**6, max_n=30):
    w = draw(st.lists(st.integers(0, max_w), min_size=1, max_size=max_n))
    frac = draw(st.fractions(0, 1))
    budget = int(frac * sum(w))
    return budget, w


def bounded(x, w):
    return all(0 <= xi <= wi for xi, wi in zip(x, w))


@given(problem(), st.data())
def test_queue_greedy_prefix(p, data):
    budget, w = p
    score = data.draw(st.lists(st.integers(-3, 3), min_size=len(w), max_size=len(w)))
    x = allocate(budget, np.array(w, dtype=np.int64), "queue", score=np.array(score, dtype=np.float64)).tolist()
    assert sum(x) == budget and bounded(x, w)
    order = sorted(range(len(w)), key=lambda i: (-score[i], i))
    # greedy prefix: everyone before the first partially-taken winner is taken in full, nobody after
    seen_partial = False
    for i in order:
        if seen_partial:
            assert x[i] == 0
        elif x[i] < w[i]:
            seen_partial = True


@given(problem())
def test_pro_rata_sum_bounds_and_shares(p):
    budget, w = p
    x = allocate(budget, np.array(w, dtype=np.int64), "pro_rata").tolist()
    assert sum(x) == budget and bounded(x, w)
    total = sum(w)
    for xi, wi in zip(x, w):  # within one unit of the exact share (all zero when nothing to take)
        assert abs(Fraction(xi) - Fraction(budget * wi, max(total, 1))) < 1


@given(problem(max_w=10**5), st.integers(1, 1000))
def test_pro_rata_scale_invariant(p, k):
    budget, w = p
    x = allocate(budget, np.array(w, dtype=np.int64), "pro_rata").tolist()
    # capacities in other units (times k): the shares B*k*w_i/(k*W) are the same numbers,
    # so the amounts are identical, rounding included
    xk = allocate(budget, np.array(w, dtype=np.int64) * k, "pro_rata").tolist()
    assert xk == x
    # budget and capacities both times k: every exact share is k times larger, the
    # integer amounts within one unit of k times the old ones
    xkk = allocate(budget * k, np.array(w, dtype=np.int64) * k, "pro_rata").tolist()
    assert sum(xkk) == budget * k
    assert all(abs(a - k * b) <= k for a, b in zip(xkk, x))
    wf = np.array(w, dtype=np.float64)
    if wf.sum() > 0:
        xf = allocate(float(budget), wf, "pro_rata")
        xfk = allocate(float(budget) * k, wf * k, "pro_rata")
        assert np.allclose(xfk, xf * k, rtol=1e-12, atol=1e-9)


@given(problem(), st.integers(1, 50 * S))
def test_risk_aware_constant_leverage_is_pro_rata(p, lev):
    budget, w = p
    wa = np.array(w, dtype=np.int64)
    x = allocate(budget, wa, "risk_aware", leverage=np.full(len(w), lev, dtype=np.int64))
    assert x.tolist() == ref.pro_rata(budget, w)
    assert sum(x.tolist()) == budget


@given(problem(), st.data())
def test_risk_aware_constant_leverage_with_cap_is_capped(p, data):
    _, w = p
    cap = data.draw(st.lists(st.integers(0, S), min_size=len(w), max_size=len(w)))
    reach = sum(wi * ci // S for wi, ci in zip(w, cap))
    budget = data.draw(st.integers(0, reach))
    wa, ca = np.array(w, dtype=np.int64), np.array(cap, dtype=np.int64)
    x = allocate(budget, wa, "risk_aware", leverage=np.full(len(w), 3 * S, dtype=np.int64), cap=ca).tolist()
    assert x == ref.capped_pro_rata(budget, w, cap)


@given(problem(), st.data())
def test_capped_respects_caps(p, data):
    _, w = p
    cap = data.draw(st.lists(st.integers(0, S), min_size=len(w), max_size=len(w)))
    reach = sum(wi * ci // S for wi, ci in zip(w, cap))
    budget = data.draw(st.integers(0, reach))
    x = allocate(budget, np.array(w, dtype=np.int64), "capped_pro_rata", cap=np.array(cap, dtype=np.int64)).tolist()
    assert sum(x) == budget
    for xi, wi, ci in zip(x, w, cap):
        assert 0 <= xi and xi * S <= wi * ci


def brute_min_max(budget, w, lot):
    best = None
    for ks in itertools.product(*[range(wi // lot + 1) for wi in w]):
        if lot * sum(ks) < budget:
            continue
        level = max((Fraction(k * lot, wi) for k, wi in zip(ks, w) if wi > 0), default=Fraction(0))
        best = level if best is None else min(best, level)
    return best


@given(st.lists(st.integers(0, 12), min_size=1, max_size=4), st.integers(1, 4), st.data())
def test_min_max_lots_is_minimal(w, lot, data):
    reach = lot * sum(wi // lot for wi in w)
    budget = data.draw(st.integers(0, reach))
    x = allocate(budget, np.array(w, dtype=np.int64), "min_max_lots", lot=lot).tolist()
    assert all(xi % lot == 0 for xi in x) and bounded(x, w)
    assert budget <= sum(x) < budget + lot
    level = max((Fraction(xi, wi) for xi, wi in zip(x, w) if wi > 0), default=Fraction(0))
    assert level == brute_min_max(budget, w, lot)


# ---------------------------------------------------------------- against the reference

POLICY_ST = st.sampled_from(["queue", "pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk"])


@settings(max_examples=300)
@given(POLICY_ST, st.data())
def test_kernel_matches_reference(policy, data):
    n = data.draw(st.integers(1, 40))
    big = data.draw(st.booleans())
    w = data.draw(st.lists(st.integers(0, 10**15 if big else 50), min_size=n, max_size=n))
    kw: dict = {}
    if policy == "queue":
        kw["score"] = data.draw(st.lists(st.floats(-5, 5, allow_nan=False).map(lambda f: round(f, 1)), min_size=n, max_size=n))
    if policy in ("capped_pro_rata", "risk_aware") and (policy == "capped_pro_rata" or data.draw(st.booleans())):
        kw["cap"] = data.draw(st.lists(st.integers(0, S), min_size=n, max_size=n))
    if policy == "risk_aware":
        kw["leverage"] = data.draw(st.lists(st.integers(0, 100 * S), min_size=n, max_size=n))
        kw["g"] = data.draw(st.sampled_from(["linear", "power:2", "power:0.5", "excess:3", "excess:0"]))
    if policy == "min_max_lots":
        kw["lot"] = data.draw(st.integers(1, 10**12 if big else 7))
    if policy == "random_walk":
        kw["seed"] = data.draw(st.integers(0, 2**64 - 1))
    clip = data.draw(st.booleans())
    budget = data.draw(st.integers(0, sum(w) + 3))
    try:
        expected = ref.allocate(budget, w, policy, clip=clip, **kw)
    except ref.Infeasible:
        expected = None
    args = {k: (np.array(v, dtype=np.float64) if k == "score" else np.array(v, dtype=np.int64)) if isinstance(v, list) else v for k, v in kw.items()}
    if expected is None:
        with pytest.raises(InvalidInput, match="exceeds"):
            allocate(budget, np.array(w, dtype=np.int64), policy, clip=clip, **args)
        return
    x = allocate(budget, np.array(w, dtype=np.int64), policy, clip=clip, **args)
    assert x.tolist() == expected


@settings(max_examples=100)
@given(POLICY_ST, st.data())
def test_float_mode_close_to_exact_reference(policy, data):
    # float mode on integer-valued inputs agrees with the exact reference up to rounding:
    # within one unit per winner for the rounded policies, exactly for the others
    n = data.draw(st.integers(1, 30))
    w = data.draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))
    budget = data.draw(st.integers(0, sum(w)))
    kw: dict = {}
    fkw: dict = {}
    if policy == "queue":
        kw["score"] = fkw["score"] = data.draw(st.lists(st.integers(-3, 3), min_size=n, max_size=n))
    if policy == "capped_pro_rata":
        # capacities in hundreds so that the integer caps floor(w*c) equal the float caps w*c
        w = [100 * wi for wi in w]
        c = data.draw(st.lists(st.integers(0, 100), min_size=n, max_size=n))
        kw["cap"] = [ci * S // 100 for ci in c]
        fkw["cap"] = [ci / 100 for ci in c]
        budget = min(budget, sum(wi * ci // S for wi, ci in zip(w, kw["cap"])))
    if policy == "risk_aware":
        lev = data.draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
        kw["leverage"] = [x * S for x in lev]
        fkw["leverage"] = [float(x) for x in lev]
    if policy == "min_max_lots":
        kw["lot"] = fkw["lot"] = data.draw(st.integers(1, 5))
        budget = min(budget, kw["lot"] * sum(wi // kw["lot"] for wi in w))
    if policy == "random_walk":
        kw["seed"] = fkw["seed"] = data.draw(st.integers(0, 1000))
    expected = ref.allocate(budget, w, policy, **kw)
    fargs = {k: np.array(v, dtype=np.float64) if isinstance(v, list) else v for k, v in fkw.items()}
    x = allocate(float(budget), np.array(w, dtype=np.float64), policy, **fargs)
    assert x.dtype == np.float64
    tol = 0 if policy in ("queue", "random_walk", "min_max_lots") else 1 + 1e-6 * max(w)
    assert np.all(np.abs(x - np.array(expected, dtype=np.float64)) <= tol)
    assert np.all(x >= 0) and np.all(x <= np.array(w) * (1 + 1e-12))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: allocate(1, a64(1, -2), "pro_rata"), r"capacity\[1\]"),
        (lambda: allocate(1.0, np.array([1.0, np.nan]), "pro_rata"), r"capacity\[1\]"),
        (lambda: allocate(float("nan"), np.array([1.0]), "pro_rata"), "budget"),
        (lambda: allocate(-1, a64(1), "pro_rata"), "budget"),
        (lambda: allocate(1, a64(1, 2), "queue", score=[1.0]), "score has 1 entries but capacity has 2"),
        (lambda: allocate(1, a64(1, 2), "queue", score=[1.0, np.nan]), r"score\[1\]"),
        (lambda: allocate(1, a64(1, 2), "capped_pro_rata", cap=a64(1, 2 * S)), r"cap\[1\]"),
        (lambda: allocate(1.0, np.array([1.0, 2.0]), "capped_pro_rata", cap=[0.5, -0.1]), r"cap\[1\]"),
        (lambda: allocate(1, a64(1, 2), "capped_pro_rata", cap=[0.5, 0.5]), "units of 1e-8"),
        (lambda: allocate(1, a64(1, 2), "capped_pro_rata", cap=a64(1, 2, 3)), "cap has 3 entries"),
        (lambda: allocate(1, a64(1, 2), "fifo"), "unknown policy 'fifo'"),
        (lambda: allocate(1, a64(1, 2), "min_max_lots", lot=0), "lot"),
        (lambda: allocate(1, a64(1, 2), "min_max_lots", lot=-3), "lot"),
        (lambda: allocate(1, a64(1, 2), "min_max_lots"), "lot is required"),
        (lambda: allocate(1, a64(1, 2), "queue"), "score is required"),
        (lambda: allocate(1, a64(1, 2), "risk_aware"), "leverage is required"),
        (lambda: allocate(1, a64(1, 2), "pro_rata", score=[1.0, 2.0]), "score is not used"),
        (lambda: allocate(1, a64(1, 2), "risk_aware", leverage=a64(S, -1)), r"leverage\[1\]"),
        (lambda: allocate(1, a64(1, 2), "risk_aware", leverage=a64(S, S), g="cubic"), "g: unknown"),
        (lambda: allocate(1, a64(1, 2), "risk_aware", leverage=a64(S, S), g="power:-1"), "g:"),
        (lambda: allocate(1.5, a64(1, 2), "pro_rata"), "budget"),
        (lambda: allocate(1, np.array([1, 2], dtype=np.float32), "pro_rata"), "float32"),
        (lambda: allocate(1, a64(1, 2), "random_walk", seed=-1), "seed"),
        (lambda: allocate(4, a64(1, 2), "pro_rata"), "exceeds"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InvalidInput, match=match):
        call()


def test_total_capacity_overflow():
    with pytest.raises(ArithmeticOverflow, match="total capacity"):
        allocate(1, a64(2**62, 2**62), "pro_rata")


def test_empty_and_zero_budget():
    assert allocate(0, np.array([], dtype=np.int64), "pro_rata").tolist() == []
    assert allocate(0, a64(5, 5), "queue", score=[1.0, 2.0]).tolist() == [0, 0]


# ---------------------------------------------------------------- large inputs against the reference
# Above 4096 winners the kernel guesses its selections from a sample and settles them in one
# exact pass; above 65536 its long passes run in eight slices on several threads. These cases go
# through both paths (and the sample's fallbacks: ties, clustered remainders, huge values).

BIG = 70_000


def _big(shape: str, rng: np.random.Generator) -> np.ndarray:
    if shape == "random":
        w = rng.integers(0, 10**9, BIG)
    elif shape == "equal":  # every level, remainder and score ties
        w = np.full(BIG, 12_345)
        w[::7] = 0
    elif shape == "small":  # few distinct values, many zeros
        w = rng.integers(0, 12, BIG)
    elif shape == "skewed":  # a few winners hold most of the capacity
        w = rng.integers(0, 1000, BIG)
        w[rng.integers(0, BIG, 20)] = 10**15
    elif shape == "huge":  # the total close to 2**63
        w = rng.integers(0, (2**63 - 1) // BIG, BIG)
    else:
        raise ValueError(shape)
    return w.astype(np.int64)


def _check_big(policy: str, shape: str, seed: int, budget_kind: str, **kw) -> None:
    rng = np.random.default_rng(seed)
    w = _big(shape, rng)
    wl = [int(v) for v in w]
    total = sum(wl)
    args: dict = {}
    if policy == "queue":
        s = rng.integers(-1, 2, BIG).astype(np.float64) if shape in ("equal", "small") else rng.standard_normal(BIG)
        s[::11] = -0.0  # ties with +0.0
        args["score"] = s
    if policy in ("capped_pro_rata", "risk_aware") and kw.get("cap", policy == "capped_pro_rata"):
        c = rng.integers(0, S + 1, BIG)
        c[::5] = 0
        c[1::5] = S
        args["cap"] = c.astype(np.int64)
    if policy == "risk_aware":
        lev = rng.integers(0, 30 * S, BIG)
        lev[::3] = 3 * S
        args["leverage"] = lev.astype(np.int64)
        args["g"] = kw.get("g", "linear")
    if policy == "min_max_lots":
        args["lot"] = kw.get("lot", 7)
    budget = {"third": total // 3, "all": total, "zero": 0, "tiny": total // 100_000, "over": total + 1}[budget_kind]
    ref_kw = {k: ([float(v) for v in a] if k == "score" else [int(v) for v in a]) if isinstance(a, np.ndarray) else a for k, a in args.items()}
    clip = budget_kind == "over"
    expected = ref.allocate(budget, wl, policy, clip=clip, **ref_kw)
    x = allocate(budget, w, policy, clip=clip, **args)
    assert x.tolist() == expected


@pytest.mark.parametrize(
    "policy, shape, budget_kind",
    [
        ("pro_rata", "random", "third"),  # W // 3: remainders cluster around thirds
        ("pro_rata", "equal", "tiny"),  # all remainders equal: the units go by index
        ("pro_rata", "huge", "third"),
        ("queue", "random", "third"),
        ("queue", "equal", "third"),  # score and capacity ties: index order
        ("queue", "skewed", "tiny"),
        ("capped_pro_rata", "random", "third"),
        ("capped_pro_rata", "small", "third"),
        ("capped_pro_rata", "skewed", "over"),
        ("capped_pro_rata", "skewed", "third"),  # the sample misses the few big winners: fallback rounds
        ("risk_aware", "skewed", "third"),
        ("risk_aware", "random", "third"),
        ("risk_aware", "huge", "tiny"),
        ("random_walk", "random", "third"),
        ("min_max_lots", "small", "third"),
        ("min_max_lots", "equal", "tiny"),
    ],
)
def test_large_matches_reference(policy, shape, budget_kind):
    _check_big(policy, shape, 11, budget_kind)


def test_large_capped_budget_edges():
    # everything the caps allow, nothing, and a clipped budget: the same as the reference
    rng = np.random.default_rng(5)
    w = _big("random", rng)
    cap = rng.integers(0, S + 1, BIG).astype(np.int64)
    wl, cl = [int(v) for v in w], [int(v) for v in cap]
    reach = sum(a * b // S for a, b in zip(wl, cl))
    assert allocate(reach, w, "capped_pro_rata", cap=cap).tolist() == [a * b // S for a, b in zip(wl, cl)]
    assert allocate(0, w, "capped_pro_rata", cap=cap).tolist() == [0] * BIG
    assert allocate(reach + 10, w, "capped_pro_rata", cap=cap, clip=True).tolist() == [a * b // S for a, b in zip(wl, cl)]
    with pytest.raises(InvalidInput, match="exceeds"):
        allocate(reach + 1, w, "capped_pro_rata", cap=cap)
    # caps of 0 for everyone: nothing can be raised
    assert allocate(0, w, "capped_pro_rata", cap=0).tolist() == [0] * BIG
    with pytest.raises(InvalidInput, match="exceeds"):
        allocate(1, w, "capped_pro_rata", cap=0)


def test_large_risk_aware_power_matches_reference():
    _check_big("risk_aware", "random", 3, "third", g="power:1.5", cap=True)


def test_large_min_max_lots_random_matches_reference():
    # lots of 10**8 in capacities below 10**9: a few lots each, the reference's heap stays small
    _check_big("min_max_lots", "random", 4, "third", lot=10**8)


def test_large_equal_capacities_by_hand():
    # n equal winners: pro-rata B over n gives floor(B/n) each and the leftover units to the
    # first indices; min_max_lots hands the lots round-robin by index; queue with equal
    # scores takes them in index order
    n = 100_003
    w = np.full(n, 10, dtype=np.int64)
    b = 7 * n + 12_345
    x = allocate(b, w, "pro_rata")
    assert x[:12_345].tolist() == [8] * 12_345 and x[12_345:].tolist() == [7] * (n - 12_345)
    x = allocate(5 * (n + 4) - 2, w, "min_max_lots", lot=5)  # n + 4 lots: one each (1/2), then #0..#3 (1)
    assert x[:4].tolist() == [10] * 4 and x[4:].tolist() == [5] * (n - 4)
    x = allocate(10 * 500 + 3, w, "queue", score=np.zeros(n))
    assert x[:500].tolist() == [10] * 500 and x[500] == 3 and not x[501:].any()


def test_large_capped_tied_levels():
    # one cap rate over many winners: every saturation level K_i / w_i is the same (exactly in
    # float mode, and in exact mode for capacities divisible by 4), or one of a few; the
    # bracketing must settle the tied winners, and the result must not change
    rng = np.random.default_rng(21)
    n = 30_000
    w = rng.integers(1, 10**6, n, dtype=np.int64) * 4
    w[rng.choice(n, 3, replace=False)] = 4 * 10**12  # heavy tail: the sample misses these
    for cap in (np.array([S // 4], dtype=np.int64), rng.choice(np.array([S // 4, S // 2, S], dtype=np.int64), n)):
        capl = cap.tolist() if len(cap) == n else [int(cap[0])] * n
        reach = sum(ref.cap_amounts(w.tolist(), capl))
        for b in (reach // 10, reach // 2, reach - 1, reach):
            assert allocate(b, w, "capped_pro_rata", cap=cap).tolist() == ref.capped_pro_rata(b, w.tolist(), capl)
    wf = w.astype(np.float64)
    for c in (np.array([0.25]), rng.choice(np.array([0.25, 0.5, 1.0]), n)):
        K = wf * (c if len(c) == n else c[0])
        for frac in (0.1, 0.5, 0.999):
            b = float(K.sum()) * frac
            # the water level from the sorted levels
            t = K / wf
            o = np.argsort(t, kind="stable")
            cK = np.concatenate([[0.0], np.cumsum(K[o])])
            vs = np.concatenate([np.cumsum(wf[o][::-1])[::-1], [0.0]])
            j = int(np.searchsorted(cK[:-1] + t[o] * vs[:-1], b))
            want = np.minimum(K, (b - cK[j]) / vs[j] * wf)
            x = allocate(b, wf, "capped_pro_rata", cap=c)
            assert np.allclose(x, want, rtol=1e-9, atol=1e-6 * float(want.max()))
            assert np.isclose(x.sum(), b, rtol=1e-12)


# ---------------------------------------------------------------- weights, lot per winner, base


def test_weights_by_hand():
    # x = min(w, tau * u): 10 = tau * (1 + 1 + 2) -> 2.5, 2.5, 5; floors 2, 2, 5 and the leftover
    # unit to the first of the tied remainders
    assert allocate(10, a64(10, 10, 10), "pro_rata", weights=a64(1, 1, 2)).tolist() == [3, 2, 5]
    # winner 0 saturates at its capacity 1; the other two share the remaining 4 by weight
    assert allocate(5, a64(1, 10, 10), "pro_rata", weights=a64(10, 1, 1)).tolist() == [1, 2, 2]
    # weight 0 pays nothing: the budget above what the others can pay is refused
    assert allocate(4, a64(5, 5), "pro_rata", weights=a64(0, 1)).tolist() == [0, 4]
    with pytest.raises(InvalidInput, match="exceeds"):
        allocate(6, a64(5, 5), "pro_rata", weights=a64(0, 1))
    x = allocate(10.0, np.array([10.0, 10.0, 10.0]), "pro_rata", weights=np.array([1.0, 1.0, 2.0]))
    assert x.tolist() == [2.5, 2.5, 5.0]


def test_lot_per_winner_by_hand():
    # winner 0: lots of 5 in 10 -> fractions 1/2, 1; winner 1: lots of 3 in 9 -> 1/3, 2/3, 1.
    # In (fraction, index) order: (1/3, #1) 3, (1/2, #0) 8, (2/3, #1) 11, (1, #0) 16, (1, #1) 19
    w, lots = a64(10, 9), a64(5, 3)
    assert allocate(3, w, "min_max_lots", lot=lots).tolist() == [0, 3]
    assert allocate(8, w, "min_max_lots", lot=lots).tolist() == [5, 3]
    assert allocate(9, w, "min_max_lots", lot=lots).tolist() == [5, 6]
    assert allocate(19, w, "min_max_lots", lot=lots).tolist() == [10, 9]
    # a capacity below one lot cannot pay
    assert allocate(10, a64(3, 10), "min_max_lots", lot=a64(5, 5)).tolist() == [0, 10]
    with pytest.raises(InvalidInput, match="exceeds"):
        allocate(11, a64(3, 10), "min_max_lots", lot=a64(5, 5))
    assert allocate(8.0, np.array([10.0, 9.0]), "min_max_lots", lot=np.array([5.0, 3.0])).tolist() == [5.0, 3.0]


def test_base_by_hand():
    # min_max_lots: fractions of the base 100 and 10: #0's lots at 0.05, 0.1, #1's at 0.5, 1
    assert allocate(10, a64(10, 10), "min_max_lots", lot=5, base=a64(100, 10)).tolist() == [10, 0]
    assert allocate(11, a64(10, 10), "min_max_lots", lot=5, base=a64(100, 10)).tolist() == [10, 5]
    # capped_pro_rata: at most 10% of the base: K = min(100, 100), min(100, 10); the common
    # fraction t of the base: 1100 t = 55 -> 50, 5; 1100 t = 60 -> 54.54.., 5.45.. -> 55, 5
    w, base, cap = a64(100, 100), a64(1000, 100), a64(S // 10)
    assert allocate(55, w, "capped_pro_rata", cap=cap, base=base).tolist() == [50, 5]
    assert allocate(60, w, "capped_pro_rata", cap=cap, base=base).tolist() == [55, 5]
    # 10 is #1's cap: beyond 1100 t = 110 only #0 pays
    assert allocate(105, w, "capped_pro_rata", cap=cap, base=base).tolist() == [95, 10]
    # risk_aware without cap: at most the base (here #1's base 20 < its capacity 100)
    x = allocate(120, a64(100, 100), "risk_aware", leverage=a64(S, S), base=a64(100, 20))
    assert x.tolist() == [100, 20]


def _draw_general(policy, data, n, big):
    w = data.draw(st.lists(st.integers(0, 10**15 if big else 60), min_size=n, max_size=n))
    kw: dict = {}
    if policy == "pro_rata":
        kw["weights"] = data.draw(st.lists(st.integers(0, 10**12 if big else 20), min_size=n, max_size=n))
    if policy == "capped_pro_rata":
        kw["cap"] = data.draw(st.lists(st.integers(0, S), min_size=n, max_size=n))
    if policy == "risk_aware":
        kw["leverage"] = data.draw(st.lists(st.integers(0, 100 * S), min_size=n, max_size=n))
        if data.draw(st.booleans()):
            kw["cap"] = data.draw(st.lists(st.integers(0, S), min_size=n, max_size=n))
    if policy == "min_max_lots":
        lo = 10**12 if big else 1
        if data.draw(st.booleans()):
            kw["lot"] = data.draw(st.lists(st.integers(lo, 7 * lo), min_size=n, max_size=n))
        else:
            kw["lot"] = data.draw(st.integers(lo, 7 * lo))
    if policy != "pro_rata" and (policy != "min_max_lots" or isinstance(kw["lot"], int) or data.draw(st.booleans())):
        kw["base"] = data.draw(st.lists(st.integers(0, 10**15 if big else 60), min_size=n, max_size=n))
    return w, kw


@settings(max_examples=300)
@given(st.sampled_from(["pro_rata", "capped_pro_rata", "risk_aware", "min_max_lots"]), st.data())
def test_weights_lots_base_match_reference(policy, data):
    n = data.draw(st.integers(1, 30))
    w, kw = _draw_general(policy, data, n, data.draw(st.booleans()))
    clip = data.draw(st.booleans())
    budget = data.draw(st.integers(0, sum(w) + 3))
    try:
        expected = ref.allocate(budget, w, policy, clip=clip, **kw)
    except ref.Infeasible:
        expected = None
    args = {k: np.array(v, dtype=np.int64) if isinstance(v, list) else v for k, v in kw.items()}
    if expected is None:
        with pytest.raises(InvalidInput, match="exceeds"):
            allocate(budget, np.array(w, dtype=np.int64), policy, clip=clip, **args)
        return
    assert allocate(budget, np.array(w, dtype=np.int64), policy, clip=clip, **args).tolist() == expected


@settings(max_examples=100)
@given(st.sampled_from(["pro_rata", "min_max_lots"]), st.data())
def test_weights_lots_base_float_mode(policy, data):
    # float mode on small integer-valued inputs: pro_rata within one unit, lots exactly
    n = data.draw(st.integers(1, 20))
    w, kw = _draw_general(policy, data, n, False)
    budget = data.draw(st.integers(0, sum(w)))
    try:
        expected = ref.allocate(budget, w, policy, **kw)
    except ref.Infeasible:
        return
    fargs = {k: np.array(v, dtype=np.float64) if isinstance(v, list) else float(v) for k, v in kw.items()}
    x = allocate(float(budget), np.array(w, dtype=np.float64), policy, **fargs)
    tol = 0 if policy == "min_max_lots" else 1 + 1e-9 * max(w)
    assert np.all(np.abs(x - np.array(expected, dtype=np.float64)) <= tol)


@settings(max_examples=100)
@given(st.data())
def test_risk_aware_constant_leverage_with_base_is_capped_by_base(data):
    n = data.draw(st.integers(1, 25))
    w = data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    base = data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    reach = sum(min(a, b) for a, b in zip(w, base))
    budget = data.draw(st.integers(0, reach))
    lev = data.draw(st.integers(1, 50 * S))
    x = allocate(budget, a64(*w), "risk_aware", leverage=np.full(n, lev, dtype=np.int64), base=a64(*base))
    y = allocate(budget, a64(*w), "capped_pro_rata", cap=a64(S), base=a64(*base))
    assert x.tolist() == y.tolist()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: allocate(1, a64(1, 2), "queue", score=[1.0, 2.0], weights=a64(1, 1)), "weights is not used"),
        (lambda: allocate(1, a64(1, 2), "pro_rata", base=a64(1, 1)), "base is not used"),
        (lambda: allocate(1, a64(1, 2), "pro_rata", weights=a64(1, -1)), r"weights\[1\]"),
        (lambda: allocate(1, a64(1, 2), "pro_rata", weights=a64(1)), "weights has 1 entries but capacity has 2"),
        (lambda: allocate(1, a64(1, 2), "pro_rata", weights=[0.5, 1.0]), "weights: exact mode"),
        (lambda: allocate(1, a64(1, 2), "min_max_lots", lot=a64(1, 0)), r"lot\[1\]"),
        (lambda: allocate(1, a64(1, 2), "min_max_lots", lot=a64(1, 2, 3)), "lot has 3 entries"),
        (lambda: allocate(1.0, np.array([1.0, 2.0]), "min_max_lots", lot=np.array([1.0, np.inf])), r"lot\[1\]"),
        (lambda: allocate(1, a64(1, 2), "capped_pro_rata", cap=a64(S), base=a64(-1, 2)), r"base\[0\]"),
        (lambda: allocate(1.0, np.array([1.0, 2.0]), "capped_pro_rata", cap=[0.5], base=np.array([1.0, np.nan])), r"base\[1\]"),
    ],
)
def test_weights_lots_base_bad_input(call, match):
    with pytest.raises(InvalidInput, match=match):
        call()


def test_base_total_overflow():
    with pytest.raises(ArithmeticOverflow, match="base: the total"):
        allocate(1, a64(1, 2), "capped_pro_rata", cap=a64(S), base=a64(2**62, 2**62))


@pytest.mark.parametrize(
    "case, budget_kind",
    [("lots_base", "third"), ("lots", "tiny"), ("lot_base", "third"), ("weights", "third"), ("capped_base", "third")],
)
def test_large_weights_lots_base_match_reference(case, budget_kind):
    # above 4096 winners (sampled brackets) and 65536 (threads); a few lots each so that the
    # reference's heap stays small
    rng = np.random.default_rng(17)
    w = rng.integers(0, 10**9, BIG).astype(np.int64)
    lots = rng.integers(10**8, 5 * 10**8, BIG).astype(np.int64)
    base = rng.integers(0, 10**9, BIG).astype(np.int64)
    base[::13] = 0
    wl, ll, bl = w.tolist(), lots.tolist(), base.tolist()
    if case == "weights":
        policy, kw = "pro_rata", dict(weights=rng.integers(0, 10**6, BIG).astype(np.int64))
        reach = sum(a for a, u in zip(wl, kw["weights"].tolist()) if u > 0)
    elif case == "capped_base":
        policy, kw = "capped_pro_rata", dict(cap=rng.integers(0, S + 1, BIG).astype(np.int64), base=base)
        reach = sum(ref.cap_amounts(wl, kw["cap"].tolist(), bl))
    else:
        policy = "min_max_lots"
        kw = {"lots_base": dict(lot=lots, base=base), "lots": dict(lot=lots), "lot_base": dict(lot=10**8, base=base)}[case]
        lot_l = ll if isinstance(kw["lot"], np.ndarray) else [10**8] * BIG
        base_l = bl if "base" in kw else wl
        reach = sum(a // lt * lt for a, lt, bb in zip(wl, lot_l, base_l) if bb > 0)
    b = {"third": reach // 3, "tiny": reach // 100_000, "all_but_one": reach - 1}[budget_kind]
    rkw = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    assert allocate(b, w, policy, **kw).tolist() == ref.allocate(b, wl, policy, **rkw)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2**40), st.integers(1, 1000), st.integers(0, 2**40)), min_size=2, max_size=40),
    st.integers(1, 999),
    st.booleans(),
    st.booleans(),
)
def test_min_max_lots_level_search_matches_reference(rows, per_mille, per_winner_lots, with_base):
    # Trillions of lots over a few winners: far more than the kernel orders exactly, so its
    # level search (a histogram's estimate, then Newton, secant and quadratic probes) runs one
    # or more counting passes, the last of which may also finish. Without a base every winner
    # is full near level 1 and the level sought lies on a line below.
    w = [r[0] for r in rows]
    lots = [r[1] for r in rows] if per_winner_lots else 7
    base = [r[2] for r in rows] if with_base else None
    lot_l = lots if per_winner_lots else [7] * len(rows)
    reach = sum(a // lt * lt for a, lt, bb in zip(w, lot_l, base or w) if bb > 0)
    budget = reach * per_mille // 1000
    lot_arg = np.array(lots, dtype=np.int64) if per_winner_lots else lots
    kw = {"base": np.array(base, dtype=np.int64)} if with_base else {}
    got = allocate(budget, np.array(w, dtype=np.int64), "min_max_lots", lot=lot_arg, **kw).tolist()
    assert got == ref.min_max_lots_by_level(budget, w, lots, base=base)


@settings(max_examples=400)
@given(
    st.lists(st.tuples(st.integers(0, 60), st.integers(1, 9), st.integers(0, 80)), min_size=1, max_size=6),
    st.integers(0, 400),
    st.booleans(),
    st.booleans(),
)
def test_reference_min_max_lots_by_level_equals_lot_by_lot(rows, budget, per_winner_lots, with_base):
    """The reference's level search (fast enough for books of 2^40 lots) hands out exactly the
    lots of the literal one-at-a-time definition, ties at a level in index order included."""
    w = [r[0] for r in rows]
    lot = [r[1] for r in rows] if per_winner_lots else rows[0][1]
    base = [r[2] for r in rows] if with_base else None
    assert ref.min_max_lots_by_level(budget, w, lot, clip=True, base=base) == ref.min_max_lots_one_by_one(budget, w, lot, clip=True, base=base)


@pytest.mark.parametrize("policy, kw", [("pro_rata", {}), ("capped_pro_rata", {"cap": np.array([30_000_000])}),
                                        ("min_max_lots", {"lot": 7}), ("queue", {})])
def test_amounts_do_not_depend_on_the_thread_count(policy, kw):
    # above the kernel's 2^16-winner threshold, so the passes really run on several threads
    rng = np.random.default_rng(5)
    w = rng.integers(0, 10**9, 300_000).astype(np.int64)
    if policy == "queue":
        kw = {"score": rng.random(len(w))}
    budget = int(w.sum() // 7)
    one = allocate(budget, w, policy, threads=1, **kw)
    assert int(one.sum()) == budget
    for t in (0, 2, 3, 64):
        np.testing.assert_array_equal(allocate(budget, w, policy, threads=t, **kw), one, err_msg=f"threads={t}")
    f = w.astype(np.float64)
    fkw = {**kw, "cap": np.array([0.3])} if "cap" in kw else kw
    np.testing.assert_array_equal(allocate(float(budget), f, policy, threads=1, **fkw),
                                  allocate(float(budget), f, policy, threads=2, **fkw))


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, 2**16 + 1])
def test_bad_threads_are_refused_by_name(bad):
    from deleverage.errors import ConfigError

    with pytest.raises(ConfigError, match="threads"):
        allocate(10, np.array([5, 10], dtype=np.int64), "pro_rata", threads=bad)


def test_policy_names_come_from_the_engines_one_table():
    import typing

    import deleverage.waterfall
    from deleverage import _core
    from deleverage.allocate import POLICIES, Policy
    from deleverage.policy_lab import KNOWN_POLICIES

    # the engine codes are written into journals: this order is a file-format contract
    assert _core.POLICY_NAMES == ("queue", "pro_rata", "funding_index", "capped_pro_rata", "risk_aware", "min_max_lots",
                                  "random_walk", "none")
    assert deleverage.waterfall.LAST_RESORT_POLICIES == KNOWN_POLICIES == _core.POLICY_NAMES
    assert deleverage.waterfall.POLICIES == _core.POLICY_NAMES[:-1]
    assert POLICIES == tuple(p for p in _core.POLICY_NAMES if p not in ("funding_index", "none"))
    assert typing.get_args(Policy) == POLICIES  # the static type lists the same names
    for name in ("funding_index", "none"):
        with pytest.raises(InvalidInput, match=f"'{name}' is a waterfall policy, not one of the allocation kernel"):
            allocate(10, np.array([5, 10], dtype=np.int64), name)
