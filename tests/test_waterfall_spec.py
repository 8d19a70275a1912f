"""deleverage.WaterfallSpec: the one waterfall configuration of liquidate, stress, compare and
the command line. Construction errors name the field (liquidate's messages); a spec and the
same keywords give the same step; one spec serves several exchanges; stress and compare take it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from books import two_market_exchange
from test_compare import adl_exchange_at_100, snapshot
from test_metrics import EXEC, random_exchange
from test_waterfall_config import fields

import deleverage as dl
from deleverage import MarketClose, WaterfallSpec, _core
from deleverage.errors import ConfigError, InvalidInput
from deleverage.scenarios import Shock

MM4 = MarketClose(counterparty=4, slippage_bps=0)

BAD = [
    (dict(mode="both"), InvalidInput, "mode must be one of close, haircut (got 'both')"),
    (dict(policy="fifo"), InvalidInput, "policy must be one of "),
    (dict(ranking="okx"), InvalidInput, "ranking must be one of bitmex, binance, hyperliquid (got 'okx')"),
    (dict(adl_price="last"), InvalidInput, "adl_price must be one of bankruptcy, mark, previous_mark (got 'last')"),
    (dict(policy="funding_index"), InvalidInput, "policy 'funding_index' is a haircut policy: use mode='haircut'"),
    (dict(theta=1.5), InvalidInput, "theta must be a number between 0 and 1 (got 1.5)"),
    (dict(theta="half"), InvalidInput, "theta must be a number between 0 and 1"),
    (dict(cap=0.5), InvalidInput, "cap is not used by policy 'queue' (only capped_pro_rata and risk_aware)"),
    (dict(policy="capped_pro_rata"), InvalidInput, "policy 'capped_pro_rata' needs cap"),
    (dict(policy="capped_pro_rata", cap=-0.1), InvalidInput, "cap must be a number between 0 and 1 (got -0.1)"),
    (dict(lot=2), InvalidInput, "lot is not used by policy 'queue' (only min_max_lots)"),
    (dict(policy="min_max_lots", lot=0), InvalidInput, "lot must be positive (got 0)"),
    (dict(policy="min_max_lots", lot=1.5), InvalidInput, "lot: expected integers"),
    (dict(policy="min_max_lots", mode="haircut", lot=-2.0), InvalidInput, "lot must be positive (got -2.0)"),
    (dict(g=2), InvalidInput, "g must be a string"),
    (dict(g="power:2"), InvalidInput, "g is not used by policy 'queue' (only risk_aware)"),
    (dict(seed=-1), InvalidInput, r"seed must be an integer in [0, 2**64) (got -1)"),
    (dict(seed=2**64), InvalidInput, "seed must be an integer in [0, 2**64)"),
    (dict(seed=True), InvalidInput, "seed must be an integer in [0, 2**64) (got True)"),
    (dict(deficit_split="equal"), ConfigError, "deficit_split must be one of loss, maintenance (got 'equal')"),
]


@pytest.mark.parametrize("options, error, message", BAD)
def test_construction_refuses_with_liquidates_message(options, error, message) -> None:
    with pytest.raises(error) as spec_err:
        WaterfallSpec(executor=EXEC, **options)
    assert message in str(spec_err.value)
    # liquidate's keywords are refused with the same error, and nothing changes
    ex = adl_exchange_at_100()
    ex.set_marks([0], np.array([89], dtype=np.int64), exact=True)
    before, hashed = snapshot(ex), ex.state_hash()
    with pytest.raises(error) as kw_err:
        ex.liquidate(executor=EXEC, **options)
    assert type(kw_err.value) is type(spec_err.value) and str(kw_err.value) == str(spec_err.value)
    assert snapshot(ex) == before and ex.state_hash() == hashed


def test_bad_executors_are_refused() -> None:
    with pytest.raises(InvalidInput, match="executor must be a MarketClose or a Backstop .got str."):
        WaterfallSpec(executor="MM")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="executor account"):
        WaterfallSpec(executor=MarketClose(counterparty=1.5))  # type: ignore[arg-type]
    # an impact depth below one money unit needs the exchange: refused by engine_config
    tiny = MarketClose(counterparty=9, impact=dl.Impact(depth=1e-9, bps_per_depth=1.0))
    spec = WaterfallSpec(executor=tiny)
    with pytest.raises(ConfigError, match=r"impact.depth 1e-09 is less than one money unit \(10\*\*-6\)"):
        spec.engine_config(dl.Exchange())
    # a spec without an executor runs only where the call supplies one
    with pytest.raises(InvalidInput, match="executor must be a MarketClose or a Backstop"):
        WaterfallSpec().engine_config(dl.Exchange())


def test_frozen_keyword_only_and_replace_checks_again() -> None:
    spec = WaterfallSpec(executor=EXEC, policy="capped_pro_rata", cap=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.policy = "queue"  # type: ignore[misc]
    with pytest.raises(TypeError):
        WaterfallSpec(EXEC)  # type: ignore[misc]
    with pytest.raises(InvalidInput, match="cap is not used by policy 'queue'"):
        spec.replace(policy="queue")
    assert spec.replace(cap=0.25).cap == 0.25 and spec.cap == 0.5


def test_parse_reads_the_names_of_the_command_line() -> None:
    assert WaterfallSpec.parse("haircut:pro_rata") == WaterfallSpec(mode="haircut", policy="pro_rata")
    assert WaterfallSpec.parse("funding_index").mode == "haircut"
    assert WaterfallSpec.parse("pro_rata", mode="haircut").mode == "haircut"
    assert WaterfallSpec.parse("close:queue", mode="haircut").mode == "close"  # the written mode wins
    with pytest.raises(InvalidInput, match="haircut policy"):  # an implied mode gives way to a given one
        WaterfallSpec.parse("funding_index", mode="close")
    with pytest.raises(InvalidInput, match="unknown policy 'fifo'"):
        WaterfallSpec.parse("fifo")
    with pytest.raises(InvalidInput, match="unknown mode 'both'"):
        WaterfallSpec.parse("both:queue")


def test_names_and_keywords() -> None:
    assert WaterfallSpec(policy="capped_pro_rata", cap=0.5).name == "capped_pro_rata (cap=0.5)"
    assert WaterfallSpec.parse("haircut:pro_rata").name == "haircut:pro_rata"
    assert WaterfallSpec.parse("funding_index").name == "funding_index"
    assert WaterfallSpec(policy="queue", label="mine").name == "mine"
    assert WaterfallSpec(policy="random_walk", seed=3, theta=1.0).keywords() == {
        "mode": "close", "policy": "random_walk", "theta": 1.0, "seed": 3}


def test_engine_config_units_for_each_exchange() -> None:
    # one spec, exchanges of different money decimals and default deficit splits: the lot of
    # haircut mode is quote currency (0.5 -> 500_000 units at 6 decimals, 50 at 2), or units
    # when exact; deficit_split=None is each exchange's own
    spec = WaterfallSpec(executor=MarketClose(counterparty=9, slippage_bps=20), mode="haircut", policy="min_max_lots",
                         lot=0.5)
    six = spec.engine_config(dl.Exchange(6))
    two = spec.engine_config(dl.Exchange(2, deficit_split="maintenance"))
    assert fields(six) == (_core.ExecutorKind.market_close, 9, 200_000, 0, 0, False, _core.WaterfallMode.haircut,
                           _core.Policy.min_max_lots, _core.Ranking.bitmex, _core.AdlPrice.bankruptcy, -1,
                           100_000_000, 500_000, _core.RiskFunction.Kind.linear, 0.0, 0, _core.DeficitSplit.loss)
    assert two.lot == 50 and two.deficit_split == _core.DeficitSplit.maintenance and fields(six)[:12] == fields(two)[:12]
    assert spec.replace(lot=5).engine_config(dl.Exchange(6), exact=True).lot == 5
    assert spec.replace(deficit_split="loss").engine_config(
        dl.Exchange(2, deficit_split="maintenance")).deficit_split == _core.DeficitSplit.loss
    backstop = WaterfallSpec(executor=dl.Backstop(account=3), theta=0.25, policy="risk_aware", cap=0.5, g="power:2")
    assert fields(backstop.engine_config(dl.Exchange())) == (
        _core.ExecutorKind.backstop, 3, 0, 0, 0, False, _core.WaterfallMode.close, _core.Policy.risk_aware,
        _core.Ranking.bitmex, _core.AdlPrice.bankruptcy, 25_000_000, 50_000_000, 1, _core.RiskFunction.Kind.power, 2.0,
        0, _core.DeficitSplit.loss)


def test_a_spec_and_the_same_keywords_give_the_same_step() -> None:
    # hand case (test_compare): at mark 89 pro rata closes the bankrupt 10 lots as 4, 3, 3
    ex = adl_exchange_at_100()
    ex.set_marks([0], np.array([89], dtype=np.int64), exact=True)
    by_kw, by_spec = ex.copy(), ex.copy()
    r_kw = by_kw.liquidate(executor=EXEC, policy="pro_rata", exact=True)
    r_spec = by_spec.liquidate(WaterfallSpec(executor=EXEC, policy="pro_rata"), exact=True)
    adl = r_spec.events.kind == "adl_close"
    assert sorted(np.abs(r_spec.events.size[adl]).tolist()) == [3, 3, 4]
    for name, column in r_kw.events.columns().items():
        assert np.array_equal(column, r_spec.events.columns()[name]), name
    assert r_kw.totals == r_spec.totals
    assert by_kw.state_hash() == by_spec.state_hash() != ex.state_hash()


@pytest.mark.parametrize("options", [dict(policy="queue", ranking="binance"), dict(mode="haircut", policy="pro_rata"),
                                     dict(policy="capped_pro_rata", cap=0.3, theta=0.5),
                                     dict(mode="haircut", policy="min_max_lots", lot=0.25),
                                     dict(policy="random_walk", seed=11, deficit_split="maintenance")])
def test_spec_and_keywords_agree_on_generated_books(options) -> None:
    ex, mm, marks = random_exchange(5, fund=5.0)
    ex.set_marks([0, 1], marks * np.array([0.7, 1.2]))
    executor = MarketClose(mm, slippage_bps=30)
    spec = WaterfallSpec(**options)  # no executor: the call gives it
    a, b = ex.copy(), ex.copy()
    ra = a.liquidate(executor=executor, **options)
    rb = b.liquidate(spec, executor=executor)
    assert ra.totals.liquidated_accounts > 0
    assert ra.summary() == rb.summary() and a.state_hash() == b.state_hash()
    assert len(ra.events) == len(rb.events)


def test_one_spec_serves_several_exchanges() -> None:
    spec = WaterfallSpec(executor=MM4, policy="pro_rata")
    results, hashes = [], []
    for _ in range(2):
        ex = two_market_exchange()
        ex.set_marks(["BTC"], [70.0])
        results.append(ex.liquidate(spec).summary())
        hashes.append(ex.state_hash())
    assert results[0] == results[1] and hashes[0] == hashes[1] and results[0]["adl_closes"] == 1
    assert spec == WaterfallSpec(executor=MM4, policy="pro_rata")  # unchanged by use


def test_liquidate_refuses_a_spec_mixed_with_keywords() -> None:
    ex = adl_exchange_at_100()
    spec = WaterfallSpec(executor=EXEC, policy="pro_rata")
    with pytest.raises(InvalidInput, match="mode: set by the WaterfallSpec"):
        ex.liquidate(spec, mode="haircut")
    with pytest.raises(InvalidInput, match="cap: set by the WaterfallSpec"):
        ex.liquidate(spec, cap=0.5)
    with pytest.raises(InvalidInput, match="executor: the spec has executor"):
        ex.liquidate(spec, executor=MarketClose(counterparty=1))
    with pytest.raises(InvalidInput, match="waterfall must be a WaterfallSpec"):
        ex.liquidate("pro_rata")  # type: ignore[arg-type]
    ex.liquidate(spec, executor=EXEC, exact=True, accounts=[])  # the same executor, exact and accounts: accepted
    assert ex.step == 1


def test_compare_takes_specs() -> None:
    ex = adl_exchange_at_100()
    table = dl.compare(ex, {"A": -0.11}, [WaterfallSpec(policy="pro_rata"), WaterfallSpec(policy="queue", label="q")],
                       executor=EXEC)
    assert table.labels == ("pro_rata", "q")
    # the hand-computed rows of test_compare: pro rata 4, 3, 3; the queue takes 10, needs 20
    assert sorted(table["pro_rata"].winner_rows.taken_units.tolist()) == [3, 3, 4]
    assert (table["q"].taken_units, table["q"].needed_units) == (10, 20)
    assert table.specs == ({"mode": "close", "policy": "pro_rata"}, {"mode": "close", "policy": "queue"})
    with pytest.raises(InvalidInput, match=r"policies\[0\]: the spec's executor"):
        dl.compare(ex, {"A": -0.11}, [WaterfallSpec(executor=MarketClose(1), policy="queue")], executor=EXEC)


def test_stress_takes_specs() -> None:
    # the hand-computed shock of test_stress: a $10 deficit deleveraged against account 2
    ex = two_market_exchange()
    r = dl.stress(ex, Shock({"BTC": -2 / 9}), policies=[WaterfallSpec(policy="pro_rata"),
                                                        WaterfallSpec.parse("haircut:pro_rata", executor=MM4)],
                  executor=MM4)
    assert r.policies == ["pro_rata", "haircut:pro_rata"]
    assert r.series["pro_rata"]["adl_closes"][0, 0] == 1 and r.series["pro_rata"]["winner_loss"][0, 0] == 10_000_000
    assert r.series["haircut:pro_rata"]["haircut_total"][0, 0] == 10_000_000
    same = dl.stress(ex, Shock({"BTC": -2 / 9}), policies=[{"policy": "pro_rata", "mode": "haircut"}], executor=MM4)
    for name, series in same.series["haircut/pro_rata"].items():
        assert np.array_equal(series, r.series["haircut:pro_rata"][name]), name
    with pytest.raises(InvalidInput, match=r"policies\[0\]: the spec's executor"):
        dl.stress(ex, Shock(-0.1), policies=[WaterfallSpec(executor=EXEC)], executor=MM4)


def test_books_live_in_one_package_and_the_old_paths_still_import() -> None:
    import deleverage.books as books
    import deleverage.sample as old_sample
    import deleverage.scenarios as scenarios
    from deleverage.books import load, presets, sample

    assert dl.load_book is books.load_book is load.load_book
    assert books.sample_exchange is sample.sample_exchange is old_sample.sample_exchange
    assert books.BookSpec is presets.BookSpec is scenarios.BookSpec and scenarios.book_preset is books.book_preset
    assert books.book_preset("retail", positions=50, accounts=10, markets=2).build().position_count > 0
