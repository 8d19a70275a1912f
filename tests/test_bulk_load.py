"""Bulk loads in any row order: ``load_positions`` groups rows by account inside the compiled
code, and float columns are converted in one compiled pass. Both must give exactly what an
account-ordered load and the numpy conversion gave."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deleverage import Exchange, _convert
from deleverage.books import MARKET_MAKER, generate_book
from deleverage.errors import ArithmeticOverflow, InvalidInput


def _fresh(book, markets: int, accounts: int, threads: int = 1) -> Exchange:
    ex = Exchange(threads=threads)
    for m in range(markets):
        ex.add_market(f"M{m}", qty_decimals=3, price_decimals=2, maintenance_margin=0.005, initial_margin=0.01,
                      mark_price=float(book.marks[m]))
    ex.deposit(MARKET_MAKER, 1e9)
    ex.deposit(np.arange(1, accounts + 1, dtype=np.int64), book.collateral)
    return ex


def _state(ex: Exchange) -> tuple:
    pos = ex.positions(exact=True)
    key = np.lexsort((pos.market, pos.account))  # positions() lists an account's rows in load order
    r = ex.check_margin(exact=True)
    cols = tuple(np.asarray(getattr(pos, c))[key].tobytes() for c in ("account", "market", "size", "entry_price"))
    return cols + (r.equity.tobytes(), r.maintenance.tobytes(), r.initial.tobytes(), ex.memory_bytes)


@pytest.mark.parametrize("threads", [1, 2])
def test_any_row_order_loads_the_same_book(threads: int) -> None:
    book = generate_book(30_000, 3_000, 12, seed=3)
    cols = [np.asarray(c) for c in (book.accounts, book.markets, book.sizes, book.entry_prices)]
    states = []
    for perm in (np.arange(len(cols[0])), np.random.default_rng(5).permutation(len(cols[0])),
                 np.argsort(cols[1], kind="stable"), np.arange(len(cols[0]))[::-1]):
        ex = _fresh(book, 12, 3_000, threads)
        ex.load_positions(*(c[perm] for c in cols), counterparty=MARKET_MAKER)
        ex.check_invariants()
        states.append(_state(ex))
    assert all(s == states[0] for s in states[1:])


def test_shuffled_rows_report_the_same_bad_row() -> None:
    """Errors name the input row: an unknown account, a duplicate pair."""
    book = generate_book(2_000, 200, 5, seed=1)
    acc, mk, q, p = (np.asarray(c).copy() for c in (book.accounts, book.markets, book.sizes, book.entry_prices))
    perm = np.random.default_rng(2).permutation(len(acc))
    acc, mk, q, p = acc[perm], mk[perm], q[perm], p[perm]
    bad = acc.copy()
    bad[[17, 400]] = 99_999  # two unknown ids: the first one is reported
    ex = _fresh(book, 5, 200)
    with pytest.raises(Exception, match=r"accounts\[17\]: unknown account id 99999"):
        ex.load_positions(bad, mk, q, p, counterparty=MARKET_MAKER)
    # row 0's (account, market) again at the end: the later row is the duplicate
    dup = [np.append(c, c[0]) for c in (acc, mk, q, p)]
    with pytest.raises(InvalidInput, match=rf"markets\[{len(acc)}\]: account {acc[0]} already has a position"):
        ex.load_positions(*dup, counterparty=MARKET_MAKER)
    assert ex.position_count == 0  # nothing was applied


# --------------------------------------------------------------- the float conversion

def reference_to_fixed(values: np.ndarray, decimals, on_grid: bool) -> np.ndarray:
    """The conversion as numpy computed it before the compiled pass (slow reference)."""
    arr = values.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return _reference_checked(arr, decimals, on_grid)


def _reference_checked(arr: np.ndarray, decimals, on_grid: bool) -> np.ndarray:
    finite = np.isfinite(arr)
    if not finite.all():
        raise InvalidInput(f"x[{int(np.flatnonzero(~finite)[0])}]")
    scale = np.power(10.0, np.asarray(decimals, dtype=np.float64))
    scaled = arr * scale
    rounded = np.rint(scaled)
    if on_grid:
        off = np.abs(scaled - rounded) > _convert._GRID_TOLERANCE * np.maximum(1.0, np.abs(scaled))
        if off.any():
            raise InvalidInput(f"x[{int(np.flatnonzero(np.broadcast_to(off, arr.shape))[0])}]")
    too_big = np.abs(rounded) >= _convert._FLOAT_LIMIT
    if too_big.any():
        raise ArithmeticOverflow(f"x[{int(np.flatnonzero(np.broadcast_to(too_big, arr.shape))[0])}]")
    return rounded.astype(np.int64)


_special = st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -9.3e18, 9.2e18, 0.0015, 2.5, -2.5, 0.5, 1e-12, 123.456])


@settings(max_examples=300, deadline=None)
@given(
    base=st.lists(st.integers(-10**12, 10**12), min_size=1, max_size=300),
    specials=st.lists(st.tuples(st.integers(0, 299), _special), max_size=4),
    per_row=st.booleans(),
    on_grid=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_compiled_conversion_matches_numpy(base, specials, per_row, on_grid, seed) -> None:
    rng = np.random.default_rng(seed)
    n = len(base)
    decimals = rng.integers(0, 19, n) if per_row else int(rng.integers(0, 19))
    d = np.broadcast_to(np.asarray(decimals), (n,))
    # whole units (on the grid), some halves and thirds off it, and the drawn special values
    values = np.asarray(base, dtype=np.float64) / np.power(10.0, d)
    values[rng.random(n) < 0.05] += 0.5 / np.power(10.0, d[0])
    for i, v in specials:
        if i < n:
            values[i] = v
    try:
        want = reference_to_fixed(values, decimals, on_grid)
    except (InvalidInput, ArithmeticOverflow) as err:
        row = str(err)
        with pytest.raises(type(err), match=rf"^x\[{row[2:-1]}\]: "):
            _convert.to_fixed(values, decimals, "x", exact=False, on_grid=on_grid)
        return
    got = _convert.to_fixed(values, decimals, "x", exact=False, on_grid=on_grid)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_compiled_conversion_large_column_on_threads() -> None:
    """Above the parallel grain the rows are split over threads: the first bad row still wins."""
    n = 1 << 18
    values = np.arange(n, dtype=np.float64) / 100.0
    assert np.array_equal(_convert.to_fixed(values, 2, "x", exact=False, on_grid=True), np.arange(n))
    values[n - 5] = 0.001  # off the 0.01 grid, in the last chunk
    values[n // 2 + 3] = np.nan  # not finite: reported first whatever its row
    with pytest.raises(InvalidInput, match=rf"^x\[{n // 2 + 3}\]: nan is not a finite number"):
        _convert.to_fixed(values, 2, "x", exact=False, on_grid=True)
    values[n // 2 + 3] = 1.0
    values[7] = 0.005
    with pytest.raises(InvalidInput, match=r"^x\[7\]: 0.005 is not a multiple of the unit 0.01"):
        _convert.to_fixed(values, 2, "x", exact=False, on_grid=True)


# --------------------------------------------------------------- load_book's checks, vectorized

def reference_book_error(accounts: list[int], symbols: list[str], collateral: list[float]) -> str | None:
    """The first duplicate (account, market) and the first collateral conflict, found the slow
    way (a sort of tuples, a dict): what the vectorized checks must report."""
    order = sorted(range(len(accounts)), key=lambda i: (accounts[i], symbols[i]))
    for a, b in zip(order, order[1:]):
        if (accounts[a], symbols[a]) == (accounts[b], symbols[b]):
            x, y = sorted((a, b))
            return f"book: account {accounts[x]} holds market {symbols[x]!r} twice, at row {x} and row {y}"
    first: dict[int, int] = {}
    for i, (a, c) in enumerate(zip(accounts, collateral)):
        j = first.setdefault(a, i)
        if collateral[j] != c:
            return f"book.collateral at row {i}: account {a} has collateral {c!r} here and {collateral[j]!r} at row {j}"
    return None


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(1, 6), st.sampled_from(["A", "B", "AA", "b", "B2"]),
                               st.sampled_from([100.0, 250.0, -5.0])), min_size=1, max_size=25),
       seed=st.integers(0, 2**32 - 1))
def test_load_book_reports_the_first_duplicate_and_collateral_conflict(rows, seed) -> None:
    import pandas as pd

    from deleverage.books import load_book

    rng = np.random.default_rng(seed)
    accounts = [a for a, _, _ in rows]
    symbols = [m for _, m, _ in rows]
    # mostly one collateral per account (the first drawn), sometimes a conflicting one
    own = {}
    collateral = [own.setdefault(a, c) if rng.random() < 0.9 else c for a, _, c in rows]
    df = pd.DataFrame({"account": accounts, "market": symbols, "size": rng.choice([-1.5, 0.25, 2.0], len(rows)),
                       "entry_price": rng.choice([10.0, 11.5], len(rows)), "collateral": collateral})
    want = reference_book_error(accounts, symbols, collateral)
    if want is None:
        ex = load_book(df, counterparty=0)
        ex.check_invariants()
        assert ex.position_count >= len(rows)
    else:
        with pytest.raises(InvalidInput) as err:
            load_book(df, counterparty=0)
        assert str(err.value) == want
