"""The policy lab: run several last-resort policies on copies of one exchange and compare them.

:func:`compare` copies the exchange once per policy, applies the same shock (or price path),
runs :meth:`Exchange.liquidate` and measures each run with :mod:`deleverage.metrics`. The
input exchange is never modified.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from . import metrics as _metrics
from .errors import InvalidInput, UnknownId
from .exchange import Exchange
from .executors import Executor
from .metrics import PolicyMetrics
from .waterfall import LAST_RESORT_POLICIES
from .waterfall_spec import WaterfallSpec, spec_of_entry

__all__ = ["compare", "ComparisonTable", "KNOWN_POLICIES"]

#: Every policy name the lab knows (close and haircut modes): the engine's name table.
KNOWN_POLICIES: tuple[str, ...] = LAST_RESORT_POLICIES
# liquidate keywords that only some policies take: dropped from the "none" counterfactual
_POLICY_ONLY = ("policy", "cap", "lot", "g", "seed", "ranking", "label")

PolicySpec = Union[str, Mapping[str, Any], WaterfallSpec]
Shock = Union[Mapping[Any, float], Sequence[float], np.ndarray]

#: Columns of :meth:`ComparisonTable.to_markdown` by default (to_pandas has every metric).
DEFAULT_COLUMNS: tuple[str, ...] = (
    "accounts_touched", "largest_fraction", "gini_touched", "gini_eligible", "taken", "needed", "overshoot_net",
    "overshoot_gross", "severity_excess", "bad_debt", "top_winner_profit_after", "rank_tau",
)
_HEADERS = {
    "accounts_touched": "touched", "positions_touched": "positions", "eligible_accounts": "eligible",
    "largest_fraction": "max fraction", "gini_touched": "Gini touched", "gini_eligible": "Gini eligible",
    "overshoot_net": "overshoot net", "overshoot_gross": "overshoot gross", "bad_debt": "bad debt",
    "severity_excess": "severity excess", "last_resort_needed": "needed (matching)",
    "adl_notional": "ADL notional", "haircut_total": "haircuts", "fund_used": "fund used",
    "top_winner": "top winner", "top_winner_profit_before": "top profit before",
    "top_winner_profit_after": "top profit after", "rank_tau": "rank tau", "rank_pairs": "rank pairs",
}
_RATIOS = ("largest_fraction", "gini_touched", "gini_eligible", "rank_tau")


@dataclasses.dataclass(frozen=True, repr=False)
class ComparisonTable:
    """One row per policy: its label and its :class:`PolicyMetrics` (definitions in
    :mod:`deleverage.metrics`). ``table["queue"]`` gives a row's metrics."""

    labels: tuple[str, ...]
    rows: tuple[PolicyMetrics, ...]
    specs: tuple[dict[str, Any], ...]  #: the liquidate keywords of every row

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, label: str) -> PolicyMetrics:
        try:
            return self.rows[self.labels.index(label)]
        except ValueError:
            raise KeyError(f"no policy labelled {label!r} (labels: {', '.join(self.labels)})") from None

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per row: ``policy`` (the label) then every scalar metric."""
        return [{"policy": label, **row.to_dict()} for label, row in zip(self.labels, self.rows)]

    def to_pandas(self) -> Any:
        """A DataFrame indexed by policy label, one column per scalar metric (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.to_dicts()).set_index("policy")

    def to_markdown(self, columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
        """A GitHub markdown table (no tabulate needed). Money in quote currency with 2
        decimals, ratios with 4, NaN as ``n/a``."""
        names = list(columns)
        known = set(self.rows[0].to_dict()) if self.rows else set(_metrics.SUMMARY_FIELDS)
        for i, name in enumerate(names):
            if name not in known:
                raise InvalidInput(f"columns[{i}]: unknown metric {name!r}")
        header = ["policy"] + [_HEADERS.get(n, n.replace("_", " ")) for n in names]
        body = [[label] + [_format(n, row.to_dict()[n]) for n in names] for label, row in zip(self.labels, self.rows)]
        widths = [max(len(r[j]) for r in [header] + body) for j in range(len(header))]

        def line(cells: list[str]) -> str:
            out = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
            return "| " + " | ".join(out) + " |"

        rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
        return "\n".join([line(header), rule] + [line(r) for r in body])

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"ComparisonTable({len(self)} policies: {', '.join(self.labels)})"

    def plot(self, *, title: str = "") -> Any:
        """A matplotlib Figure (needs the ``plot`` extra): left, the distribution of the
        fraction taken per touched winner position (lots closed / size, or haircut / profit)
        for each policy, as a box plot over the individual points (log scale); right, the
        Lorenz curve of the money taken per touched account. Save it with
        ``fig.savefig("out.png")``. Fractions without a capacity (``inf``: ``funding_index``
        charging positions without profit) are counted in the label, not drawn."""
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # the optional extra
            raise ImportError("ComparisonTable.plot needs matplotlib: pip install 'deleverage[plot]'") from exc
        n = len(self.labels)
        fig = Figure(figsize=(max(11.0, 5.0 + 1.25 * n), 4.8), layout="constrained")
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        rng = np.random.default_rng(0)  # jitter of the points: deterministic figures
        data, ticks = [], []
        for i, (label, row) in enumerate(zip(self.labels, self.rows)):
            frac = row.winner_rows.fraction
            finite = frac[np.isfinite(frac) & (frac > 0)]
            data.append(finite)
            extra = int((~np.isfinite(frac)).sum())
            name = label.replace(" (", "\n(")  # long labels on two lines
            ticks.append(f"{name}\n{len(frac)} positions" + (f"\n{extra} w/o profit" if extra else ""))
            if len(finite):
                left.scatter(i + 1 + rng.uniform(-0.18, 0.18, len(finite)), finite, s=6, alpha=0.35, color=f"C{i}",
                             linewidths=0)
        nonempty = [j for j, d in enumerate(data) if len(d)]
        if nonempty:
            left.boxplot([data[j] for j in nonempty], positions=[j + 1 for j in nonempty], widths=0.5,
                         showfliers=False, medianprops={"color": "black"})
            left.set_yscale("log")
        left.set_xticks(range(1, len(self.labels) + 1), ticks, fontsize=8 if n <= 4 else 7)
        left.set_xlim(0.4, len(self.labels) + 0.6)
        left.set_ylabel("fraction of capacity taken (per touched position)")
        left.set_title("Haircut per touched winner")
        left.grid(axis="y", alpha=0.3, which="both")
        drawn = 0
        for i, (label, row) in enumerate(zip(self.labels, self.rows)):
            x, y = _lorenz(row)
            if len(x):
                right.plot(x, y, color=f"C{i}", label=f"{label} (Gini {row.gini_touched:.2f})")
                drawn += 1
        right.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        right.set_xlabel("share of touched accounts (least taken first)")
        right.set_ylabel("share of money taken")
        right.set_title("Lorenz curve of money taken")
        if drawn:
            right.legend(fontsize=8, loc="upper left")
        if title:
            fig.suptitle(title)
        return fig


def _lorenz(row: PolicyMetrics) -> tuple[np.ndarray, np.ndarray]:
    per: dict[int, int] = {}
    for a, v in zip(row.winner_rows.account.tolist(), row.winner_rows.value_units.tolist()):
        per[a] = per.get(a, 0) + int(v)
    values = np.sort(np.maximum(np.array(list(per.values()), dtype=np.float64), 0.0))
    if len(values) == 0 or values.sum() <= 0:
        return np.empty(0), np.empty(0)
    y = np.concatenate([[0.0], np.cumsum(values) / values.sum()])
    x = np.linspace(0.0, 1.0, len(values) + 1)
    return x, y


def _format(name: str, value: Any) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4f}" if name in _RATIOS else f"{v:,.2f}"


# ---------------------------------------------------------------------------- inputs

def _labelled_specs(policies: Any, executor: Executor, base: dict[str, Any]) -> list[tuple[str, WaterfallSpec, dict[str, Any]]]:
    """(label, spec, liquidate keywords) per policy: a name or a dict over the shared keywords
    ``base``, or a :class:`WaterfallSpec` (labelled by its ``name``)."""
    if isinstance(policies, (str, Mapping, WaterfallSpec)) or not isinstance(policies, Sequence):
        raise InvalidInput("policies: expected a list of policy names or dicts of liquidate keywords")
    if len(policies) == 0:
        raise InvalidInput("policies: empty list, nothing to compare")
    out: list[tuple[str, WaterfallSpec, dict[str, Any]]] = []
    for i, entry in enumerate(policies):
        if isinstance(entry, Mapping) and "policy" not in entry:
            raise InvalidInput(f"policies[{i}]: a dict needs a 'policy' key")
        spec, kw = spec_of_entry(entry, i, executor=executor, base=base, caller="compare")
        if isinstance(entry, str):
            label = entry
        elif isinstance(entry, Mapping):
            label = str(entry["label"]) if "label" in entry else _label(entry)
        else:
            label = spec.name
        if label in [lab for lab, _, _ in out]:
            raise InvalidInput(f"policies[{i}]: duplicate label {label!r} (give the dict a 'label')")
        out.append((label, spec, kw))
    return out


def _label(spec: Mapping[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "policy")
    return f"{spec['policy']} ({extra})" if extra else str(spec["policy"])


def _market_index(ex: Exchange, key: Any, field: str) -> int:
    if isinstance(key, str):
        if key not in ex.markets:
            raise UnknownId(f"{field}: unknown market {key!r} (markets: {', '.join(ex.markets)})")
        return ex.markets.index(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= int(key) < len(ex.markets):
            raise UnknownId(f"{field}: unknown market id {int(key)}")
        return int(key)
    raise InvalidInput(f"{field}: a market is a symbol or an id (got {key!r})")


def _to_ticks(ex: Exchange, m: int, price: float, field: str) -> int:
    if isinstance(price, bool) or not isinstance(price, (int, float, np.integer, np.floating)) or not math.isfinite(price):
        raise InvalidInput(f"{field}: expected a finite price (got {price!r})")
    ticks = int(round(float(price) * 10 ** ex.scales.mark_decimals[m]))  # nearest price unit (the mark's)
    if ticks <= 0:
        raise InvalidInput(f"{field}: the price {price!r} must be at least one price unit of {ex.markets[m]}")
    return ticks


def _path(ex: Exchange, shock: Any) -> list[dict[int, int]]:
    """The shock as a list of steps, each {market id: new mark in ticks}."""
    current = [int(v) for v in ex.marks(exact=True)]
    n = len(ex.markets)
    if isinstance(shock, Mapping):
        if len(shock) == 0:
            raise InvalidInput("shock: empty dict")
        step: dict[int, int] = {}
        for key, move in shock.items():
            m = _market_index(ex, key, f"shock[{key!r}]")
            if isinstance(move, bool) or not isinstance(move, (int, float, np.integer, np.floating)) or not math.isfinite(move):
                raise InvalidInput(f"shock[{key!r}]: expected a relative move such as -0.3 (got {move!r})")
            if move <= -1:
                raise InvalidInput(f"shock[{key!r}]: a move of {move} leaves no positive price (must be > -1)")
            if current[m] <= 0:
                raise InvalidInput(f"shock[{key!r}]: market {ex.markets[m]} has no mark to move")
            step[m] = max(1, int(round(current[m] * (1.0 + float(move)))))  # nearest tick, at least one
        return [step]
    arr = np.asarray(shock, dtype=np.float64) if not isinstance(shock, np.ndarray) else shock.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise InvalidInput(f"shock: expected a dict of moves, a 1-D array of marks or a 2-D path (got {arr.ndim} dimensions)")
    if arr.shape[1] != n:
        raise InvalidInput(f"shock: {arr.shape[1]} columns of marks for {n} markets")
    if arr.shape[0] == 0:
        raise InvalidInput("shock: the path has no step")
    steps = []
    for s in range(arr.shape[0]):
        row: dict[int, int] = {}
        for m in range(n):
            v = arr[s, m]
            if np.isnan(v):  # NaN keeps the mark
                continue
            row[m] = _to_ticks(ex, m, float(v), f"shock[{s}, {m}]")
        steps.append(row)
    return steps


# ---------------------------------------------------------------------------- compare

def _exact_spec(exchange: Exchange, spec: WaterfallSpec) -> WaterfallSpec:
    """compare runs liquidate with exact=True (the metrics need integer amounts), but takes its
    keywords in human units: a haircut-mode ``lot`` is quote currency, converted here to money
    units (a close-mode ``lot`` is a number of the market's lots either way)."""
    lot = spec.lot
    if lot is None or spec.mode != "haircut":
        return spec
    if isinstance(lot, bool) or not isinstance(lot, (int, float, np.integer, np.floating)) or not math.isfinite(lot):
        raise InvalidInput(f"lot must be a positive amount of quote currency in haircut mode (got {lot!r})")
    return spec.replace(lot=int(round(float(lot) * 10**exchange.money_decimals)))


def _horizon(horizon_steps: Any, steps: int) -> Optional[int]:
    if horizon_steps is None:
        return None
    if isinstance(horizon_steps, bool) or not isinstance(horizon_steps, (int, np.integer)) or not 0 <= int(horizon_steps) < steps:
        raise InvalidInput(f"horizon_steps: expected an integer step of the path, 0 to {steps - 1} (got {horizon_steps!r})")
    return int(horizon_steps)


def _set_marks(ex: Exchange, marks: dict[int, int]) -> None:
    if marks:
        ids = np.array(list(marks), dtype=np.int32)
        ex.set_marks(ids, np.array([marks[m] for m in ids.tolist()], dtype=np.int64), exact=True)


def _equities(ex: Exchange) -> dict[int, int]:
    """Every account's equity (money units) at the current marks, on a copy (the margin check
    would otherwise mark the markets valued)."""
    report = ex.copy().check_margin(exact=True)
    return {int(a): int(e) for a, e in zip(report.account, report.equity)}


def _run_policy(exchange: Exchange, path: list[dict[int, int]], spec: WaterfallSpec, horizon: Optional[int],
                none_equity: dict[int, int]) -> PolicyMetrics:
    """One row of :func:`compare`: ``spec`` along the path on a copy of ``exchange``, measured
    step by step and combined; with a horizon, its winners' cost against the "none" run."""
    ex = exchange.copy()
    run_spec = _exact_spec(exchange, spec)
    parts: list[PolicyMetrics] = []
    top = None
    winners: set[int] = set()
    needed = 0
    at_horizon: dict[int, int] = {}
    for t, marks in enumerate(path):
        _set_marks(ex, marks)
        before = ex.copy()
        result = ex.liquidate(run_spec, exact=True)
        part = _metrics.measure(before, ex, result, executor=spec.executor, ranking=spec.ranking, top_winner=top)
        if top is None:
            top = part.top_winner
        parts.append(part)
        if horizon is not None and t <= horizon:
            ev = result.events
            paid = (ev.kind == "adl_close") | (ev.kind == "haircut")
            winners.update(int(a) for a in ev.account[paid])
            needed += int(result.totals.last_resort_needed)
            if t == horizon:
                at_horizon = _equities(ex)
    row = _metrics.combine(parts)
    if horizon is None:
        return row
    cost = sum(none_equity.get(a, 0) - at_horizon.get(a, 0) for a in winners)
    scale = 10**exchange.money_decimals
    return dataclasses.replace(row, winners_cost_at_horizon=cost / scale, overshoot_at_horizon=(cost - needed) / scale,
                               winners_cost_at_horizon_units=cost, overshoot_at_horizon_units=cost - needed)


def compare(
    exchange: Exchange,
    shock: Shock,
    policies: Sequence[PolicySpec],
    *,
    executor: Executor,
    mode: str = "close",
    horizon_steps: Optional[int] = None,
    **liquidate_kwargs: Any,
) -> ComparisonTable:
    """Run each policy on its own copy of ``exchange`` under the same shock and measure it.

    Args:
        exchange: the starting state; never modified.
        shock: ``{market: relative move}`` (``{"BTC": -0.3}``: BTC's mark falls 30%, rounded to
            the nearest tick), or the new marks of every market (1-D, quote prices, NaN keeps a
            mark), or a price path (2-D, steps x markets): one :meth:`Exchange.liquidate` per
            step, after setting that step's marks.
        policies: policy names (``"queue"``, ``"pro_rata"``, ``"haircut:pro_rata"``...), dicts of
            liquidate keywords (``{"policy": "capped_pro_rata", "cap": 0.5, "label": "capped 50%"}``;
            a dict's keys override the shared ones, ``label`` names the row), or
            :class:`~deleverage.WaterfallSpec` objects (complete on their own: the shared
            keywords do not apply; a spec without an executor runs with ``executor``; the row
            is labelled by the spec's ``name``).
        executor, mode, liquidate_kwargs: passed to every :meth:`Exchange.liquidate` call
            (``ranking``, ``adl_price``, ``theta``, ``cap``, ``lot``, ``g``, ``seed``), in the
            units of ``exact=False`` (a haircut-mode ``lot`` in quote currency). ``ranking`` is
            also the ranking whose stability ``rank_tau`` measures.
        horizon_steps: on a path, the counterfactual over a later horizon: ``H`` (``0 <= H <``
            the path's steps) adds ``winners_cost_at_horizon``, the sum over the policy's
            winners (accounts deleveraged or haircut in steps ``0..H``) of their equity after
            step ``H`` in a run of the same path with ``policy="none"`` (no last resort: what
            the fund cannot pay is bad debt) minus their equity after step ``H`` under the
            policy, and ``overshoot_at_horizon``, that minus the ``last_resort_needed`` of steps
            ``0..H`` (what the last resort was needed for). Positive: ADL or haircuts cost the
            winners more than the deficit they covered, by the horizon.

    Returns:
        A :class:`ComparisonTable`, one row per policy, in order.

    Raises:
        InvalidInput: an unknown policy name, an empty list, a bad shock (the message names
            the field); UnknownId: a shock on an unknown market. Whatever liquidate raises for
            a policy it does not support. Nothing is changed in any case.
    """
    if not isinstance(exchange, Exchange):
        raise InvalidInput(f"exchange: expected an Exchange (got {type(exchange).__name__})")
    for bad in ("exact", "policy"):
        if bad in liquidate_kwargs:
            raise InvalidInput(f"{bad!r}: set by compare (policies go in the policies list)")
    base = {"mode": mode, **liquidate_kwargs}
    specs = _labelled_specs(policies, executor, base)
    path = _path(exchange, shock)
    horizon = _horizon(horizon_steps, len(path))
    none_equity: dict[int, int] = {}
    if horizon is not None:
        none_spec = WaterfallSpec(executor=executor, policy="none", **{k: v for k, v in base.items() if k not in _POLICY_ONLY})
        ex = exchange.copy()
        for marks in path[: horizon + 1]:
            _set_marks(ex, marks)
            ex.liquidate(_exact_spec(exchange, none_spec), exact=True)
        none_equity = _equities(ex)
    labels, rows, used = [], [], []
    for label, spec, kw in specs:
        labels.append(label)
        rows.append(_run_policy(exchange, path, spec, horizon, none_equity))
        used.append(dict(kw))
    return ComparisonTable(tuple(labels), tuple(rows), tuple(used))
