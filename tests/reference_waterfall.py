"""Slow, readable pure-Python reference of ``docs/waterfall.md`` (the loss waterfall).

Built on ``reference_model.ReferenceExchange`` (``docs/semantics.md``); every quantity is a
Python ``int``. Section numbers in the comments are those of ``docs/waterfall.md``.

Choices where the contract is silent (so that a disagreement with the engine is easy to
place):

- ``pro_rata`` ADL closes: the value ``V`` is split over the winners in ascending account
  creation order (the doc says "winner i" without fixing the order);
- a flat winner settled at the next round (section 5) puts its pending haircut on the first
  market it was deleveraged in (the doc's "market with the largest deficit" has no meaning
  for it: it has no deficit per market);
- pending haircuts created by settling flat winners are resolved in that round even when
  the round has no candidate (otherwise the winner would stay in debt without bad debt);
- the totals not spelled out by the doc: ``deficit`` adds ``max(0, D)`` of every MarketClose
  liquidation in full; ``liquidated_accounts`` counts candidates; ``partial_liquidations``
  counts accounts that got partial fills; ``accounts_touched`` counts distinct winners
  deleveraged or haircut;
- scores are clamped to ``[-(2**63 - 1), 2**63 - 1]`` (int64 columns).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import reference_allocate as ra
from reference_model import (
    INT64_MAX,
    InvalidInput,
    InvariantViolation,
    R,
    ReferenceExchange,
    UnknownId,
    ceil_div,
    floor_div,
    trunc_div,
)

SCORE = 10**9  # ranking scores are in units of 1e-9
MAX_LEV = 10**6 * SCORE  # 1e15
MODES = ("close", "haircut")
POLICIES = ("queue", "pro_rata", "funding_index", "capped_pro_rata", "risk_aware", "min_max_lots", "random_walk", "none")
KERNEL_POLICIES = ("capped_pro_rata", "risk_aware", "min_max_lots", "random_walk")
MAX_ALLOC_LEV = 10**6 * ra.SCALE  # the risk-aware leverage cap, in 1e-8 units
MASK64 = 2**64 - 1
RANKINGS = ("bitmex", "binance", "hyperliquid")
ADL_PRICES = ("bankruptcy", "mark", "previous_mark")


def clamp64(v: int) -> int:
    return max(-INT64_MAX, min(INT64_MAX, v))


# --------------------------------------------------------------------- executors


@dataclass(frozen=True)
class Exec:
    """An executor in integer units: ``kind`` "market" or "backstop"; ``slippage`` and
    ``impact_rate`` in 1e-8; ``depth`` in money units (0 = no impact term)."""

    kind: str
    account: int
    slippage: int = 0
    impact_rate: int = 0
    depth: int = 0
    partial: bool = False


def exec_from_api(executor, money_decimals: int) -> Exec:
    """The same integer spec that ``Exchange.liquidate`` derives from a MarketClose or a
    Backstop (basis points x 10_000 = 1e-8 units; depth in quote -> money units)."""
    from deleverage import Backstop, MarketClose

    if isinstance(executor, Backstop):
        return Exec("backstop", executor.account)
    assert isinstance(executor, MarketClose)
    imp = executor.impact
    return Exec(
        "market",
        executor.counterparty,
        round(executor.slippage_bps * 10_000),
        round(imp.bps_per_depth * 10_000) if imp else 0,
        round(imp.depth * 10**money_decimals) if imp else 0,
        bool(executor.partial),
    )


# ----------------------------------------------------------------------- results


@dataclass
class Totals:
    step: int = 0
    liquidated_accounts: int = 0
    partial_liquidations: int = 0
    deficit: int = 0
    fund_used: int = 0
    fund_fees: int = 0
    adl_notional: int = 0
    adl_closes: int = 0
    haircut_total: int = 0
    accounts_touched: int = 0
    bad_debt: int = 0
    last_resort_needed: int = 0
    last_resort_planned: int = 0

    def as_dict(self):
        return dict(self.__dict__)


@dataclass
class Result:
    totals: Totals
    events: list = field(default_factory=list)  # (step, kind, account, market, counterparty, size, amount, price, pool, exec_price)
    flags: set = field(default_factory=set)  # notes on which branches ran (for the tests)
    skipped: list = field(default_factory=list)  # per-account calls: given accounts not liquidated


def equity_shares(ex, acct, deficit_split: str) -> dict[int, int]:
    """docs/semantics.md, "Bankruptcy values": the account's equity e' = cash + its mark values
    split over its positions (market -> share, money units). "loss" puts a negative equity on
    the positions at a loss at the mark, in proportion to the loss (the remainder on the last of
    them); otherwise (and as the fallback) by maintenance share, the remainder last."""
    ms = sorted(acct.positions)
    mark_value = {m: ex.value_money(m, acct.positions[m].size, ex.markets[m].mark) for m in ms}
    e_prime = acct.balance - sum(acct.positions[m].entry for m in ms) + sum(mark_value.values())
    w = [max(0, acct.positions[m].entry - mark_value[m]) for m in ms]
    by_loss = deficit_split == "loss" and e_prime < 0 and sum(w) > 0
    if not by_loss:
        w = [ex._mm_money(m, acct.positions[m]) for m in ms]
    if sum(w) == 0:
        w = [abs(mark_value[m]) + 1 for m in ms]
    last = max(i for i in range(len(ms)) if w[i] > 0) if by_loss else len(ms) - 1
    shares = [floor_div(e_prime * w[i], sum(w)) for i in range(len(ms))]
    shares[last] = e_prime - (sum(shares) - shares[last])
    return dict(zip(ms, shares))


@dataclass
class _Closing:
    m: int
    q: int
    mark_value: int
    bk_value: int
    exec_price: int = 0
    exec_value: int = 0
    deficit: int = 0


class WaterfallReference(ReferenceExchange):
    def __init__(self, money_decimals: int = 6):
        super().__init__(money_decimals)
        self.fee_rate: list[int] = []  # per market, 1e-8
        self.market_pool: list[int] = []
        self.previous_mark: list[int] = []
        self.pools: list[int] = [0]
        self.ledger: list[tuple] = []  # (step, pool, market, account, amount, reason)
        self.history: list[tuple] = []  # (step, pool, balance)
        self.insurance_deposits = 0
        self.max_drawdown = R
        self.window = 1
        self.step = 0
        self.opening: list[int] = []  # pool balances when the current step began

    # ------------------------------------------------------------ configuration

    def add_market(self, symbol, qty_decimals, price_decimals, mmr, imr, tiers=None, fee=0, own_pool=False, mark=None,
                   mark_decimals=None) -> int:
        m = super().add_market(symbol, qty_decimals, price_decimals, mmr, imr, tiers, mark_decimals)
        self.fee_rate.append(fee)
        self.market_pool.append(0)
        self.previous_mark.append(0)
        if mark is not None:
            self.set_marks([m], [mark])
        if own_pool:
            self.give_market_own_pool(m)
        return m

    def give_market_own_pool(self, m: int) -> int:
        if self.market_pool[m] == 0:
            self.pools.append(0)
            self.market_pool[m] = len(self.pools) - 1
        return self.market_pool[m]

    def set_marks(self, markets, prices) -> None:
        old = [mk.mark for mk in self.markets]
        super().set_marks(markets, prices)
        for m, p in zip(markets, prices):
            if old[m] != p:
                self.previous_mark[m] = old[m]

    def insurance_deposit(self, amount: int, pool: int = 0) -> None:
        if amount < 0:
            raise InvalidInput("negative insurance deposit")
        if not 0 <= pool < len(self.pools):
            raise UnknownId(f"unknown pool {pool}")
        self._fund_move(pool, -1, 0, amount, "deposit")
        self.insurance_deposits += amount

    def set_drawdown_rule(self, max_drawdown: int, window: int) -> None:
        self.max_drawdown, self.window = max_drawdown, window

    # ---------------------------------------------------------------- the fund

    def _fund_move(self, pool, market, account, amount, reason):
        assert self.pools[pool] + amount >= 0, "pools never go negative"
        self.pools[pool] += amount
        self.ledger.append((self.step, pool, market, account, amount, reason))

    def available(self, pool: int) -> int:
        """Section 4: the drawdown rule."""
        now = self.pools[pool]
        if self.max_drawdown >= R:
            return now
        # closing balances of the last `window` steps (the current step is self.step)
        closing = [b for (s, p, b) in self.history if p == pool and self.step - self.window <= s < self.step]
        opening = self.opening[pool] if pool < len(self.opening) else 0
        peak = max([now, opening] + closing)
        floor_amount = ceil_div(peak * (R - self.max_drawdown), R)
        return max(0, now - floor_amount)

    def check_invariants(self) -> None:
        cash = sum(a.balance for a in self.accounts.values()) - self._sum_entry()
        flows = self.deposits - self.withdrawals - self.loaded_entry_notional + self.insurance_deposits
        if cash + sum(self.pools) != flows:
            raise InvariantViolation(f"conservation: cash {cash} + fund {sum(self.pools)} != {flows}")
        if any(b < 0 for b in self.pools):
            raise InvariantViolation("negative pool")
        for m in range(len(self.markets)):
            if self.net_size(m) != 0:
                raise InvariantViolation(f"zero net size: market {m}")

    # ------------------------------------------------------------- small views

    def _mm_money(self, m: int, pos) -> int:
        return ceil_div(self._terms(m, pos).mm_VR, self.S * R)

    def _u_money(self, m: int, pos) -> int:
        return floor_div(self._terms(m, pos).u_V, self.S)

    def _equity(self, acct) -> int:
        return self._margin_row(acct).equity

    # ---------------------------------------------------------- section 7: scores

    def score(self, acct, m: int, ranking: str) -> int:
        pos = acct.positions[m]
        row = self._margin_row(acct)
        equity, maintenance = row.equity, row.maintenance
        u = self._u_money(m, pos)
        mark_value = self.value_money(m, pos.size, self.markets[m].mark)
        notional = abs(mark_value)
        E = pos.entry
        if ranking == "bitmex":
            pnl = floor_div(u * SCORE, max(1, abs(E)))
            mm_i = self._mm_money(m, pos)
            share = trunc_div(equity * mm_i, maintenance) if maintenance > 0 else equity
            lev = min(MAX_LEV, floor_div(notional * SCORE, share)) if share > 0 else MAX_LEV
            lev = max(lev, 1)
            s = trunc_div(pnl * lev, SCORE) if pnl > 0 else trunc_div(pnl * SCORE, lev)
        elif ranking == "binance":
            pnl = floor_div(max(0, u) * SCORE, max(10**self.money_decimals, acct.balance))
            ratio = floor_div(maintenance * SCORE, equity) if equity > 0 else 0
            s = min(pnl, MAX_LEV) * min(ratio, MAX_LEV) // SCORE
        elif ranking == "hyperliquid":
            if pos.size > 0:
                price_ratio = floor_div(notional * SCORE, max(1, abs(E)))
            else:
                price_ratio = floor_div(abs(E) * SCORE, max(1, notional))
            lev = min(MAX_LEV, floor_div(notional * SCORE, equity)) if equity > 0 else MAX_LEV
            s = min(price_ratio, MAX_LEV) * lev // SCORE
        else:
            raise InvalidInput(f"unknown ranking {ranking!r}")
        return clamp64(s)

    # ---------------------------------------------------- section 8: indicator

    def adl_ranking(self, m: int, ranking: str = "bitmex", deficit_split: str = "loss") -> list[dict]:
        """One row per position of market m, in account creation order."""
        self._market(m)
        self._require_marks()
        rows = []
        for acct in self.accounts.values():
            if m in acct.positions:
                q = acct.positions[m].size
                rows.append(dict(account=acct.account_id, side=1 if q > 0 else -1, size=q,
                                 score=self.score(acct, m, ranking), rank=0, light=0, expected_loss=0,
                                 _acct=acct))
        for side in (1, -1):
            mine = sorted((r for r in rows if r["side"] == side), key=lambda r: (-r["score"], r["account"]))
            n = len(mine)
            for k, r in enumerate(mine):
                r["rank"] = k + 1
                r["light"] = 5 - floor_div(5 * k, n)
            worst_gap, worst_lots = 0, 0
            for r in rows:  # bankrupt positions of the other side
                if r["side"] != -side:
                    continue
                acct = r["_acct"]
                equity = self._equity(acct)
                if equity >= 0:
                    continue
                # its position's gap between mark value and bankruptcy value (the waterfall's rule)
                gap = -equity_shares(self, acct, deficit_split)[m]
                if gap > worst_gap:
                    worst_gap, worst_lots = gap, abs(r["size"])
            left = worst_lots
            for r in mine:
                if left == 0:
                    break
                if self._margin_row(r["_acct"]).liquidatable:
                    continue
                lots = min(left, abs(r["size"]))
                r["expected_loss"] = floor_div(worst_gap * lots, worst_lots)
                left -= lots
        for r in rows:
            del r["_acct"]
        return rows

    # --------------------------------------------------------- the waterfall

    def liquidate(self, executor, mode="close", policy="queue", ranking="bitmex", adl_price="bankruptcy", theta=-1, cap=R,
                  lot=1, g="linear", seed=0, accounts=None, deficit_split="loss") -> Result:
        if not isinstance(executor, Exec):
            executor = exec_from_api(executor, self.money_decimals)
        for name, v, allowed in (("mode", mode, MODES), ("policy", policy, POLICIES),
                                 ("ranking", ranking, RANKINGS), ("adl_price", adl_price, ADL_PRICES)):
            if v not in allowed:
                raise InvalidInput(f"{name} must be one of {allowed} (got {v!r})")
        if mode == "close" and policy == "funding_index":
            raise InvalidInput("funding_index is a haircut policy")
        if not 0 <= executor.slippage <= R:
            raise InvalidInput("slippage out of range")
        if executor.account not in self.accounts:
            raise UnknownId(f"unknown executor account {executor.account}")
        if accounts is not None:
            for i, a in enumerate(accounts):
                if a not in self.accounts:
                    raise UnknownId(f"accounts[{i}]: unknown account {a}")
        self._require_marks()
        saved = copy.deepcopy(self.__dict__)
        try:
            # "none": no last resort, closes through the executor as in haircut mode, no haircut
            run = _Run(self, executor, "haircut" if policy == "none" else mode, policy, ranking, adl_price)
            run.theta, run.cap, run.lot, run.g, run.seed = theta, cap, lot, g, seed
            run.deficit_split = deficit_split
            return run.run(None if accounts is None else list(accounts))
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise


class _Run:
    """State of one liquidate() call (section 1)."""

    def __init__(self, ex: WaterfallReference, executor: Exec, mode, policy, ranking, adl_price):
        self.ex = ex
        self.deficit_split = "loss"
        self.cfg = executor
        self.mode, self.policy, self.ranking, self.adl_price = mode, policy, ranking, adl_price
        self.exec_acct = ex.accounts[executor.account]
        self.result = Result(Totals())
        self.t = self.result.totals
        self.excluded: set[int] = set()  # the round being liquidated: never winners
        self.settled_flat: set[int] = set()
        self.touched: list[int] = []  # winners of this round (ids, in first-touch order)
        self.counted: set[int] = set()
        self.queues: dict[tuple[int, int], list] = {}
        self.haircut_taken: dict[tuple[int, int], int] = {}
        # cap as a hard limit per step: (account, market, lots?) -> [allowance, used]
        self.cap_use: dict[tuple[int, int, bool], list[int]] = {}
        self.adl_markets: dict[int, list[int]] = {}
        self.pending: list[list] = []  # [account id, market, amount]
        self.theta, self.cap, self.lot, self.g, self.seed = -1, R, 1, "linear", 0
        self.random_walks = 0  # kernel allocations so far in this run_rounds (random walk seeds)
        self.round_key = 0  # the account a run_rounds started from (random walk seeds)
        self.demands: list[list] = []  # [account, market, sign, lots, value, bk, exec_price] for the round's shared ADL
        self.deferred: list[tuple] = []  # settlements waiting for the round's shared ADL
        self.promised: dict[int, int] = {}  # pool -> fund payments planned for the waiting accounts

    # -------------------------------------------------------------- helpers

    def event(self, kind, account, market, counterparty=0, size=0, amount=0, price=0, pool=-1, exec_price=0):
        self.result.events.append((self.ex.step, kind, account, market, counterparty, size, amount, price, pool, exec_price))

    def acct(self, a):
        return self.ex.accounts[a]

    def fill(self, a, m, dq, cash):
        """A close of dq lots for which account a receives `cash`."""
        self.ex._apply_fill(self.acct(a), m, dq, -cash)

    def eligible(self, a):
        """Section 5: neither the executor, nor in the round being liquidated, nor liquidatable."""
        if a == self.cfg.account or a in self.excluded:
            return False
        acct = self.acct(a)
        return not self.ex._margin_row(acct).liquidatable

    def liquidatable_now(self, a):
        acct = self.acct(a)
        return bool(acct.positions) and self.ex._margin_row(acct).liquidatable

    def mark_winner(self, b):
        if b not in self.touched:
            self.touched.append(b)
        if b not in self.counted:
            self.counted.add(b)
            self.t.accounts_touched += 1

    # ------------------------------------------------------------ section 2

    def closings(self, a, with_executor: bool) -> list[_Closing]:
        ex = self.ex
        acct = self.acct(a)
        cl = []
        cash = acct.balance
        for m in sorted(acct.positions):
            pos = acct.positions[m]
            cash -= pos.entry
            cl.append(_Closing(m, pos.size, ex.value_money(m, pos.size, ex.markets[m].mark), 0))
        shares = equity_shares(ex, acct, self.deficit_split)
        for c in cl:
            share = shares[c.m]
            c.bk_value = c.mark_value - share
            if with_executor:
                c.exec_price = self.executor_price(c.m, c.q)
                c.exec_value = ex.value_money(c.m, c.q, c.exec_price)
                c.deficit = c.bk_value - c.exec_value
        assert cash + sum(c.bk_value for c in cl) == 0
        return cl

    def executor_price(self, m, q):
        ex, cfg = self.ex, self.cfg
        p = ex.markets[m].mark
        rate = cfg.slippage if cfg.kind == "market" else 0
        if cfg.kind == "market" and cfg.depth > 0:
            notional = floor_div(abs(q) * p * 10 ** ex.k(m), ex.S)
            rate += cfg.impact_rate * notional // cfg.depth
        rate = min(rate, R)
        if q > 0:
            return max(1, floor_div(p * (R - rate), R))
        return ceil_div(p * (R + rate), R)

    # -------------------------------------------------------------- the fund

    def pay_from_fund(self, a, m, wanted):
        if wanted <= 0:
            return 0
        pool = self.ex.market_pool[m]
        paid = min(wanted, self.ex.available(pool) - self.promised.get(pool, 0))
        if paid <= 0:
            return 0
        self.ex._fund_move(pool, m, a, -paid, "deficit_payment")
        self.acct(a).balance += paid
        self.event("fund_payment", a, m, amount=paid, pool=pool)
        self.t.fund_used += paid
        return paid

    def take_fee(self, a, m, fee):
        pool = self.ex.market_pool[m]
        self.acct(a).balance -= fee
        self.ex._fund_move(pool, m, a, fee, "liquidation_fee")
        self.event("liquidation_fee", a, m, amount=-fee, pool=pool)
        self.t.fund_fees += fee

    # ------------------------------------------------------------- section 3

    def try_partial(self, a) -> bool:
        ex = self.ex
        self._partial_closings = []
        row = ex._margin_row(self.acct(a))
        if row.equity < 0 or not row.liquidatable:  # "account not bankrupt"
            return False
        cl = self.closings(a, True)
        self._partial_closings = cl
        # fraction f of every position: equity falls by f x (cost + fees), fees of the whole
        # close plus one rounding unit per position with a fee (money x R units)
        cost = sum(c.mark_value - c.exec_value for c in cl) * R
        fees = sum(abs(c.exec_value) * ex.fee_rate[c.m] + R for c in cl if ex.fee_rate[c.m] > 0)
        den = row.maintenance * R - cost - fees
        num = (row.maintenance - row.equity) * R
        if den <= 0 or num >= den:
            return False
        self.result.flags.add("partial")
        for c in cl:
            lots = min(abs(c.q), ceil_div(abs(c.q) * num, den))
            dq = -lots if c.q > 0 else lots
            cash = -ex.value_money(c.m, dq, c.exec_price)
            self.fill(a, c.m, dq, cash)
            self.fill(self.cfg.account, c.m, -dq, -cash)
            self.event("partial_fill", a, c.m, self.cfg.account, dq, cash, c.exec_price, exec_price=c.exec_price)
            fee = min(ceil_div(abs(cash) * ex.fee_rate[c.m], R), max(0, ex._equity(self.acct(a))))
            if fee > 0:
                self.take_fee(a, c.m, fee)
        self.t.partial_liquidations += 1
        acct = self.acct(a)
        return not acct.positions or not ex._margin_row(acct).liquidatable

    def liquidate_account(self, a):
        ex, cfg = self.ex, self.cfg
        self.t.liquidated_accounts += 1
        if cfg.kind == "market" and cfg.partial:
            done = self.try_partial(a)
            if not self.acct(a).positions:  # the partial fills closed everything: settle the rest
                cl = self._partial_closings
                self._last_closings = cl
                self.settle(a, [c.m for c in cl], [c.deficit for c in cl], [0] * len(cl))
                return
            if done:
                return
        if not self.acct(a).positions:
            return
        if cfg.kind == "backstop":
            for c in self.closings(a, False):
                self.fill(a, c.m, -c.q, c.bk_value)
                self.fill(cfg.account, c.m, c.q, -c.bk_value)
                px = clamp64(abs(c.bk_value) * ex.S // (abs(c.q) * 10 ** ex.k(c.m)))
                self.event("backstop_fill", a, c.m, cfg.account, -c.q, c.bk_value, px, exec_price=px)
            return
        cl = self.closings(a, True)
        self._last_closings = cl
        D = sum(c.deficit for c in cl)
        n = len(cl)
        adl_lots, planned = [0] * n, [0] * n
        reserved = 0
        if D > 0:
            self.t.deficit += D
            offset = sum(-c.deficit for c in cl if c.deficit < 0)
            for i, c in enumerate(cl):
                if c.deficit <= 0:
                    continue
                use = min(offset, c.deficit)
                offset -= use
                rest = c.deficit - use
                pool = ex.market_pool[c.m]
                same_pool = [j for j in range(i) if ex.market_pool[cl[j].m] == pool]
                # what accounts waiting for the round's shared ADL were promised is taken
                free = ex.available(pool) - self.promised.get(pool, 0)
                avail = free - sum(planned[j] for j in same_pool)
                planned[i] = max(0, min(rest, avail))
                if self.theta >= 0:
                    # needed: deficit matching against a counterfactual pool paying every deficit in turn
                    matching = max(0, min(rest, self.matching_pool[pool]))
                    self.matching_pool[pool] -= matching
                    self.t.last_resort_needed += rest - matching
                    # a fixed severity: at least theta of the deficit to the last resort
                    planned[i] = min(planned[i], rest - ceil_div(rest * self.theta, R))
                else:
                    self.t.last_resort_needed += rest - planned[i]
                last_resort = rest - planned[i]
                self.t.last_resort_planned += last_resort
                reserved += last_resort
                if self.mode == "close" and last_resort > 0:
                    adl_lots[i] = min(abs(c.q), ceil_div(abs(c.q) * last_resort, c.deficit))
        for i, c in enumerate(cl):
            s = 1 if c.q > 0 else -1
            closed = 0
            if adl_lots[i] > 0:
                if adl_lots[i] == abs(c.q):
                    value = c.bk_value
                else:
                    value = trunc_div(c.bk_value * adl_lots[i], abs(c.q))
                bk = value
                if self.adl_price != "bankruptcy":
                    mk = ex.markets[c.m]
                    if self.adl_price == "mark":
                        px = mk.mark
                    else:
                        px = ex.previous_mark[c.m] if ex.previous_mark[c.m] > 0 else mk.mark
                    value = ex.value_money(c.m, s * adl_lots[i], px)
                if self.mode == "close" and self.policy != "queue":  # section 5: shared at the round's end
                    self.demands.append([a, c.m, s, adl_lots[i], value, bk, c.exec_price])
                    closed = adl_lots[i]
                else:
                    closed = self.adl_close(a, c.m, adl_lots[i], value, bk, c.exec_price)
            exec_lots = abs(c.q) - closed
            if exec_lots > 0:
                cash = ex.value_money(c.m, s * exec_lots, c.exec_price)
                self.fill(a, c.m, -s * exec_lots, cash)
                self.fill(cfg.account, c.m, s * exec_lots, -cash)
                self.event("liquidation_fill", a, c.m, cfg.account, -s * exec_lots, cash, c.exec_price, exec_price=c.exec_price)
        keep = reserved if self.theta >= 0 and self.mode == "haircut" else 0
        if self.demands and self.demands[-1][0] == a:
            for c, p in zip(cl, planned):
                pool = ex.market_pool[c.m]
                self.promised[pool] = self.promised.get(pool, 0) + p
            self.deferred.append((a, cl, planned, keep))
            return
        self.settle(a, [c.m for c in cl], [c.deficit for c in cl], planned, keep)

    def settle(self, a, markets, deficits, planned, reserved=0):
        acct = self.acct(a)
        assert not acct.positions
        if acct.balance > 0:
            return self.charge_fee(a)
        for i, m in enumerate(markets):
            if acct.balance < 0 and planned[i] > 0:
                self.pay_from_fund(a, m, min(planned[i], -acct.balance))
        reserved = min(reserved, max(0, -acct.balance))  # kept for the haircuts (a fixed theta)
        for m in markets:
            if acct.balance + reserved < 0:
                self.pay_from_fund(a, m, -acct.balance - reserved)
        if acct.balance < 0:
            worst = 0
            for i in range(1, len(markets)):
                if deficits[i] > deficits[worst]:
                    worst = i
            self.pending.append([a, markets[worst], -acct.balance])

    def charge_fee(self, a):
        # "at most ceil(|exec_value_i| * fee_rate / R) each": the closings of the full close
        surplus = self.acct(a).balance
        for c in self._last_closings:
            if surplus <= 0:
                break
            fee = min(surplus, ceil_div(abs(c.exec_value) * self.ex.fee_rate[c.m], R))
            if fee <= 0:
                continue
            self.take_fee(a, c.m, fee)
            surplus -= fee

    # ------------------------------------------------------------- section 5

    def queue_take(self, m, side, lots):
        """Section 5, queue: each pop takes the eligible opposite-side winner with the highest
        score from its current state (ties: smaller id)."""
        ex = self.ex
        takes, taken, left = [], set(), lots
        while left > 0:
            best = None
            for acct in ex.accounts.values():
                b = acct.account_id
                if b in taken or m not in acct.positions or (acct.positions[m].size > 0) != (side > 0):
                    continue
                if not self.eligible(b):
                    continue
                key = (ex.score(acct, m, self.ranking), -b)
                if best is None or key > best[0]:
                    best = (key, b, abs(acct.positions[m].size))
            if best is None:
                break
            take = min(left, best[2])
            takes.append((best[1], take))
            taken.add(best[1])
            left -= take
        return takes

    def round_adl(self):
        """Section 5, shared policies: per market and side, the round's demands are allocated
        at once over the opposite-side winners (creation order), whose lots then go to the
        demands in liquidation order; the executor takes what is left."""
        ex = self.ex
        groups: dict[tuple[int, int], list] = {}
        for d in self.demands:
            groups.setdefault((d[1], -d[2]), []).append(d)  # markets ascending, longs (+1) first
        for (m, _), demands in sorted(groups.items()):
            side = -demands[0][2]
            who, w = [], []
            for acct in ex.accounts.values():
                b = acct.account_id
                if not self.eligible(b) or m not in acct.positions:
                    continue
                if (acct.positions[m].size > 0) != (side > 0):
                    continue
                who.append(b)
                w.append(abs(acct.positions[m].size))
            total = sum(d[3] for d in demands)
            budget = min(total, sum(w))
            if budget < total:
                self.result.flags.add("pro_rata_shortage")
            if self.policy in KERNEL_POLICIES:
                x = self.kernel_allocate(budget, who, w, m, lots=True)
            else:
                x = allocate_capped_pro_rata(budget, w, w, who)
            wi = 0
            for a, _, s, lots, value, bk, exec_price in demands:
                takes, left = [], lots
                while left > 0 and wi < len(who):
                    if x[wi] == 0:
                        wi += 1
                        continue
                    t = min(left, x[wi])
                    takes.append((who[wi], t))
                    x[wi] -= t
                    left -= t
                closed = self.apply_takes(a, m, s, lots, value, bk, exec_price, takes)
                if lots > closed:
                    rest = lots - closed
                    cash = ex.value_money(m, s * rest, exec_price)
                    self.fill(a, m, -s * rest, cash)
                    self.fill(self.cfg.account, m, s * rest, -cash)
                    self.event("liquidation_fill", a, m, self.cfg.account, -s * rest, cash, exec_price, exec_price=exec_price)
        self.demands = []
        for a, cl, planned, keep in self.deferred:
            for c, p in zip(cl, planned):  # the promise becomes a payment
                self.promised[ex.market_pool[c.m]] -= p
            self._last_closings = cl
            self.settle(a, [c.m for c in cl], [c.deficit for c in cl], planned, keep)
        self.deferred = []

    def adl_close(self, a, m, lots, value, bk, exec_price):
        q = self.acct(a).positions[m].size
        s = 1 if q > 0 else -1
        return self.apply_takes(a, m, s, lots, value, bk, exec_price, self.queue_take(m, -s, lots))

    def adl_limit(self, b, m, dq):
        """The most winner b can pay for closing dq lots of m at no cost: its equity stays at
        least min(0, its equity now) (section 5, ADL bounds)."""
        ex = self.ex
        acct = self.acct(b)
        U = sum(t.u_V for t in ex._account_terms(acct))
        after = acct.balance + floor_div(U + dq * ex.markets[m].mark * 10 ** ex.k(m), ex.S)
        return after - min(0, ex._equity(acct))

    def apply_takes(self, a, m, s, lots, value, bk, exec_price, takes):
        ex = self.ex
        closed = sum(x for _, x in takes)
        if closed == 0:
            return 0
        if closed < lots:
            self.result.flags.add("adl_shortage")
            value = trunc_div(value * closed, lots)
            bk = trunc_div(bk * closed, lots)
        assigned = owed_assigned = cum = 0
        for i, (b, x) in enumerate(takes):
            cum += x
            last = i == len(takes) - 1
            v = value - assigned if last else trunc_div(value * cum, closed) - assigned
            owed = bk - owed_assigned if last else trunc_div(bk * cum, closed) - owed_assigned
            assigned += v
            owed_assigned += owed
            limit = self.adl_limit(b, m, s * x)
            pay = min(v, limit)
            if pay < owed:  # the fund pays the gap if it can, then the same winner up to its limit
                from_fund = self.pay_from_fund(a, m, owed - pay)
                pay += min(owed - pay - from_fund, limit - pay)
            v = pay
            self.fill(b, m, s * x, -v)
            self.fill(a, m, -s * x, v)

            self.adl_markets.setdefault(b, [])
            if m not in self.adl_markets[b]:
                self.adl_markets[b].append(m)
            self.mark_winner(b)
            px = clamp64(abs(v) * ex.S // (x * 10 ** ex.k(m)))
            self.event("adl_close", b, m, a, s * x, -v, px, exec_price=exec_price)
            self.t.adl_notional += abs(v)
            self.t.adl_closes += 1
            if v > owed:  # more than the bankruptcy value: the excess is the fund's
                self.take_fee(a, m, v - owed)
        return closed

    # ------------------------------------------------------------- section 6

    def haircut(self, m, amount):
        if amount <= 0 or self.policy == "none":
            return 0
        ex = self.ex
        who, weight, cap = [], [], []
        for acct in ex.accounts.values():
            b = acct.account_id
            if not self.eligible(b) or m not in acct.positions:
                continue
            pos = acct.positions[m]
            free = max(0, ex._equity(acct))
            if self.policy == "funding_index":
                c = free
            else:
                c = min(free, max(0, ex._u_money(m, pos)) - self.haircut_taken.get((b, m), 0))
            if c <= 0:
                continue
            who.append(b)
            cap.append(c)
            weight.append(abs(pos.size) if self.policy == "funding_index" else c)
        budget = min(amount, sum(cap))
        x = [0] * len(who)
        if budget > 0:
            if self.policy == "queue":
                order = sorted(range(len(who)), key=lambda i: (-ex.score(self.acct(who[i]), m, self.ranking), who[i]))
                left = budget
                for i in order:
                    x[i] = min(left, cap[i])
                    left -= x[i]
            elif self.policy in KERNEL_POLICIES:
                x = self.kernel_allocate(budget, who, cap, m, lots=False)
            else:
                x = allocate_capped_pro_rata(budget, weight, cap, who)
        raised = 0
        for b, xi in zip(who, x):
            if xi == 0:
                continue
            self.acct(b).balance -= xi
            self.haircut_taken[(b, m)] = self.haircut_taken.get((b, m), 0) + xi
            self.mark_winner(b)
            self.event("haircut", b, m, amount=-xi)
            raised += xi
        self.t.haircut_total += raised
        return raised

    def kernel_allocate(self, budget, who, capacity, m, lots):
        """The policies served by the allocation kernel; winners in account creation order."""
        ex = self.ex
        if not who or budget == 0:
            return [0] * len(who)
        kw = {}
        if self.policy == "capped_pro_rata":
            kw["cap"] = [self.cap] * len(who)
        elif self.policy == "risk_aware":
            lev = []
            for b in who:
                acct = self.acct(b)
                notional = abs(ex.value_money(m, acct.positions[m].size, ex.markets[m].mark))
                eq = self.start_equity[b]
                lev.append(min(MAX_ALLOC_LEV, notional * ra.SCALE // eq) if eq > 0 else MAX_ALLOC_LEV)
            kw.update(leverage=lev, cap=[self.cap] * len(who), g=self.g)
        elif self.policy == "min_max_lots":
            kw["lot"] = self.lot
        elif self.policy == "random_walk":
            mix = ra.splitmix64(ra.splitmix64(self.seed) ^ (self.round_key & MASK64))
            kw["seed"] = ra.splitmix64(mix ^ ((m | (self.random_walks << 16)) & MASK64))
            self.random_walks += 1
        x = ra.allocate(budget, list(capacity), self.policy, clip=True, **kw)
        if self.policy == "min_max_lots" and sum(x) > budget:
            # the winner with the largest fraction (ties: first) gives back the excess
            top = None
            for i, xi in enumerate(x):
                if xi > 0 and (top is None or xi * capacity[top] > x[top] * capacity[i]):
                    top = i
            x[top] -= sum(x) - budget
        if self.policy in ("capped_pro_rata", "risk_aware") and self.cap < R:
            # a winner offered again keeps floor(cap x its first capacity) minus what it gave
            for i, b in enumerate(who):
                use = self.cap_use.setdefault((b, m, lots), [capacity[i] * self.cap // R, 0])
                x[i] = min(x[i], use[0] - use[1])
                use[1] += x[i]
        return x

    def credit(self, a, m, amount):
        self.acct(a).balance += amount
        self.event("socialized_credit", a, m, amount=amount)

    def resolve_pending(self):
        if not self.pending:
            return
        n = len(self.ex.markets)
        wanted = [0] * n
        for _a, m, amt in self.pending:
            wanted[m] += amt
        raised = [self.haircut(m, wanted[m]) if wanted[m] > 0 else 0 for m in range(n)]
        unpaid = 0
        for p in self.pending:
            pay = min(raised[p[1]], p[2])
            raised[p[1]] -= pay
            p[2] -= pay
            unpaid += p[2]
            if pay > 0:
                self.credit(p[0], p[1], pay)
        if unpaid > 0:
            extra = 0
            for m in range(n):
                if extra >= unpaid:
                    break
                extra += self.haircut(m, unpaid - extra)
            for p in self.pending:
                pay = min(extra, p[2])
                extra -= pay
                p[2] -= pay
                if pay > 0:
                    self.credit(p[0], -1, pay)
                if p[2] > 0 and self.theta >= 0:  # the winners are exhausted: the fund pays what it kept
                    p[2] -= self.pay_from_fund(p[0], p[1], p[2])
                if p[2] > 0:
                    self.event("bad_debt", p[0], -1, amount=p[2])
                    self.t.bad_debt += p[2]
        self.pending = []

    # ------------------------------------------------------------- section 1

    def run(self, accounts=None) -> Result:
        ex = self.ex
        for mk in ex.markets:  # 1.1: marks of moved markets are revalued
            mk.valued_mark = mk.mark
        ex.step += 1  # 1.2
        ex.opening = list(ex.pools)  # section 4: the drawdown peak includes the opening balance
        self.t.step = ex.step
        # the risk-aware policy's leverage uses the equity of the start of the step
        self.start_equity = {a: ex._equity(acct) for a, acct in ex.accounts.items()}
        self.matching_pool = [ex.available(p) for p in range(len(ex.pools))]
        if any(not acct.positions and acct.balance < 0 for acct in ex.accounts.values()):
            self.result.flags.add("flat_debt_before")  # left alone: only accounts with positions are candidates
        per_account = self.policy in ("queue", "random_walk")
        if accounts is None:  # detection: every liquidatable account, worst first
            order = self.worst_first_liquidatable(ex.accounts)
            if per_account:
                for a in order:
                    if self.liquidatable_now(a):
                        self.run_rounds([a])
            else:
                self.run_rounds(order)
        else:  # the given accounts, in the order given
            round_ = []
            for a in accounts:
                if a == self.cfg.account or not self.liquidatable_now(a) or (not per_account and a in round_):
                    self.result.skipped.append(a)
                elif per_account:
                    self.run_rounds([a])
                else:
                    round_.append(a)
            if round_:
                self.run_rounds(round_)
        for pool, bal in enumerate(ex.pools):  # 1.8
            ex.history.append((ex.step, pool, bal))
        return self.result

    def worst_first_liquidatable(self, accounts):
        """Sections 1.3-1.4: the liquidatable accounts with positions (not the executor's), worst first."""
        cands = []
        for a in accounts:
            acct = self.acct(a)
            if a == self.cfg.account or not acct.positions:
                continue
            row = self.ex._margin_row(acct)
            if row.liquidatable:
                cands.append((a, row.equity, row.maintenance))
        return [a for a, _, _ in _worst_first(cands)]

    def run_rounds(self, checked):
        """Liquidates `checked` as one round, then the cascade rounds it causes (section 1)."""
        ex = self.ex
        self.round_key = checked[0] if checked else 0
        self.random_walks = 0
        first = True
        while checked:
            if first:
                work = list(checked)
            else:
                for a in checked:  # 1.7: winners ADL left flat with a negative balance
                    acct = self.acct(a)
                    if not acct.positions and acct.balance < 0 and a not in self.settled_flat:
                        self.settled_flat.add(a)
                        self.result.flags.add("settle_flat")
                        self._last_closings = []
                        ms = self.adl_markets.get(a, [])
                        self.settle(a, ms, [1] * len(ms), [0] * len(ms))
                work = self.worst_first_liquidatable(checked)
                if work:
                    self.result.flags.add("cascade")
                if not work and self.pending:
                    self.result.flags.add("pending_without_candidates")
            first = False
            self.excluded = set(work)
            for a in work:
                self._last_closings = []
                self.liquidate_account(a)
            self.round_adl()
            self.resolve_pending()
            self.excluded = set()
            order = {a: i for i, a in enumerate(ex.accounts)}
            checked = sorted(self.touched, key=order.__getitem__)
            self.touched = []


def _worst_first(cands):
    """Section 1.4: equity <= 0 first by equity ascending; then maintenance / equity
    descending (exact); ties by id."""
    import functools

    def cmp(x, y):
        xb, yb = x[1] <= 0, y[1] <= 0
        if xb != yb:
            return -1 if xb else 1
        if xb:
            if x[1] != y[1]:
                return -1 if x[1] < y[1] else 1
            return -1 if x[0] < y[0] else 1
        lhs, rhs = x[2] * y[1], y[2] * x[1]
        if lhs != rhs:
            return -1 if lhs > rhs else 1
        return -1 if x[0] < y[0] else 1

    return sorted(cands, key=functools.cmp_to_key(cmp))


def allocate_capped_pro_rata(budget: int, weight: list[int], cap: list[int], ids: list[int]) -> list[int]:
    """Section 6 water-filling: x_i = min(cap_i, h * w_i) with sum(x) = budget."""
    n = len(weight)
    assert 0 <= budget <= sum(c for c, w in zip(cap, weight) if w > 0)
    x = [0] * n
    if budget == 0:
        return x
    import functools

    def by_ratio(i, j):  # cap_i / w_i ascending, ties by id
        lhs, rhs = cap[i] * weight[j], cap[j] * weight[i]
        if lhs != rhs:
            return -1 if lhs < rhs else 1
        return -1 if ids[i] < ids[j] else 1

    order = sorted((i for i in range(n) if weight[i] > 0 and cap[i] > 0), key=functools.cmp_to_key(by_ratio))
    left, w_left = budget, sum(weight[i] for i in order)
    k = 0
    while k < len(order):
        i = order[k]
        if cap[i] * w_left > left * weight[i]:  # cap above the level h = left / w_left
            break
        x[i] = cap[i]
        left -= cap[i]
        w_left -= weight[i]
        k += 1
    if left == 0 or k == len(order):
        return x
    rest = order[k:]
    rem = []
    for i in rest:
        x[i] = left * weight[i] // w_left
        rem.append((left * weight[i] % w_left, i))
    extra = left - sum(x[i] for i in rest)
    rem.sort(key=lambda r: (-r[0], ids[r[1]]))
    for _, i in rem[:extra]:
        x[i] += 1
    return x
