"""Stress testing: the loss waterfall stepped through many mark paths, per policy.

:func:`stress` turns a scenario (:mod:`deleverage.scenarios`) into int64 mark ticks and
hands batches of paths to the compiled runner (``_core.run_stress``), which copies the
exchange for each path and steps ``set_marks`` + ``liquidate`` with no Python per step. Paths
run in parallel over the local cores, or over a ``dask.distributed`` cluster with
``client=``. Each path's marks depend only on the scenario, its seed and the path index, and
every aggregate is an integer sum or extreme, so the result is the same either way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np

from . import _core
from .errors import InvalidInput
from .executors import Executor
from .scenarios import Scenario
from .waterfall_spec import WaterfallSpec, spec_of_entry

if TYPE_CHECKING:
    from .exchange import Exchange

PolicyArg = Union[str, Mapping[str, Any], WaterfallSpec]

#: Per-step series recorded for every path (int64; money in units of 10**-money_decimals).
SERIES = ("deficit", "fund_used", "fund_fees", "bad_debt", "liquidated_accounts", "partial_liquidations",
          "adl_notional", "adl_closes", "haircut_total", "accounts_touched", "winner_loss")
MONEY_SERIES = ("deficit", "fund_used", "fund_fees", "bad_debt", "adl_notional", "haircut_total", "winner_loss")
ACCOUNT_FIELDS = ("loss_total", "loss_max", "paths_hit", "paths_liquidated", "final_equity_min")
_LIQUIDATE_KEYS = ("mode", "policy", "ranking", "adl_price")


def _labelled_specs(policies: Union[PolicyArg, Sequence[PolicyArg]], executor: Executor) -> list[tuple[str, WaterfallSpec]]:
    """(label, spec) per policy. A name is read by :meth:`WaterfallSpec.parse` (a haircut
    policy such as ``funding_index`` implies ``mode="haircut"``); a dict holds liquidate
    keywords and optionally a ``label``; a spec is labelled by its ``name``."""
    if isinstance(policies, (str, Mapping, WaterfallSpec)):
        policies = [policies]
    if len(policies) == 0:
        raise InvalidInput("policies: give at least one policy")
    out: list[tuple[str, WaterfallSpec]] = []
    for i, p in enumerate(policies):
        spec, kw = spec_of_entry(p, i, executor=executor, base={}, caller="stress")
        if isinstance(p, str):
            label = p
        elif isinstance(p, Mapping):
            label = str(p.get("label") or "/".join(str(kw[k]) for k in _LIQUIDATE_KEYS if k in kw) or f"policy{i}")
        else:
            label = spec.name
        if label in (name for name, _ in out):
            raise InvalidInput(f"policies[{i}]: duplicate policy label {label!r} (give a 'label')")
        out.append((label, spec))
    return out


# ---------------------------------------------------------------------- marks


def _market_grid(exchange: "Exchange") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Start marks (price units), mark decimals (the price unit) per market, symbols."""
    ticks = exchange.marks(exact=True)
    if (ticks <= 0).any():
        m = int(np.flatnonzero(ticks <= 0)[0])
        raise InvalidInput(f"exchange: market {exchange.markets[m]!r} has no mark price; set marks before a stress run")
    pd_ = np.array(exchange.scales.mark_decimals, dtype=np.int64)
    return ticks, pd_, exchange.markets


def _path_ticks(scenario: Scenario, path: int, start_ticks: np.ndarray, price_decimals: np.ndarray,
                markets: list[str]) -> np.ndarray:
    scale = np.power(10.0, price_decimals.astype(np.float64))
    prices = np.asarray(scenario.path_prices(path, start_ticks / scale, markets), dtype=np.float64)
    if prices.shape != (scenario.n_steps, len(markets)):
        raise InvalidInput(f"scenario path {path}: expected marks of shape {(scenario.n_steps, len(markets))}, got {prices.shape}")
    ticks = np.rint(prices * scale)
    bad = ~np.isfinite(ticks) | (ticks > 2.0**62)
    if bad.any():
        s, m = (int(v) for v in np.argwhere(bad)[0])
        raise InvalidInput(f"scenario path {path}, step {s}, market {markets[m]!r}: mark {prices[s, m]!r} is out of range")
    # a mark never falls below one tick: prices are positive
    return np.maximum(ticks, 1.0).astype(np.int64)


def _run_batch(exchange: "Exchange", config: _core.WaterfallConfig, scenario: Scenario, paths: Sequence[int],
               threads: int) -> dict[str, Any]:
    start, pdec, markets = _market_grid(exchange)
    marks = np.stack([_path_ticks(scenario, p, start, pdec, markets) for p in paths]) if len(paths) else np.empty(0, np.int64)
    raw = _core.run_stress(exchange.core, config, np.ascontiguousarray(marks, dtype=np.int64).ravel(), len(paths),
                           scenario.n_steps, threads)
    return dict(raw)


# ---------------------------------------------------------------------- shipping to Dask workers

_WORKER_CACHE: dict[str, "Exchange"] = {}


def _shippable(exchange: "Exchange") -> bytes:
    """What a worker needs to get this exchange: its pickle (the snapshot bytes)."""
    return pickle.dumps(exchange)


def _worker_exchange(payload: bytes) -> "Exchange":
    key = hashlib.sha256(payload).hexdigest()
    if key in _WORKER_CACHE:
        return _WORKER_CACHE[key]
    ex = pickle.loads(payload)
    _WORKER_CACHE.clear()  # one book at a time per worker
    _WORKER_CACHE[key] = ex
    return ex


def _dask_batch(payload: bytes, config: _core.WaterfallConfig, scenario: Scenario, paths: Sequence[int],
                threads: int) -> dict[str, Any]:
    # a copy per task: the runner holds its engine's lock for the whole batch, so tasks
    # running side by side in one worker process must not share the cached book
    return _run_batch(_worker_exchange(payload).copy(), config, scenario, paths, threads)


# ---------------------------------------------------------------------- progress


class _Bar:
    """A plain stderr progress bar (no dependency)."""

    def __init__(self, total: int, label: str = "stress") -> None:
        self.total, self.done, self.label, self.t0 = max(1, total), 0, label, time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        self.total, self.done = max(1, total), done
        width = 30
        filled = int(width * done / self.total)
        elapsed = time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} paths {elapsed:6.1f} s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


# ---------------------------------------------------------------------- the entry point


def stress(
    exchange: "Exchange",
    scenario: Scenario,
    *,
    policies: Union[PolicyArg, Sequence[PolicyArg]] = ("queue",),
    executor: Executor,
    client: Any = None,
    threads: int = 0,
    batch_paths: Optional[int] = None,
    progress: Union[bool, Callable[[int, int], None]] = False,
) -> StressResult:
    """Run every path of ``scenario`` through the loss waterfall, once per policy.

    Each path starts from a copy of ``exchange`` (which is never changed); every step sets
    all marks from the path and runs one :meth:`Exchange.liquidate` with ``executor`` and the
    policy's keywords, inside the compiled core. ``policies`` are names (``"queue"``,
    ``"haircut:pro_rata"``, ``"funding_index"``...), dicts of liquidate keywords, e.g.
    ``{"policy": "pro_rata", "mode": "haircut", "label": "haircut"}``, or
    :class:`~deleverage.WaterfallSpec` objects (labelled by their ``name``; a spec without an
    executor runs with ``executor``, one with another executor is refused).

    Paths run on ``threads`` local threads (0: every core), ``batch_paths`` paths per call
    into the core (default: 8 per thread), or, with ``client`` (a ``dask.distributed.Client``),
    as one task per batch on the cluster. ``progress=True`` draws a bar on stderr; a callable
    gets ``(paths done, total paths)``.
    """
    specs = _labelled_specs(policies, executor)
    if not isinstance(scenario, Scenario):
        raise InvalidInput(f"scenario must be a deleverage.scenarios.Scenario (got {type(scenario).__name__})")
    if not isinstance(threads, int) or threads < 0:
        raise InvalidInput(f"threads must be a non-negative integer (got {threads!r})")
    configs = [(label, spec.engine_config(exchange)) for label, spec in specs]
    n_paths, n_steps = int(scenario.n_paths), int(scenario.n_steps)
    if n_paths < 1:
        raise InvalidInput("scenario: no path to run (paths must be at least 1)")
    _market_grid(exchange)  # refuse a market without a mark now, not in a worker
    if batch_paths is None:
        cores = threads or os.cpu_count() or 1
        # a batch ends when its slowest path does: 8 paths per thread keeps that idle time small
        batch_paths = 1 if client is not None else max(1, 8 * cores)
    if not isinstance(batch_paths, int) or batch_paths < 1:
        raise InvalidInput(f"batch_paths must be a positive integer (got {batch_paths!r})")
    batches = [list(range(b, min(n_paths, b + batch_paths))) for b in range(0, n_paths, batch_paths)]
    total = n_paths * len(configs)
    report: Optional[Callable[[int, int], None]] = _Bar(total) if progress is True else (progress or None)  # type: ignore[assignment]
    done = 0
    results: dict[tuple[int, int], dict[str, Any]] = {}
    t0 = time.perf_counter()
    if client is None:
        for ci, (_, cfg) in enumerate(configs):
            for bi, batch in enumerate(batches):
                results[(ci, bi)] = _run_batch(exchange, cfg, scenario, batch, threads)
                done += len(batch)
                if report:
                    report(done, total)
    else:
        from dask.distributed import as_completed

        # a list of one: scatter would otherwise ship the tuple's items one by one
        [payload] = client.scatter([_shippable(exchange)], broadcast=True, hash=False)
        futures, meta = [], {}
        for ci, (_, cfg) in enumerate(configs):
            for bi, batch in enumerate(batches):
                fut = client.submit(_dask_batch, payload, cfg, scenario, batch, threads or 1, pure=False)
                futures.append(fut)
                meta[fut.key] = (ci, bi, len(batch))
        for fut in as_completed(futures):
            ci, bi, size = meta[fut.key]
            results[(ci, bi)] = fut.result()
            done += size
            if report:
                report(done, total)
    elapsed = time.perf_counter() - t0

    ids = exchange.account_ids()
    out_series: dict[str, dict[str, np.ndarray]] = {}
    out_accounts: dict[str, dict[str, np.ndarray]] = {}
    fund_start = np.zeros(0, dtype=np.int64)
    for ci, (label, _) in enumerate(configs):
        parts = [results[(ci, bi)] for bi in range(len(batches))]
        pools = int(parts[0]["shape"][2])
        fund_start = np.asarray(parts[0]["fund_start"], dtype=np.int64)
        series = {name: np.concatenate([np.asarray(p["series"][name]).reshape(len(b), n_steps) for p, b in zip(parts, batches)])
                  for name in SERIES}
        series["fund_balance"] = np.concatenate(
            [np.asarray(p["series"]["fund_balance"]).reshape(len(b), n_steps, pools) for p, b in zip(parts, batches)])
        acc = {name: np.asarray(parts[0]["accounts"][name]).copy() for name in ACCOUNT_FIELDS}
        for p in parts[1:]:
            a = p["accounts"]
            acc["loss_total"] += a["loss_total"]
            acc["paths_hit"] += a["paths_hit"]
            acc["paths_liquidated"] += a["paths_liquidated"]
            acc["loss_max"] = np.maximum(acc["loss_max"], a["loss_max"])
            acc["final_equity_min"] = np.minimum(acc["final_equity_min"], a["final_equity_min"])
        out_series[label] = series
        out_accounts[label] = acc
    return StressResult([label for label, _ in configs], n_paths, n_steps, exchange.money_decimals, fund_start, ids,
                        out_series, out_accounts, elapsed)


# ---------------------------------------------------------------------- results


def _var_es(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Value at risk (the ``confidence`` quantile, the smallest sample at or above it) and
    expected shortfall (mean of the samples at or above the VaR) of per-path amounts."""
    if len(x) == 0:
        return 0.0, 0.0
    s = np.sort(x)
    k = min(len(s) - 1, max(0, int(np.ceil(confidence * len(s))) - 1))
    var = float(s[k])
    return var, float(s[k:].mean())


@dataclasses.dataclass(frozen=True, repr=False)
class StressResult:
    """What :func:`stress` recorded.

    ``series[policy][name]`` is an int64 array ``(paths, steps)`` of one of :data:`SERIES`
    (money in integer units of ``10**-money_decimals``); ``series[policy]["fund_balance"]`` is
    ``(paths, steps, pools)``: each pool's closing balance. ``accounts[policy]`` holds
    per-account outcomes over all paths, aligned with ``account_ids``: ``loss_total`` (sum
    over paths of what ADL took against the mark plus haircuts), ``loss_max`` (largest in one
    path), ``paths_hit``, ``paths_liquidated``, ``final_equity_min`` (lowest end-of-path
    equity). ``fund_start`` is each pool's balance before the paths.
    """

    policies: list[str]
    paths: int
    steps: int
    money_decimals: int
    fund_start: np.ndarray
    account_ids: np.ndarray
    series: dict[str, dict[str, np.ndarray]]
    accounts: dict[str, dict[str, np.ndarray]]
    elapsed: float = 0.0

    def _money(self, units: Any) -> Any:
        return np.asarray(units, dtype=np.float64) / 10**self.money_decimals

    def per_path(self, policy: str) -> dict[str, np.ndarray]:
        """Per-path totals of one policy (money in quote currency): every series summed over
        the steps, plus ``fund_draw`` (the fund's largest fall below its start) and
        ``fund_needed`` (the largest cumulative deficit net of fees: the fund that would have
        paid every deficit without ADL, haircuts or bad debt)."""
        s = self._series(policy)
        out = {name: (self._money(s[name].sum(axis=1)) if name in MONEY_SERIES else s[name].sum(axis=1)) for name in SERIES}
        fund_total = s["fund_balance"].sum(axis=2)
        start = int(self.fund_start.sum())
        out["fund_draw"] = self._money(np.maximum(0, start - fund_total.min(axis=1)))
        net = np.cumsum(s["deficit"] - s["fund_fees"], axis=1)
        out["fund_needed"] = self._money(np.maximum(0, net.max(axis=1)))
        return out

    def _series(self, policy: str) -> dict[str, np.ndarray]:
        if policy not in self.series:
            raise InvalidInput(f"policy: unknown policy {policy!r} (have {', '.join(self.policies)})")
        return self.series[policy]

    def fund_needed(self, confidence: float = 0.99) -> dict[str, dict[str, float]]:
        """Per policy: the insurance fund needed at ``confidence`` across paths, in quote
        currency: ``var`` / ``es`` of ``fund_needed`` (see :meth:`per_path`) and
        ``draw_var`` / ``draw_es`` of the realized fund draw."""
        if not 0.0 < confidence < 1.0:
            raise InvalidInput(f"confidence must be between 0 and 1 (got {confidence!r})")
        out = {}
        for p in self.policies:
            pp = self.per_path(p)
            var, es = _var_es(pp["fund_needed"], confidence)
            dvar, des = _var_es(pp["fund_draw"], confidence)
            out[p] = {"var": var, "es": es, "draw_var": dvar, "draw_es": des}
        return out

    def totals(self, confidence: float = 0.99) -> dict[str, dict[str, Any]]:
        """Machine-readable totals per policy (plain Python numbers; what ``summary.json`` holds)."""
        need = self.fund_needed(confidence)
        out: dict[str, dict[str, Any]] = {}
        for p in self.policies:
            pp = self.per_path(p)
            acc = self.accounts[p]
            loss = self._money(acc["loss_max"])
            out[p] = {
                "paths": self.paths,
                "steps": self.steps,
                "liquidations_mean": float(pp["liquidated_accounts"].mean()),
                "deficit_mean": float(pp["deficit"].mean()),
                "fund_used_mean": float(pp["fund_used"].mean()),
                "fund_draw_max": float(pp["fund_draw"].max()),
                f"fund_needed_var_{confidence:g}": need[p]["var"],
                f"fund_needed_es_{confidence:g}": need[p]["es"],
                "bad_debt_mean": float(pp["bad_debt"].mean()),
                "bad_debt_max": float(pp["bad_debt"].max()),
                "paths_with_bad_debt": int((pp["bad_debt"] > 0).sum()),
                "adl_notional_mean": float(pp["adl_notional"].mean()),
                "adl_closes_mean": float(pp["adl_closes"].mean()),
                "haircut_mean": float(pp["haircut_total"].mean()),
                "winner_loss_mean": float(pp["winner_loss"].mean()),
                "accounts_hit": int((acc["paths_hit"] > 0).sum()),
                "max_account_loss": float(loss.max()) if len(loss) else 0.0,
            }
        return out

    def summary(self, confidence: float = 0.99) -> Any:
        """The totals as a pandas DataFrame, one row per policy (money in quote currency)."""
        import pandas as pd

        df = pd.DataFrame.from_dict(self.totals(confidence), orient="index")
        df.index.name = "policy"
        return df

    def to_json(self, path: Union[str, "os.PathLike[str]"], confidence: float = 0.99) -> None:
        """Write :meth:`totals` as JSON."""
        with open(path, "w") as f:
            json.dump({"money": "quote currency", "confidence": confidence, "policies": self.totals(confidence)}, f, indent=2)

    def to_parquet(self, directory: Union[str, "os.PathLike[str]"]) -> list[str]:
        """Write ``series.parquet`` (one row per policy, path and step; money in quote
        currency, one ``fund_pool_<k>`` column per pool), ``accounts.parquet`` (one row per
        policy and account) and ``summary.parquet``; returns the paths. Needs pyarrow."""
        import pandas as pd

        os.makedirs(directory, exist_ok=True)
        frames, accs = [], []
        for p in self.policies:
            s = self.series[p]
            cols: dict[str, Any] = {"policy": p, "path": np.repeat(np.arange(self.paths), self.steps),
                                    "step": np.tile(np.arange(self.steps), self.paths)}
            for name in SERIES:
                cols[name] = self._money(s[name].ravel()) if name in MONEY_SERIES else s[name].ravel()
            for k in range(s["fund_balance"].shape[2]):
                cols[f"fund_pool_{k}"] = self._money(s["fund_balance"][:, :, k].ravel())
            frames.append(pd.DataFrame(cols))
            a = self.accounts[p]
            accs.append(pd.DataFrame({"policy": p, "account": self.account_ids,
                                      "loss_total": self._money(a["loss_total"]), "loss_max": self._money(a["loss_max"]),
                                      "paths_hit": a["paths_hit"], "paths_liquidated": a["paths_liquidated"],
                                      "final_equity_min": self._money(a["final_equity_min"])}))
        paths = [os.path.join(directory, n) for n in ("series.parquet", "accounts.parquet", "summary.parquet")]
        pd.concat(frames, ignore_index=True).to_parquet(paths[0], index=False)
        pd.concat(accs, ignore_index=True).to_parquet(paths[1], index=False)
        self.summary().reset_index().to_parquet(paths[2], index=False)
        return paths

    def plot(self, kind: str = "all", *, ax: Any = None) -> Any:
        """A matplotlib Figure: ``"fund"`` (mean fund balance over the steps, with the 5-95%
        band across paths), ``"bad_debt"`` (mean cumulative bad debt), ``"adl"`` (mean
        cumulative ADL notional), ``"haircuts"`` (distribution of the largest per-path loss of
        each account that paid), or ``"all"`` (the four in a grid)."""
        import matplotlib.pyplot as plt

        kinds = ("fund", "bad_debt", "adl", "haircuts")
        if kind == "all":
            fig, axes = plt.subplots(2, 2, figsize=(12, 8))
            for k, a in zip(kinds, axes.ravel()):
                self.plot(k, ax=a)
            fig.suptitle(f"stress: {self.paths} paths x {self.steps} steps")
            fig.tight_layout()
            return fig
        if kind not in kinds:
            raise InvalidInput(f"kind must be one of all, {', '.join(kinds)} (got {kind!r})")
        if ax is None:
            fig, ax = plt.subplots(figsize=(7, 4.5))
        else:
            fig = ax.figure
        steps = np.arange(1, self.steps + 1)
        for p in self.policies:
            s = self.series[p]
            if kind == "fund":
                total = self._money(s["fund_balance"].sum(axis=2))
                ax.plot(steps, total.mean(axis=0), label=p)
                if self.paths > 1:
                    ax.fill_between(steps, np.percentile(total, 5, axis=0), np.percentile(total, 95, axis=0), alpha=0.15)
                ax.set_ylabel("insurance fund (quote)")
            elif kind == "bad_debt":
                ax.plot(steps, self._money(np.cumsum(s["bad_debt"], axis=1)).mean(axis=0), label=p)
                ax.set_ylabel("cumulative bad debt, mean over paths (quote)")
            elif kind == "adl":
                ax.plot(steps, self._money(np.cumsum(s["adl_notional"], axis=1)).mean(axis=0), label=p)
                ax.set_ylabel("cumulative ADL notional, mean (quote)")
            else:
                loss = self._money(self.accounts[p]["loss_max"])
                loss = loss[loss > 0]
                if len(loss):
                    bins = np.logspace(np.log10(max(loss.min(), 1e-6)), np.log10(loss.max() * 1.0001), 40)
                    ax.hist(loss, bins=bins, histtype="step", label=f"{p} ({len(loss)} accounts)")
                    ax.set_xscale("log")
                ax.set_xlabel("largest loss of one account in one path (ADL vs mark + haircut, quote)")
                ax.set_ylabel("accounts")
        if kind != "haircuts":
            ax.set_xlabel("step")
        ax.set_title({"fund": "Insurance fund", "bad_debt": "Bad debt", "adl": "ADL notional",
                      "haircuts": "Losses of winners (haircut distribution)"}[kind])
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        return fig

    def __repr__(self) -> str:
        return f"StressResult({len(self.policies)} policies, {self.paths} paths x {self.steps} steps, {self.elapsed:.1f} s)"
