"""The Exchange: a thin, typed wrapper over the compiled engine.

All keyword handling, unit conversion and dtype checking happens here; the engine sees only
int64 fixed point. Inputs are in human units (quote currency, base units, prices) by
default and are converted with checked rounding; pass ``exact=True`` to give and receive
the integer fixed-point values directly (money in units of ``10**-money_decimals``, sizes
in lots of ``10**-qty_decimals``, every price, in and out, in units of ``10**-mark_decimals``:
the market's mark unit, by default 4 decimals finer than its order tick ``10**-price_decimals``;
trade and entry prices must be whole order ticks).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from . import _convert as cv
from . import _core
from .errors import ArithmeticOverflow, ConfigError, InsufficientMargin, InvalidInput, JournalTruncated, UnknownId
from .executors import Executor
from .insurance import InsuranceFund
from .reports import MarginReport, PositionReport
from .scales import MarketScales
from .waterfall import (
    ADL_REFRESH,
    DEFICIT_SPLITS,
    EVENT_KINDS,
    RANKINGS,
    AdlRank,
    AdlRanking,
    EventTable,
    WaterfallResult,
    WaterfallTotals,
)
from .waterfall_spec import WaterfallSpec, deficit_split_code

MarketRef = Union[int, str]
ArrayLike = npt.ArrayLike

_NO_TIER_AMOUNT = -1
# add_market's default mark_decimals is price_decimals + this: published marks carry more
# digits than the order tick (e.g. 1.3409577 on a 0.0001 tick).
DEFAULT_EXTRA_MARK_DECIMALS = 4
_NO_CAP = np.iinfo(np.int64).max


def _given(values: Any, i: int) -> Any:
    """Row ``i`` of an argument as the caller gave it (a scalar stands for every row)."""
    arr = np.asarray(values)
    return arr.item() if arr.ndim == 0 else arr.reshape(-1)[i if arr.size > 1 else 0]


def _first(mask: np.ndarray) -> Optional[int]:
    """The first row where ``mask`` holds, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _threads(threads: Any) -> int:
    """The ``threads`` setting: 0 (every core) or a positive count."""
    return cv.small_int(threads, "threads", 0, 2**16)

def _with_executor(spec: Any, executor: Optional[Executor], keywords: dict[str, Any]) -> WaterfallSpec:
    """liquidate()'s spec, with the call's executor when the spec has none; InvalidInput when
    the call also sets a waterfall keyword or another executor."""
    if not isinstance(spec, WaterfallSpec):
        raise InvalidInput(f"waterfall must be a WaterfallSpec (got {type(spec).__name__}); or give liquidate's keywords")
    defaults = WaterfallSpec()

    def at_default(v: Any, d: Any) -> bool:  # no == on arrays or other objects
        return v is d or (type(v) is type(d) and isinstance(v, (str, int)) and v == d)

    given = [k for k, v in keywords.items() if not at_default(v, getattr(defaults, k))]
    if given:
        raise InvalidInput(f"{given[0]}: set by the WaterfallSpec; give either a spec or liquidate keywords, not both")
    if executor is None:
        return spec
    if spec.executor is not None and spec.executor != executor:
        raise InvalidInput(f"executor: the spec has executor {spec.executor!r}; the call gives {executor!r}")
    return spec.replace(executor=executor)


class Exchange:
    """Exchange state: markets, accounts with cross-margined positions, marks.

    Parameters
    ----------
    money_decimals:
        Money is held in integer units of ``10**-money_decimals`` quote currency: an int
        from 0 to 12 (a float such as 6.5 is refused, not truncated).
    threads:
        Threads for batch checks, an int from 0 to 65536; 0 uses every core.
    deficit_split:
        Where a bankrupt account's negative equity lands among its positions, for the
        waterfall's bankruptcy values and the bankruptcy prices of :meth:`positions`:
        ``"loss"`` (default) in proportion to each position's loss at the mark (positions in
        profit or flat take none, so a crash in one market does not deleverage the account's
        other markets); ``"maintenance"`` by maintenance share (dYdX v4). A setting of this
        object, not of the saved state (snapshots and replays come back with ``"loss"``).

    Every integer setting (decimals, threads, a drawdown window) must be an int in its range
    and a market symbol valid Unicode, else :class:`~deleverage.errors.ConfigError` naming it.
    """

    def __init__(self, money_decimals: int = 6, *, threads: int = 0, deficit_split: str = "loss") -> None:
        money_decimals = cv.small_int(money_decimals, "money_decimals", 0, 12)
        self._deficit_split = deficit_split_code(deficit_split)
        self._engine = _core.Engine(money_decimals, _threads(threads))
        self._money_decimals = money_decimals
        self._symbols: dict[str, int] = {}
        self._qty_decimals: list[int] = []
        self._tick_decimals: list[int] = []  # the order tick: trade and entry prices
        self._mark_decimals: list[int] = []  # the engine's price unit: the mark's (mark_decimals)
        self.insurance = InsuranceFund(self)
        """The insurance fund: pools, deposits, ledger, history, drawdown rule."""

    def copy(self) -> "Exchange":
        """An independent deep copy: accounts, positions, marks, insurance pools, ledger,
        history and step counter. Changes to either never affect the other."""
        other = Exchange.__new__(Exchange)
        other._engine = self._engine.copy()
        other._money_decimals = self._money_decimals
        other._deficit_split = self._deficit_split
        other._symbols = dict(self._symbols)
        other._qty_decimals = list(self._qty_decimals)
        other._tick_decimals = list(self._tick_decimals)
        other._mark_decimals = list(self._mark_decimals)
        other.insurance = InsuranceFund(other)
        return other

    # ------------------------------------------------------------------ durability
    @classmethod
    def _from_engine(cls, engine: Any) -> "Exchange":
        """Wraps a compiled engine (from a snapshot or a replay): the Python-side market
        tables (symbols, decimals) are rebuilt from the engine's market specs."""
        ex = cls.__new__(cls)
        ex._engine = engine
        ex._money_decimals = int(engine.money_decimals)
        ex._deficit_split = 0
        ex._symbols = {}
        ex._qty_decimals = []
        ex._tick_decimals = []
        ex._mark_decimals = []
        for m in range(int(engine.market_count)):
            info = engine.market_info(m)
            ex._symbols[str(info["symbol"])] = m
            ex._qty_decimals.append(int(info["qty_decimals"]))
            ex._tick_decimals.append(int(info["price_decimals"]))
            ex._mark_decimals.append(int(info["mark_decimals"]))
        ex.insurance = InsuranceFund(ex)
        return ex

    def save(self, path: Union[str, os.PathLike[str]]) -> None:
        """Write a snapshot of the whole state to ``path`` atomically (a temporary file next
        to it, fsync, rename). If anything fails, an existing file at ``path`` is left
        unchanged. Format and guarantees: docs/durability.md."""
        self._engine.save(os.fspath(path))

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str]], *, threads: int = 0) -> "Exchange":
        """Read a snapshot written by :meth:`save`. A truncated, damaged, empty, foreign or
        newer-version file raises :class:`~deleverage.errors.CorruptSnapshot`."""
        return cls._from_engine(_core.Engine.load(os.fspath(path), _threads(threads)))

    def to_bytes(self) -> bytes:
        """The snapshot as bytes (the same bytes :meth:`save` writes)."""
        return bytes(self._engine.snapshot_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, *, threads: int = 0) -> "Exchange":
        """Rebuild an exchange from :meth:`to_bytes` output (CorruptSnapshot if damaged)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"data must be bytes (got {type(data).__name__})")
        return cls._from_engine(_core.Engine.from_snapshot_bytes(bytes(data), _threads(threads)))

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        # pickling goes through the snapshot bytes: exact, versioned and checked on load
        return (_exchange_from_bytes, (self.to_bytes(),))

    def state_hash(self) -> int:
        """A 128-bit hash of the logical state: markets, accounts (id, balance, positions),
        the insurance fund (pools, rule, ledger, history), flows, step and money decimals.
        Independent of the order in which accounts and positions were created; equal after
        save/load and after replay."""
        return int(self._engine.state_hash())

    def open_journal(self, path: Union[str, os.PathLike[str]]) -> None:
        """Create (or replace) a journal at ``path`` and record every state-changing call
        from now on: markets, deposits, withdrawals, positions, trades, marks, margin
        checks, insurance calls and waterfall steps. A call that raises writes nothing.
        Each record reaches the OS in one write; :meth:`close_journal` also fsyncs."""
        self._engine.open_journal(os.fspath(path))

    def close_journal(self) -> None:
        """Flush (fsync) and close the journal; no-op when none is open."""
        self._engine.close_journal()

    @property
    def journal_records(self) -> Optional[int]:
        """Records written to the open journal, or None when no journal is open."""
        n = self._engine.journal_records
        return None if n is None else int(n)

    @classmethod
    def replay(cls, snapshot_path: Union[str, os.PathLike[str]], journal_path: Union[str, os.PathLike[str]], *,
               threads: int = 0) -> "Exchange":
        """Rebuild the state from a snapshot and the journal opened right after it was taken.

        The journal's header holds the state hash it started from; a different snapshot
        raises CorruptSnapshot. A journal cut off mid-record is replayed up to its last
        whole record, with a :class:`~deleverage.errors.JournalTruncated` warning. The result
        has ``replayed_records`` (int) and ``journal_truncated`` (bool) attributes.
        """
        engine, info = _core.Engine.replay(os.fspath(snapshot_path), os.fspath(journal_path), _threads(threads))
        ex = cls._from_engine(engine)
        ex.replayed_records = int(info["records"])
        ex.journal_truncated = bool(info["truncated"])
        if ex.journal_truncated:
            warnings.warn(f"journal {os.fspath(journal_path)!r} ends inside a record: replayed {ex.replayed_records} whole "
                          f"records ({info['valid_bytes']} of {info['total_bytes']} bytes)", JournalTruncated, stacklevel=2)
        return ex

    replayed_records: Optional[int] = None
    """Records applied by :meth:`replay` (None for an exchange not made by replay)."""
    journal_truncated: bool = False
    """Whether :meth:`replay` found the journal cut off mid-record."""

    def export_parquet(self, directory: Union[str, os.PathLike[str]]) -> dict[str, Path]:
        """Write ``accounts.parquet`` (account, balance), ``positions.parquet`` (account,
        market, symbol, size, entry_notional, unrealized_pnl: exact integer units) and
        ``ledger.parquet`` (the insurance fund ledger) into ``directory`` (created if
        needed), for analysis with pandas, Arrow, DuckDB or Spark. Needs pyarrow.
        Returns the paths written, by table name."""
        import pandas as pd  # optional dependencies, only needed here

        try:
            import pyarrow  # noqa: F401
        except ImportError as exc:  # pragma: no cover - pyarrow is in the test extra
            raise ImportError("export_parquet needs pyarrow: pip install pyarrow") from exc
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        accounts = pd.DataFrame({"account": self._engine.account_ids(), "balance": self._engine.account_balances()})
        raw = self._engine.positions(_core.DeficitSplit(self._deficit_split))
        symbols = np.array(self.markets, dtype=object)
        positions = pd.DataFrame({
            "account": raw["account"],
            "market": raw["market"],
            "symbol": symbols[raw["market"]] if len(raw["market"]) else np.array([], dtype=object),
            "size": raw["size"],
            "entry_notional": raw["entry_notional"],
            "unrealized_pnl": raw["unrealized_pnl"],
        })
        ledger = pd.DataFrame(self._engine.insurance_ledger())
        paths = {name: out / f"{name}.parquet" for name in ("accounts", "positions", "ledger")}
        for name, frame in (("accounts", accounts), ("positions", positions), ("ledger", ledger)):
            frame.to_parquet(paths[name], index=False)
        return paths

    # ------------------------------------------------------------------ markets
    @property
    def money_decimals(self) -> int:
        """Decimals of the money unit."""
        return self._money_decimals

    @property
    def markets(self) -> list[str]:
        """Market symbols, indexed by market id."""
        return list(self._symbols)

    @property
    def core(self) -> _core.Engine:
        """The compiled engine this object wraps (a ``deleverage._core.Engine``), read-only.

        Everything on it is in integer units (money in ``10**-money_decimals``, sizes in lots,
        prices in mark units) and unchecked by this layer: it is for the package's own modules
        (the insurance fund view, stress runs) and for advanced use such as timing a compiled
        call without the Python wrapper. Changing the state through it bypasses the checks and
        unit conversions of :class:`Exchange`."""
        return self._engine

    @property
    def deficit_split(self) -> str:
        """This exchange's default ``deficit_split`` (``"loss"`` or ``"maintenance"``): where a
        bankrupt account's negative equity lands among its positions (see :class:`Exchange`)."""
        return DEFICIT_SPLITS[self._deficit_split]

    @property
    def scales(self) -> MarketScales:
        """The fixed-point scales: money decimals, and per market id the decimals of sizes, of
        the order tick and of prices (the mark unit) that ``exact=True`` values are in."""
        return MarketScales(self._money_decimals, tuple(self._qty_decimals), tuple(self._tick_decimals),
                            tuple(self._mark_decimals))

    def add_market(
        self,
        symbol: str,
        *,
        qty_decimals: int,
        price_decimals: int,
        maintenance_margin: float,
        initial_margin: float,
        liquidation_fee: float = 0.0,
        tiers: Optional[Sequence[Sequence[Any]]] = None,
        mark_price: Optional[float] = None,
        own_insurance_pool: bool = False,
        mark_decimals: Optional[int] = None,
    ) -> int:
        """Add a market and return its id (0, 1, 2, ...).

        Rates are fractions (0.005 = 0.5%), stored in units of 1e-8. ``tiers`` is a risk
        limit table: rows ``(max_notional, maintenance_margin, initial_margin)`` with the
        notional cap in quote currency (``None`` for the last row), optionally with a 4th
        element, the published maintenance amount in quote currency, which must match the
        deduction that keeps the requirement continuous. Caps and amounts given as ints,
        ``Decimal``, ``Fraction`` or decimal strings are taken exactly; floats are rounded to
        the nearest money unit. With tiers, the flat rates are
        ignored. ``mark_price`` optionally sets the first mark. ``liquidation_fee`` caps
        what the insurance fund takes from a liquidation's surplus. ``own_insurance_pool``
        gives the market its own insurance pool instead of the shared one.

        ``price_decimals`` sets the order tick (``10**-price_decimals`` quote): trade and entry
        prices must be whole ticks. Marks may be finer: ``mark_decimals`` (an int from
        ``price_decimals`` to 18; default ``price_decimals + 4``, at most 18) is the unit of
        marks and of every price the engine computes or reports (liquidation and bankruptcy
        prices, execution prices), so a published mark such as ``1.3409577`` on a ``0.0001``
        tick is taken exactly. Values are exact at every mark; the cost is range: ``qty_decimals
        + mark_decimals`` may exceed ``money_decimals`` by at most 8 (docs/semantics.md, Units).
        """
        if not isinstance(symbol, str) or not symbol:
            raise ConfigError("symbol must be a non-empty string")
        try:
            symbol.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"symbol must be valid Unicode text (got {symbol!r}, which holds a lone surrogate)") from None
        qty_decimals = cv.small_int(qty_decimals, "qty_decimals", 0, 18)
        price_decimals = cv.small_int(price_decimals, "price_decimals", 0, 18)
        if mark_decimals is None:
            mark_decimals = min(price_decimals + DEFAULT_EXTRA_MARK_DECIMALS, 18)
            room = self._money_decimals + 8 - qty_decimals
            if mark_decimals > room:
                raise ConfigError(
                    f"mark_decimals: the default, price_decimals + {DEFAULT_EXTRA_MARK_DECIMALS} = {mark_decimals}, "
                    f"does not fit: qty_decimals + mark_decimals may exceed money_decimals ({self._money_decimals}) "
                    f"by at most 8; pass mark_decimals= (from {price_decimals} to {room} here) or a larger money_decimals")
        else:
            mark_decimals = cv.small_int(mark_decimals, "mark_decimals", price_decimals, 18)
        mmr = cv.rate_to_fixed(maintenance_margin, "maintenance_margin")
        imr = cv.rate_to_fixed(initial_margin, "initial_margin")
        fee = cv.rate_to_fixed(liquidation_fee, "liquidation_fee")
        tier_rows = []
        for j, row in enumerate(tiers or []):
            if len(row) not in (3, 4):
                raise ConfigError(f"tiers[{j}] must be (max_notional, maintenance_margin, initial_margin[, maintenance_amount])")
            last = j == len(tiers or []) - 1
            cap = row[0]
            if cap is None:
                if not last:
                    raise ConfigError(f"tiers[{j}].max_notional may be None only in the last tier")
                cap_units = _NO_CAP
            else:
                cap_units = cv.money_scalar(cap, self._money_decimals, f"tiers[{j}].max_notional")
            amount = _NO_TIER_AMOUNT
            if len(row) == 4 and row[3] is not None:
                amount = cv.money_scalar(row[3], self._money_decimals, f"tiers[{j}].maintenance_amount")
                if amount < 0:
                    raise ConfigError(f"tiers[{j}].maintenance_amount must not be negative")
            tier_rows.append((cap_units, cv.rate_to_fixed(row[1], f"tiers[{j}].maintenance_margin"),
                              cv.rate_to_fixed(row[2], f"tiers[{j}].initial_margin"), amount))
        mark_ticks = None
        if mark_price is not None:
            mark_ticks = cv.to_fixed(mark_price, int(mark_decimals), "mark_price", exact=False, on_grid=True)
            if mark_ticks[0] <= 0:
                raise InvalidInput(f"mark_price must be positive (got {cv.plain(mark_price)})")
        market_id = int(self._engine.add_market(symbol, int(qty_decimals), int(price_decimals), mmr, imr, fee, tier_rows,
                                                int(mark_decimals)))
        self._symbols[symbol] = market_id
        self._qty_decimals.append(int(qty_decimals))
        self._tick_decimals.append(int(price_decimals))
        self._mark_decimals.append(int(mark_decimals))
        if mark_ticks is not None:
            self._engine.set_marks(np.array([market_id], dtype=np.int32), mark_ticks)
        if own_insurance_pool:
            self._engine.give_market_own_pool(market_id)
        return market_id

    def market_id(self, market: MarketRef) -> int:
        """The id of a market given its id or symbol."""
        return int(self._market_ids(market, "market")[0])

    def market_info(self, market: MarketRef) -> dict[str, Any]:
        """Configuration of a market: decimals (``price_decimals`` the order tick,
        ``mark_decimals`` the price unit), fee rate, mark (price units) and tiers (integer units)."""
        return dict(self._engine.market_info(self.market_id(market)))

    def _market_ids(self, markets: Any, field: str) -> np.ndarray:
        if isinstance(markets, (list, tuple)) and len(markets) == 0:
            return np.empty(0, dtype=np.int32)
        if isinstance(markets, (list, tuple)) and any(isinstance(v, str) for v in markets):
            markets = [self._symbols.get(v, v) if isinstance(v, str) else v for v in markets]
            for i, v in enumerate(markets):
                if isinstance(v, str):
                    raise UnknownId(f"{field}[{i}]: unknown market symbol {v!r}")
        elif isinstance(markets, str):
            if markets not in self._symbols:
                raise UnknownId(f"{field}[0]: unknown market symbol {markets!r}")
            markets = self._symbols[markets]
        arr = cv.as_1d(markets, field)
        if arr.dtype.kind in "UO" and arr.size and all(isinstance(v, str) for v in arr):
            by_symbol = []
            for i, sym in enumerate(arr):
                if str(sym) not in self._symbols:
                    raise UnknownId(f"{field}[{i}]: unknown market symbol {str(sym)!r}")
                by_symbol.append(self._symbols[str(sym)])
            return np.array(by_symbol, dtype=np.int32)
        ids = cv.integers(arr, field, dtype=np.int64)
        bad = (ids < 0) | (ids >= len(self._symbols))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UnknownId(f"{field}[{i}]: unknown market id {ids[i]}")
        return ids.astype(np.int32)

    # ------------------------------------------------------------------ money
    def deposit(self, accounts: ArrayLike, amounts: ArrayLike, *, exact: bool = False) -> None:
        """Credit collateral; creates accounts on first deposit. Amounts >= 0, in quote currency."""
        acc = cv.integers(accounts, "accounts")
        amt = cv.to_fixed(amounts, self._money_decimals, "amounts", exact=exact, on_grid=False)
        acc, amt = self._broadcast(acc=acc, amt=amt, names=("accounts", "amounts"))
        self._refuse_negative(acc, amt, amounts, "a deposit")
        self._engine.deposit(acc, amt)

    def load_balances(self, accounts: ArrayLike, balances: ArrayLike, *, exact: bool = False) -> None:
        """Import balances: set each account's collateral balance (quote currency, signed: a
        negative balance is an account in debt), creating unknown accounts.

        For loading a real book. Each account may appear once per call. The change from the
        previous balance is an external flow (``loaded_balances``) of the conservation invariant, so it
        holds; the journal records the call and snapshots keep the flow. Floats are rounded
        to the nearest money unit (``exact=True``: integer money units).
        """
        acc = cv.integers(accounts, "accounts")
        bal = cv.to_fixed(balances, self._money_decimals, "balances", exact=exact, on_grid=False)
        acc, bal = self._broadcast(acc=acc, amt=bal, names=("accounts", "balances"))
        self._engine.load_balances(acc, bal)

    def withdraw(self, accounts: ArrayLike, amounts: ArrayLike, *, exact: bool = False) -> None:
        """Debit collateral. Raises InsufficientMargin (and changes nothing) if an account
        would be left below its initial margin at the current marks."""
        acc = cv.integers(accounts, "accounts")
        amt = cv.to_fixed(amounts, self._money_decimals, "amounts", exact=exact, on_grid=False)
        acc, amt = self._broadcast(acc=acc, amt=amt, names=("accounts", "amounts"))
        self._refuse_negative(acc, amt, amounts, "a withdrawal")
        try:
            self._engine.withdraw(acc, amt)
        except InsufficientMargin as err:
            raise self._insufficient_margin(err, acc, amt, amounts, exact) from None

    @staticmethod
    def _refuse_negative(acc: np.ndarray, amt: np.ndarray, given: Any, what: str) -> None:
        i = _first(amt < 0)
        if i is not None:
            raise InvalidInput(f"amounts[{i}]: {what} must not be negative (got {cv.plain(_given(given, i))} for "
                               f"account {acc[i]})")

    def _insufficient_margin(self, err: InsufficientMargin, acc: np.ndarray, amt: np.ndarray, given: Any,
                             exact: bool) -> InsufficientMargin:
        """The engine's refusal restated in the caller's units: the amount as given, the
        equity the withdrawal would leave and the initial margin, in quote currency."""
        i = err.index
        if i is None or not 0 <= i < len(acc):
            return err
        a = int(acc[i])
        equity, _, initial, _, _ = self._engine.account_margin(a)  # the call was undone: state as before it
        after = int(equity) - int(amt[: i + 1][acc[: i + 1] == a].sum())  # rows before i for this account count too
        money = (lambda u: str(u)) if exact else (lambda u: cv.plain(u / 10**self._money_decimals))
        return InsufficientMargin(f"amounts[{i}]: withdrawing {cv.plain(_given(given, i))} from account {a} would leave "
                                  f"equity {money(after)} below its initial margin {money(int(initial))}")

    @staticmethod
    def _broadcast(*, acc: np.ndarray, amt: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
        if len(acc) == 1 and len(amt) != 1:
            acc = np.full(len(amt), acc[0], dtype=np.int64)
        if len(amt) == 1 and len(acc) != 1:
            amt = np.full(len(acc), amt[0], dtype=np.int64)
        cv.check_lengths(**{names[0]: acc, names[1]: amt})
        return acc, amt

    def balance(self, account: int, *, exact: bool = False) -> Union[float, int]:
        """Cash balance of one account (realized PnL included, unrealized excluded)."""
        units = int(self._engine.balance(int(cv.integers(account, "account")[0])))
        return units if exact else units / 10**self._money_decimals

    # ------------------------------------------------------------------ positions
    def load_positions(
        self,
        accounts: ArrayLike,
        markets: ArrayLike,
        sizes: ArrayLike,
        entry_prices: ArrayLike,
        *,
        counterparty: Optional[int] = None,
        exact: bool = False,
    ) -> None:
        """Bulk-load new positions (signed sizes in base units, entry prices in quote).

        The book must net to zero size per market, unless ``counterparty`` names the
        account that takes the opposite of the imbalance at the same entry notional.
        """
        acc = cv.integers(accounts, "accounts")
        mk = self._market_ids(markets, "markets")
        n = cv.check_lengths(accounts=acc, markets=mk, sizes=cv.as_1d(sizes, "sizes"), entry_prices=cv.as_1d(entry_prices, "entry_prices"))
        qd = np.asarray(self._qty_decimals, dtype=np.int64)[mk] if n else 0
        where = self._row_label(mk, accounts=acc)
        q = cv.to_fixed(sizes, qd, "sizes", exact=exact, on_grid=True, where=where)
        p = self._order_prices(entry_prices, mk, "entry_prices", exact, where)
        i = _first(q == 0)
        if i is not None:
            raise InvalidInput(f"sizes[{i}] ({where(i)}): a position must not have zero size")
        self._refuse_non_positive(p, entry_prices, "entry_prices", "an entry price", where)
        cp = None if counterparty is None else int(cv.integers(counterparty, "counterparty")[0])
        try:
            self._engine.load_positions(acc, mk, q, p, cp)
        except InvalidInput as err:
            if not str(err).startswith("the book is not balanced"):
                raise
            raise self._unbalanced(mk, q, exact) from None

    def _order_prices(self, prices: ArrayLike, mk: np.ndarray, field: str, exact: bool, where: Any) -> np.ndarray:
        """Trade or entry prices in the engine's price unit (the mark's). In human units they
        must be whole order ticks; exact ones already are price units (the engine refuses a
        price that is not a whole tick)."""
        if exact:
            return cv.integers(prices, field)
        tick_dec = np.asarray(self._tick_decimals, dtype=np.int64)[mk]
        ticks = cv.to_fixed(prices, tick_dec, field, exact=False, on_grid=True, where=where)
        finer = np.asarray(self._mark_decimals, dtype=np.int64)[mk] - tick_dec
        if not finer.any():
            return ticks
        factor = np.power(10, finer).astype(np.int64)
        limit = np.iinfo(np.int64).max // factor
        too_big = (ticks > limit) | (ticks < -limit)
        i = _first(too_big)
        if i is not None:
            raise ArithmeticOverflow(f"{field}[{i}] ({where(i)}): {cv.plain(_given(prices, i))} does not fit the "
                                     f"fixed-point range at {self._mark_decimals[int(mk[i])]} decimals")
        return ticks * factor

    def _row_label(self, mk: np.ndarray, **ids: np.ndarray) -> Any:
        """``where(i)`` for messages: row i's accounts (by role) and market symbol."""
        symbols = self.markets

        def where(i: int) -> str:
            parts = [f"{role[:-1] if role.endswith('s') else role} {int(v[i])}" for role, v in ids.items()]
            return ", ".join(parts + [f"market {symbols[int(mk[i])]!r}"])

        return where

    @staticmethod
    def _refuse_non_positive(ticks: np.ndarray, given: Any, field: str, what: str, where: Any) -> None:
        i = _first(ticks <= 0)
        if i is not None:
            raise InvalidInput(f"{field}[{i}] ({where(i)}): {what} must be positive (got {cv.plain(_given(given, i))})")

    def _unbalanced(self, mk: np.ndarray, q: np.ndarray, exact: bool) -> InvalidInput:
        """The engine's unbalanced-book refusal with the net size in base units (lots when exact)."""
        net = np.zeros(len(self._symbols), dtype=object)
        for m, lots in zip(mk.tolist(), q.tolist()):
            net[m] += lots
        m = next(k for k in range(len(net)) if net[k] != 0)
        amount = str(net[m]) + " lots" if exact else cv.plain(net[m] / 10 ** self._qty_decimals[m])
        return InvalidInput(f"the book is not balanced: the positions in market {self.markets[m]!r} net to {amount}, not 0; "
                            f"pass counterparty= to name the account that takes the other side")

    def trade(self, buyer: int, seller: int, market: MarketRef, size: float, price: float, *, exact: bool = False) -> None:
        """One fill: ``buyer`` buys ``size`` (> 0, base units) from ``seller`` at ``price``.

        Updates sizes, entry notionals and realized PnL exactly; not margin-checked.
        """
        self.trades([buyer], [seller], [market], [size], [price], exact=exact)

    def trades(
        self,
        buyers: ArrayLike,
        sellers: ArrayLike,
        markets: ArrayLike,
        sizes: ArrayLike,
        prices: ArrayLike,
        *,
        exact: bool = False,
    ) -> None:
        """A batch of fills, applied in order and atomically (all or none)."""
        b = cv.integers(buyers, "buyers")
        s = cv.integers(sellers, "sellers")
        mk = self._market_ids(markets, "markets")
        cv.check_lengths(buyers=b, sellers=s, markets=mk, sizes=cv.as_1d(sizes, "sizes"), prices=cv.as_1d(prices, "prices"))
        qd = np.asarray(self._qty_decimals, dtype=np.int64)[mk]
        where = self._row_label(mk, buyers=b, sellers=s)
        q = cv.to_fixed(sizes, qd, "sizes", exact=exact, on_grid=True, where=where)
        p = self._order_prices(prices, mk, "prices", exact, where)
        self._refuse_non_positive(q, sizes, "sizes", "a trade size", where)
        self._refuse_non_positive(p, prices, "prices", "a price", where)
        self._engine.trades(b, s, mk, q, p)

    # ------------------------------------------------------------------ marks and margin
    def set_marks(self, markets: ArrayLike, prices: ArrayLike, *, exact: bool = False) -> None:
        """Set mark prices (quote per base unit, > 0). Revaluation happens in check_margin."""
        mk = self._market_ids(markets, "markets")
        cv.check_lengths(markets=mk, prices=cv.as_1d(prices, "prices"))
        where = self._row_label(mk)
        p = cv.to_fixed(prices, np.asarray(self._mark_decimals, dtype=np.int64)[mk], "prices", exact=exact, on_grid=True,
                        where=where)
        self._refuse_non_positive(p, prices, "prices", "a mark price", where)
        seen: dict[int, int] = {}
        for i, m in enumerate(mk.tolist()):
            if seen.setdefault(m, i) != i:
                raise InvalidInput(f"markets[{i}]: market {self.markets[m]!r} appears twice (rows {seen[m]} and {i})")
        self._engine.set_marks(mk, p)

    def marks(self, *, exact: bool = False) -> np.ndarray:
        """Current marks by market id (NaN / 0 where none was set)."""
        ticks = np.array([self._engine.mark(m) for m in range(len(self._symbols))], dtype=np.int64)
        if exact:
            return ticks
        out = cv.from_fixed(ticks, np.asarray(self._mark_decimals, dtype=np.int64))
        out[ticks == 0] = np.nan
        return out

    def check_margin(self, markets: Optional[ArrayLike] = None, *, exact: bool = False,
                     out: Optional[MarginReport] = None) -> MarginReport:
        """Batch margin check at the current marks.

        With ``markets=None`` every account is revalued (on all cores, GIL released). With
        a list of markets whose marks moved, only positions in those markets (and in any
        other market whose mark changed since it was last valued) are revalued, and the
        report holds just the accounts exposed to them, in account creation order.

        ``out``: a report of an earlier full check of this exchange (same ``exact``, as many
        accounts) whose arrays are overwritten and returned, instead of new ones: a loop of
        checks (a stress path) then allocates nothing per call. Arrays taken from it before
        the call change with it.
        """
        if out is not None:
            return self._check_margin_into(out, markets, exact)
        if markets is None and not exact:  # the float report, converted in the same pass
            raw = self._engine.check_margin_quote()
            report = MarginReport(raw["account"], raw["equity"], raw["maintenance"], raw["initial"], raw["liquidatable"],
                                  raw["bankrupt"], False)
            object.__setattr__(report, "_ratio", raw["margin_ratio"])
            return report
        raw = self._engine.check_margin(None if markets is None else self._market_ids(markets, "markets"))
        return self._margin_report(raw, exact)

    def _check_margin_into(self, out: MarginReport, markets: Optional[ArrayLike], exact: bool) -> MarginReport:
        if not isinstance(out, MarginReport):
            raise InvalidInput(f"out: expected a MarginReport from an earlier check_margin(), got {type(out).__name__}")
        if markets is not None:
            raise InvalidInput("out: only a full check (markets=None) writes into an earlier report")
        if bool(out.exact) != bool(exact):
            raise InvalidInput(f"out: the report has exact={out.exact}, the call asks for exact={exact}")
        n = self.account_count
        if len(out.account) != n:
            raise InvalidInput(f"out: the report has {len(out.account)} accounts, the exchange has {n}")
        if exact:
            self._engine.check_margin_into(out.equity, out.maintenance, out.initial, out.liquidatable, out.bankrupt)
            out.__dict__.pop("_ratio", None)  # read again from the new exact values
        else:
            ratio = out.__dict__.get("_ratio")
            if ratio is None:
                ratio = np.empty(n, dtype=np.float64)
                object.__setattr__(out, "_ratio", ratio)
            self._engine.check_margin_into(out.equity, out.maintenance, out.initial, out.liquidatable, out.bankrupt, ratio)
        return out

    def _margin_report(self, raw: dict[str, np.ndarray], exact: bool) -> MarginReport:
        if exact:
            return MarginReport(raw["account"], raw["equity"], raw["maintenance"], raw["initial"], raw["liquidatable"],
                                raw["bankrupt"], True, raw["equity"], raw["maintenance"])
        equity, maintenance, initial, ratio = _core.margin_floats(raw["equity"], raw["maintenance"], raw["initial"],
                                                                  self._money_decimals)
        report = MarginReport(raw["account"], equity, maintenance, initial, raw["liquidatable"], raw["bankrupt"], False)
        object.__setattr__(report, "_ratio", ratio)  # computed in the same pass from the exact values
        return report

    def account_margin(self, account: int, *, exact: bool = False) -> dict[str, Any]:
        """One account's equity, maintenance, initial, liquidatable and bankrupt, now."""
        e, mm, im, liq, bk = self._engine.account_margin(int(cv.integers(account, "account")[0]))
        scale = 1 if exact else 10**self._money_decimals
        conv = (lambda v: v) if exact else (lambda v: v / scale)
        return {"equity": conv(e), "maintenance": conv(mm), "initial": conv(im), "liquidatable": bool(liq), "bankrupt": bool(bk)}

    def positions(self, *, exact: bool = False) -> PositionReport:
        """Every open position with its unrealized PnL, liquidation and bankruptcy prices
        (a bankrupt account's negative equity split by the exchange's ``deficit_split``)."""
        raw = self._engine.positions(_core.DeficitSplit(self._deficit_split))
        mk = raw["market"]
        qd = np.asarray(self._qty_decimals, dtype=np.int64)[mk]
        pd_ = np.asarray(self._mark_decimals, dtype=np.int64)[mk]
        size, entry = raw["size"], raw["entry_notional"]
        # money per (lot * tick) is 10**(money - qty - price): entry price in ticks
        ticks_per_unit = np.power(10.0, (qd + pd_ - self._money_decimals).astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            entry_ticks = entry.astype(np.float64) * ticks_per_unit / size.astype(np.float64)
        if exact:
            return PositionReport(raw["account"], mk, size, entry, entry_ticks, raw["unrealized_pnl"],
                                  raw["liquidation_price"], raw["bankruptcy_price"], True)
        d = self._money_decimals

        def price(ticks: np.ndarray) -> np.ndarray:
            out = cv.from_fixed(ticks, pd_)
            out[ticks == 0] = np.nan
            return out

        return PositionReport(raw["account"], mk, cv.from_fixed(size, qd), cv.from_fixed(entry, d),
                              entry_ticks / np.power(10.0, pd_.astype(np.float64)), cv.from_fixed(raw["unrealized_pnl"], d),
                              price(raw["liquidation_price"]), price(raw["bankruptcy_price"]), False)

    # ------------------------------------------------------------------ the waterfall
    def liquidate(
        self,
        waterfall: Optional[WaterfallSpec] = None,
        *,
        executor: Optional[Executor] = None,
        mode: str = "close",
        policy: str = "queue",
        ranking: str = "bitmex",
        adl_price: str = "bankruptcy",
        theta: Union[str, float] = "deficit",
        cap: Optional[float] = None,
        lot: Optional[float] = None,
        g: str = "linear",
        seed: int = 0,
        exact: bool = False,
        accounts: Optional[ArrayLike] = None,
        deficit_split: Optional[str] = None,
    ) -> WaterfallResult:
        """Run one waterfall step over every liquidatable account, worst margin ratio first
        (or, with ``accounts``, over those accounts only, in the order given).

        Each account's positions are closed through ``executor``. A fill at or better than
        the bankruptcy price leaves a surplus: the insurance fund takes it up to the
        liquidation fee, the rest stays with the account. A worse fill leaves a deficit: the
        fund pays it while it can (and its drawdown rule allows). What remains goes to the
        last resort:

        * ``mode="close"``: the part of the position the fund cannot cover is closed against
          opposite-side positions at the bankruptcy price (``adl_price`` may be ``"mark"`` or
          ``"previous_mark"``; the gap to the bankruptcy value then goes to the fund, then to
          haircuts). The policy splits the lots to close over the opposite-side positions
          (capacity = position size in lots).
        * ``mode="haircut"``: the executor fills anyway and the remaining deficit is taken
          from winners' positive unrealized PnL in the same market (capacity = that profit,
          never more than the account's equity).

        Policies (formulas in :func:`deleverage.allocate` and docs/waterfall.md):
        ``"queue"`` walks the ADL queue ordered by ``ranking`` (``"bitmex"``, ``"binance"``,
        ``"hyperliquid"``); ``"pro_rata"`` in proportion to capacity; ``"capped_pro_rata"``
        the same with nobody losing more than ``cap`` (a fraction) of its capacity;
        ``"risk_aware"`` in proportion to capacity x leverage x ``g(leverage)`` (leverage = the
        position's notional over its account's equity at the start of the step; ``g`` is
        ``"linear"``, ``"power:k"`` or ``"excess:l0"``), capped by ``cap``;
        ``"min_max_lots"`` in whole lots of ``lot`` minimising the largest fraction taken
        (``lot``: an integer number of the market's lots in close mode, quote currency in
        haircut mode; the winner with the largest fraction gives back the part of its last
        lot beyond what is needed); ``"random_walk"`` (dYdX v4) walks winners in account
        creation order from a start drawn from ``seed``, the step and the market;
        ``"funding_index"`` (haircut mode only) spreads the deficit over all open interest,
        longs and shorts, in proportion to size (Drift, Mango). ``"none"`` has no last resort
        (the counterfactual): in either mode the executor closes every position and what the
        fund cannot pay is recorded as bad debt (the account keeps it).

        ``theta`` is the severity: ``"deficit"`` (deficit matching, the default) sends to the
        last resort only what the insurance fund cannot pay; a number in [0, 1] sends at least
        that share of every bankrupt position's deficit to the last resort even when the fund
        could pay it (1 = the fund is never used for it). ``result.totals.last_resort_needed``
        is what deficit matching would have needed, for measuring the overshoot.

        ``deficit_split`` (default: the exchange's, see :class:`Exchange`) says where a
        bankrupt account's negative equity lands among its positions: ``"loss"`` in
        proportion to their losses at the mark, ``"maintenance"`` by maintenance share.

        Winners are never accounts being liquidated in the same round, nor liquidatable
        accounts, nor the executor's account; flat accounts never pay. Winners pushed below
        maintenance are liquidated in the same call (cascade). The call is atomic.

        ``accounts`` (account ids): the per-account call an online risk service makes as marks
        tick. Only these accounts are liquidated, in the order given; an account that is flat,
        the executor's, or not liquidatable when its turn comes is skipped and listed in
        ``result.skipped``. With the ``"queue"`` policy the call costs the accounts' positions
        plus their ADL fills (the ADL queue is kept between calls, see
        :meth:`set_adl_refresh`), not a pass over the book. The batch step is the same routine
        over every liquidatable account, worst first. See docs/waterfall.md for the exact
        procedure.

        ``waterfall``: the same configuration as one :class:`~deleverage.WaterfallSpec`
        (``ex.liquidate(spec)``, or ``ex.liquidate(spec, executor=...)`` for a spec without
        an executor), checked once and reusable; the keywords that configure the waterfall
        must then be left at their defaults (only ``exact`` and ``accounts`` go with it).
        """
        keywords: dict[str, Any] = dict(mode=mode, policy=policy, ranking=ranking, adl_price=adl_price, theta=theta, cap=cap, lot=lot, g=g,
                        seed=seed, deficit_split=deficit_split)
        if waterfall is None:
            spec = WaterfallSpec(executor=executor, **keywords)
        else:
            spec = _with_executor(waterfall, executor, keywords)
        config = spec.engine_config(self, exact=exact)
        ids = None if accounts is None else np.ascontiguousarray(cv.integers(accounts, "accounts"), dtype=np.int64).reshape(-1)
        raw, totals, skipped = self._engine.liquidate(config, accounts=ids)
        return self._waterfall_result(raw, totals, exact, skipped)

    def set_adl_refresh(self, policy: str = "exact", *, every: int = 1) -> None:
        """When the kept ADL queues are refreshed (docs/waterfall.md "The kept ADL queue").

        ``"exact"`` (the default): a queue is re-scored in full whenever any mark changed
        since its last refresh, so it always orders the winners by their current scores.
        ``"interval"``: a market's queues are re-scored only once that market's mark changed
        ``every`` times since the last refresh, the way exchanges publish a periodic ranking;
        in between, a position keeps the score of the last refresh. Either way an account
        whose balance or positions changed (a fill, a trade, a deposit) is re-scored before
        the queue is next used.
        """
        if policy not in ADL_REFRESH:
            raise InvalidInput(f"policy must be one of {', '.join(ADL_REFRESH)} (got {policy!r})")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)):
            raise InvalidInput(f"every must be an integer number of mark updates (got {every!r})")
        self._engine.set_adl_refresh(_core.AdlRefresh.__members__[policy], int(every))

    @property
    def adl_refresh(self) -> tuple[str, int]:
        """The refresh policy of the kept ADL queues and its interval (mark updates)."""
        policy, every = self._engine.adl_refresh()
        return policy.name, int(every)

    def adl_rank(self, account: int, market: MarketRef, *, ranking: str = "bitmex") -> AdlRank:
        """One account's place in its side's ADL queue in ``market`` (see :meth:`adl_ranking`),
        read from the kept queue without a pass over the book."""
        if ranking not in RANKINGS:
            raise InvalidInput(f"ranking must be one of {', '.join(RANKINGS)} (got {ranking!r})")
        m = self.market_id(market)
        side, score, rank, count, light = self._engine.adl_rank(int(account), m, _core.Ranking.__members__[ranking])
        return AdlRank(int(account), int(side), score / 1e9, int(score), int(rank), int(count), int(light))

    def _waterfall_result(self, raw: dict[str, np.ndarray], totals: dict[str, int], exact: bool,
                          skipped: Optional[npt.NDArray[np.int64]] = None) -> WaterfallResult:
        kind = np.array(EVENT_KINDS, dtype=object)[raw["kind"]] if len(raw["kind"]) else np.array([], dtype=object)
        mk = raw["market"]
        size, amount, price = raw["size"], raw["amount"], raw["price"]
        if not exact:
            has_market = mk >= 0
            safe_mk = np.where(has_market, mk, 0)
            qd = np.asarray(self._qty_decimals or [0], dtype=np.int64)[safe_mk]
            pd_ = np.asarray(self._mark_decimals or [0], dtype=np.int64)[safe_mk]
            size = cv.from_fixed(size, qd)
            price = cv.from_fixed(price, pd_)
            price[raw["price"] == 0] = np.nan
            amount = cv.from_fixed(amount, self._money_decimals)
        exec_price = raw["exec_price"]
        if not exact:
            exec_price = cv.from_fixed(exec_price, pd_)
            exec_price[raw["exec_price"] == 0] = np.nan
        events = EventTable(raw["step"], kind, raw["account"], mk, raw["counterparty"], size, amount, price, raw["pool"],
                            exec_price, exact)
        scale = 1 if exact else 10**self._money_decimals
        money = ("deficit", "fund_used", "fund_fees", "adl_notional", "haircut_total", "bad_debt", "last_resort_needed",
                 "last_resort_planned")
        values: dict[str, Any] = {k: (v if exact or k not in money else v / scale) for k, v in totals.items()}
        return WaterfallResult(events, WaterfallTotals(**values, exact=exact),
                               np.zeros(0, dtype=np.int64) if skipped is None else skipped)

    def adl_ranking(self, market: MarketRef, *, ranking: str = "bitmex", exact: bool = False,
                    deficit_split: Optional[str] = None) -> AdlRanking:
        """The ADL indicator of a market at the current marks: every position's score, its
        rank within its side, the 1-5 light, and its expected loss (quote currency) if the
        largest current deficit were deleveraged now. That deficit is a bankrupt position's
        gap between mark and bankruptcy value, its account's negative equity placed by
        ``deficit_split`` as the waterfall places it (default: the exchange's)."""
        if ranking not in RANKINGS:
            raise InvalidInput(f"ranking must be one of {', '.join(RANKINGS)} (got {ranking!r})")
        split = self._deficit_split if deficit_split is None else deficit_split_code(deficit_split)
        m = self.market_id(market)
        raw = self._engine.adl_ranking(m, _core.Ranking.__members__[ranking], _core.DeficitSplit(split))
        size, loss = raw["size"], raw["expected_loss"]
        score = raw["score"] if exact else raw["score"] / 1e9
        if not exact:
            size = cv.from_fixed(size, self._qty_decimals[m])
            loss = cv.from_fixed(loss, self._money_decimals)
        return AdlRanking(raw["account"], raw["side"], size, score, raw["rank"], raw["light"], loss, exact)

    @property
    def step(self) -> int:
        """Number of waterfall steps run so far."""
        return int(self._engine.step)

    # ------------------------------------------------------------------ inspection
    @property
    def account_count(self) -> int:
        """Number of accounts."""
        return int(self._engine.account_count)

    @property
    def position_count(self) -> int:
        """Number of open positions."""
        return int(self._engine.position_count)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the engine state (columns, index and per-market lists)."""
        return int(self._engine.memory_bytes)

    def account_ids(self) -> np.ndarray:
        """Account ids in creation order (int64)."""
        return self._engine.account_ids()

    def net_size(self, market: MarketRef, *, exact: bool = False) -> Union[int, float]:
        """Sum of signed sizes in a market (0 in a balanced book)."""
        m = self.market_id(market)
        lots = int(self._engine.net_size(m))
        return lots if exact else lots / 10 ** self._qty_decimals[m]

    def check_invariants(self) -> None:
        """Raise InvariantViolation unless conservation, zero net size and internal
        consistency hold (exact integer comparison)."""
        self._engine.check_invariants()

    def __repr__(self) -> str:
        return f"Exchange({len(self._symbols)} markets, {self.account_count} accounts, {self.position_count} positions)"


def _exchange_from_bytes(data: bytes) -> Exchange:
    """Unpickling helper (module level so pickle can find it)."""
    return Exchange.from_bytes(data)
