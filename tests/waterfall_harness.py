"""Builds the same book on the engine (``deleverage.Exchange``, exact mode) and on the
reference waterfall, and reads both back as plain Python values. Only conversions here."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from reference_model import R
from reference_waterfall import WaterfallReference

import deleverage
from deleverage import Backstop, MarketClose


@dataclass
class MarketDef:
    symbol: str
    mark: int  # price units (10^-md)
    mmr: int = 5 * R // 100
    imr: int = 10 * R // 100
    fee: int = 0
    own_pool: bool = False
    qd: int = 0
    pd: int = 0  # the order tick: entry prices are multiples of 10^(md - pd)
    tiers: list | None = None
    md: int | None = None  # mark decimals, the price unit; None: pd


@dataclass
class Book:
    markets: list[MarketDef]
    deposits: list[tuple[int, int]]  # (account, amount) in creation order
    positions: list[tuple[int, int, int, int]]  # (account, market, size, entry price)
    counterparty: int | None = None
    fund: dict[int, int] = field(default_factory=dict)  # pool -> amount
    drawdown: tuple[int, int] | None = None  # (max_drawdown 1e-8, window)
    money_decimals: int = 0


def build_engine(book: Book) -> deleverage.Exchange:
    ex = deleverage.Exchange(money_decimals=book.money_decimals)
    for m in book.markets:
        kw = {}
        if m.tiers is not None:
            scale = 10**book.money_decimals
            kw["tiers"] = [(None if cap is None else cap / scale, a / R, b / R) for cap, a, b in m.tiers]
        ex.add_market(m.symbol, qty_decimals=m.qd, price_decimals=m.pd, maintenance_margin=m.mmr / R,
                      initial_margin=m.imr / R, liquidation_fee=m.fee / R, own_insurance_pool=m.own_pool,
                      mark_decimals=m.pd if m.md is None else m.md, **kw)
        ex.set_marks([ex.market_id(m.symbol)], np.array([m.mark], dtype=np.int64), exact=True)
    ex.deposit(np.array([a for a, _ in book.deposits], dtype=np.int64),
               np.array([x for _, x in book.deposits], dtype=np.int64), exact=True)
    if book.positions:
        cols = [np.array([r[i] for r in book.positions], dtype=np.int64) for i in range(4)]
        ex.load_positions(*cols, counterparty=book.counterparty, exact=True)
    for pool, amount in book.fund.items():
        ex.insurance.deposit(amount, pool, exact=True)
    if book.drawdown is not None:
        ex.insurance.set_drawdown_rule(book.drawdown[0] / R, book.drawdown[1])
    return ex


def build_reference(book: Book) -> WaterfallReference:
    ref = WaterfallReference(book.money_decimals)
    for m in book.markets:
        ref.add_market(m.symbol, m.qd, m.pd, m.mmr, m.imr, tiers=m.tiers, fee=m.fee, own_pool=m.own_pool, mark=m.mark,
                       mark_decimals=m.md)
    for a, x in book.deposits:
        ref.deposit(a, x)
    if book.positions:
        ref.load_positions(book.positions, counterparty=book.counterparty)
    for pool, amount in book.fund.items():
        ref.insurance_deposit(amount, pool)
    if book.drawdown is not None:
        ref.set_drawdown_rule(*book.drawdown)
    return ref


def build_both(book: Book):
    return build_engine(book), build_reference(book)


# ------------------------------------------------------------------ read back

TOTAL_FIELDS = ("step", "liquidated_accounts", "partial_liquidations", "deficit", "fund_used", "fund_fees",
                "adl_notional", "adl_closes", "haircut_total", "accounts_touched", "bad_debt", "last_resort_needed",
                "last_resort_planned")


def engine_totals(res) -> dict:
    return {k: int(getattr(res.totals, k)) for k in TOTAL_FIELDS}


def engine_events(res) -> list[tuple]:
    e = res.events
    return [
        (int(e.step[i]), str(e.kind[i]), int(e.account[i]), int(e.market[i]), int(e.counterparty[i]),
         int(e.size[i]), int(e.amount[i]), int(e.price[i]), int(e.pool[i]), int(e.exec_price[i]))
        for i in range(len(e))
    ]


def engine_state(ex: deleverage.Exchange) -> dict:
    pos = ex.positions(exact=True)
    led = ex.insurance.ledger(exact=True)
    hist = ex.insurance.history(exact=True)
    ids = [int(a) for a in ex.account_ids()]
    return {
        "balances": {a: int(ex.balance(a, exact=True)) for a in ids},
        "positions": sorted((int(pos.account[i]), int(pos.market[i]), int(pos.size[i]), int(pos.entry_notional[i]))
                            for i in range(len(pos))),
        "pools": [int(ex.insurance.balance(p, exact=True)) for p in range(ex.insurance.pool_count)],
        "ledger": [(int(led.step[i]), int(led.pool[i]), int(led.market[i]), int(led.account[i]), int(led.amount[i]),
                    str(led.reason[i])) for i in range(len(led))],
        "history": [(int(hist.step[i]), int(hist.pool[i]), int(hist.balance[i])) for i in range(len(hist))],
        "step": ex.step,
    }


def reference_state(ref: WaterfallReference) -> dict:
    return {
        "balances": {a: acct.balance for a, acct in ref.accounts.items()},
        "positions": sorted((a, m, p.size, p.entry) for a, acct in ref.accounts.items() for m, p in acct.positions.items()),
        "pools": list(ref.pools),
        "ledger": list(ref.ledger),
        "history": list(ref.history),
        "step": ref.step,
    }


def engine_margin(ex) -> dict:
    rep = ex.check_margin(exact=True)
    return {int(rep.account[i]): (int(rep.equity[i]), int(rep.maintenance[i]), bool(rep.liquidatable[i]), bool(rep.bankrupt[i]))
            for i in range(len(rep))}


def engine_ranking(ex, market, ranking="bitmex") -> list[dict]:
    r = ex.adl_ranking(market, ranking=ranking, exact=True)
    rows = [dict(account=int(r.account[i]), side=int(r.side[i]), size=int(r.size[i]), score=int(r.score[i]),
                 rank=int(r.rank[i]), light=int(r.light[i]), expected_loss=int(r.expected_loss[i])) for i in range(len(r))]
    return sorted(rows, key=lambda d: d["account"])


__all__ = ["Book", "MarketDef", "MarketClose", "Backstop", "build_both", "build_engine", "build_reference",
           "engine_totals", "engine_events", "engine_state", "reference_state", "engine_margin", "engine_ranking"]
