"""Slow, obviously-correct pure-Python reference model of ``docs/semantics.md``.

Everything here is Python ``int`` arithmetic (arbitrary precision, so nothing can
overflow or wrap): the engine is compared against this model, so it favours being
readable and literal over being fast. Each formula follows the wording of
``docs/semantics.md`` as closely as possible; the section names are repeated in the
comments.

Units (see the "Units" table):
- money: ``10**-money_decimals`` quote units;
- size: signed lots of ``10**-qty_decimals`` base units (long > 0);
- price: ticks of ``10**-mark_decimals`` quote per base unit (the mark unit; trade and
  entry prices must be whole order ticks of ``10**-price_decimals``);
- rates: ``10**-8`` (``R``), so 0.5% is ``500_000``.

Choices where the contract is silent (documented so a disagreement is easy to place):
- a flat account's ``position_view`` is ``None``;
- ``load_positions`` adds the counterparty's share to its existing position in that market
  by plain addition of size and entry notional; the tests only give the counterparty
  markets where it is flat or on the same side, so the choice is never exercised
  ambiguously;
- a liquidation-price tier whose denominator is 0 (a long with ``mmr == R``) gives "none"
  (the contract: "there is none when the denominator is 0"); the tests never use
  ``mmr == R``;
- a liquidation or bankruptcy price above the int64 range is reported as 0 ("none"): the
  contract does not say, and the price column is int64.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field

R = 10**8  # rate scale: rates are integers in units of 1e-8
MAX_ABS_VALUE_MONEY = 2**62  # |value of a position| limit, in money units
MAX_MARKETS = 1024
MAX_EXTRA_DECIMALS = 8  # D - money_decimals may be at most 8
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


# --------------------------------------------------------------------------- errors
# Same names as deleverage.errors so that the hand cases can be written once for both.


class DeleverageError(Exception):
    pass


class ConfigError(DeleverageError, ValueError):
    pass


class InvalidInput(DeleverageError, ValueError):
    pass


class ArithmeticOverflow(DeleverageError, OverflowError):
    pass


class UnknownId(DeleverageError, KeyError):
    pass


class InsufficientMargin(DeleverageError):
    pass


class CorruptSnapshot(DeleverageError):
    pass


class InvariantViolation(DeleverageError):
    pass


# ------------------------------------------------------------------ integer helpers


def floor_div(a: int, b: int) -> int:
    """Exact floor(a / b): rounds toward minus infinity."""
    assert isinstance(a, int) and isinstance(b, int) and b != 0
    return a // b  # Python's // is floor division for ints


def ceil_div(a: int, b: int) -> int:
    """Exact ceil(a / b): rounds toward plus infinity."""
    assert isinstance(a, int) and isinstance(b, int) and b != 0
    return -((-a) // b)


def trunc_div(a: int, b: int) -> int:
    """Exact a / b truncated toward zero (C++ integer division)."""
    assert isinstance(a, int) and isinstance(b, int) and b != 0
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _require_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an int, got {value!r}")
    if value < INT64_MIN or value > INT64_MAX:
        raise InvalidInput(f"{name}={value} does not fit in int64")
    if lo is not None and value < lo:
        raise InvalidInput(f"{name}={value} must be >= {lo}")
    if hi is not None and value > hi:
        raise InvalidInput(f"{name}={value} must be <= {hi}")
    return value


# ------------------------------------------------------------------------ the state


@dataclass
class Tier:
    cap: int | None  # money units; None = unbounded (last tier only)
    mmr: int  # 1e-8 units
    imr: int  # 1e-8 units
    A: int  # maintenance deduction, money x R units
    B: int  # initial deduction, money x R units


@dataclass
class Market:
    symbol: str
    qty_decimals: int
    price_decimals: int  # the order tick
    mark_decimals: int  # the price unit: marks may be finer than the tick
    tiers: list[Tier]
    mark: int = 0  # ticks; 0 = no mark yet
    valued_mark: int = 0  # the mark at which the last margin check valued this market


@dataclass
class Position:
    size: int  # lots, != 0
    entry: int  # entry notional E, money units, signed like size


@dataclass
class Account:
    account_id: int
    balance: int = 0
    positions: dict[int, Position] = field(default_factory=dict)  # market id -> position


@dataclass(frozen=True)
class MarginRow:
    account: int
    equity: int
    maintenance: int
    initial: int
    liquidatable: bool
    bankrupt: bool

    def as_tuple(self):
        return (self.equity, self.maintenance, self.initial, self.liquidatable, self.bankrupt)


@dataclass(frozen=True)
class PositionRow:
    account: int
    market: int
    size: int
    entry_notional: int
    unrealized_pnl: int
    liquidation_price: int  # ticks, 0 = none
    bankruptcy_price: int  # ticks, 0 = none

    def as_tuple(self):
        return (
            self.size,
            self.entry_notional,
            self.unrealized_pnl,
            self.liquidation_price,
            self.bankruptcy_price,
        )


@dataclass
class _Terms:
    """One position valued at its market's mark, all in 10^-D (x R) units."""

    market: int
    q: int
    E: int
    k: int
    value_V: int
    notional_V: int
    u_V: int
    mm_VR: int
    im_VR: int


class ReferenceExchange:
    # ``errors`` (set below the class) is this module: it defines the error classes
    # under the same names as deleverage.errors.

    def __init__(self, money_decimals: int = 6):
        _require_int("money_decimals", money_decimals, 0, 18)
        self.money_decimals = money_decimals
        self.markets: list[Market] = []
        self.accounts: dict[int, Account] = {}  # insertion order = creation order
        self.deposits = 0
        self.withdrawals = 0
        self.loaded_entry_notional = 0
        self.loaded_balances = 0
        self.deficit_split = "loss"  # where a bankrupt account's negative equity lands

    # ------------------------------------------------------------------ scales

    @property
    def D(self) -> int:
        """Internal value scale: max(money_decimals, max over markets of qd + pd)."""
        return max(
            [self.money_decimals]
            + [mk.qty_decimals + mk.mark_decimals for mk in self.markets]
        )

    @property
    def S(self) -> int:
        return 10 ** (self.D - self.money_decimals)

    def k(self, m: int) -> int:
        mk = self.markets[m]
        return self.D - mk.qty_decimals - mk.mark_decimals

    def value_money(self, m: int, q: int, p: int) -> int:
        """floor(q * p * 10^k[m] / S): signed value in money units."""
        return floor_div(q * p * 10 ** self.k(m), self.S)

    # ----------------------------------------------------------------- markets

    def add_market(self, symbol, qty_decimals, price_decimals, mmr, imr, tiers=None, mark_decimals=None) -> int:
        """Rates in 1e-8 units. ``tiers``: list of (cap_money_units or None, mmr, imr).
        ``mark_decimals`` (default ``price_decimals``): the price unit."""
        _require_int("qty_decimals", qty_decimals, 0, 18)
        _require_int("price_decimals", price_decimals, 0, 18)
        if mark_decimals is None:
            mark_decimals = price_decimals
        _require_int("mark_decimals", mark_decimals, price_decimals, 18)
        if len(self.markets) >= MAX_MARKETS:
            raise ConfigError("too many markets")
        if any(mk.symbol == symbol for mk in self.markets):
            raise ConfigError(f"duplicate symbol {symbol!r}")
        if qty_decimals + mark_decimals - self.money_decimals > MAX_EXTRA_DECIMALS:
            raise ConfigError("qty_decimals + mark_decimals - money_decimals must be <= 8")
        if tiers is None:
            tiers = [(None, mmr, imr)]
        if len(tiers) == 0:
            raise ConfigError("empty tier table")
        built: list[Tier] = []
        prev = None
        for j, (cap, t_mmr, t_imr) in enumerate(tiers):
            last = j == len(tiers) - 1
            if last != (cap is None):
                raise ConfigError("only the last tier has an unbounded (None) cap")
            if cap is not None:
                _require_int("cap", cap, 1)
                if prev is not None and cap <= prev.cap:
                    raise ConfigError("tier caps must increase")
            _require_int("mmr", t_mmr, 0, R)
            _require_int("imr", t_imr, 0, R)
            if t_imr < t_mmr:
                raise ConfigError("imr must be >= mmr")
            if prev is None:
                A = B = 0  # A_0 = B_0 = 0
            else:
                if t_mmr < prev.mmr or t_imr < prev.imr:
                    raise ConfigError("rates must not decrease from one tier to the next")
                # A_j = A_{j-1} + cap_{j-1} * (mmr_j - mmr_{j-1}); likewise B_j with imr
                A = prev.A + prev.cap * (t_mmr - prev.mmr)
                B = prev.B + prev.cap * (t_imr - prev.imr)
            prev = Tier(cap, t_mmr, t_imr, A, B)
            built.append(prev)
        self.markets.append(Market(symbol, qty_decimals, price_decimals, mark_decimals, built))
        return len(self.markets) - 1

    def _market(self, m) -> Market:
        if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < len(self.markets):
            raise UnknownId(f"unknown market {m!r}")
        return self.markets[m]

    def _account(self, a) -> Account:
        _require_int("account", a)
        if a not in self.accounts:
            raise UnknownId(f"unknown account {a}")
        return self.accounts[a]

    def _check_value(self, m: int, q: int, p: int) -> None:
        if p > 0 and abs(self.value_money(m, q, p)) > MAX_ABS_VALUE_MONEY:
            raise ArithmeticOverflow(f"position value out of range in market {m}")

    def _check_position_range(self, m: int, q: int, E: int) -> None:
        """The size fits int64 (never its minimum); |value| at entry and at the current mark
        fit in 2^62 money units."""
        if q == 0:
            return
        if not INT64_MIN < q <= INT64_MAX:
            raise ArithmeticOverflow(f"position size out of range in market {m}")
        if abs(E) > MAX_ABS_VALUE_MONEY:
            raise ArithmeticOverflow(f"entry notional out of range in market {m}")
        self._check_value(m, q, self.markets[m].mark)

    def _require_representable(self, acct: Account) -> None:
        """The representable range (semantics.md): the balance, and the equity, maintenance
        and initial margin at the current marks (a market without a mark values at 0), fit
        in int64; an operation that would break it raises ArithmeticOverflow."""
        values = [acct.balance]
        if acct.positions:
            terms = [self._terms(m, acct.positions[m], allow_unmarked=True) for m in acct.positions]
            values.append(acct.balance + floor_div(sum(t.u_V for t in terms), self.S))
            values.append(ceil_div(sum(t.mm_VR for t in terms), self.S * R))
            values.append(ceil_div(sum(t.im_VR for t in terms), self.S * R))
        if any(not INT64_MIN <= v <= INT64_MAX for v in values):
            raise ArithmeticOverflow(f"account {acct.account_id}'s equity or margin requirement would not fit in 64 bits")

    # ------------------------------------------------------ deposits/withdrawals

    def deposit(self, account: int, amount: int) -> None:
        _require_int("account", account)
        _require_int("amount", amount, 0)
        acct = self.accounts.get(account)
        created = acct is None
        if created:
            acct = self.accounts[account] = Account(account)  # created on first use
        acct.balance += amount
        try:
            self._require_representable(acct)
        except ArithmeticOverflow:
            acct.balance -= amount
            if created:
                del self.accounts[account]
            raise
        self.deposits += amount

    def withdraw(self, account: int, amount: int) -> None:
        _require_int("amount", amount, 0)
        acct = self._account(account)
        acct.balance -= amount
        try:
            if acct.positions:
                row = self._margin_row(acct)
                refused = row.equity < row.initial
            else:
                refused = acct.balance < 0  # equity of a flat account is its balance
        except Exception:
            acct.balance += amount
            raise
        if refused:
            acct.balance += amount
            raise InsufficientMargin(f"withdrawal of {amount} from account {account} refused")
        self.withdrawals += amount

    def _atomic(self, fn):
        """Run fn(); if it raises, restore the state exactly as it was."""
        saved = copy.deepcopy(self.__dict__)
        try:
            fn()
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def deposits_batch(self, accounts, amounts) -> None:
        def run():
            for a, x in zip(accounts, amounts, strict=True):
                self.deposit(a, x)

        self._atomic(run)

    def load_balances(self, accounts, balances) -> None:
        """Set each balance (signed); the change is the external flow loaded_balances."""
        seen: dict[int, int] = {}
        for i, a in enumerate(accounts):
            _require_int("account", a)
            if a in seen:
                raise InvalidInput(f"accounts[{i}]: account {a} appears twice (also at index {seen[a]})")
            seen[a] = i

        def run():
            for a, b in zip(accounts, balances, strict=True):
                _require_int("balance", b)
                acct = self.accounts.get(a)
                if acct is None:
                    acct = self.accounts[a] = Account(a)
                self.loaded_balances += b - acct.balance
                acct.balance = b
                self._require_representable(acct)

        self._atomic(run)

    def withdrawals_batch(self, accounts, amounts) -> None:
        def run():
            for a, x in zip(accounts, amounts, strict=True):
                self.withdraw(a, x)

        self._atomic(run)

    # ------------------------------------------------------------------ trades

    def _apply_fill(self, acct: Account, m: int, dq: int, sv: int) -> None:
        """apply_fill(account, dq, sv) exactly as in the "Trades" section."""
        pos = acct.positions.get(m)
        q0, E0 = (pos.size, pos.entry) if pos is not None else (0, 0)
        q1 = q0 + dq
        if q0 == 0 or sign(q0) == sign(dq):
            E1 = E0 + sv  # increase
        elif abs(dq) <= abs(q0):
            E1 = trunc_div(E0 * q1, q0)  # reduce or close
        else:
            E1 = trunc_div(sv * q1, dq)  # flip
        if q1 == 0:
            assert E1 == 0
        acct.balance += (E1 - E0) - sv
        if q1 == 0:
            acct.positions.pop(m, None)
        else:
            acct.positions[m] = Position(q1, E1)

    def _require_on_tick(self, m: int, price: int) -> None:
        """Trade and entry prices are whole order ticks; only marks are finer."""
        mk = self.markets[m]
        if price % 10 ** (mk.mark_decimals - mk.price_decimals) != 0:
            raise InvalidInput(f"price {price} is not a whole order tick")

    def _validate_trade(self, buyer, seller, market, size, price) -> None:
        _require_int("size", size, 1)
        _require_int("price", price, 1)
        self._market(market)
        self._require_on_tick(market, price)
        self._account(buyer)
        self._account(seller)
        if buyer == seller:
            raise InvalidInput("buyer and seller must be different accounts")
        if abs(self.value_money(market, size, price)) > MAX_ABS_VALUE_MONEY:
            raise ArithmeticOverflow("trade value out of range")

    def _trade(self, buyer, seller, market, size, price) -> None:
        _require_int("size", size, 1)
        _require_int("price", price, 1)
        self._market(market)
        self._require_on_tick(market, price)
        b = self._account(buyer)
        s = self._account(seller)
        if buyer == seller:
            raise InvalidInput("buyer and seller must be different accounts")
        v = self.value_money(market, size, price)  # computed once
        if abs(v) > MAX_ABS_VALUE_MONEY:
            raise ArithmeticOverflow("trade value out of range")
        self._apply_fill(b, market, +size, +v)
        self._apply_fill(s, market, -size, -v)
        for acct in (b, s):
            pos = acct.positions.get(market)
            if pos is not None:
                self._check_position_range(market, pos.size, pos.entry)
        for acct in (b, s):
            self._require_representable(acct)

    def trade(self, buyer, seller, market, size, price) -> None:
        self._atomic(lambda: self._trade(buyer, seller, market, size, price))

    def trades(self, rows) -> None:
        """rows: iterable of (buyer, seller, market, size, price); atomic."""
        rows = list(rows)

        for r in rows:  # every row's own inputs first, as the engine does
            self._validate_trade(*r)

        def run():
            for r in rows:
                self._trade(*r)

        self._atomic(run)

    # --------------------------------------------------------- loading positions

    def load_positions(self, rows, counterparty=None) -> None:
        """rows: iterable of (account, market, size_lots, entry_price_ticks)."""
        rows = list(rows)
        self._atomic(lambda: self._load_positions(rows, counterparty))

    def _load_positions(self, rows, counterparty) -> None:
        seen = set()
        net_size: dict[int, int] = {}
        net_entry: dict[int, int] = {}
        prepared = []
        for a, m, q, p in rows:
            acct = self._account(a)
            self._market(m)
            _require_int("size", q)
            _require_int("entry_price", p, 1)
            self._require_on_tick(m, p)
            if q == 0:
                raise InvalidInput("loaded size must not be 0")
            if (a, m) in seen or m in acct.positions:
                raise InvalidInput(f"account {a} already holds a position in market {m}")
            seen.add((a, m))
            E = self.value_money(m, q, p)
            self._check_value(m, q, p)
            self._check_position_range(m, q, E)
            prepared.append((acct, m, q, E))
            net_size[m] = net_size.get(m, 0) + q
            net_entry[m] = net_entry.get(m, 0) + E
        unbalanced = [m for m in sorted(net_size) if net_size[m] != 0]
        cp = None
        if unbalanced:
            if counterparty is None:
                raise InvalidInput(f"loaded sizes do not sum to zero in market {unbalanced[0]}")
            cp = self._account(counterparty)
        sum_entry_before = self._sum_entry()
        for acct, m, q, E in prepared:
            acct.positions[m] = Position(q, E)
        for m in unbalanced:
            old = cp.positions.get(m, Position(0, 0))
            q1 = old.size - net_size[m]
            E1 = old.entry - net_entry[m]
            if q1 == 0:
                cp.positions.pop(m, None)
            else:
                self._check_position_range(m, q1, E1)
                cp.positions[m] = Position(q1, E1)
        for acct in {id(a): a for a, _, _, _ in prepared}.values():
            self._require_representable(acct)
        if cp is not None:
            self._require_representable(cp)
        # what the outside world paid for these positions: the net change of sum(E)
        self.loaded_entry_notional += self._sum_entry() - sum_entry_before

    # -------------------------------------------------------------------- marks

    def set_mark(self, market: int, price: int) -> None:
        self.set_marks([market], [price])

    def set_marks(self, markets, prices) -> None:
        markets, prices = list(markets), list(prices)
        if len(markets) != len(prices):
            raise InvalidInput("markets and prices differ in length")
        if len(set(markets)) != len(markets):
            raise InvalidInput("markets in one set_marks call must be distinct")
        for m, p in zip(markets, prices):
            self._market(m)
            _require_int("price", p, 1)
            for acct in self.accounts.values():
                pos = acct.positions.get(m)
                if pos is not None:
                    self._check_value(m, pos.size, p)
        old = {m: self.markets[m].mark for m in markets}
        for m, p in zip(markets, prices):
            self.markets[m].mark = p
        try:
            for acct in self.accounts.values():
                if any(m in acct.positions for m in markets):
                    self._require_representable(acct)
        except ArithmeticOverflow:
            for m, p in old.items():
                self.markets[m].mark = p
            raise

    # ---------------------------------------------------------- margin formulas

    def _tier(self, mk: Market, notional_V: int) -> Tier:
        """First tier with notional_V <= cap_j * S; the last tier's cap is unbounded."""
        for t in mk.tiers:
            if t.cap is None or notional_V <= t.cap * self.S:
                return t
        raise AssertionError("unreachable: the last tier is unbounded")

    def _terms(self, m: int, pos: Position, allow_unmarked: bool = False) -> _Terms:
        mk = self.markets[m]
        if mk.mark == 0 and not allow_unmarked:
            raise InvalidInput(f"market {m} has open positions but no mark")
        S, k = self.S, self.k(m)
        value_V = pos.size * mk.mark * 10**k
        notional_V = abs(value_V)
        u_V = value_V - pos.entry * S
        t = self._tier(mk, notional_V)
        mm_VR = notional_V * t.mmr - t.A * S
        im_VR = notional_V * t.imr - t.B * S
        return _Terms(m, pos.size, pos.entry, k, value_V, notional_V, u_V, mm_VR, im_VR)

    def _require_marks(self) -> None:
        """The margin check refuses to run while an unmarked market has open positions."""
        for acct in self.accounts.values():
            for m in acct.positions:
                if self.markets[m].mark == 0:
                    raise InvalidInput(f"market {m} has open positions but no mark")

    def _account_terms(self, acct: Account) -> list[_Terms]:
        return [self._terms(m, acct.positions[m]) for m in sorted(acct.positions)]

    def _margin_row(self, acct: Account) -> MarginRow:
        S = self.S
        terms = self._account_terms(acct)
        U = sum(t.u_V for t in terms)
        M = sum(t.mm_VR for t in terms)
        IM = sum(t.im_VR for t in terms)
        equity = acct.balance + floor_div(U, S)  # rounded down: favours solvency
        maintenance = ceil_div(M, S * R)  # rounded up
        initial = ceil_div(IM, S * R)
        return MarginRow(
            acct.account_id,
            equity,
            maintenance,
            initial,
            equity < maintenance,
            equity < 0,
        )

    def margin(self, account: int):
        """(equity, maintenance, initial, liquidatable, bankrupt) at the current marks."""
        acct = self._account(account)
        self._require_marks()
        return self._margin_row(acct).as_tuple()

    def margin_ratio(self, account: int) -> float:
        equity, maintenance, *_ = self.margin(account)
        return margin_ratio(equity, maintenance)

    def moved_markets(self) -> set[int]:
        """Markets whose mark moved since a margin check last valued them."""
        return {m for m, mk in enumerate(self.markets) if mk.mark != mk.valued_mark}

    def check_margin(self, markets=None) -> list[MarginRow]:
        """Rows in account creation order.

        Full check (``markets is None``): every account. Incremental check: the listed
        markets and every other market whose mark moved since it was last valued are
        revalued, and the accounts holding a position in one of those markets are
        reported. Either way the numbers are at the current marks."""
        self._require_marks()
        if markets is None:
            revalued = set(range(len(self.markets)))
        else:
            markets = list(markets)
            for m in markets:
                self._market(m)
            revalued = set(markets) | self.moved_markets()
        rows = []
        for acct in self.accounts.values():
            if markets is not None and not (revalued & acct.positions.keys()):
                continue
            rows.append(self._margin_row(acct))
        for m in revalued:
            self.markets[m].valued_mark = self.markets[m].mark
        return rows

    # ------------------------------------------------------ per position views

    def _liquidation_price(self, acct: Account, terms: list[_Terms], t: _Terms) -> int:
        S = self.S
        U = sum(x.u_V for x in terms)
        M = sum(x.mm_VR for x in terms)
        Eo = acct.balance * S + (U - t.u_V)  # equity of the rest of the account, 10^-D
        Mo = M - t.mm_VR
        q, k = t.q, t.k
        tiers = self.markets[t.market].tiers
        for j, tier in enumerate(tiers):
            last = j == len(tiers) - 1
            num = Mo - tier.A * S - (Eo - t.E * S) * R
            den = 10**k * (q * R - abs(q) * tier.mmr)
            if den == 0:
                return 0  # "there is none when the denominator is 0"
            # rounded against the holder: up for a long, down for a short
            x = ceil_div(num, den) if q > 0 else floor_div(num, den)
            if last or abs(q) * x * 10**k <= tier.cap * S:
                return x if 0 < x <= INT64_MAX else 0
        raise AssertionError("unreachable: the last tier always answers")

    def _bankruptcy_prices(self, acct: Account, terms: list[_Terms], equity: int) -> dict[int, int]:
        S = self.S
        # weights (docs/semantics.md, "Bankruptcy values"): with deficit_split "loss" and a
        # negative equity, each position's loss at the mark, max(0, -floor(u_V / S)), if any
        # position is at a loss; else mm_i in money (dYdX v4); else floor(notional_V / S); else equal
        losses = [max(0, -floor_div(t.u_V, S)) for t in terms]
        if self.deficit_split == "loss" and equity < 0 and sum(losses) > 0:
            weights = losses
        else:
            weights = [ceil_div(t.mm_VR, S * R) for t in terms]
        if sum(weights) == 0:
            weights = [ceil_div(t.mm_VR, S * R) for t in terms]
        if sum(weights) == 0:
            weights = [floor_div(t.notional_V, S) for t in terms]
        if sum(weights) == 0:
            weights = [1 for _ in terms]
        total = sum(weights)
        prices = {}
        for t, w in zip(terms, weights):
            share = floor_div(equity * w, total)
            num = t.q * self.markets[t.market].mark * 10**t.k - share * S
            den = t.q * 10**t.k
            # rounded against the holder: down for a long, up for a short
            x = floor_div(num, den) if t.q > 0 else ceil_div(num, den)
            prices[t.market] = x if 0 < x <= INT64_MAX else 0
        return prices

    def _position_rows(self, acct: Account) -> list[PositionRow]:
        if not acct.positions:
            return []
        terms = self._account_terms(acct)
        equity = self._margin_row(acct).equity
        bk = self._bankruptcy_prices(acct, terms, equity)
        return [
            PositionRow(
                acct.account_id,
                t.market,
                t.q,
                t.E,
                floor_div(t.u_V, self.S),
                self._liquidation_price(acct, terms, t),
                bk[t.market],
            )
            for t in terms
        ]

    def position_view(self, account: int, market: int):
        """(size, entry_notional, unrealized_pnl, liquidation_price, bankruptcy_price)
        in lots, money units and ticks (0 = none); ``None`` when flat."""
        acct = self._account(account)
        self._market(market)
        self._require_marks()
        if market not in acct.positions:
            return None
        for row in self._position_rows(acct):
            if row.market == market:
                return row.as_tuple()
        raise AssertionError("unreachable")

    def positions(self) -> list[PositionRow]:
        """All positions, in account creation order, then market id."""
        self._require_marks()
        rows = []
        for acct in self.accounts.values():
            rows.extend(self._position_rows(acct))
        return rows

    # ---------------------------------------------------------------- accessors

    def balance(self, account: int) -> int:
        return self._account(account).balance

    def account_ids(self) -> list[int]:
        return list(self.accounts)

    def accounts_in_markets(self, markets) -> list[int]:
        markets = set(markets)
        return [a.account_id for a in self.accounts.values() if markets & a.positions.keys()]

    def _sum_entry(self) -> int:
        return sum(p.entry for a in self.accounts.values() for p in a.positions.values())

    def net_size(self, market: int) -> int:
        return sum(a.positions[market].size for a in self.accounts.values() if market in a.positions)

    # --------------------------------------------------------------- invariants

    def check_invariants(self) -> None:
        cash = sum(a.balance for a in self.accounts.values()) - self._sum_entry()
        flows = self.deposits - self.withdrawals - self.loaded_entry_notional + self.loaded_balances
        if cash != flows:
            raise InvariantViolation(f"conservation: cash {cash} != external flows {flows}")
        for m in range(len(self.markets)):
            if self.net_size(m) != 0:
                raise InvariantViolation(f"zero net size: market {m} nets {self.net_size(m)}")
        for a in self.accounts.values():
            for m, p in a.positions.items():
                if p.size == 0:
                    raise InvariantViolation(f"flat position stored for {a.account_id}/{m}")


def margin_ratio(equity: int, maintenance: int) -> float:
    """maintenance / equity with the contract's conventions for equity <= 0."""
    if equity <= 0 and (maintenance > 0 or equity < 0):
        return float("inf")
    if equity == 0 and maintenance == 0:
        return 0.0
    return maintenance / equity


ReferenceExchange.errors = sys.modules[__name__]
