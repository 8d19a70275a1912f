"""Gives the engine (``deleverage.Exchange``, exact integer mode) the same small API as
``reference_model.ReferenceExchange`` so that one test body can run against both.

Only conversions live here (integer rates in 1e-8 units -> fractions, money-unit tier
caps -> quote, scalars -> int64 arrays, result columns -> Python ints); no expected
values are computed from the engine.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from reference_model import MarginRow, PositionRow, R

MARGIN_FIELDS = ("account", "equity", "maintenance", "initial", "liquidatable", "bankrupt")
POSITION_FIELDS = (
    "account",
    "market",
    "size",
    "entry_notional",
    "unrealized_pnl",
    "liquidation_price",
    "bankruptcy_price",
)


def column(obj, name: str) -> np.ndarray:
    """A result column, whether the result is a dataclass of arrays or a DataFrame."""
    if hasattr(obj, "columns") and hasattr(obj, "loc"):  # pandas DataFrame
        return obj[name].to_numpy()
    return np.asarray(getattr(obj, name))


def i64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def margin_rows(rep) -> list[MarginRow]:
    cols = [column(rep, f) for f in MARGIN_FIELDS]
    n = len(cols[0])
    for c in cols:
        assert len(c) == n
    return [
        MarginRow(
            int(cols[0][i]),
            int(cols[1][i]),
            int(cols[2][i]),
            int(cols[3][i]),
            bool(cols[4][i]),
            bool(cols[5][i]),
        )
        for i in range(n)
    ]


def position_rows(pos) -> list[PositionRow]:
    cols = [column(pos, f) for f in POSITION_FIELDS]
    n = len(cols[0])
    for c in cols:
        assert len(c) == n
    return [PositionRow(*(int(c[i]) for c in cols)) for i in range(n)]


def rate(r: int) -> float:
    """1e-8 integer rate -> the fraction the Python API takes (rounds back exactly)."""
    return r / R


class EngineExchange:
    def __init__(self, money_decimals: int = 6):
        import deleverage
        import deleverage.errors

        self.errors = deleverage.errors
        self.money_decimals = money_decimals
        self.ex = deleverage.Exchange(money_decimals=money_decimals)

    # -------------------------------------------------------------- configuration

    def add_market(self, symbol, qty_decimals, price_decimals, mmr, imr, tiers=None, mark_decimals=None) -> int:
        # the reference model's default: prices (exact, in and out) on the order tick
        kw = {"mark_decimals": price_decimals if mark_decimals is None else mark_decimals}
        if tiers is not None:
            scale = 10**self.money_decimals
            kw["tiers"] = [
                (None if cap is None else Fraction(cap, scale), rate(t_mmr), rate(t_imr))
                for cap, t_mmr, t_imr in tiers
            ]
        return int(
            self.ex.add_market(
                symbol,
                qty_decimals=qty_decimals,
                price_decimals=price_decimals,
                maintenance_margin=rate(mmr),
                initial_margin=rate(imr),
                **kw,
            )
        )

    # ------------------------------------------------------------------ mutations

    def deposit(self, account, amount):
        self.ex.deposit(i64([account]), i64([amount]), exact=True)

    def withdraw(self, account, amount):
        self.ex.withdraw(i64([account]), i64([amount]), exact=True)

    def deposits_batch(self, accounts, amounts):
        self.ex.deposit(i64(accounts), i64(amounts), exact=True)

    def load_balances(self, accounts, balances):
        self.ex.load_balances(i64(accounts), i64(balances), exact=True)

    def withdrawals_batch(self, accounts, amounts):
        self.ex.withdraw(i64(accounts), i64(amounts), exact=True)

    def trade(self, buyer, seller, market, size, price):
        self.ex.trade(buyer, seller, market, size, price, exact=True)

    def trades(self, rows):
        rows = list(rows)
        cols = [i64([r[i] for r in rows]) for i in range(5)]
        self.ex.trades(*cols, exact=True)

    def load_positions(self, rows, counterparty=None):
        rows = list(rows)
        cols = [i64([r[i] for r in rows]) for i in range(4)]
        self.ex.load_positions(*cols, counterparty=counterparty, exact=True)

    def set_mark(self, market, price):
        self.set_marks([market], [price])

    def set_marks(self, markets, prices):
        self.ex.set_marks(i64(markets), i64(prices), exact=True)

    # -------------------------------------------------------------------- queries

    def check_margin(self, markets=None) -> list[MarginRow]:
        if markets is None:
            return margin_rows(self.ex.check_margin(exact=True))
        return margin_rows(self.ex.check_margin(i64(list(markets)), exact=True))

    def margin(self, account):
        rows = [r for r in self.check_margin() if r.account == account]
        if not rows:  # the full report lists every account that exists
            raise self.errors.UnknownId(account)
        assert len(rows) == 1, f"account {account} appears {len(rows)} times in the report"
        return rows[0].as_tuple()

    def margin_ratio(self, account) -> float:
        rep = self.ex.check_margin(exact=True)
        accounts = column(rep, "account")
        idx = np.flatnonzero(accounts == account)
        assert len(idx) == 1
        return float(column(rep, "margin_ratio")[idx[0]])

    def positions(self) -> list[PositionRow]:
        return position_rows(self.ex.positions(exact=True))

    def position_view(self, account, market):
        rows = [r for r in self.positions() if r.account == account and r.market == market]
        assert len(rows) <= 1
        return rows[0].as_tuple() if rows else None

    def check_invariants(self):
        self.ex.check_invariants()

    def raw_state(self):
        """Everything observable in exact mode, as plain Python values (for the
        'a refused call changes nothing' checks)."""
        pos = self.ex.positions(exact=True)
        rep = self.ex.check_margin(exact=True)
        pos_cols = POSITION_FIELDS + ("entry_price",)
        # repr() so that NaN compares equal to NaN
        return (
            {f: repr(column(pos, f).tolist()) for f in pos_cols},
            {f: repr(column(rep, f).tolist()) for f in MARGIN_FIELDS + ("margin_ratio",)},
        )
