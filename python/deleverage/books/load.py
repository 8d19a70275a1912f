"""Loading a real book from pandas, CSV or Parquet.

Book columns (one row per position; names are exact, extra columns are ignored):

===============  ==========================================================================
``account``      integer account id (>= 0)
``market``       market symbol (string)
``size``         signed position size in base units (long > 0, short < 0, never 0)
``entry_price``  average entry price, quote currency per base unit (> 0)
``collateral``   the account's collateral balance in quote currency, signed (a real book
                 has accounts in debt); the same value on every row of one account.
                 Loaded with :meth:`Exchange.load_balances`, so conservation counts it
===============  ==========================================================================

Markets are described by an optional market table (``markets=``: a DataFrame, a CSV or
Parquet path, or a list of dicts) with columns ``symbol`` and optionally ``qty_decimals``,
``price_decimals`` (the order tick), ``mark_decimals`` (marks, finer than the tick),
``maintenance_margin``, ``initial_margin``, ``liquidation_fee``, ``mark_price``. Anything not
given is defaulted: decimals are the fewest (at least 3 for sizes, 2 for prices, at most 8)
that hold every size / entry price of the market exactly, marks have 4 decimals more than the
tick (:meth:`Exchange.add_market`), rates are 0.5% maintenance, twice the maintenance rate
initial, 0.5% liquidation fee, and the mark is the size-weighted average entry price on the
tick grid. Without a table every symbol of
the book gets those defaults.

A book whose sizes do not net to zero in a market is completed by ``counterparty`` (an
account holding the opposite of the imbalance); the counterparty, if absent from the book,
is created with ``counterparty_collateral``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from .._convert import plain
from ..errors import ConfigError, DeleverageError, InvalidInput

if TYPE_CHECKING:
    from ..exchange import Exchange

BOOK_COLUMNS = ("account", "market", "size", "entry_price", "collateral")
MARKET_COLUMNS = ("symbol", "qty_decimals", "price_decimals", "mark_decimals", "maintenance_margin", "initial_margin",
                  "liquidation_fee", "mark_price")
DEFAULT_RATES = {"maintenance_margin": 0.005, "initial_margin": 0.01, "liquidation_fee": 0.005}

Source = Union[Any, str, "os.PathLike[str]"]


def _read_table(source: Source, what: str) -> Any:
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, (list, tuple)):
        return pd.DataFrame(list(source))
    if isinstance(source, (str, os.PathLike)):
        p = os.fspath(source)
        if not os.path.exists(p):
            raise InvalidInput(f"{what}: no such file {p!r}")
        try:
            if p.endswith(".csv"):
                return pd.read_csv(p)
            if p.endswith((".parquet", ".pq")):
                return pd.read_parquet(p)
        except (ValueError, OSError) as err:  # pandas' parse errors are ValueErrors
            raise InvalidInput(f"{what}: cannot read {p!r}: {err}") from err
        raise InvalidInput(f"{what}: expected a .csv or .parquet file (got {p!r})")
    raise InvalidInput(f"{what}: expected a pandas DataFrame or a .csv / .parquet path (got {type(source).__name__})")


class _Rows:
    """Names a book row as the user sees it: a line of their CSV file (the header is line 1),
    a row of their Parquet file or the index label of their DataFrame; ``at("size", i)``
    reads ``book.size at line 68 of book.csv``."""

    def __init__(self, source: Source, df: Any) -> None:
        self._index = df.index
        self._file = os.path.basename(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else None
        self._csv = self._file is not None and self._file.endswith(".csv")

    def __call__(self, i: int) -> str:
        if self._csv:
            return f"line {i + 2} of {self._file}"
        if self._file is not None:
            return f"row {i} of {self._file}"
        return f"row {plain(self._index[i])}"

    def at(self, col: str, i: int) -> str:
        return f"book.{col} at {self(i)}"


def _numeric(df: Any, col: str, rows: _Rows) -> np.ndarray:
    import pandas as pd

    raw = df[col]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"{rows.at(col, i)}: expected a finite number (got {plain(raw.iloc[i])})")
    return values


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals (0-8) that hold every value exactly (to 1e-9 relative)."""
    for d in range(9):
        scaled = values * 10.0**d
        if np.all(np.abs(scaled - np.rint(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return d
    return 8


def load_book(
    source: Source,
    *,
    markets: Optional[Source] = None,
    money_decimals: int = 6,
    counterparty: Optional[int] = None,
    counterparty_collateral: float = 1e12,
    fund: float = 0.0,
    threads: int = 0,
) -> "Exchange":
    """An :class:`~deleverage.Exchange` holding the book in ``source`` (a DataFrame, or a
    ``.csv`` / ``.parquet`` path) with the module's column schema; ``fund`` is deposited in
    the shared insurance pool. Raises ``InvalidInput`` naming the column and row of the first
    bad value, ``ConfigError`` for a bad market table; nothing is returned half-loaded."""
    from ..exchange import Exchange

    df = _read_table(source, "book")
    missing = [c for c in BOOK_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidInput(f"book: missing column {missing[0]!r} (a book needs columns {', '.join(BOOK_COLUMNS)})")
    if len(df) == 0:
        raise InvalidInput("book: no rows")
    rows = _Rows(source, df)
    acc_f = _numeric(df, "account", rows)
    bad = (acc_f != np.rint(acc_f)) | (acc_f < 0) | (acc_f >= 2.0**63)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"{rows.at('account', i)}: expected a non-negative integer id (got {plain(df['account'].iloc[i])})")
    accounts = acc_f.astype(np.int64)
    # symbols once per distinct value (pandas hashes the column in compiled code): row codes
    # into `names`, in order of first appearance
    codes, names = _factorize_symbols(df["market"], rows)

    def about(i: int) -> str:  # the account and market of row i
        return f"account {accounts[i]}, market {names[codes[i]]!r}"

    sizes = _numeric(df, "size", rows)
    if (sizes == 0).any():
        i = int(np.flatnonzero(sizes == 0)[0])
        raise InvalidInput(f"{rows.at('size', i)} ({about(i)}): a position size must not be zero")
    prices = _numeric(df, "entry_price", rows)
    if (prices <= 0).any():
        i = int(np.flatnonzero(prices <= 0)[0])
        raise InvalidInput(f"{rows.at('entry_price', i)} ({about(i)}): an entry price must be positive (got {plain(float(prices[i]))})")
    collateral = _numeric(df, "collateral", rows)  # signed: accounts in debt are loaded as they are
    # one position per (account, market): rows sorted by account, then symbol (as strings)
    symbol_rank = np.empty(len(names), dtype=np.int64)
    symbol_rank[np.argsort(np.array(names, dtype=object), kind="stable")] = np.arange(len(names))
    if len(names) <= 1 or int(accounts.max()) < np.iinfo(np.int64).max // len(names):
        order = np.argsort(accounts * len(names) + symbol_rank[codes], kind="stable")  # one sort of one key
    else:
        order = np.lexsort((symbol_rank[codes], accounts))
    sorted_accounts, sorted_codes = accounts[order], codes[order]
    same = (sorted_accounts[1:] == sorted_accounts[:-1]) & (sorted_codes[1:] == sorted_codes[:-1])
    if same.any():
        j = int(np.flatnonzero(same)[0])
        a, b = sorted((int(order[j]), int(order[j + 1])))
        raise InvalidInput(f"book: account {accounts[a]} holds market {names[codes[a]]!r} twice, at {rows(a)} and {rows(b)}")
    # one collateral per account: each row against its account's first row in the book
    starts = np.flatnonzero(np.r_[True, sorted_accounts[1:] != sorted_accounts[:-1]])
    first_of_account = np.minimum.reduceat(order, starts)
    first_row_sorted = np.repeat(first_of_account, np.diff(np.r_[starts, len(order)]))
    differs = collateral[order] != collateral[first_row_sorted]
    if differs.any():
        k = int(np.argmin(np.where(differs, order, len(order))))  # the first such row of the book
        i, j = int(order[k]), int(first_row_sorted[k])
        raise InvalidInput(f"{rows.at('collateral', i)}: account {accounts[i]} has collateral {plain(float(collateral[i]))} here and "
                           f"{plain(float(collateral[j]))} at {rows(j)}")
    first_rows = np.sort(first_of_account)  # each account's first row, in order of appearance

    spec = _market_table(markets, codes, names, sizes, prices, rows)
    ex = Exchange(money_decimals, threads=threads)
    for row in spec:
        mark_decimals = int(row["mark_decimals"]) if "mark_decimals" in row else None  # None: the tick + 4
        ex.add_market(row["symbol"], qty_decimals=int(row["qty_decimals"]), price_decimals=int(row["price_decimals"]),
                      maintenance_margin=float(row["maintenance_margin"]), initial_margin=float(row["initial_margin"]),
                      liquidation_fee=float(row["liquidation_fee"]), mark_price=float(row["mark_price"]),
                      mark_decimals=mark_decimals)
    ids = accounts[first_rows]
    amounts = collateral[first_rows]
    if counterparty is not None and not np.any(ids == int(counterparty)):
        ex.deposit(int(counterparty), counterparty_collateral)
    ex.load_balances(ids, amounts)
    market_ids = np.array([ex.market_id(name) for name in names], dtype=np.int32)[codes]
    try:
        ex.load_positions(accounts, market_ids, sizes, prices, counterparty=counterparty)
    except DeleverageError as err:
        # the exchange names its arguments (sizes[66]); the user's file has columns and lines
        column = {"accounts": "account", "markets": "market", "sizes": "size", "entry_prices": "entry_price"}.get(err.field or "")
        if column is None or err.index is None:
            raise
        i = err.index
        raise type(err)(f"{rows.at(column, i)} ({about(i)}): {err.detail}") from None
    if fund > 0:
        ex.insurance.deposit(fund)
    return ex


def _factorize_symbols(column: Any, rows: _Rows) -> tuple[np.ndarray, list[str]]:
    """Row codes into the distinct symbols (in order of first appearance); InvalidInput at the
    first row whose market is not a non-empty string."""
    import pandas as pd

    codes, uniques = pd.factorize(column, use_na_sentinel=True)  # missing values get -1
    names = list(uniques)
    bad_codes = [k for k, v in enumerate(names) if not isinstance(v, str) or not v]
    bad = (codes < 0) | np.isin(codes, bad_codes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"{rows.at('market', i)}: expected a market symbol (got {plain(column.iloc[i])})")
    return codes.astype(np.intp), [str(v) for v in names]


def _market_table(markets: Optional[Source], codes: np.ndarray, names: list[str], sizes: np.ndarray, prices: np.ndarray,
                  rows: _Rows) -> list[dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    if markets is not None:
        mt = _read_table(markets, "markets")
        if "symbol" not in mt.columns:
            raise ConfigError("markets: missing column 'symbol'")
        unknown_cols = [c for c in mt.columns if c not in MARKET_COLUMNS]
        if unknown_cols:
            raise ConfigError(f"markets: unknown column {unknown_cols[0]!r} (known: {', '.join(MARKET_COLUMNS)})")
        for i, row in enumerate(mt.to_dict("records")):
            sym = row["symbol"]
            if not isinstance(sym, str) or not sym or sym in table:
                raise ConfigError(f"markets.symbol[{i}]: expected a new market symbol (got {sym!r})")
            table[sym] = {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and np.isnan(v))}
        missing = sorted(set(names) - set(table))
        if missing:
            i = int(np.flatnonzero(codes == names.index(missing[0]))[0])
            raise InvalidInput(f"{rows.at('market', i)}: market {missing[0]!r} is not in the market table")
    else:
        for sym in names:
            table[sym] = {"symbol": sym}
    # each market's rows, in book order (a stable sort by code), without a pass per market
    small = codes.astype(np.uint16) if len(names) <= 1 << 16 else codes  # 16-bit keys: numpy's radix sort
    by_market = np.argsort(small, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=len(names)))))
    code_of = {name: k for k, name in enumerate(names)}
    out = []
    for sym, row in table.items():
        k = code_of.get(sym)
        sel = by_market[bounds[k]:bounds[k + 1]] if k is not None else np.empty(0, dtype=np.intp)
        r = dict(DEFAULT_RATES)
        r.update(row)
        if "initial_margin" not in row:
            r["initial_margin"] = 2 * float(r["maintenance_margin"])
        if "qty_decimals" not in r:
            r["qty_decimals"] = max(3, _decimals(np.abs(sizes[sel]))) if sel.size else 3
        if "price_decimals" not in r:
            r["price_decimals"] = max(2, _decimals(prices[sel])) if sel.size else 2
        if "mark_price" not in r:
            if not sel.size:
                raise ConfigError(f"markets: market {sym!r} has no position and no mark_price")
            w = np.abs(sizes[sel])
            r["mark_price"] = max(round(float((w * prices[sel]).sum() / w.sum()), int(r["price_decimals"])),
                                  10.0 ** -int(r["price_decimals"]))
        out.append(r)
    return out
