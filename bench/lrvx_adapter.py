"""Adapter that runs the same book and crash through ``lrvx`` (PyPI ``lrvx==0.11.0``).

lrvx is a trading-systems framework; its loss waterfall lives in ``lrvx.LiquidationEngine``
(maintenance-margin tiers, liquidation at mark with slippage, insurance fund, ADL) working on
attached cross-margin ``lrvx.Account`` objects. See ``bench/LRVX_NOTES.md`` for the API, the
semantics and how they differ from deleverage's.

Use::

    state = build_lrvx_book(accounts, markets, sizes, entry_prices, collateral, marks,
                            insurance_fund=1e6, maintenance_margin=0.005)   # not timed
    summary = crash_lrvx(state, shock_market=3, shock=-0.30)               # timed

or ``run_lrvx_crash(...)`` for both. A state is consumed by its crash (lrvx mutates the
accounts): build a new one for every benchmark round.

The library is imported lazily, so this module imports without lrvx installed;
``lrvx_available()`` says whether it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import numpy as np

#: The version this adapter was written and checked against.
LRVX_VERSION = "0.11.0"

#: lrvx's own default liquidation slippage (adverse, on every closeout), in basis points.
LRVX_DEFAULT_SLIPPAGE_BPS = 25.0

ADL_RANKINGS = ("pnl_ratio", "binance", "bybit", "position_size")


def lrvx_available() -> bool:
    try:
        import lrvx  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class LrvxState:
    """A built lrvx book. ``engine`` holds raw pointers to the accounts: keep ``accounts_obj``
    alive as long as the engine is used."""

    engine: Any  # lrvx.LiquidationEngine
    accounts_obj: dict  # account id -> lrvx.Account (attached)
    marks: np.ndarray  # float64 per market, the marks the accounts were built at
    insurance_fund: float  # fund balance right before the crash
    slippage_bps: float
    maintenance_margin: float
    # the loaded book (positions sorted by account), for derived figures only
    pos_account: np.ndarray
    pos_market: np.ndarray
    pos_size: np.ndarray
    pos_entry: np.ndarray
    collateral: dict  # account id -> collateral at build
    n_positions: int
    build_seconds: float
    pre_settle: Optional[dict] = None  # outcome of the pre-crash settle, if any
    touched_before_crash: set = field(default_factory=set)
    crashed: bool = False


def _collateral_map(collateral_by_account: Union[Mapping[int, float], np.ndarray, list], ids: np.ndarray) -> dict:
    if isinstance(collateral_by_account, Mapping):
        return {int(a): float(collateral_by_account.get(int(a), 0.0)) for a in ids}
    arr = np.asarray(collateral_by_account, dtype=np.float64)
    # array convention of deleverage.books.generate_book: index i -> account id i + 1
    out = {}
    for a in ids:
        i = int(a) - 1
        out[int(a)] = float(arr[i]) if 0 <= i < len(arr) else 0.0
    return out


def build_lrvx_book(
    accounts: np.ndarray,
    markets: np.ndarray,
    sizes: np.ndarray,
    entry_prices: np.ndarray,
    collateral_by_account: Union[Mapping[int, float], np.ndarray, list],
    marks: np.ndarray,
    *,
    insurance_fund: float = 0.0,
    maintenance_margin: float = 0.005,
    tiers: Optional[list] = None,
    slippage_bps: float = 0.0,
    adl_ranking: str = "pnl_ratio",
    adl_enabled: bool = True,
    counterparty: Optional[int] = None,
    counterparty_collateral: float = 1e12,
    pre_settle: bool = False,
) -> LrvxState:
    """Load the book into a fresh ``lrvx.LiquidationEngine`` with one cross-margin
    ``lrvx.Account`` per account id, every position marked at ``marks``.

    * ``maintenance_margin``: one flat tier ``add_tier(0, mm)``; ``tiers`` = rows
      ``(min_notional, mm_fraction)`` replaces it (lrvx tiers are a flat rate chosen by the
      position's notional bracket, no maintenance-amount deduction).
    * ``slippage_bps``: adverse slippage on every liquidation/closeout (lrvx's default is 25;
      the adapter defaults to 0 so closeouts are at the mark). lrvx has no liquidation fee.
    * ``counterparty``: an account id that takes, per market, the opposite of the net size at
      the same net entry notional (deleverage's ``load_positions(counterparty=...)``), with
      ``counterparty_collateral``. ``None`` loads the rows as they are.
    * ``pre_settle``: walk every market once at the unchanged marks during the build, so
      accounts already liquidatable before the shock are settled outside the timed crash; the
      outcome is kept in ``state.pre_settle``.
    """
    import lrvx

    t0 = time.perf_counter()
    acc = np.asarray(accounts, dtype=np.int64)
    mkt = np.asarray(markets, dtype=np.int64)
    sz = np.asarray(sizes, dtype=np.float64)
    ent = np.asarray(entry_prices, dtype=np.float64)
    mk = np.asarray(marks, dtype=np.float64)
    n = len(acc)
    if not (len(mkt) == len(sz) == len(ent) == n):
        raise ValueError("accounts, markets, sizes and entry_prices must have the same length")
    if np.any(sz == 0):
        raise ValueError("zero-size positions are not supported")

    if counterparty is not None:
        cp = int(counterparty)
        if np.any(acc == cp):
            raise ValueError("the counterparty account may not appear in the loaded rows")
        net = np.bincount(mkt, weights=sz, minlength=len(mk))
        net_notional = np.bincount(mkt, weights=sz * ent, minlength=len(mk))
        cm = np.nonzero(np.abs(net) > 1e-12)[0]
        acc = np.concatenate([acc, np.full(len(cm), cp, dtype=np.int64)])
        mkt = np.concatenate([mkt, cm.astype(np.int64)])
        sz = np.concatenate([sz, -net[cm]])
        ent = np.concatenate([ent, net_notional[cm] / net[cm]])

    order = np.argsort(acc, kind="stable")
    acc, mkt, sz, ent = acc[order], mkt[order], sz[order], ent[order]
    ids, starts = np.unique(acc, return_index=True)
    ends = np.append(starts[1:], len(acc))
    coll = _collateral_map(collateral_by_account, ids)
    if counterparty is not None:
        coll[int(counterparty)] = float(counterparty_collateral)

    eng = lrvx.LiquidationEngine()
    for row in (tiers if tiers is not None else [(0.0, maintenance_margin)]):
        eng.add_tier(float(row[0]), float(row[1]))
    eng.set_liquidation_slippage_bps(float(slippage_bps))
    eng.set_insurance_fund_capital(float(insurance_fund))
    eng.set_adl_enabled(bool(adl_enabled))
    eng.set_adl_ranking(adl_ranking)
    eng.set_mark_impact_model("none")  # the default; no cascade feedback on the mark

    objs: dict = {}
    mkt_l, sz_l, ent_l, mark_l = mkt.tolist(), sz.tolist(), ent.tolist(), mk.tolist()
    Account = lrvx.Account
    for a, s, e in zip(ids.tolist(), starts.tolist(), ends.tolist()):
        ac = Account(a, coll[a])  # MarginMode.Cross is the default
        op, sm = ac.open_position, ac.set_mark
        for j in range(s, e):
            m = mkt_l[j]
            op(m, sz_l[j], ent_l[j])
            sm(m, mark_l[m])
        eng.attach_account(ac)
        objs[a] = ac

    state = LrvxState(
        engine=eng, accounts_obj=objs, marks=mk.copy(), insurance_fund=float(insurance_fund),
        slippage_bps=float(slippage_bps), maintenance_margin=float(maintenance_margin),
        pos_account=acc, pos_market=mkt, pos_size=sz, pos_entry=ent, collateral=coll,
        n_positions=len(acc), build_seconds=0.0,
    )
    if pre_settle:
        out = eng.on_marks([(m, mark_l[m]) for m in range(len(mark_l))])
        state.pre_settle = _outcome_counts(out)
        state.touched_before_crash = set(out["liquidated"]) | set(out["adl_closed_out"])
        state.insurance_fund = float(eng.insurance_fund_balance())
        eng.reset_stats()  # clears counters and histories, keeps the fund balance
    state.build_seconds = time.perf_counter() - t0
    return state


def _outcome_counts(out: dict) -> dict:
    return {
        "liquidated_positions": len(out["liquidated"]),
        "liquidated_accounts": len(set(out["liquidated"])),
        "adl_closeouts": len(out["adl_closed_out"]),
        "insurance_fund_delta": float(out["insurance_fund_delta"]),
    }


def crash_lrvx(
    state: LrvxState,
    shock_market: int,
    shock: float,
    *,
    walk_all_markets: bool = False,
    derived: bool = True,
) -> dict:
    """Move ``shock_market``'s mark by the fraction ``shock`` (-0.30 = 30% down) and run lrvx's
    waterfall with one ``LiquidationEngine.on_marks`` call.

    One walk already checks every attached account (holders of the shocked market or not), so
    the default passes only the shocked mark. ``walk_all_markets`` also passes every other
    market at its unchanged mark (shocked one first): lrvx then repeats the full walk once per
    market, which costs ~9x more on a 10-market book and found nothing more in our runs.

    ``waterfall_seconds`` times the ``on_marks`` call alone. With ``derived`` the summary also
    has figures lrvx does not report, computed afterwards from the loaded book: ADL notional
    and the total deficit of bankrupt accounts, hence the shortfall that neither the fund nor
    ADL covered (lrvx drops it silently).
    """
    if state.crashed:
        raise RuntimeError("this lrvx state was already crashed; build a new one")
    state.crashed = True
    eng = state.engine
    new_mark = float(state.marks[shock_market]) * (1.0 + float(shock))
    if not new_mark > 0:
        raise ValueError("the shocked mark must stay positive")
    marks = [(int(shock_market), new_mark)]
    if walk_all_markets:
        marks += [(m, float(p)) for m, p in enumerate(state.marks) if m != shock_market]
    fund_before = float(eng.insurance_fund_balance())

    t0 = time.perf_counter()
    out = eng.on_marks(marks)
    t1 = time.perf_counter()

    by_fund = eng.deficits_paid_by_fund()
    by_adl = eng.deficits_paid_by_adl()
    fund_after = float(eng.insurance_fund_balance())
    liq_ids = set(out["liquidated"])
    summary = {
        "engine": f"lrvx {LRVX_VERSION}",
        "waterfall_seconds": t1 - t0,
        "build_seconds": state.build_seconds,
        "positions": state.n_positions,
        "accounts": len(state.accounts_obj),
        "shocked_mark": new_mark,
        "liquidated_accounts": len(liq_ids),
        "liquidated_positions": len(out["liquidated"]),  # lrvx lists one id per closed position
        "insurance_fund_before": fund_before,
        "insurance_fund_after": fund_after,
        "insurance_fund_used": fund_before - fund_after,
        "insurance_payments": int(out["insurance_payments_count"]),
        "deficit_paid_by_fund": float(sum(by_fund)),
        "adl_closeouts": len(out["adl_closed_out"]),
        "adl_accounts": len(set(out["adl_closed_out"])),
        "deficit_paid_by_adl": float(sum(by_adl)),
        "pre_settle": state.pre_settle,
    }
    if derived:
        summary.update(_derived(state, out, shock_market, new_mark))
    return summary


def _derived(state: LrvxState, out: dict, shock_market: int, new_mark: float) -> dict:
    """Figures lrvx does not report, from the loaded book and the accounts after the crash.

    For every account lrvx liquidated, with E = collateral + sum size * (mark - entry) at the
    crash marks and S = slippage on the notional lrvx closed (``margin_notional`` before minus
    after), the money that came into the account is
    ``transfer = (wallet + unrealized after) - (E - S)``. lrvx floors a negative wallet at 0,
    so an insolvent account (E - S < 0) receives -(E - S) whether or not the fund and ADL
    covered it; the sum of transfers minus what lrvx says the fund and ADL paid is the
    shortfall nobody covered. lrvx also pays the fund into accounts that are solvent
    (E - S >= 0) but whose *wallet* went negative after their losing positions were closed
    while profitable ones stayed open: that goes to ``fund_paid_to_solvent_accounts``.
    ADL'd accounts enter with their haircut (a negative transfer; ADL closes at the mark, no
    slippage), so ``uncovered_shortfall = sum(transfers) - fund paid``. Accounts touched by a
    pre-settle are left out (``derived_skipped_accounts``; ``derived_exact`` is then False).
    """
    slip = state.slippage_bps * 1e-4
    marks_after = state.marks.copy()
    marks_after[shock_market] = new_mark
    adl_ids = set(out["adl_closed_out"])
    in_shock = state.pos_market == shock_market
    adl_rows = in_shock & np.isin(state.pos_account, np.fromiter(adl_ids, dtype=np.int64, count=len(adl_ids)))
    adl_notional = float(np.sum(np.abs(state.pos_size[adl_rows]) * new_mark))

    touched = sorted(set(out["liquidated"]) | adl_ids)
    bankrupt = 0
    deficit = 0.0
    transfers = 0.0
    to_solvent = 0.0
    solvent_paid = 0
    skipped = 0
    if touched:
        sel = np.isin(state.pos_account, np.asarray(touched, dtype=np.int64))
        pa, pm, ps, pe = state.pos_account[sel], state.pos_market[sel], state.pos_size[sel], state.pos_entry[sel]
        uniq, inv = np.unique(pa, return_inverse=True)
        upnl = np.bincount(inv, weights=ps * (marks_after[pm] - pe), minlength=len(uniq))
        notional = np.bincount(inv, weights=np.abs(ps) * marks_after[pm], minlength=len(uniq))
        shock_notional = np.bincount(inv, weights=np.where(pm == shock_market, np.abs(ps) * new_mark, 0.0),
                                     minlength=len(uniq))
        for a, u, n, sn in zip(uniq.tolist(), upnl.tolist(), notional.tolist(), shock_notional.tolist()):
            if a in state.touched_before_crash:
                skipped += 1
                continue
            o = state.accounts_obj[a]
            closed = n - o.margin_notional()
            if a in adl_ids:  # ADL closes at the mark, without slippage
                closed -= sn
            net = state.collateral[a] + u - slip * max(closed, 0.0)
            t = (o.equity() + o.total_unrealised_pnl()) - net
            transfers += t
            if net < 0:
                bankrupt += 1
                deficit += -net
            elif t > 1e-9:
                solvent_paid += 1
                to_solvent += t
    fund_paid = float(sum(state.engine.deficits_paid_by_fund()))
    return {
        "adl_notional": adl_notional,
        "bankrupt_accounts": bankrupt,
        "bankrupt_deficit": deficit,
        "fund_paid_to_solvent_accounts": to_solvent,
        "solvent_accounts_paid": solvent_paid,
        # money that appeared in the liquidated and ADL'd accounts, less what the fund paid:
        # deficits that neither the fund nor ADL haircuts covered
        "uncovered_shortfall": transfers - fund_paid,
        "derived_skipped_accounts": skipped,
        "derived_exact": skipped == 0,
    }


def run_lrvx_crash(
    accounts: np.ndarray,
    markets: np.ndarray,
    sizes: np.ndarray,
    entry_prices: np.ndarray,
    collateral_by_account: Union[Mapping[int, float], np.ndarray, list],
    marks: np.ndarray,
    shock_market: int,
    shock: float,
    insurance_fund: float,
    **options: Any,
) -> dict:
    """Build the book and crash it; options go to :func:`build_lrvx_book` (``maintenance_margin``,
    ``tiers``, ``slippage_bps``, ``adl_ranking``, ``adl_enabled``, ``counterparty``,
    ``counterparty_collateral``, ``pre_settle``) or :func:`crash_lrvx` (``walk_all_markets``,
    ``derived``)."""
    crash_keys = {"walk_all_markets", "derived"}
    crash_opts = {k: options.pop(k) for k in list(options) if k in crash_keys}
    state = build_lrvx_book(accounts, markets, sizes, entry_prices, collateral_by_account, marks,
                            insurance_fund=insurance_fund, **options)
    return crash_lrvx(state, shock_market, shock, **crash_opts)


if __name__ == "__main__":  # quick timing on the generated book
    import argparse
    import json

    from deleverage.books import generate_book

    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=200_000)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--markets", type=int, default=10)
    ap.add_argument("--shock-market", type=int, default=0)
    ap.add_argument("--shock", type=float, default=-0.30)
    ap.add_argument("--fund", type=float, default=1e6)
    ap.add_argument("--mm", type=float, default=0.005)
    ap.add_argument("--counterparty", type=int, default=None)
    ap.add_argument("--pre-settle", action="store_true")
    ap.add_argument("--walk-all-markets", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    b = generate_book(a.positions, a.accounts, a.markets, seed=1)
    for _ in range(a.repeat):
        s = run_lrvx_crash(b.accounts, b.markets, b.sizes, b.entry_prices, b.collateral, b.marks,
                           a.shock_market, a.shock, a.fund, maintenance_margin=a.mm,
                           counterparty=a.counterparty, pre_settle=a.pre_settle,
                           walk_all_markets=a.walk_all_markets)
        print(json.dumps(s))
