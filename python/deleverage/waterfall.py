"""Results of a waterfall step (:meth:`Exchange.liquidate`) and of the ADL indicator."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import _core
from .errors import InvalidInput
from .reports import Table

EVENT_KINDS = ("liquidation_fill", "partial_fill", "backstop_fill", "fund_payment", "liquidation_fee",
               "adl_close", "haircut", "bad_debt", "socialized_credit")
# The names of the engine's enums (cpp/bindings/register_waterfall_config.cpp names each
# member as the API spells it), in code order.
MODES: tuple[str, ...] = tuple(_core.WaterfallMode.__members__)
# What liquidate() accepts, index = the engine's Policy code (the one name table,
# cpp/include/deleverage/policy.hpp); funding_index is haircut-only; "none" is no last resort:
# what the fund cannot pay is recorded as bad debt (the counterfactual of compare(horizon_steps=)).
LAST_RESORT_POLICIES: tuple[str, ...] = tuple(_core.POLICY_NAMES)
# The policies that deleverage or haircut someone (all but "none").
POLICIES: tuple[str, ...] = tuple(p for p in LAST_RESORT_POLICIES if p != "none")
# Policies that only haircut (there is nothing to close by): a name alone means mode="haircut".
HAIRCUT_ONLY: tuple[str, ...] = ("funding_index",)
RANKINGS: tuple[str, ...] = tuple(_core.Ranking.__members__)
ADL_PRICES: tuple[str, ...] = tuple(_core.AdlPrice.__members__)
ADL_REFRESH: tuple[str, ...] = tuple(_core.AdlRefresh.__members__)
DEFICIT_SPLITS: tuple[str, ...] = tuple(_core.DeficitSplit.__members__)


def default_mode(policy: str) -> str:
    """The mode a policy runs in when none is given: haircut for a haircut-only policy."""
    return "haircut" if policy in HAIRCUT_ONLY else "close"


def policy_spec(name: str, known: tuple[str, ...] = LAST_RESORT_POLICIES) -> dict[str, str]:
    """The liquidate keywords of a policy written ``"policy"`` or ``"mode:policy"`` (as the
    command line and :func:`deleverage.stress` take them): ``{"policy": ...}``, with ``"mode"``
    when it is given or implied by a haircut-only policy. InvalidInput names an unknown mode or
    a policy not in ``known``."""
    mode, _, policy = name.rpartition(":")
    if policy not in known:
        raise InvalidInput(f"unknown policy {policy!r} (known: {', '.join(known)})")
    if mode and mode not in MODES:
        raise InvalidInput(f"unknown mode {mode!r} in {name!r} (known: {', '.join(MODES)})")
    spec = {"policy": policy}
    if mode or policy in HAIRCUT_ONLY:
        spec["mode"] = mode or default_mode(policy)
    return spec


@dataclasses.dataclass(frozen=True, repr=False)
class EventTable(Table):
    """Every movement of one waterfall step, in the order it happened.

    ``kind`` (str): liquidation_fill / partial_fill / backstop_fill (``account`` closes
    ``size`` against the executor ``counterparty``, receiving ``amount``); fund_payment (the
    fund pays ``amount`` to ``account``); liquidation_fee (``account`` pays ``-amount`` to the
    fund); adl_close (winner ``account`` closes ``size`` against the bankrupt
    ``counterparty``); haircut (winner ``account`` pays ``-amount`` to ``counterparty``);
    bad_debt (``amount`` left uncovered). Sizes in base units, money in quote currency,
    prices in quote (NaN when not a fill) — or lots, units and ticks when ``exact``.
    ``exec_price``: on fills, the fill price; on adl_close rows, the executor's price for the
    bankrupt position, i.e. what those lots would have filled at without ADL (NaN / 0 elsewhere).
    """

    step: np.ndarray
    kind: np.ndarray
    account: np.ndarray
    market: np.ndarray
    counterparty: np.ndarray
    size: np.ndarray
    amount: np.ndarray
    price: np.ndarray
    pool: np.ndarray
    exec_price: np.ndarray
    exact: bool = False

    def __repr__(self) -> str:
        parts = ""
        if len(self):
            kinds, counts = np.unique(self.kind.astype(str), return_counts=True)
            parts = ", ".join(f"{k}: {c}" for k, c in zip(kinds.tolist(), counts.tolist()))
        return f"EventTable({len(self)} events; {parts})"


@dataclasses.dataclass(frozen=True)
class WaterfallTotals:
    """Totals of one step. Money in quote currency (or integer units when ``exact``)."""

    step: int
    liquidated_accounts: int
    partial_liquidations: int
    deficit: float  #: deficit of the liquidations before the fund
    fund_used: float  #: paid by the insurance fund
    fund_fees: float  #: liquidation fees received by the fund
    adl_notional: float  #: value of the ADL closes
    adl_closes: int  #: number of counterparty closes
    haircut_total: float  #: taken from winners in haircut mode
    accounts_touched: int  #: distinct winners deleveraged or haircut
    bad_debt: float  #: left uncovered (0 unless every winner is exhausted)
    #: what the last resort had to raise under deficit matching (per position, the deficit the
    #: fund could not have paid); a fixed ``theta`` may send more to the last resort
    last_resort_needed: float = 0.0
    last_resort_planned: float = 0.0  #: what the step's plans sent to the last resort
    exact: bool = False


@dataclasses.dataclass(frozen=True, repr=False)
class WaterfallResult:
    """What :meth:`Exchange.liquidate` did: ``events`` and ``totals``; for a per-account call,
    ``skipped`` holds the given account ids that were not liquidated (flat, the executor's,
    or not liquidatable when their turn came), in the order given."""

    events: EventTable
    totals: WaterfallTotals
    skipped: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def summary(self) -> dict[str, Any]:
        """The totals as a plain dict."""
        return {k: v for k, v in dataclasses.asdict(self.totals).items() if k != "exact"}

    def __repr__(self) -> str:
        t = self.totals
        return (f"WaterfallResult(step {t.step}: {t.liquidated_accounts} liquidated, fund used {t.fund_used}, "
                f"ADL {t.adl_closes} closes / {t.adl_notional}, haircuts {t.haircut_total}, bad debt {t.bad_debt})")


@dataclasses.dataclass(frozen=True, repr=False)
class AdlRanking(Table):
    """The ADL indicator of one market: one row per position.

    ``rank`` 1 is deleveraged first within its side; ``light`` is the 1-5 indicator
    exchanges show (5 = top 20% of the queue); ``score`` is the ranking score;
    ``expected_loss`` is what the position would lose against the mark (quote currency) if
    the largest current deficit on the other side were deleveraged now.
    """

    account: np.ndarray
    side: np.ndarray
    size: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    light: np.ndarray
    expected_loss: np.ndarray
    exact: bool = False

    def __repr__(self) -> str:
        return f"AdlRanking({len(self)} positions)"


@dataclasses.dataclass(frozen=True)
class AdlRank:
    """One account's place in its side's ADL queue (:meth:`Exchange.adl_rank`): ``rank`` 1 is
    deleveraged first; ``light`` 1-5 (5 = top 20% of the side); ``score`` as in
    :class:`AdlRanking` (``score_units``: the integer score in 1e-9 units)."""

    account: int
    side: int  #: +1 long, -1 short
    score: float
    score_units: int
    rank: int
    side_count: int  #: positions on that side of the market
    light: int
