"""Random scenario generation shared by the differential and property tests.

A scenario is plain data (a money_decimals value, market specs and a list of operations)
built from a ``Draw`` source, so the same generator runs from a seeded numpy generator or
from hypothesis (which then shrinks failures to small scenarios). Applying a scenario to
the reference model and to the engine must give identical observable results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from reference_model import MarginRow, R, margin_ratio

PCT = R // 100


class NumpyDraw:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def int(self, lo: int, hi: int) -> int:  # inclusive
        return int(self.rng.integers(lo, hi + 1))

    def bool(self, p: float = 0.5) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def sample(self, seq, n: int):
        idx = self.rng.permutation(len(seq))[:n]
        return [seq[i] for i in sorted(idx)]


class HypothesisDraw:
    def __init__(self, data):
        from hypothesis import strategies as st

        self.st = st
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def bool(self, p: float = 0.5) -> bool:
        return self.data.draw(self.st.booleans())

    def choice(self, seq):
        return self.data.draw(self.st.sampled_from(list(seq)))

    def sample(self, seq, n: int):
        idx = self.data.draw(
            self.st.lists(self.st.integers(0, len(seq) - 1), min_size=n, max_size=n, unique=True)
        )
        return [seq[i] for i in sorted(idx)]


@dataclass
class MarketSpec:
    symbol: str
    qty_decimals: int
    price_decimals: int
    mmr: int
    imr: int
    tiers: list | None
    base_price: int  # order ticks
    lot: int  # typical trade size in lots
    mark_decimals: int | None = None  # the price unit; None: price_decimals

    @property
    def tick_units(self) -> int:
        """Price units per order tick."""
        return 1 if self.mark_decimals is None else 10 ** (self.mark_decimals - self.price_decimals)


def draw_money_decimals(d) -> int:
    return d.choice([6, 6, 6, 2, 0, 8])


def draw_near_limit_market(d, i: int, md: int) -> MarketSpec:
    """A market whose typical trade is worth 2^55..2^58 money units, so that a few trades
    take a position or an account to the 2^62 limit (where both implementations must refuse
    the same calls): huge lot counts with money_decimals 0, tiny lots (10^-6) with 12."""
    if md == 0:
        qd, pd = 0, 0
        lot = 2**24 + d.int(0, 2**20)
        base_price = 2**31 + d.int(0, 2**30)
    else:  # md == 12: value = q * p * 10^6
        qd, pd = 6, 0
        lot = 10**6 + d.int(0, 10**5)
        base_price = 10**5 * d.int(2, 20) + d.int(0, 999)
    mmr = d.int(0, 10) * PCT // 2 + d.int(0, 999)
    imr = mmr + d.int(0, 5) * PCT + d.int(0, 99)
    tiers = None
    if d.bool(0.5):
        # strictly increasing caps around a trade's notional (money units), rates rising
        typical = lot * base_price * 10**md // 10 ** (qd + pd)
        multipliers = sorted({d.int(1, 40) for _ in range(d.int(1, 3))})
        tiers, t_mmr, t_imr = [], mmr, imr
        for k in multipliers:
            tiers.append((typical * k // 10, t_mmr, t_imr))
            t_mmr = min(R // 2, t_mmr + d.int(0, 3) * PCT // 2 + d.int(0, 9))
            t_imr = max(t_imr, t_mmr) + d.int(0, 2) * PCT
        tiers.append((None, t_mmr, t_imr))
    return MarketSpec(f"M{i}", qd, pd, mmr, imr, tiers, base_price, lot)


def draw_market(d, i: int, md: int) -> MarketSpec:
    # keep 10^(md - qd - pd) <= 10^6 so that positions stay far below the 2^62 limit
    while True:
        qd, pd = d.int(0, 4), d.int(0, 4)
        extra = d.choice([0, 0, 1, 4])  # marks finer than the order tick by this many decimals
        if md - qd - pd <= 6 and qd + pd + extra - md <= 8:
            break
    base_price = d.choice([1, 7, 100, 2_500, 30_000, 99_999])
    base_price = max(1, base_price + d.int(0, base_price // 3 + 1))
    lot = d.choice([1, 3, 50, 1_000, 7_000])
    mmr = d.int(0, 10) * PCT // 2 + d.int(0, 999)  # 0 .. ~5%, not always round
    imr = mmr + d.int(0, 5) * PCT + d.int(0, 99)
    tiers = None
    if d.bool(0.5):
        # caps around the typical position notional so that positions cross bands
        typical_quote = max(1, lot * base_price * 2 // 10 ** (qd + pd))
        n = d.int(2, 4)
        caps_quote = sorted({max(1, typical_quote * d.int(1, 40) // 10) for _ in range(n - 1)})
        tiers = []
        t_mmr, t_imr = mmr, imr
        for cap in caps_quote:
            tiers.append((cap * 10**md, t_mmr, t_imr))
            t_mmr = min(R // 2, t_mmr + d.int(0, 3) * PCT // 2 + d.int(0, 9))
            t_imr = max(t_imr, t_mmr) + d.int(0, 2) * PCT
        tiers.append((None, t_mmr, t_imr))
        mmr, imr = tiers[0][1], tiers[0][2]
    return MarketSpec(f"M{i}", qd, pd, mmr, imr, tiers, base_price, lot, pd + extra if extra else None)


def draw_price(d, spec: MarketSpec, spread_pct: int = 20) -> int:
    """A trade or entry price: whole order ticks, in price units."""
    p = spec.base_price
    delta = p * d.int(-spread_pct, spread_pct) // 100
    return max(1, p + delta + d.int(-1, 1)) * spec.tick_units


def draw_mark(d, spec: MarketSpec, spread_pct: int = 20) -> int:
    """A mark: a price plus a fraction of a tick when marks are finer than the tick."""
    units = spec.tick_units
    return max(1, draw_price(d, spec, spread_pct) - units + 1 + d.int(0, units - 1)) if units > 1 else draw_price(
        d, spec, spread_pct)


def draw_size(d, spec: MarketSpec) -> int:
    return max(1, spec.lot * d.int(1, 30) // 10 + d.int(0, 2))


def typical_notional_money(spec: MarketSpec, md: int) -> int:
    # lot * price in money units, rounded to an int >= 1
    return max(1, spec.lot * spec.base_price * 10**md // 10 ** (spec.qty_decimals + spec.price_decimals))


def setup_markets(impls, specs):
    ids = None
    for ex in impls:
        mids = [
            ex.add_market(s.symbol, s.qty_decimals, s.price_decimals, s.mmr, s.imr, tiers=s.tiers,
                          mark_decimals=s.mark_decimals)
            for s in specs
        ]
        if ids is None:
            ids = mids
        assert mids == ids
    return ids


# ---------------------------------------------------------------- comparisons


def assert_same_margin(ref_rows: list[MarginRow], eng_rows: list[MarginRow], what: str = ""):
    ref_t = [(r.account,) + r.as_tuple() for r in ref_rows]
    eng_t = [(r.account,) + r.as_tuple() for r in eng_rows]
    if ref_t != eng_t:
        ref_accounts = [r[0] for r in ref_t]
        eng_accounts = [r[0] for r in eng_t]
        assert ref_accounts == eng_accounts, f"{what}: reported accounts differ: reference {ref_accounts}, engine {eng_accounts}"
        diffs = [(a, b) for a, b in zip(ref_t, eng_t) if a != b]
        raise AssertionError(
            f"{what}: {len(diffs)} margin rows differ; first (reference, engine) "
            f"(account, equity, maintenance, initial, liquidatable, bankrupt): {diffs[0]}"
        )


def assert_same_positions(ref_rows, eng_rows, what: str = ""):
    ref_t = [(r.account, r.market) + r.as_tuple() for r in ref_rows]
    eng_t = [(r.account, r.market) + r.as_tuple() for r in eng_rows]
    if ref_t != eng_t:
        assert [r[:2] for r in ref_t] == [r[:2] for r in eng_t], f"{what}: position keys differ"
        diffs = [(a, b) for a, b in zip(ref_t, eng_t) if a != b]
        raise AssertionError(
            f"{what}: {len(diffs)} position rows differ; first (reference, engine) "
            f"(account, market, size, entry, upnl, liq, bankruptcy): {diffs[0]}"
        )


def assert_same_margin_ratio(ref, eng):
    """The engine's float margin_ratio equals maintenance / equity of the reference's
    integers, with the contract's conventions. Exact while both fit in 53 bits; above
    that the contract does not fix the rounding, so a few ulps are allowed."""
    import math

    from engine_adapter import column

    rep = eng.ex.check_margin(exact=True)
    got = column(rep, "margin_ratio").tolist()
    rows = ref.check_margin()
    assert len(got) == len(rows)
    for r, g in zip(rows, got):
        want = margin_ratio(r.equity, r.maintenance)
        if math.isinf(want) or want == 0 or max(abs(r.equity), r.maintenance) < 2**53:
            assert g == want, (r, g, want)
        else:
            assert math.isclose(g, want, rel_tol=1e-15, abs_tol=0.0), (r, g, want)


def assert_engine_equals_reference(ref, eng, what: str = ""):
    ref.check_invariants()
    eng.check_invariants()
    assert_same_margin(ref.check_margin(), eng.check_margin(), what + " full check")
    assert_same_positions(ref.positions(), eng.positions(), what + " positions")
