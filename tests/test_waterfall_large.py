"""A waterfall step on a book large enough (>= 2**16 positions) that the step's revaluation
takes one full pass and fills the start-of-step margins from it; the same step with the
caches already current (so the step computes those margins itself) must give the same
events, totals and state."""

from __future__ import annotations

import numpy as np
import pytest
from waterfall_harness import engine_totals

from deleverage import MarketClose
from deleverage.books import MARKET_MAKER, sample_exchange

EVENT_COLUMNS = ("step", "kind", "account", "market", "counterparty", "size", "amount", "price", "pool", "exec_price")


def snapshot(ex, res):
    pos = ex.positions(exact=True)
    ids = ex.account_ids()
    return dict(
        totals=engine_totals(res),
        events={c: np.asarray(getattr(res.events, c)).tolist() for c in EVENT_COLUMNS},
        positions={c: getattr(pos, c).tolist() for c in ("account", "market", "size", "entry_notional")},
        balances=[ex.balance(int(a), exact=True) for a in ids],
        fund=ex.insurance.balance(exact=True),
    )


@pytest.mark.parametrize("mode,policy", [("close", "queue"), ("close", "risk_aware"), ("haircut", "pro_rata")])
def test_full_pass_start_margins_equal_computed_ones(mode, policy):
    base = sample_exchange(70_000, 7_000, 8, seed=5, leverage=8, threads=2)
    base.insurance.deposit(100.0)
    marks = base.marks(exact=True)
    shocked = (marks * 0.9).astype(np.int64)
    outs = []
    for precheck in (False, True):
        ex = base.copy()
        ex.set_marks(np.arange(len(marks), dtype=np.int32), shocked, exact=True)
        if precheck:
            ex.check_margin(exact=True)  # caches current: the step revalues nothing
        res = ex.liquidate(executor=MarketClose(MARKET_MAKER, slippage_bps=50), mode=mode, policy=policy, exact=True)
        ex.check_invariants()
        outs.append(snapshot(ex, res))
    assert outs[0]["totals"]["liquidated_accounts"] > 0
    assert outs[0]["totals"]["adl_closes"] + outs[0]["totals"]["haircut_total"] > 0  # the last resort ran
    assert outs[0] == outs[1]
