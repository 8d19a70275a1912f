"""Stress testing: scenario generators (seeded statistics), the compiled path runner against
a Python loop over Exchange.liquidate, hand-computed cases, determinism (threads, batches,
Dask), results (VaR / ES, Parquet, plots) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from books import two_market_exchange

import deleverage as dl
from deleverage.books import BOOK_PRESETS, BookSpec, book_preset
from deleverage.errors import ConfigError, InvalidInput
from deleverage.scenarios import GBMPaths, HistoricalPaths, Shock

MM = dl.MarketClose(counterparty=0, slippage_bps=20)


# ---------------------------------------------------------------------- scenario statistics


def test_gbm_log_returns_have_the_drift_vol_and_correlation_asked_for() -> None:
    vol, drift, rho = 0.01, 0.002, 0.6
    sc = GBMPaths(paths=4, steps=2500, vol=vol, drift=drift, correlation=rho, seed=11)
    r = np.concatenate([sc.log_returns(p, 3) for p in range(4)])
    n = len(r)
    mean = drift - vol**2 / 2
    # 5 standard errors: mean sigma/sqrt(n), std sigma/sqrt(2n), correlation (1-rho^2)/sqrt(n)
    assert np.all(np.abs(r.mean(axis=0) - mean) < 5 * vol / math.sqrt(n))
    assert np.all(np.abs(r.std(axis=0) - vol) < 5 * vol / math.sqrt(2 * n))
    c = np.corrcoef(r.T)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert abs(c[i, j] - rho) < 5 * (1 - rho**2) / math.sqrt(n)


def test_gbm_per_market_vol_and_a_correlation_matrix() -> None:
    corr = [[1.0, -0.5], [-0.5, 1.0]]
    sc = GBMPaths(paths=1, steps=20000, vol=[0.01, 0.03], correlation=corr, seed=2)
    r = sc.log_returns(0, 2)
    n = len(r)
    assert abs(r[:, 0].std() - 0.01) < 5 * 0.01 / math.sqrt(2 * n)
    assert abs(r[:, 1].std() - 0.03) < 5 * 0.03 / math.sqrt(2 * n)
    assert abs(np.corrcoef(r.T)[0, 1] + 0.5) < 5 * 0.75 / math.sqrt(n)


def test_gbm_jumps_come_at_the_rate_asked_for_and_hit_every_market_at_once() -> None:
    rate, steps = 0.05, 20000
    sc = GBMPaths(paths=1, steps=steps, vol=0.001, correlation=0.0, jump_rate=rate, jump_mean=-0.5, jump_std=0.01, seed=5)
    r = sc.log_returns(0, 3)
    jumped = r < -0.25  # a jump is -0.5, diffusion is 0.001: no overlap
    p = 1 - math.exp(-rate)  # a step with at least one jump
    count = int(jumped[:, 0].sum())
    assert abs(count - steps * p) < 5 * math.sqrt(steps * p * (1 - p))
    assert (jumped[:, 0] == jumped[:, 1]).all() and (jumped[:, 0] == jumped[:, 2]).all()


def test_gbm_paths_are_seeded_and_independent_of_each_other() -> None:
    a = GBMPaths(paths=3, steps=50, seed=9)
    b = GBMPaths(paths=3, steps=50, seed=9)
    assert np.array_equal(a.log_returns(2, 4), b.log_returns(2, 4))
    assert not np.array_equal(a.log_returns(0, 4), a.log_returns(1, 4))
    assert not np.array_equal(a.log_returns(0, 4), GBMPaths(paths=3, steps=50, seed=10).log_returns(0, 4))
    # path 2 is the same whatever the number of paths (a Dask task can draw it alone)
    assert np.array_equal(a.log_returns(2, 4), GBMPaths(paths=7, steps=50, seed=9).log_returns(2, 4))


def test_gbm_prices_follow_the_shock_then_the_returns() -> None:
    sc = GBMPaths(paths=1, steps=4, vol=0.02, seed=1, shock={"B": -0.5})
    start = np.array([100.0, 10.0])
    px = sc.path_prices(0, start, ["A", "B"])
    assert px.shape == (5, 2) and sc.n_steps == 5
    assert np.allclose(px[0], [100.0, 5.0])
    assert np.allclose(px[1:], np.array([100.0, 5.0]) * np.exp(np.cumsum(sc.log_returns(0, 2), axis=0)))


def test_shock_moves_every_market_or_the_named_ones() -> None:
    start = np.array([100.0, 20.0, 3.0])
    assert np.allclose(Shock(-0.3).path_prices(0, start, ["a", "b", "c"]), [[70.0, 14.0, 2.1]])
    assert np.allclose(Shock({"b": 0.5, 2: -0.5}).path_prices(0, start, ["a", "b", "c"]), [[100.0, 30.0, 1.5]])
    with pytest.raises(InvalidInput, match="moves"):
        Shock({"zzz": 0.1}).path_prices(0, start, ["a", "b", "c"])
    with pytest.raises(InvalidInput, match=r"moves\[1\]"):
        Shock([0.0, -1.0, 0.0]).path_prices(0, start, ["a", "b", "c"])


def test_historical_paths_replay_and_carry_missing_marks(tmp_path) -> None:
    df = pd.DataFrame({"step": [0, 0, 1, 2, 2], "market": ["A", "B", "A", "A", "B"], "price": [10.0, 5.0, 11.0, 12.0, 4.0]})
    f = tmp_path / "marks.csv"
    df.to_csv(f, index=False)
    h = HistoricalPaths.from_file(f)
    assert (h.n_paths, h.n_steps) == (1, 3)
    px = h.path_prices(0, np.array([9.0, 6.0, 100.0]), ["A", "B", "C"])
    assert np.array_equal(px, [[10.0, 5.0, 100.0], [11.0, 5.0, 100.0], [12.0, 4.0, 100.0]])
    two = HistoricalPaths(pd.concat([df.assign(path=0), df.assign(path=1, price=df.price * 2)]))
    assert two.n_paths == 2 and two.path_prices(1, np.array([1.0, 1.0]), ["A", "B"])[0, 0] == 20.0
    with pytest.raises(InvalidInput, match="missing column 'price'"):
        HistoricalPaths(df.drop(columns="price"))
    with pytest.raises(InvalidInput, match=r"table.price\[3\]"):
        HistoricalPaths(df.assign(price=[1.0, 2.0, 3.0, -4.0, 5.0]))
    with pytest.raises(InvalidInput, match="unknown market symbol 'B'"):
        h.path_prices(0, np.array([1.0]), ["A"])


def test_generated_books_have_the_preset_shape() -> None:
    from deleverage.books import generate_book

    spec = book_preset("long_heavy", positions=60_000, accounts=10_000, markets=8, seed=4)
    b = generate_book(spec.positions, spec.accounts, spec.markets, seed=spec.seed, leverage=spec.leverage,
                      long_share=spec.long_share)
    n = len(b.sizes)
    p = spec.long_share
    assert abs((b.sizes > 0).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    notional = np.abs(b.sizes) * b.marks[b.markets]
    # log-normal notionals (sigma 1.2): the 99th percentile is about e^(2.326*1.2) = 16 medians
    tail = np.percentile(notional, 99) / np.median(notional)
    assert 12 < tail < 22
    per_account = np.bincount(b.accounts - 1)
    assert per_account.min() >= 1 and per_account.mean() == pytest.approx(6.0)
    # several distinct markets per account
    pairs = b.accounts.astype(np.int64) * 1000 + b.markets
    assert len(np.unique(pairs)) == n
    account_notional = np.bincount(b.accounts - 1, weights=notional)
    lev = account_notional / (b.collateral - 10.0)
    assert np.median(lev) == pytest.approx(spec.leverage, rel=0.05)
    assert set(BOOK_PRESETS) >= {"balanced", "long_heavy", "high_leverage", "retail"}
    with pytest.raises(ConfigError, match="preset"):
        book_preset("nope")


# ---------------------------------------------------------------------- the runner


def test_a_hand_computed_shock_through_adl() -> None:
    """Account 1 (long 2 BTC at 100, $50) at BTC 70 has equity -10; its bankruptcy price is
    75. No fund, no slippage: the executor fill at 70 leaves a $10 deficit, so all 2 BTC are
    deleveraged against account 2 (short) at 75: account 2 loses 2 x (75 - 70) = $10 against
    the mark and ends with 1000 + 2 x (100 - 75) = 1050 cash, minus 1.5 on its ETH short at
    21: equity 1048.5."""
    ex = two_market_exchange()
    before = (ex.position_count, ex.step, ex.balance(2))
    r = dl.stress(ex, Shock({"BTC": -2 / 9}), executor=dl.MarketClose(counterparty=4, slippage_bps=0))
    s = {k: v[0, 0] for k, v in r.series["queue"].items() if k != "fund_balance"}
    assert s["deficit"] == 10_000_000 and s["fund_used"] == 0 and s["bad_debt"] == 0
    assert s["liquidated_accounts"] == 1 and s["adl_closes"] == 1 and s["accounts_touched"] == 1
    assert s["winner_loss"] == 10_000_000
    ids = list(r.account_ids)
    acc = r.accounts["queue"]
    assert acc["loss_total"][ids.index(2)] == 10_000_000 and acc["paths_hit"][ids.index(2)] == 1
    assert acc["paths_liquidated"][ids.index(1)] == 1 and acc["paths_hit"][ids.index(1)] == 0
    assert acc["final_equity_min"][ids.index(2)] == 1_048_500_000
    assert acc["final_equity_min"][ids.index(1)] == 0
    assert (ex.position_count, ex.step, ex.balance(2)) == before  # the exchange itself is untouched


def _python_loop(ex: dl.Exchange, scenario, policy_kw: dict, executor) -> tuple[dict, dict]:
    """The same paths stepped from Python with Exchange.liquidate, aggregated independently."""
    start = ex.marks(exact=True)
    pdec = np.array([ex.market_info(m)["mark_decimals"] for m in range(len(ex.markets))])
    scale = 10.0 ** pdec
    ids = list(ex.account_ids())
    series = {k: np.zeros((scenario.n_paths, scenario.n_steps), dtype=np.int64) for k in dl._stress.SERIES}
    loss_total = dict.fromkeys(ids, 0)
    paths_hit = dict.fromkeys(ids, 0)
    paths_liq = dict.fromkeys(ids, 0)
    eq_min = dict.fromkeys(ids, np.iinfo(np.int64).max)
    fund = np.zeros((scenario.n_paths, scenario.n_steps), dtype=np.int64)
    for p in range(scenario.n_paths):
        c = ex.copy()
        ticks = np.maximum(np.rint(scenario.path_prices(p, start / scale, ex.markets) * scale), 1).astype(np.int64)
        loss: dict = {}
        liq: set = set()
        for s in range(scenario.n_steps):
            c.set_marks(list(range(len(ex.markets))), ticks[s], exact=True)
            res = c.liquidate(executor=executor, exact=True, **policy_kw)
            t = res.summary()
            for k in series:
                if k != "winner_loss":
                    series[k][p, s] = t[k]
            ev = res.events
            step_loss = 0
            for i in range(len(ev)):
                kind, a = ev.kind[i], int(ev.account[i])
                if kind == "adl_close":
                    m = int(ev.market[i])
                    info = c.market_info(m)
                    # value at the mark of the lots the winner closed, money units (floor)
                    num = -int(ev.size[i]) * int(ticks[s][m])
                    shift = 6 - info["qty_decimals"] - info["mark_decimals"]
                    at_mark = num * 10**shift if shift >= 0 else num // 10 ** (-shift)
                    x = at_mark - int(ev.amount[i])
                    liq.add(int(ev.counterparty[i]))  # the bankrupt side is liquidated
                elif kind == "haircut":
                    x = -int(ev.amount[i])
                else:
                    if kind in ("liquidation_fill", "partial_fill", "backstop_fill"):
                        liq.add(a)
                    continue
                loss[a] = loss.get(a, 0) + x
                step_loss += x
            series["winner_loss"][p, s] = step_loss
            fund[p, s] = c.insurance.balance(exact=True)
        for a, x in loss.items():
            loss_total[a] += x
            paths_hit[a] += 1
        for a in liq:
            paths_liq[a] += 1
        m = c.check_margin(exact=True)
        for a, e in zip(m.account.tolist(), m.equity.tolist()):
            eq_min[a] = min(eq_min[a], e)
    accounts = {"loss_total": [loss_total[a] for a in ids], "paths_hit": [paths_hit[a] for a in ids],
                "paths_liquidated": [paths_liq[a] for a in ids], "final_equity_min": [eq_min[a] for a in ids]}
    series["fund_balance"] = fund
    return series, accounts


@pytest.mark.parametrize("policy_kw", [{"policy": "queue"}, {"policy": "pro_rata"},
                                       {"policy": "pro_rata", "mode": "haircut"},
                                       {"policy": "funding_index", "mode": "haircut"},
                                       {"policy": "queue", "ranking": "hyperliquid", "adl_price": "mark"}])
def test_the_compiled_runner_matches_a_python_loop_over_liquidate(policy_kw: dict) -> None:
    ex = BookSpec(positions=3000, accounts=600, markets=3, leverage=12, fund=2000.0, seed=3).build(threads=1)
    sc = GBMPaths(paths=3, steps=12, vol=0.03, jump_rate=0.1, jump_mean=-0.08, seed=8, shock=-0.05)
    r = dl.stress(ex, sc, policies=[policy_kw], executor=MM, batch_paths=2)
    label = r.policies[0]
    series, accounts = _python_loop(ex, sc, policy_kw, MM)
    for k in dl._stress.SERIES:
        assert np.array_equal(r.series[label][k], series[k]), k
    assert np.array_equal(r.series[label]["fund_balance"][:, :, 0], series["fund_balance"])
    assert r.series[label]["liquidated_accounts"].sum() > 0 and r.series[label]["winner_loss"].sum() > 0
    for k, v in accounts.items():
        assert np.array_equal(r.accounts[label][k], np.array(v)), k


def test_same_seed_same_result_whatever_the_threads_and_batches() -> None:
    ex = BookSpec(positions=4000, accounts=800, markets=4, leverage=10, seed=5).build()
    sc = GBMPaths(paths=6, steps=20, vol=0.02, jump_rate=0.05, seed=21, shock=-0.1)
    pol = ["queue", "pro_rata", "funding_index"]
    a = dl.stress(ex, sc, policies=pol, executor=MM)
    b = dl.stress(ex, GBMPaths(paths=6, steps=20, vol=0.02, jump_rate=0.05, seed=21, shock=-0.1), policies=pol,
                  executor=MM, threads=1, batch_paths=4)
    c = dl.stress(ex, sc, policies=pol, executor=MM, threads=2, batch_paths=1)
    assert a.summary().equals(b.summary()) and a.summary().equals(c.summary())
    for p in pol:
        for k in a.series[p]:
            assert np.array_equal(a.series[p][k], b.series[p][k]) and np.array_equal(a.series[p][k], c.series[p][k])
        for k in a.accounts[p]:
            assert np.array_equal(a.accounts[p][k], c.accounts[p][k])
    d = dl.stress(ex, GBMPaths(paths=6, steps=20, vol=0.02, jump_rate=0.05, seed=22, shock=-0.1), policies=pol, executor=MM)
    assert not a.summary().equals(d.summary())


def test_dask_local_cluster_gives_the_local_result() -> None:
    distributed = pytest.importorskip("dask.distributed")
    spec = BookSpec(positions=4000, accounts=800, markets=4, leverage=10, fund=1000.0, seed=6)
    ex = spec.build()
    sc = GBMPaths(paths=5, steps=15, vol=0.02, jump_rate=0.05, seed=4, shock=-0.08)
    pol = ["queue", {"policy": "pro_rata", "mode": "haircut", "label": "haircut"}]
    local = dl.stress(ex, sc, policies=pol, executor=MM)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = dl.stress(ex, sc, policies=pol, executor=MM, client=client, batch_paths=2)
        # the exchange travels as its snapshot (pickle): a book changed after it was built
        # arrives as it is now
        changed = spec.build()
        changed.deposit(5, 1.0)
        changed.trade(5, 6, "M001", 1.0, float(changed.marks()[1]))
        changed_local = dl.stress(changed, sc, policies=pol, executor=MM)
        changed_remote = dl.stress(changed, sc, policies=pol, executor=MM, client=client)
    assert changed_local.summary().equals(changed_remote.summary())
    assert not changed_local.summary().equals(local.summary())
    assert local.summary().equals(remote.summary())
    for p in local.policies:
        for k in local.series[p]:
            assert np.array_equal(local.series[p][k], remote.series[p][k])
        for k in local.accounts[p]:
            assert np.array_equal(local.accounts[p][k], remote.accounts[p][k])


def test_var_and_es_by_hand() -> None:
    x = np.arange(1, 101, dtype=np.float64)
    assert dl._stress._var_es(x, 0.95) == (95.0, 97.5)
    assert dl._stress._var_es(np.array([5.0]), 0.99) == (5.0, 5.0)


def _result(deficit: list[list[int]], fees: list[list[int]], fund: list[list[int]]) -> dl.StressResult:
    d = np.array(deficit, dtype=np.int64)
    series = {k: np.zeros_like(d) for k in dl._stress.SERIES}
    series["deficit"], series["fund_fees"] = d, np.array(fees, dtype=np.int64)
    series["fund_balance"] = np.array(fund, dtype=np.int64)[:, :, None]
    acc = {k: np.zeros(2, dtype=np.int64) for k in dl._stress.ACCOUNT_FIELDS}
    return dl.StressResult(["p"], d.shape[0], d.shape[1], 2, np.array([100], dtype=np.int64), np.array([1, 2]),
                           {"p": series}, {"p": acc})


def test_fund_needed_and_fund_draw_per_path_by_hand() -> None:
    # money_decimals 2: 100 units = 1.00
    r = _result(deficit=[[50, 0, 80], [0, 0, 0], [300, 0, 0]], fees=[[0, 40, 0], [10, 0, 0], [0, 0, 0]],
                fund=[[50, 90, 10], [110, 110, 110], [0, 0, 0]])
    pp = r.per_path("p")
    # path 0: cumulative net deficit 50, 10, 90 -> 0.90; path 1: -10 -> 0; path 2: 300 -> 3.00
    assert np.allclose(pp["fund_needed"], [0.9, 0.0, 3.0])
    # fund started at 100: lowest 10, 110, 0 -> draws 0.90, 0, 1.00
    assert np.allclose(pp["fund_draw"], [0.9, 0.0, 1.0])
    need = r.fund_needed(0.5)["p"]
    assert need["var"] == pytest.approx(0.9) and need["es"] == pytest.approx((0.9 + 3.0) / 2)
    with pytest.raises(InvalidInput, match="confidence"):
        r.fund_needed(1.0)
    with pytest.raises(InvalidInput, match="unknown policy"):
        r.per_path("q")


def test_summary_parquet_and_plots(tmp_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    ex = BookSpec(positions=2000, accounts=400, markets=3, leverage=10, seed=2).build()
    r = dl.stress(ex, GBMPaths(paths=3, steps=10, vol=0.02, seed=1, shock=-0.1), policies=["queue", "pro_rata"], executor=MM)
    df = r.summary()
    assert list(df.index) == ["queue", "pro_rata"] and "fund_needed_var_0.99" in df.columns
    assert df.loc["queue", "paths"] == 3 and df.loc["queue", "steps"] == 11
    paths = r.to_parquet(tmp_path)
    series = pd.read_parquet(paths[0])
    assert len(series) == 2 * 3 * 11
    q = series[series.policy == "queue"]
    assert np.allclose(q.bad_debt.to_numpy(), r.series["queue"]["bad_debt"].ravel() / 1e6)
    accounts = pd.read_parquet(paths[1])
    assert len(accounts) == 2 * ex.account_count
    fig = r.plot()
    assert len(fig.axes) == 4
    with pytest.raises(InvalidInput, match="kind"):
        r.plot("pie")


# ---------------------------------------------------------------------- bad input


def test_bad_stress_arguments_are_refused() -> None:
    ex = two_market_exchange()
    ex4 = dl.MarketClose(counterparty=4)
    with pytest.raises(InvalidInput, match=r"policies\[0\]: unknown policy 'lottery'"):
        dl.stress(ex, Shock(-0.1), policies=["lottery"], executor=ex4)
    with pytest.raises(InvalidInput, match="haircut policy"):
        dl.stress(ex, Shock(-0.1), policies=[{"policy": "funding_index"}], executor=ex4)
    with pytest.raises(InvalidInput, match="duplicate policy label"):
        dl.stress(ex, Shock(-0.1), policies=["queue", "queue"], executor=ex4)
    with pytest.raises(InvalidInput, match="at least one policy"):
        dl.stress(ex, Shock(-0.1), policies=[], executor=ex4)
    with pytest.raises(InvalidInput, match="executor"):
        dl.stress(ex, Shock(-0.1), policies=[{"policy": "queue", "executor": ex4}], executor=ex4)
    with pytest.raises(InvalidInput, match="scenario"):
        dl.stress(ex, "crash", executor=ex4)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="paths must be a non-negative integer"):
        GBMPaths(paths=-1, steps=10)
    with pytest.raises(InvalidInput, match="no path"):
        dl.stress(ex, GBMPaths(paths=0, steps=10), executor=ex4)
    with pytest.raises(InvalidInput, match="steps must be at least 1"):
        GBMPaths(paths=2, steps=0)
    with pytest.raises(InvalidInput, match="correlation"):
        dl.stress(ex, GBMPaths(paths=1, steps=2, correlation=[[1.0, 2.0], [2.0, 1.0]]), executor=ex4)
    with pytest.raises(InvalidInput, match="out of range"):
        dl.stress(ex, Shock(1e300), executor=ex4)
    with pytest.raises(dl.errors.UnknownId):
        dl.stress(ex, Shock(-0.1), executor=dl.MarketClose(counterparty=99))
    with pytest.raises(InvalidInput, match="threads"):
        dl.stress(ex, Shock(-0.1), executor=ex4, threads=-1)


def test_the_core_runner_refuses_bad_marks() -> None:
    ex = two_market_exchange()
    cfg = dl.WaterfallSpec(executor=dl.MarketClose(counterparty=4)).engine_config(ex)
    with pytest.raises(InvalidInput, match=r"marks\[1\]\[0\]\[1\]: a mark must be positive"):
        dl._core.run_stress(ex.core, cfg, np.array([900, 2100, 900, 0], dtype=np.int64), 2, 1, 1)
    with pytest.raises(InvalidInput, match="expected paths"):
        dl._core.run_stress(ex.core, cfg, np.array([900, 2100, 900], dtype=np.int64), 2, 1, 1)
    with pytest.raises(InvalidInput, match="dtype"):
        dl._core.run_stress(ex.core, cfg, np.array([900.0, 2100.0]), 1, 1, 1)


# ---------------------------------------------------------------------- loading books

BOOK = pd.DataFrame({"account": [1, 2, 1, 3], "market": ["BTC", "BTC", "ETH", "ETH"], "size": [0.5, -0.5, 2.0, -2.0],
                     "entry_price": [50000.0, 50010.5, 3000.25, 2999.0], "collateral": [5000.0, 3000.0, 5000.0, 1000.5]})


def test_load_book_with_an_account_in_debt() -> None:
    # a real snapshot holds accounts with negative balances: loaded as they are, and
    # conservation counts them (check_invariants recomputes it from the balances)
    ex = dl.load_book(BOOK.assign(collateral=[5000.0, -250.25, 5000.0, 1000.5]))
    assert ex.balance(2) == -250.25 and ex.balance(1) == 5000.0
    assert ex.core.flows()["loaded_balances"] == (5000_000000 - 250_250000 + 1000_500000)
    assert ex.core.flows()["deposits"] == 0
    ex.check_invariants()


def test_load_book_from_a_frame_with_default_markets() -> None:
    ex = dl.load_book(BOOK)
    assert ex.markets == ["BTC", "ETH"] and ex.position_count == 4 and ex.account_count == 3
    assert ex.balance(1) == 5000.0 and ex.balance(3) == 1000.5
    info = ex.market_info("BTC")
    assert (info["qty_decimals"], info["price_decimals"]) == (3, 2)
    # size-weighted average entry: (0.5 * 50000 + 0.5 * 50010.5) / 1 = 50005.25
    assert ex.marks()[0] == pytest.approx(50005.25)
    pos = ex.positions().to_pandas().set_index(["account", "market"])
    assert pos.loc[(2, 0), "size"] == -0.5 and pos.loc[(2, 0), "entry_price"] == pytest.approx(50010.5)
    assert ex.net_size("ETH") == 0


def test_load_book_from_csv_and_parquet_with_a_market_table(tmp_path) -> None:
    table = pd.DataFrame({"symbol": ["BTC", "ETH"], "qty_decimals": [4, 2], "price_decimals": [1, 2],
                          "maintenance_margin": [0.01, 0.02], "mark_price": [48000.0, np.nan]})
    BOOK.to_csv(tmp_path / "b.csv", index=False)
    BOOK.to_parquet(tmp_path / "b.parquet")
    table.to_csv(tmp_path / "m.csv", index=False)
    a = dl.load_book(tmp_path / "b.csv", markets=tmp_path / "m.csv", counterparty=0, fund=100.0)
    b = dl.load_book(str(tmp_path / "b.parquet"), markets=table, counterparty=0, fund=100.0)
    for ex in (a, b):
        assert ex.market_info("BTC")["qty_decimals"] == 4 and ex.marks()[0] == 48000.0
        assert ex.insurance.balance() == 100.0 and ex.account_count == 4  # the counterparty 0 is created
    assert a.check_margin(exact=True).equity.tolist() == b.check_margin(exact=True).equity.tolist()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns="collateral"), "missing column 'collateral'"),
    (lambda d: d.assign(size=[0.5, "abc", 2.0, -2.0]), r"book.size at row 1: expected a finite number \(got 'abc'\)"),
    (lambda d: d.assign(size=[0.5, -0.5, 0.0, -2.0]), r"book.size at row 2 \(account 1, market 'ETH'\): a position size must not be zero"),
    (lambda d: d.assign(entry_price=[1.0, 2.0, -3.0, 4.0]), r"book.entry_price at row 2 \(account 1, market 'ETH'\): an entry price must be positive \(got -3.0\)"),
    (lambda d: d.assign(collateral=[5000.0, 3000.0, 4000.0, 1.0]), r"book.collateral at row 2: account 1 has collateral 4000.0 here and 5000.0 at row 0"),
    (lambda d: d.assign(account=[1, 2.5, 1, 3]), r"book.account at row 1: expected a non-negative integer id \(got 2.5\)"),
    (lambda d: d.assign(market=["BTC", None, "ETH", "ETH"]), r"book.market at row 1: expected a market symbol"),
    (lambda d: d.assign(market=["BTC", "BTC", "BTC", "ETH"]), "account 1 holds market 'BTC' twice, at row 0 and row 2"),
    (lambda d: d.iloc[:0], "no rows"),
])
def test_malformed_books_are_refused_naming_column_and_row(change, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        dl.load_book(change(BOOK.copy()))


def test_bad_book_sources_and_market_tables(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        dl.load_book(tmp_path / "missing.csv")
    (tmp_path / "b.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"\.csv or \.parquet"):
        dl.load_book(tmp_path / "b.txt")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InvalidInput, match="cannot read"):
        dl.load_book(tmp_path / "bad.parquet")
    with pytest.raises(InvalidInput, match=r"book.market at row 2: market 'ETH' is not in the market table"):
        dl.load_book(BOOK, markets=[{"symbol": "BTC"}])
    with pytest.raises(ConfigError, match="unknown column 'tick'"):
        dl.load_book(BOOK, markets=[{"symbol": "BTC", "tick": 1}, {"symbol": "ETH"}])
    with pytest.raises(InvalidInput, match="does not net to zero|net|counterparty"):
        dl.load_book(BOOK.iloc[:3])


def test_book_file_errors_name_the_line_account_and_market_in_the_files_units(tmp_path) -> None:
    """A value the engine refuses (off the market's lot grid) is reported against the user's
    file: the column name, the file line (header = line 1), the account and the market, and
    the value as written; an unbalanced market is quoted in base units, not lots."""
    table = pd.DataFrame({"symbol": ["BTC", "ETH"], "qty_decimals": [3, 2]})
    off_grid = BOOK.copy()
    off_grid.loc[2, "size"] = 2.0001  # ETH lots are 0.01
    off_grid.to_csv(tmp_path / "book.csv", index=False)
    with pytest.raises(InvalidInput) as info:
        dl.load_book(tmp_path / "book.csv", markets=table)
    assert str(info.value) == ("book.size at line 4 of book.csv (account 1, market 'ETH'): 2.0001 is not a multiple of "
                               "the unit 0.01")
    unbalanced = BOOK.copy()
    unbalanced.loc[3, "size"] = -1.0
    unbalanced.to_parquet(tmp_path / "book.parquet")
    with pytest.raises(InvalidInput, match=r"positions in market 'ETH' net to 1.0, not 0"):
        dl.load_book(tmp_path / "book.parquet", markets=table)
    bad = BOOK.copy()
    bad.loc[1, "entry_price"] = -1.0
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InvalidInput, match=r"book.entry_price at line 3 of bad.csv \(account 2, market 'BTC'\): .*got -1.0"):
        dl.load_book(tmp_path / "bad.csv")
