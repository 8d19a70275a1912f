"""The engine's waterfall configuration as a bound type: its enums' names are the Python API's
value names in engine code order, it pickles (the stress runner ships it to workers) through
the journal's encoding, and the compiled liquidate() takes nothing else."""

from __future__ import annotations

import pickle

import pytest
from test_snapshot import busy_exchange

from deleverage import MarketClose, _core
from deleverage.errors import InvalidInput

# The engine's codes (cpp/include/deleverage/waterfall.hpp, policy.hpp), written out here so a
# renumbered or renamed member fails this test rather than silently shifting a name table.
ENGINE_CODES = {
    _core.WaterfallMode: {"close": 0, "haircut": 1},
    _core.Ranking: {"bitmex": 0, "binance": 1, "hyperliquid": 2},
    _core.AdlPrice: {"bankruptcy": 0, "mark": 1, "previous_mark": 2},
    _core.DeficitSplit: {"loss": 0, "maintenance": 1},
    _core.ExecutorKind: {"market_close": 0, "backstop": 1},
    _core.AdlRefresh: {"exact": 0, "interval": 1},
    _core.Policy: {"queue": 0, "pro_rata": 1, "funding_index": 2, "capped_pro_rata": 3, "risk_aware": 4,
                   "min_max_lots": 5, "random_walk": 6, "none": 7},
}


@pytest.mark.parametrize("enum", list(ENGINE_CODES), ids=lambda e: e.__name__)
def test_enum_names_follow_the_engine_codes(enum) -> None:
    assert {name: int(member) for name, member in enum.__members__.items()} == ENGINE_CODES[enum]
    assert list(enum.__members__) == sorted(ENGINE_CODES[enum], key=ENGINE_CODES[enum].get)


def test_policy_members_are_the_name_table() -> None:
    assert tuple(_core.Policy.__members__) == tuple(_core.POLICY_NAMES)


def a_config() -> _core.WaterfallConfig:
    return _core.WaterfallConfig(
        executor=_core.ExecutorSpec(kind=_core.ExecutorKind.market_close, account=9, slippage_rate=12_345,
                                    impact_rate=7, impact_depth=1_000, partial=True),
        mode=_core.WaterfallMode.haircut, policy=_core.Policy.risk_aware, ranking=_core.Ranking.hyperliquid,
        adl_price=_core.AdlPrice.previous_mark, theta=25_000_000, cap=60_000_000, lot=3,
        g=_core.RiskFunction("excess:1.5"), seed=2**64 - 1, deficit_split=_core.DeficitSplit.maintenance)


def fields(c: _core.WaterfallConfig) -> tuple:
    e = c.executor
    return (e.kind, e.account, e.slippage_rate, e.impact_rate, e.impact_depth, e.partial, c.mode, c.policy, c.ranking,
            c.adl_price, c.theta, c.cap, c.lot, c.g.kind, c.g.param, c.seed, c.deficit_split)


def test_a_config_pickles_field_for_field() -> None:
    c = a_config()
    back = pickle.loads(pickle.dumps(c))
    assert fields(back) == fields(c)
    assert fields(back)[-4:] == (_core.RiskFunction.Kind.excess, 1.5, 2**64 - 1, _core.DeficitSplit.maintenance)


def test_defaults_are_the_engine_defaults() -> None:
    c = _core.WaterfallConfig(executor=_core.ExecutorSpec(kind=_core.ExecutorKind.backstop, account=1))
    assert (c.mode, c.policy, c.ranking, c.adl_price, c.theta, c.cap, c.lot, c.seed, c.deficit_split) == (
        _core.WaterfallMode.close, _core.Policy.queue, _core.Ranking.bitmex, _core.AdlPrice.bankruptcy, -1,
        100_000_000, 1, 0, _core.DeficitSplit.loss)
    assert c.g.kind == _core.RiskFunction.Kind.linear


def test_a_bad_risk_function_is_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="unknown risk function 'cubic'"):
        _core.RiskFunction("cubic")


def test_the_compiled_liquidate_takes_a_config_only() -> None:
    ex = busy_exchange()
    with pytest.raises(TypeError):
        ex.core.liquidate((0, 9, 0, 0, 0, False, 0, 0, 0, 0))


def test_the_engine_range_checks_a_config() -> None:
    ex = busy_exchange()
    engine = ex.core
    before = ex.state_hash()
    c = _core.WaterfallConfig(executor=_core.ExecutorSpec(kind=_core.ExecutorKind.market_close, account=9),
                              theta=100_000_001)
    with pytest.raises(InvalidInput, match="theta"):
        engine.liquidate(c)
    assert ex.state_hash() == before
    # the same step through Exchange.liquidate and through the bound config give one result
    a, b = busy_exchange(), busy_exchange()
    for x in (a, b):
        x.set_marks(["BTC"], [1.0])  # account 4 (long 0.1 BTC from 101) falls under maintenance
    result = a.liquidate(executor=MarketClose(counterparty=9), policy="pro_rata", exact=True)
    assert result.totals.liquidated_accounts > 0
    b.core.liquidate(_core.WaterfallConfig(
        executor=_core.ExecutorSpec(kind=_core.ExecutorKind.market_close, account=9), policy=_core.Policy.pro_rata))
    assert a.state_hash() == b.state_hash()
