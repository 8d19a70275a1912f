"""Stress scenarios: how marks move, and what book they move under.

A scenario gives, for each of its ``n_paths`` paths, a matrix of mark prices
``(n_steps, markets)`` in quote currency per base unit, starting from the exchange's current
marks. :func:`deleverage.stress` rounds them to each market's tick grid and steps the loss
waterfall through them in the compiled core.

* :class:`Shock` - an instantaneous move per market: one path of one step.
* :class:`GBMPaths` - correlated geometric Brownian motion with jumps, optionally after an
  instantaneous shock. Path ``i`` draws from its own stream
  ``SeedSequence(seed, spawn_key=(i,))``, so a path is the same whichever machine, process or
  batch computes it.
* :class:`HistoricalPaths` - recorded mark prices replayed from a table (pandas, CSV or
  Parquet).

Generated books (``BookSpec``, ``book_preset``, ``BOOK_PRESETS``) are in
:mod:`deleverage.books`; they are re-exported here because this module documented them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np

from .books.presets import BOOK_PRESETS, BookSpec, book_preset  # noqa: F401  (re-exported: documented here before)
from .errors import InvalidInput

MarketMoves = Union[float, Mapping[Union[int, str], float], Sequence[float]]


def _moves_vector(moves: MarketMoves, markets: Sequence[str], field: str) -> np.ndarray:
    """Relative moves per market id (0 where not given) from a scalar, a mapping or a sequence."""
    n = len(markets)
    if isinstance(moves, Mapping):
        out = np.zeros(n)
        for key, value in moves.items():
            if isinstance(key, str):
                if key not in markets:
                    raise InvalidInput(f"{field}: unknown market symbol {key!r}")
                m = list(markets).index(key)
            else:
                m = int(key)
                if not 0 <= m < n:
                    raise InvalidInput(f"{field}: unknown market id {key!r}")
            out[m] = float(value)
    elif np.ndim(moves) == 0:
        out = np.full(n, float(moves))  # type: ignore[arg-type]
    else:
        out = np.asarray(moves, dtype=np.float64)
        if out.shape != (n,):
            raise InvalidInput(f"{field}: expected {n} moves, one per market (got shape {out.shape})")
    bad = ~np.isfinite(out) | (out <= -1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"{field}[{i}]: a relative move must be finite and above -1 (got {out[i]!r})")
    return out


class Scenario:
    """Base class: ``n_paths`` paths of ``n_steps`` mark rows each."""

    n_paths: int
    n_steps: int

    def path_prices(self, path: int, start: np.ndarray, markets: Sequence[str]) -> np.ndarray:
        """Marks of one path, shape ``(n_steps, len(markets))``, quote per base unit.

        ``start`` holds the marks before the path (by market id)."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Shock(Scenario):
    """An instantaneous move of the marks: one path of one step.

    ``moves`` is a relative move (``-0.3`` = 30% down) for every market, a mapping from market
    symbol or id to its move (others unchanged), or a sequence with one move per market id.
    """

    moves: MarketMoves

    @property
    def n_paths(self) -> int:  # type: ignore[override]
        return 1

    @property
    def n_steps(self) -> int:  # type: ignore[override]
        return 1

    def path_prices(self, path: int, start: np.ndarray, markets: Sequence[str]) -> np.ndarray:
        return (start * (1.0 + _moves_vector(self.moves, markets, "moves")))[None, :]


@dataclasses.dataclass(frozen=True)
class GBMPaths(Scenario):
    """Correlated geometric Brownian motion with jumps, per step.

    Log return of market ``j`` over one step:
    ``drift - vol_j**2 / 2 + vol_j * Z_j + sum of N jump sizes``, with ``Z`` standard normal
    with correlation ``correlation`` between markets (a scalar: the same between every pair;
    or a full matrix), ``N ~ Poisson(jump_rate)`` jumps per step (one count for all markets:
    a crash hits the whole market), each jump's size per market drawn from
    ``Normal(jump_mean, jump_std)``. ``vol``, ``drift``, ``jump_rate`` are per step (not
    annualized); ``vol`` may be one value per market.

    ``shock`` (optional) is an instantaneous move (as in :class:`Shock`) applied as step 0;
    the random steps follow it, so a path has ``steps + 1`` rows then.
    """

    paths: int
    steps: int
    vol: Union[float, Sequence[float]] = 0.01
    drift: float = 0.0
    correlation: Union[float, Sequence[Sequence[float]]] = 0.5
    jump_rate: float = 0.0
    jump_mean: float = -0.05
    jump_std: float = 0.02
    seed: int = 0
    shock: Optional[MarketMoves] = None

    def __post_init__(self) -> None:
        for name in ("paths", "steps"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise InvalidInput(f"{name} must be a non-negative integer (got {v!r})")
        if self.paths > 0 and self.steps == 0 and self.shock is None:
            raise InvalidInput("steps must be at least 1 (or give a shock)")
        if not (np.isfinite(self.jump_rate) and self.jump_rate >= 0):
            raise InvalidInput(f"jump_rate must be finite and >= 0 (got {self.jump_rate!r})")
        vol = np.asarray(self.vol, dtype=np.float64)
        if not np.all(np.isfinite(vol)) or np.any(vol < 0):
            raise InvalidInput(f"vol must be finite and >= 0 (got {self.vol!r})")
        if not (np.isfinite(self.jump_std) and self.jump_std >= 0 and np.isfinite(self.jump_mean) and np.isfinite(self.drift)):
            raise InvalidInput("drift, jump_mean and jump_std must be finite (jump_std >= 0)")

    @property
    def n_paths(self) -> int:  # type: ignore[override]
        return int(self.paths)

    @property
    def n_steps(self) -> int:  # type: ignore[override]
        return int(self.steps) + (1 if self.shock is not None else 0)

    def _cholesky(self, n: int) -> np.ndarray:
        if np.ndim(self.correlation) == 0:
            rho = float(self.correlation)  # type: ignore[arg-type]
            if not -1.0 / max(1, n - 1) <= rho <= 1.0 and n > 1:
                raise InvalidInput(f"correlation {rho} is not a valid common correlation for {n} markets")
            c = np.full((n, n), rho)
            np.fill_diagonal(c, 1.0)
        else:
            c = np.asarray(self.correlation, dtype=np.float64)
            if c.shape != (n, n):
                raise InvalidInput(f"correlation: expected a {n}x{n} matrix (got shape {c.shape})")
            if not np.allclose(c, c.T) or not np.allclose(np.diag(c), 1.0):
                raise InvalidInput("correlation: the matrix must be symmetric with ones on the diagonal")
        # a tiny ridge lets a perfect correlation (rho = 1) factor
        w, v = np.linalg.eigh(c)
        if w.min() < -1e-9:
            raise InvalidInput("correlation: the matrix is not positive semi-definite")
        return np.asarray(v * np.sqrt(np.clip(w, 0.0, None)))

    def log_returns(self, path: int, markets: int) -> np.ndarray:
        """The random log returns of one path, shape ``(steps, markets)`` (the shock excluded)."""
        if not 0 <= path < self.paths:
            raise InvalidInput(f"path must be in [0, {self.paths}) (got {path})")
        rng = np.random.default_rng(np.random.SeedSequence(int(self.seed), spawn_key=(int(path),)))
        vol = np.broadcast_to(np.asarray(self.vol, dtype=np.float64), (markets,))
        z = rng.standard_normal((self.steps, markets)) @ self._cholesky(markets).T
        r = (self.drift - 0.5 * vol**2) + vol * z
        if self.jump_rate > 0:
            counts = rng.poisson(self.jump_rate, size=self.steps)
            # sum of k normal jumps: Normal(k * mean, sqrt(k) * std)
            jumps = counts[:, None] * self.jump_mean + np.sqrt(counts)[:, None] * self.jump_std * rng.standard_normal((self.steps, markets))
            r = r + jumps
        return np.asarray(r)

    def path_prices(self, path: int, start: np.ndarray, markets: Sequence[str]) -> np.ndarray:
        n = len(markets)
        base = start.astype(np.float64)
        rows = []
        if self.shock is not None:
            base = base * (1.0 + _moves_vector(self.shock, markets, "shock"))
            rows.append(base[None, :])
        if self.steps:
            rows.append(base * np.exp(np.cumsum(self.log_returns(path, n), axis=0)))
        return np.concatenate(rows, axis=0)


@dataclasses.dataclass(frozen=True)
class HistoricalPaths(Scenario):
    """Recorded marks replayed step by step.

    ``table`` is long format with columns ``step`` (orderable: integers or timestamps),
    ``market`` (symbol) and ``price`` (quote per base unit), and optionally ``path`` (integer:
    several recorded episodes). A market missing at a step keeps its previous mark (its
    starting mark before its first row); markets of the exchange absent from the table stay
    where they are.
    """

    table: Any  # pandas.DataFrame

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"]) -> "HistoricalPaths":
        """Read the table from a ``.csv`` or ``.parquet`` file."""
        import pandas as pd

        p = os.fspath(path)
        if p.endswith(".csv"):
            df = pd.read_csv(p)
        elif p.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        else:
            raise InvalidInput(f"path: expected a .csv or .parquet file (got {p!r})")
        return cls(df)

    def __post_init__(self) -> None:
        import pandas as pd

        df = self.table
        if not isinstance(df, pd.DataFrame):
            raise InvalidInput("table must be a pandas DataFrame (or use HistoricalPaths.from_file)")
        for col in ("step", "market", "price"):
            if col not in df.columns:
                raise InvalidInput(f"table: missing column {col!r} (expected step, market, price[, path])")
        price = pd.to_numeric(df["price"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(price) | (price <= 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInput(f"table.price[{i}]: a price must be a positive number (got {df['price'].iloc[i]!r})")
        if df.duplicated(["path", "step", "market"] if "path" in df.columns else ["step", "market"]).any():
            i = int(np.flatnonzero(df.duplicated(["path", "step", "market"] if "path" in df.columns else ["step", "market"]))[0])
            raise InvalidInput(f"table row {i}: a second price for the same step and market")

    def _paths(self) -> list[Any]:
        df = self.table
        if "path" not in df.columns:
            return [df]
        return [g for _, g in sorted(df.groupby("path"), key=lambda kv: kv[0])]

    @property
    def n_paths(self) -> int:  # type: ignore[override]
        return len(self._paths())

    @property
    def n_steps(self) -> int:  # type: ignore[override]
        return max(int(g["step"].nunique()) for g in self._paths())

    def path_prices(self, path: int, start: np.ndarray, markets: Sequence[str]) -> np.ndarray:
        g = self._paths()[path]
        wide = g.pivot(index="step", columns="market", values="price").sort_index()
        unknown = [m for m in wide.columns if m not in markets]
        if unknown:
            raise InvalidInput(f"table.market: unknown market symbol {unknown[0]!r}")
        out = np.empty((self.n_steps, len(markets)))
        out[:] = start.astype(np.float64)
        for m in wide.columns:
            col = wide[m].ffill().to_numpy(dtype=np.float64)
            col = np.where(np.isnan(col), start[list(markets).index(m)], col)
            out[: len(col), list(markets).index(m)] = col
            out[len(col):, list(markets).index(m)] = col[-1]
        return out
