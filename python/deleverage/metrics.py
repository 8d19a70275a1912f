"""Metrics of the policy lab: what one waterfall step (or a path of steps) took from whom.

:func:`measure` reads an exchange as it was just before :meth:`Exchange.liquidate` (a
:meth:`Exchange.copy` taken after the marks were set), the exchange after it, and the exact
:class:`WaterfallResult`, and returns a :class:`PolicyMetrics`. :func:`combine` sums the
metrics of consecutive steps (a price path). :func:`deleverage.compare` runs both for several
policies on copies of one exchange.

Definitions (all money is computed in exact integer units of ``10**-money_decimals`` and
reported both as quote-currency floats and as ``*_units`` ints):

**Event.** One bankrupt position's use of the last resort: the rows of the step grouped by
the bankrupt account and its market. An ``adl_close`` row belongs to the event
``(counterparty, market)``. A ``socialized_credit`` or ``bad_debt`` row belongs to
``(account, market)``; when its market is -1 (a credit raised from other markets, or bad
debt) it is attributed to the market of that account's previous credit in the step, else to
the market of its last executor fill, else -1.

**Value taken** from winners, per event:

* each ``adl_close`` row (winner's signed size change ``dq``, cash received ``a``):
  ``taken = -value(m, dq, mark) - a``, what the winner gave up relative to closing the same
  lots at the mark (positive when the ADL price is worse for it than the mark);
* each ``socialized_credit`` row: its amount. What the haircuts of a round raise is paid out
  to the creditors of that round, so the credits received by an event are exactly the
  haircut money taken for it (``sum of haircut rows == sum of credit rows``).

**Value needed**, per event:

* each ``adl_close`` row: ``needed = value(m, -dq, p_exec) - a``: what the bankrupt account
  received from the ADL minus what the executor would have paid it for the same lots at its
  price ``p_exec`` (docs/waterfall.md section 2, for the bankrupt position's size when it was
  liquidated). With ``adl_price="bankruptcy"`` this is ``|p_exec - p_bk| * lots`` in money
  (the issue's ``sum |fill price - bankruptcy price| * closed size``); with ``"mark"`` the
  gap from the mark to the bankruptcy value is raised separately and counted below;
* each ``socialized_credit`` and ``bad_debt`` row: its amount (the residual deficit the last
  resort was asked to raise: pending haircut deficits, docs/waterfall.md section 6).

**Overshoot** of an event: ``taken - needed``. ``overshoot_net`` is the sum over events,
``overshoot_gross`` the sum of ``max(taken - needed, 0)`` (only events that took more than
they needed), so ``overshoot_net <= overshoot_gross`` and ``overshoot_gross >= 0``. In
haircut mode an event's overshoot is minus its bad debt; in close mode a negative overshoot
is the executor's slippage that ADL avoided.

**Severity excess**: ``severity_excess = last_resort_planned - last_resort_needed`` (engine
totals, ``WaterfallTotals``): what a fixed severity ``theta`` sent to the last resort beyond
deficit matching (what the insurance fund could have paid but was kept out of); 0 with
``theta="deficit"``. ``overshoot_net`` measures each event against what it was asked to raise,
so ``overshoot_net + severity_excess`` is the overshoot against deficit matching.

**Winner rows** (table ``winners``): one row per touched winner position
``(account, market)`` and way it was touched: ``"adl"`` (taken = lots closed, capacity = its
size before the step, both in base units) or ``"haircut"`` (taken = haircut money, capacity =
its positive unrealized PnL before the step; ``fraction = inf`` if it had none, which only
``funding_index`` does). ``fraction = taken / capacity``; ``largest_fraction`` is the
largest over all rows.

**Accounts touched**: distinct winner accounts in ``adl_close`` or ``haircut`` rows.
**Gini** of the money taken per winner account (``value`` of its winner rows summed, negative
sums counted as 0): ``gini_touched`` over the touched accounts, ``gini_eligible`` over every
*eligible* account, untouched ones counting 0. Eligible: accounts that hold, before the
step, an opposite-side position in a market where ADL closed a bankrupt position, or a
profitable position in a market where haircuts were taken; never the executor's account nor
an account liquidated in the step; plus every touched account. ``Gini = sum_ij |x_i - x_j|
/ (2 n sum x)``, in ``[0, 1 - 1/n]``; NaN when nothing was taken.

**Top winner**: the account other than the executor's with the largest unrealized PnL
before the (first) step (the sum of its positions' ``unrealized_pnl``; ties: smaller id).
``top_winner_profit_after = top_winner_profit_before + (equity after - equity before)``,
equities at the step's marks, summed over the steps of a path: its profit minus what the
waterfall cost it (price moves between steps are not counted).

**Rank stability** ``rank_tau``: Kendall's tau between the ADL ranking
(:meth:`Exchange.adl_ranking`, the step's ``ranking``) before and after the step, per
market and side, on the positions present in both (same account and side), pooled:
``sum(concordant - discordant) / sum(pairs)`` over every (market, side) group and step.
Ranks have no ties (ties are broken by account id), so this is tau-a = tau-b. NaN when no
group has two common positions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from . import _convert as cv
from .errors import ArithmeticOverflow, InvalidInput
from .exchange import Exchange
from .executors import Backstop, Executor, MarketClose
from .reports import Table
from .waterfall import WaterfallResult

__all__ = ["measure", "combine", "PolicyMetrics", "EventMetrics", "WinnerMetrics", "gini", "kendall_tau"]

R = 100_000_000  # rate scale of the engine (1e-8)
_FILL_KINDS = ("liquidation_fill", "partial_fill", "backstop_fill")


# ---------------------------------------------------------------------------- tables

@dataclasses.dataclass(frozen=True, repr=False)
class EventMetrics(Table):
    """One row per event (bankrupt position): money in quote currency, ``*_units`` exact."""

    step: np.ndarray  #: step number (int64)
    account: np.ndarray  #: the bankrupt account (int64)
    market: np.ndarray  #: its market (int32; -1 when unknown)
    taken: np.ndarray  #: value taken from winners for it (float64)
    needed: np.ndarray  #: value it needed from the last resort (float64)
    overshoot: np.ndarray  #: taken - needed (float64)
    taken_units: np.ndarray  #: int64 money units
    needed_units: np.ndarray  #: int64 money units

    def __repr__(self) -> str:
        return f"EventMetrics({len(self)} events)"


@dataclasses.dataclass(frozen=True, repr=False)
class WinnerMetrics(Table):
    """One row per touched winner position and way it was touched (``how``: adl / haircut).

    ``taken`` and ``capacity`` are base units (adl) or quote currency (haircut); ``value`` is
    the money taken from it (quote currency); ``*_units`` are the exact integers (lots or
    money units).
    """

    step: np.ndarray
    account: np.ndarray
    market: np.ndarray
    how: np.ndarray  #: "adl" or "haircut" (object)
    taken: np.ndarray
    capacity: np.ndarray
    fraction: np.ndarray  #: taken / capacity (inf when capacity is 0)
    value: np.ndarray
    taken_units: np.ndarray
    capacity_units: np.ndarray
    value_units: np.ndarray

    def __repr__(self) -> str:
        return f"WinnerMetrics({len(self)} winner rows)"


_HORIZON_FIELDS = ("winners_cost_at_horizon", "overshoot_at_horizon", "winners_cost_at_horizon_units", "overshoot_at_horizon_units")
#: The scalar metrics of :meth:`PolicyMetrics.to_dict`, in order (the columns of a comparison).
SUMMARY_FIELDS = (
    "steps", "events", "accounts_touched", "positions_touched", "eligible_accounts",
    "largest_fraction", "gini_touched", "gini_eligible",
    "taken", "needed", "overshoot_net", "overshoot_gross", "bad_debt", "last_resort_needed", "severity_excess",
    "adl_notional", "haircut_total", "fund_used", "deficit",
    "top_winner", "top_winner_profit_before", "top_winner_profit_after",
    "rank_tau", "rank_pairs",
    "taken_units", "needed_units", "overshoot_net_units", "overshoot_gross_units", "bad_debt_units",
    "last_resort_needed_units", "severity_excess_units",
    "top_winner_profit_before_units", "top_winner_profit_after_units",
)


@dataclasses.dataclass(frozen=True, repr=False)
class PolicyMetrics:
    """Metrics of one step or path under one policy (definitions: module docstring).

    Money fields are quote-currency floats, with the exact integer money units in the
    matching ``*_units`` field. ``events`` and ``winners`` hold the per-event and
    per-winner rows; :meth:`to_dict` gives the scalar fields only.
    """

    steps: int  #: waterfall steps measured
    events: int  #: number of events (bankrupt positions that used the last resort)
    accounts_touched: int  #: distinct winner accounts deleveraged or haircut
    positions_touched: int  #: distinct winner (account, market) positions touched
    eligible_accounts: int  #: accounts in gini_eligible
    largest_fraction: float  #: max taken / capacity over winner rows (0 if none)
    gini_touched: float  #: Gini of money taken per touched account
    gini_eligible: float  #: Gini of money taken per eligible account (zeros included)
    taken: float  #: value taken from winners
    needed: float  #: value needed from the last resort
    overshoot_net: float  #: sum over events of taken - needed
    overshoot_gross: float  #: sum over events of max(taken - needed, 0)
    bad_debt: float  #: left uncovered
    last_resort_needed: float  #: what deficit matching needed from the last resort (WaterfallTotals)
    severity_excess: float  #: last_resort_planned - last_resort_needed: what theta added
    adl_notional: float  #: value of the ADL closes (WaterfallTotals)
    haircut_total: float  #: haircut money (WaterfallTotals)
    fund_used: float  #: paid by the insurance fund (WaterfallTotals)
    deficit: float  #: deficit of the liquidations before the fund (WaterfallTotals)
    top_winner: int  #: account id of the top winner (-1: none)
    top_winner_profit_before: float
    top_winner_profit_after: float
    rank_tau: float  #: pooled Kendall tau of the ADL ranking before / after
    rank_pairs: int  #: pairs behind rank_tau
    taken_units: int
    needed_units: int
    overshoot_net_units: int
    overshoot_gross_units: int
    bad_debt_units: int
    last_resort_needed_units: int
    severity_excess_units: int
    top_winner_profit_before_units: int
    top_winner_profit_after_units: int
    event_rows: EventMetrics = dataclasses.field(compare=False)
    winner_rows: WinnerMetrics = dataclasses.field(compare=False)
    # what combine() needs to recompute the summary over several steps
    money_decimals: int = dataclasses.field(default=6, compare=False)
    _eligible: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64), compare=False)
    _rank_cd: int = dataclasses.field(default=0, compare=False)
    _totals_units: tuple[int, int, int, int, int, int] = dataclasses.field(default=(0, 0, 0, 0, 0, 0), compare=False)
    # compare(horizon_steps=H) only (None otherwise): the counterfactual against policy "none"
    winners_cost_at_horizon: Optional[float] = None  #: sum over winners of equity(none) - equity(policy) after step H
    overshoot_at_horizon: Optional[float] = None  #: winners_cost_at_horizon - last_resort_needed up to step H
    winners_cost_at_horizon_units: Optional[int] = None
    overshoot_at_horizon_units: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """The scalar metrics as a plain dict (floats and ints); the horizon fields when measured."""
        out = {name: getattr(self, name) for name in SUMMARY_FIELDS}
        if self.winners_cost_at_horizon_units is not None:
            for name in _HORIZON_FIELDS:
                out[name] = getattr(self, name)
        return out

    def __repr__(self) -> str:
        return (f"PolicyMetrics({self.steps} step(s), {self.events} events, {self.accounts_touched} accounts touched, "
                f"largest fraction {self.largest_fraction:.4g}, overshoot net {self.overshoot_net:.6g})")


# ---------------------------------------------------------------------------- statistics

def gini(values: Sequence[int] | np.ndarray) -> float:
    """Gini coefficient ``sum_ij |x_i - x_j| / (2 n sum x)`` of non-negative integers, computed
    exactly (Python ints) and rounded once; NaN for no values or a zero sum."""
    x = sorted(int(v) for v in values)
    if any(v < 0 for v in x):
        raise InvalidInput("gini: values must be >= 0")
    n, total = len(x), sum(x)
    if n == 0 or total == 0:
        return math.nan
    # sorted ascending: sum_ij |x_i - x_j| / 2 = sum_i (2i - n - 1) x_i  (i = 1..n)
    weighted = sum((2 * (i + 1) - n - 1) * v for i, v in enumerate(x))
    return weighted / (n * total)


def _count_inversions(values: np.ndarray) -> int:
    """Pairs i < j with values[i] > values[j], by a bottom-up merge sort in numpy
    (O(n log^2 n)); the values must be distinct."""
    a = np.asarray(values, dtype=np.int64)
    n = len(a)
    if n < 2:
        return 0
    # relabel to 0..n-1 so the block offsets below cannot overflow
    a = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(np.int64, copy=False)
    size = 1 << (n - 1).bit_length()
    # padding larger than every value, increasing: creates no inversion
    b = np.concatenate([a, np.arange(n, size, dtype=np.int64)])
    inversions = 0
    width = 1
    while width < size:
        blocks = b.reshape(-1, 2 * width)
        nb = blocks.shape[0]
        offset = (np.arange(nb, dtype=np.int64) * size)[:, None]
        left = (blocks[:, :width] + offset).ravel()  # sorted: each half is sorted, blocks offset
        right = (blocks[:, width:] + offset).ravel()
        at_or_below = np.searchsorted(left, right, side="right") - np.repeat(np.arange(nb, dtype=np.int64) * width, width)
        inversions += int((width - at_or_below).sum())
        b = np.sort(blocks, axis=1).ravel()
        width *= 2
    return inversions


def kendall_tau(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Kendall's tau-a between two rankings without ties (NaN for fewer than 2 items)."""
    xs, ys = np.asarray(x), np.asarray(y)
    if len(xs) != len(ys):
        raise InvalidInput(f"kendall_tau: lengths differ ({len(xs)} and {len(ys)})")
    cd, pairs = _concordance(xs, ys)
    return cd / pairs if pairs else math.nan


def _concordance(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(concordant - discordant, pairs) of two tie-free rankings."""
    n = len(x)
    pairs = n * (n - 1) // 2
    if n < 2:
        return 0, 0
    order = np.argsort(x, kind="stable")
    discordant = _count_inversions(np.asarray(y)[order])
    return pairs - 2 * discordant, pairs


# ---------------------------------------------------------------------------- exact prices

class _Units:
    """The exchange's fixed-point scales (docs/semantics.md, Units)."""

    def __init__(self, ex: Exchange) -> None:
        scales = ex.scales
        self.md = scales.money_decimals
        self.qd = list(scales.qty_decimals)
        self.pd = list(scales.mark_decimals)  # the price unit
        d = max([self.md] + [q + p for q, p in zip(self.qd, self.pd)])
        self.S = 10 ** (d - self.md)
        self.k = [d - q - p for q, p in zip(self.qd, self.pd)]

    def value(self, m: int, q: int, p: int) -> int:
        """value_money(m, q, p) = floor(q * p * 10^k / S), exact."""
        return (q * p * 10 ** self.k[m]) // self.S


def executor_price(ex: Exchange, market: int, size: int, executor: Executor) -> int:
    """The price (ticks) at which ``executor`` closes a position of ``size`` lots (signed, long
    > 0) in ``market`` at the exchange's current mark, as in docs/waterfall.md section 2:
    ``rate = slippage + impact_rate * notional / depth`` (truncated, capped at 1), a long sells
    at ``max(1, floor(p * (R - rate) / R))``, a short buys at ``ceil(p * (R + rate) / R)``."""
    return _executor_price_ticks(_Units(ex), int(ex.marks(exact=True)[market]), market, size, executor)


def _executor_price_ticks(u: _Units, p: int, market: int, size: int, executor: Executor) -> int:
    # Used only while the event table has no ``exec_price`` column (see measure).
    if not isinstance(executor, MarketClose):
        raise InvalidInput(f"executor: only a MarketClose has an executor price (got {type(executor).__name__})")
    rate = int(round(executor.slippage_bps * 10_000))  # the same conversion as Exchange.liquidate
    if executor.impact is not None:
        depth = int(cv.to_fixed(executor.impact.depth, u.md, "impact.depth", exact=False, on_grid=False)[0])
        impact_rate = int(round(executor.impact.bps_per_depth * 10_000))
        notional = (abs(size) * p * 10 ** u.k[market]) // u.S
        rate += impact_rate * notional // depth
    rate = min(rate, R)
    if size > 0:
        return max(1, (p * (R - rate)) // R)
    return -((-p * (R + rate)) // R)


# ---------------------------------------------------------------------------- one step

def _money(units: int, md: int) -> float:
    return units / 10**md


def _int64(values: list[int], field: str) -> np.ndarray:
    for v in values:
        if not -(2**63) <= v < 2**63:
            raise ArithmeticOverflow(f"{field}: {v} does not fit in int64")
    return np.array(values, dtype=np.int64)


def measure(
    before: Exchange,
    after: Exchange,
    result: WaterfallResult,
    *,
    executor: Optional[Executor] = None,
    ranking: str = "bitmex",
    top_winner: Optional[int] = None,
) -> PolicyMetrics:
    """Metrics of one waterfall step (definitions: module docstring).

    Args:
        before: the exchange just before :meth:`Exchange.liquidate`, marks already set
            (``before = ex.copy()`` right before the call). Read only.
        after: the exchange after the call (needed for the ranking after the step and the
            top winner's equity). Read only.
        result: the call's result, with ``exact=True``.
        executor: the executor passed to the call; needed while the event table has no
            ``exec_price`` column and there are ``adl_close`` rows.
        ranking: the ranking of the ADL queue used for ``rank_tau`` (the call's ``ranking``).
        top_winner: track this account as the top winner instead of choosing it (used by
            :func:`deleverage.compare` to follow the first step's top winner along a path).

    The rows are processed with numpy (a step can have millions of ``adl_close`` rows under
    pro-rata); every money amount stays an exact integer.
    """
    step = _check_step(before, after, result)
    u = _Units(before)
    marks = before.marks(exact=True).astype(np.int64, copy=False)
    exec_account = _executor_account(executor)
    s = _Step(before, result)
    adl, events = _adl_events(s, u, marks, executor)
    bad_debt = _credit_events(s, events)
    event_table = _event_table(step, events, s.keys, u.md)
    winners = _winner_rows(s, adl, step, u)
    eligible = _eligible(s, winners, adl, exec_account)
    top, top_before, top_after = _top_winner_equity(before, after, s, exec_account, top_winner)
    rank_cd, rank_pairs = _rank_stability(before, after, ranking)
    tt = result.totals
    # last_resort_needed / _planned: engines before the severity theta did not report them (then 0)
    totals = (int(tt.adl_notional), int(tt.haircut_total), int(tt.fund_used), int(tt.deficit),
              int(getattr(tt, "last_resort_needed", 0)), int(getattr(tt, "last_resort_planned", 0)))
    return _summarize(u.md, 1, event_table, winners, eligible.astype(np.int64), top, top_before, top_after,
                      rank_cd, rank_pairs, totals, bad_debt)


def _check_step(before: Exchange, after: Exchange, result: WaterfallResult) -> int:
    """The step of ``result``, after checking that ``before`` and ``after`` surround it."""
    if not isinstance(before, Exchange) or not isinstance(after, Exchange):
        raise InvalidInput("before and after must be Exchange objects")
    if not isinstance(result, WaterfallResult):
        raise InvalidInput(f"result must be a WaterfallResult (got {type(result).__name__})")
    if not result.events.exact or not result.totals.exact:
        raise InvalidInput("result: pass the result of liquidate(..., exact=True) (exact integer amounts)")
    step = int(result.totals.step)
    if before.step != step - 1 or after.step != step:
        raise InvalidInput(f"before/after: expected the exchanges at steps {step - 1} and {step} around the result "
                           f"(got {before.step} and {after.step})")
    if before.markets != after.markets:
        raise InvalidInput("before/after: not the same markets")
    return step


def _executor_account(executor: Optional[Executor]) -> Optional[int]:
    if isinstance(executor, MarketClose):
        return int(executor.counterparty)
    if isinstance(executor, Backstop):
        return int(executor.account)
    return None


class _Step:
    """What :func:`measure` reads of one step: the positions before it and its event rows as
    int64 columns, masks of the row kinds, (account, market) codes and a lookup of a column of
    the positions by code."""

    def __init__(self, before: Exchange, result: WaterfallResult) -> None:
        pos = before.positions(exact=True)
        self.p_acc = pos.account.astype(np.int64, copy=False)
        self.p_mk = pos.market.astype(np.int64, copy=False)
        self.p_size = pos.size.astype(np.int64, copy=False)
        self.p_upnl = pos.unrealized_pnl.astype(np.int64, copy=False)
        ev = result.events
        self.events = ev
        self.kind = np.asarray(ev.kind, dtype=object)
        self.acc = ev.account.astype(np.int64, copy=False)
        self.mk = ev.market.astype(np.int64, copy=False)
        self.cp = ev.counterparty.astype(np.int64, copy=False)
        self.dq = ev.size.astype(np.int64, copy=False)
        self.amt = ev.amount.astype(np.int64, copy=False)
        # compare the (object) kind column once in full; the other kinds only on the rest
        self.is_adl = self.kind == "adl_close"
        self._rest = np.flatnonzero(~self.is_adl)
        self._rest_kind = self.kind[self._rest]
        self.is_fill = self.rows_of(*_FILL_KINDS)
        self.is_hc = self.rows_of("haircut")
        self.is_credit = self.rows_of("socialized_credit", "bad_debt")
        self.keys = _Keys([self.p_acc, self.acc, self.cp], len(before.markets))
        p_code = self.keys.code(self.p_acc, self.p_mk)
        self._p_order = np.argsort(p_code, kind="stable")
        self._p_sorted = p_code[self._p_order]

    def rows_of(self, *names: str) -> np.ndarray:
        mask = np.zeros(len(self.kind), dtype=bool)
        for name in names:
            mask[self._rest[self._rest_kind == name]] = True
        return mask

    def lookup(self, codes: np.ndarray, column: np.ndarray) -> np.ndarray:
        """column[position with that (account, market) before the step], 0 where none."""
        p_sorted = self._p_sorted
        at = np.minimum(np.searchsorted(p_sorted, codes), max(len(p_sorted) - 1, 0))
        found = (p_sorted[at] == codes) if len(p_sorted) else np.zeros(len(codes), dtype=bool)
        return np.where(found, column[self._p_order][at] if len(p_sorted) else 0, 0)


@dataclasses.dataclass(frozen=True)
class _AdlRows:
    """The adl_close rows: their row numbers, winner, market, size change, what each winner
    gave up against the mark, and the codes of the events (bankrupt account, market)."""

    rows: np.ndarray
    winner: np.ndarray
    market: np.ndarray
    dq: np.ndarray
    gave_up: np.ndarray
    event_codes: np.ndarray


def _adl_events(s: _Step, u: _Units, marks: np.ndarray, executor: Optional[Executor]) -> tuple[_AdlRows, dict[int, list[int]]]:
    """The adl_close rows grouped by event (bankrupt account, market), and per event code
    ``[first row, taken, needed]``. An event's rows are consecutive in practice: the runs of
    equal keys are grouped first (cheap), then the runs."""
    ia = np.flatnonzero(s.is_adl)
    a_w, a_m, a_b, a_dq, a_amt = s.acc[ia], s.mk[ia], s.cp[ia], s.dq[ia], s.amt[ia]
    e_code = s.keys.code(a_b, a_m)
    run_start = np.flatnonzero(np.concatenate([[True], e_code[1:] != e_code[:-1]])) if len(ia) else np.empty(0, np.int64)
    run_len = np.diff(np.append(run_start, len(ia)))
    e_uniq, e_first_run, run_inv = np.unique(e_code[run_start], return_index=True, return_inverse=True)
    e_row = ia[run_start[e_first_run]]  # the first adl_close row of each event
    a_px = _adl_exec_prices(s, u, marks, executor, ia, e_uniq, e_row, run_inv, run_len)
    tenk = np.array([10**k for k in u.k], dtype=np.int64)[a_m] if len(ia) else np.empty(0, dtype=np.int64)
    gave_up = -_value(a_dq, marks[a_m] if len(ia) else a_px, tenk, u.S) - a_amt
    needed = _value(-a_dq, a_px, tenk, u.S) - a_amt
    ev_taken = np.zeros(len(e_uniq), dtype=np.int64)
    ev_needed = np.zeros(len(e_uniq), dtype=np.int64)
    if len(ia):
        np.add.at(ev_taken, run_inv, np.add.reduceat(gave_up, run_start))
        np.add.at(ev_needed, run_inv, np.add.reduceat(needed, run_start))
    events: dict[int, list[int]] = {}  # code -> [first row, taken, needed]
    for c, r, t, n in zip(e_uniq.tolist(), e_row.tolist(), ev_taken.tolist(), ev_needed.tolist()):
        events[c] = [r, t, n]
    return _AdlRows(ia, a_w, a_m, a_dq, gave_up, e_uniq), events


def _adl_exec_prices(s: _Step, u: _Units, marks: np.ndarray, executor: Optional[Executor], ia: np.ndarray,
                     e_uniq: np.ndarray, e_row: np.ndarray, run_inv: np.ndarray, run_len: np.ndarray) -> np.ndarray:
    """The executor's price for the lots of each adl_close row (the rows in runs of one event:
    ``run_inv`` each run's index in ``e_uniq``, ``run_len`` its length): the engine's
    ``exec_price`` column when it has one, else recomputed from the executor spec
    (docs/waterfall.md 2)."""
    column = getattr(s.events, "exec_price", None)
    if column is not None:
        return np.asarray(column, dtype=np.int64)[ia]
    if len(e_uniq) and executor is None:
        raise InvalidInput("executor: needed to price the executor's alternative of the adl_close rows "
                           "(this result has no exec_price column)")
    a_w, a_m, a_dq = s.acc[ia], s.mk[ia], s.dq[ia]
    # the bankrupt position's size when its closings were computed: before the step, plus
    # the rows that changed it before its first adl_close row: its partial fills, and the
    # ADL it took as a winner in an earlier round of a cascade (not its own full-close
    # fill, which comes before its ADL rows when the round's ADL demand is shared)
    size_then = s.lookup(e_uniq, s.p_size).astype(np.int64, copy=False)
    ifl = np.flatnonzero(s.rows_of("partial_fill"))
    cascade = np.flatnonzero(np.isin(a_w, s.keys.account(e_uniq)))  # winners that were liquidated later
    c_code = np.concatenate([s.keys.code(s.acc[ifl], s.mk[ifl]), s.keys.code(a_w[cascade], a_m[cascade])])
    c_row = np.concatenate([ifl, ia[cascade]])
    c_dq = np.concatenate([s.dq[ifl], a_dq[cascade]])
    at = np.minimum(np.searchsorted(e_uniq, c_code), max(len(e_uniq) - 1, 0))
    hit = (e_uniq[at] == c_code) if len(e_uniq) else np.zeros(len(c_code), dtype=bool)
    hit &= c_row < np.where(hit, e_row[at] if len(e_uniq) else 0, 0)
    np.add.at(size_then, at[hit], c_dq[hit])
    e_markets = s.keys.market(e_uniq)
    key_px = np.array([_executor_price_ticks(u, int(marks[m]), m, int(q), executor)  # type: ignore[arg-type]
                       for m, q in zip(e_markets.tolist(), size_then.tolist())], dtype=np.int64)
    return np.repeat(key_px[run_inv], run_len) if len(ia) else np.empty(0, dtype=np.int64)


def _credit_events(s: _Step, events: dict[int, list[int]]) -> int:
    """Adds the socialized_credit / bad_debt rows (one or two per creditor, in order) to their
    events (module docstring: the market of a row without one); returns the bad debt."""
    fill_market: dict[int, int] = dict(zip(s.acc[s.is_fill].tolist(), s.mk[s.is_fill].tolist()))  # each account's last fill
    credit_market: dict[int, int] = {}
    bad_debt = 0
    for r in np.flatnonzero(s.is_credit).tolist():
        a, m, x = int(s.acc[r]), int(s.mk[r]), int(s.amt[r])
        if m >= 0:
            credit_market[a] = m
            target = m
        else:
            target = credit_market[a] if a in credit_market else fill_market.get(a, -1)
        c = int(s.keys.code(np.array([a]), np.array([target]))[0])
        entry = events.setdefault(c, [r, 0, 0])
        if s.kind[r] == "socialized_credit":
            entry[1] += x
            entry[2] += x
        else:
            entry[2] += x
            bad_debt += x
    return bad_debt


def _event_table(step: int, events: dict[int, list[int]], keys: "_Keys", md: int) -> EventMetrics:
    """One row per event, in the order of its first row."""
    order = sorted(events, key=lambda c: events[c][0])
    codes = np.array(order, dtype=np.int64)
    taken_units = [events[c][1] for c in order]
    needed_units = [events[c][2] for c in order]
    return EventMetrics(
        np.full(len(order), step, dtype=np.int64),
        keys.account(codes),
        keys.market(codes).astype(np.int32),
        np.array([_money(t, md) for t in taken_units], dtype=np.float64),
        np.array([_money(n, md) for n in needed_units], dtype=np.float64),
        np.array([_money(t - n, md) for t, n in zip(taken_units, needed_units)], dtype=np.float64),
        _int64(taken_units, "taken_units"),
        _int64(needed_units, "needed_units"),
    )


def _winner_rows(s: _Step, adl: _AdlRows, step: int, u: _Units) -> WinnerMetrics:
    """The winner rows: adl (lots against size), haircut (money against positive PnL)."""
    w_code, w_inv = _group(s.keys.code(adl.winner, adl.market))
    w_lots = np.zeros(len(w_code), dtype=np.int64)
    w_value = np.zeros(len(w_code), dtype=np.int64)
    np.add.at(w_lots, w_inv, np.abs(adl.dq))
    np.add.at(w_value, w_inv, adl.gave_up)
    ih = np.flatnonzero(s.is_hc)
    h_code, h_inv = _group(s.keys.code(s.acc[ih], s.mk[ih]))
    h_money = np.zeros(len(h_code), dtype=np.int64)
    np.add.at(h_money, h_inv, -s.amt[ih])
    all_codes = np.concatenate([w_code, h_code])
    how = np.array(["adl"] * len(w_code) + ["haircut"] * len(h_code), dtype=object)
    taken_w = np.concatenate([w_lots, h_money])
    cap_w = np.concatenate([np.abs(s.lookup(w_code, s.p_size)), np.maximum(s.lookup(h_code, s.p_upnl), 0)]).astype(np.int64,
                                                                                                                 copy=False)
    value_w = np.concatenate([w_value, h_money])
    w_order = np.lexsort((how == "haircut", all_codes))  # by account, market, then adl before haircut
    return _winner_table(step, s.keys.account(all_codes)[w_order], s.keys.market(all_codes)[w_order], how[w_order],
                         taken_w[w_order], cap_w[w_order], value_w[w_order], u)


def _eligible(s: _Step, winners: WinnerMetrics, adl: _AdlRows, exec_account: Optional[int]) -> np.ndarray:
    """The eligible winner accounts: the touched ones, and every other account that could have
    paid (a position on a side ADL closed against, or a profit in a market with haircuts),
    except accounts liquidated in the step and the executor's."""
    touched = np.unique(winners.account)
    excluded = np.unique(np.concatenate([s.acc[s.is_fill], s.cp[s.is_adl]]
                                        + ([np.array([exec_account])] if exec_account is not None else [])))
    bankrupt_side = np.sign(s.lookup(adl.event_codes, s.p_size))  # the side of each bankrupt position that ADL closed
    adl_side_code = np.unique(s.keys.market(adl.event_codes) * 2 + (bankrupt_side < 0))  # (market, opposite side is long)
    hc_markets = np.unique(s.mk[s.is_hc])
    eligible_mask = ~np.isin(s.p_acc, excluded) & (
        np.isin(s.p_mk * 2 + (s.p_size > 0), adl_side_code) | (np.isin(s.p_mk, hc_markets) & (s.p_upnl > 0)))
    return np.union1d(touched, s.p_acc[eligible_mask])


def _top_winner_equity(before: Exchange, after: Exchange, s: _Step, exec_account: Optional[int],
                       top_winner: Optional[int]) -> tuple[int, int, int]:
    """(top winner, its profit before the step, that plus its equity change over the step)."""
    if top_winner is None:
        top, top_before = _top_winner(s.p_acc, s.p_upnl, exec_account)
    else:
        top = int(top_winner)
        top_before = sum(s.p_upnl[s.p_acc == top].tolist())
    top_delta = 0
    if top >= 0:
        top_delta = int(after.account_margin(top, exact=True)["equity"]) - int(before.account_margin(top, exact=True)["equity"])
    return top, top_before, top_before + top_delta


class _Keys:
    """(account, market) pairs as one int64 code: (account - lowest id) * (markets + 1) + market + 1
    (market -1 allowed), so numpy can sort and group them."""

    def __init__(self, accounts: Sequence[np.ndarray], markets: int) -> None:
        arrays = [a for a in accounts if len(a)]
        self.low = min((int(a.min()) for a in arrays), default=0)
        high = max((int(a.max()) for a in arrays), default=0)
        self.width = markets + 1
        if (high - self.low + 2) * self.width >= 2**62:
            raise ArithmeticOverflow("account ids span too wide a range to group (ids differ by more than 2**62 / markets)")

    def code(self, account: np.ndarray, market: np.ndarray) -> np.ndarray:
        return (np.asarray(account, dtype=np.int64) - self.low) * self.width + np.asarray(market, dtype=np.int64) + 1

    def account(self, code: np.ndarray) -> np.ndarray:
        return np.asarray(code, dtype=np.int64) // self.width + self.low

    def market(self, code: np.ndarray) -> np.ndarray:
        return np.asarray(code, dtype=np.int64) % self.width - 1


def _group(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct codes, index of each code among them): np.unique's result, by a
    dense table when the codes span a moderate range (much faster than sorting millions)."""
    if len(codes) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    low, high = int(codes.min()), int(codes.max())
    span = high - low + 1
    if span > max(1 << 22, 2 * len(codes)):
        uniq, inv = np.unique(codes, return_inverse=True)
        return uniq, inv.ravel()
    present = np.zeros(span, dtype=bool)
    present[codes - low] = True
    position = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(np.int64) + low, position[codes - low]


def _value(q: np.ndarray, p: np.ndarray, tenk: np.ndarray, S: int) -> np.ndarray:
    """value_money = floor(q * p * 10^k / S) per row, exactly: int64 when every product fits,
    else Python integers (object arrays)."""
    if len(q) == 0:
        return np.empty(0, dtype=np.int64)
    bound = int(np.abs(q).max()) * int(np.abs(p).max()) * int(tenk.max())
    if bound < 2**62:
        product = q * p
        if int(tenk.max()) > 1:
            product *= tenk
        return product // S if S > 1 else product
    exact = [(a * b * c) // S for a, b, c in zip(q.tolist(), p.tolist(), tenk.tolist())]
    return _int64(exact, "value")


def _top_winner(p_acc: np.ndarray, p_upnl: np.ndarray, exec_account: Optional[int]) -> tuple[int, int]:
    """(account, unrealized PnL) of the account other than the executor's with the largest
    sum of its positions' unrealized PnL (ties: smaller id); (-1, 0) if none is positive."""
    keep = p_acc != exec_account if exec_account is not None else np.ones(len(p_acc), dtype=bool)
    ids, inv = np.unique(p_acc[keep], return_inverse=True)
    if len(ids) == 0:
        return -1, 0
    total = np.zeros(len(ids), dtype=object)  # Python ints: no overflow on large accounts
    np.add.at(total, inv, p_upnl[keep].astype(object))
    best = max(range(len(ids)), key=lambda i: (total[i], -int(ids[i])))
    if total[best] <= 0:
        return -1, 0
    return int(ids[best]), int(total[best])


def _winner_table(step: int, account: np.ndarray, market: np.ndarray, how: np.ndarray, taken: np.ndarray,
                  capacity: np.ndarray, value: np.ndarray, u: _Units) -> WinnerMetrics:
    is_adl = how == "adl"
    scale = np.where(is_adl, np.power(10.0, np.array(u.qd, dtype=np.float64)[market] if len(market) else 0.0),
                     float(10**u.md))
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(capacity > 0, taken.astype(np.float64) / np.maximum(capacity, 1).astype(np.float64), math.inf)
    return WinnerMetrics(
        np.full(len(account), step, dtype=np.int64), account.astype(np.int64), market.astype(np.int32), how,
        taken / scale, capacity / scale, fraction, value / float(10**u.md),
        taken.astype(np.int64), capacity.astype(np.int64), value.astype(np.int64),
    )


def _rank_stability(before: Exchange, after: Exchange, ranking: str) -> tuple[int, int]:
    """Pooled (concordant - discordant, pairs) of the ADL ranks before / after, per market and side."""
    cd_total = pairs_total = 0
    for m in range(len(before.markets)):
        rb = before.adl_ranking(m, ranking=ranking, exact=True)
        ra = after.adl_ranking(m, ranking=ranking, exact=True)
        if len(rb) < 2 or len(ra) < 2:
            continue
        for side in (1, -1):
            sb, sa = rb.side == side, ra.side == side
            rank_after = dict(zip(ra.account[sa].tolist(), ra.rank[sa].tolist()))
            common_b, common_a = [], []
            for acct, rank in zip(rb.account[sb].tolist(), rb.rank[sb].tolist()):
                if acct in rank_after:
                    common_b.append(rank)
                    common_a.append(rank_after[acct])
            cd, pairs = _concordance(np.array(common_b, dtype=np.int64), np.array(common_a, dtype=np.int64))
            cd_total += cd
            pairs_total += pairs
    return cd_total, pairs_total


# ---------------------------------------------------------------------------- summaries

def _summarize(md: int, steps: int, events: EventMetrics, winners: WinnerMetrics, eligible: np.ndarray, top: int,
               top_before: int, top_after: int, rank_cd: int, rank_pairs: int, totals: tuple[int, int, int, int, int, int],
               bad_debt: int) -> PolicyMetrics:
    taken = sum(int(v) for v in events.taken_units)
    needed = sum(int(v) for v in events.needed_units)
    net = taken - needed
    gross = sum(max(int(t) - int(n), 0) for t, n in zip(events.taken_units, events.needed_units))
    per_account: dict[int, int] = {}
    for a, v in zip(winners.account.tolist(), winners.value_units.tolist()):
        per_account[a] = per_account.get(a, 0) + int(v)
    touched_values = [max(v, 0) for v in per_account.values()]
    untouched = len(set(eligible.tolist()) - set(per_account))
    positions = {(a, m) for a, m in zip(winners.account.tolist(), winners.market.tolist())}
    largest = float(winners.fraction.max()) if len(winners) else 0.0
    return PolicyMetrics(
        steps=steps,
        events=len(events),
        accounts_touched=len(per_account),
        positions_touched=len(positions),
        eligible_accounts=len(per_account) + untouched,
        largest_fraction=largest,
        gini_touched=gini(touched_values),
        gini_eligible=gini(touched_values + [0] * untouched),
        taken=_money(taken, md),
        needed=_money(needed, md),
        overshoot_net=_money(net, md),
        overshoot_gross=_money(gross, md),
        bad_debt=_money(bad_debt, md),
        last_resort_needed=_money(totals[4], md),
        severity_excess=_money(totals[5] - totals[4], md),
        adl_notional=_money(totals[0], md),
        haircut_total=_money(totals[1], md),
        fund_used=_money(totals[2], md),
        deficit=_money(totals[3], md),
        top_winner=top,
        top_winner_profit_before=_money(top_before, md),
        top_winner_profit_after=_money(top_after, md),
        rank_tau=rank_cd / rank_pairs if rank_pairs else math.nan,
        rank_pairs=rank_pairs,
        taken_units=taken,
        needed_units=needed,
        overshoot_net_units=net,
        overshoot_gross_units=gross,
        bad_debt_units=bad_debt,
        last_resort_needed_units=totals[4],
        severity_excess_units=totals[5] - totals[4],
        top_winner_profit_before_units=top_before,
        top_winner_profit_after_units=top_after,
        event_rows=events,
        winner_rows=winners,
        money_decimals=md,
        _eligible=eligible,
        _rank_cd=rank_cd,
        _totals_units=totals,
    )


def _concat(tables: Sequence[Table], cls: Any) -> Any:
    cols = [t.columns() for t in tables]
    return cls(*[np.concatenate([c[name] for c in cols]) for name in cols[0]])


def combine(parts: Sequence[PolicyMetrics]) -> PolicyMetrics:
    """The metrics of consecutive steps of one path, as one: sums of money and events,
    the largest fraction over every step, accounts touched and Gini over the money taken
    per account summed over the steps (eligible: touched or eligible in any step), the top
    winner of the first step (its profit after: the last step's), ``rank_tau`` pooled over
    every step's pairs. Pass every step's :func:`measure`, in order, with the first step's
    ``top_winner`` tracked in the later ones."""
    if len(parts) == 0:
        raise InvalidInput("parts: nothing to combine")
    if len(parts) == 1:
        return parts[0]
    md = parts[0].money_decimals
    if any(p.money_decimals != md for p in parts):
        raise InvalidInput("parts: money_decimals differ")
    top = parts[0].top_winner
    if any(p.top_winner != top for p in parts):
        raise InvalidInput("parts: every step must track the first step's top winner (measure(..., top_winner=...))")
    events = _concat([p.event_rows for p in parts], EventMetrics)
    winners = _concat([p.winner_rows for p in parts], WinnerMetrics)
    eligible = np.unique(np.concatenate([p._eligible for p in parts]))
    top_before = parts[0].top_winner_profit_before_units
    top_after = top_before + sum(p.top_winner_profit_after_units - p.top_winner_profit_before_units for p in parts)
    totals = tuple(sum(p._totals_units[i] for p in parts) for i in range(6))
    return _summarize(md, sum(p.steps for p in parts), events, winners, eligible, top, top_before, top_after,
                      sum(p._rank_cd for p in parts), sum(p.rank_pairs for p in parts),
                      (totals[0], totals[1], totals[2], totals[3], totals[4], totals[5]), sum(p.bad_debt_units for p in parts))
