"""Shared workload for the waterfall benchmarks (pytest-benchmark, asv and the report script).

Three workloads (issue "waterfall", benchmark targets 1-3):

* **crash**: ``deleverage.books.sample_exchange(positions, positions // 10, markets,
  leverage=10)`` (10 positions per account, every account in every market of a 10-market
  book), a small insurance fund (1,000 quote), then every market's mark is cut by 28%. About
  25% of the accounts are liquidatable at the shocked marks and, with the cascade, about 30%
  are liquidated; the fund is exhausted at once, so ADL runs (hundreds of thousands of
  closes at 1M positions). The timed call is the whole step
  ``ex.liquidate(executor=MarketClose(counterparty=0, slippage_bps=50), mode="close",
  policy="queue")``; the marks are set before it (not timed) and revalued inside it, as in
  production. Target: < 1 s at 1M positions, cost linear in the book (100k, 1M, 4M).
* **lrvx**: the same generated book and crash at 200k positions through
  ``bench/lrvx_adapter.py`` (``lrvx.LiquidationEngine.on_marks``), timed against the
  deleverage step on the same book, in the same process.
* **adl**: one ADL event over 1M candidates: one market, 1M accounts each short 1 unit with
  ample collateral, the market maker (account 0) long the balance, one account long 1,000
  units with 0.6% margin. The mark falls 1%: that account is bankrupt, the insurance fund is
  empty, so its whole position is deleveraged against exactly 1,000 shorts (1 unit each).
  Target: <= 2 ms for the step. The step also revalues the moved market and scans every
  account, so ``ex.check_margin()`` on the same book is measured next to it.

``liquidate`` mutates the exchange: every timed call gets a freshly built book (building is
never timed). Sizes come from environment variables so that CI can run everything tiny:

``DELEVERAGE_BENCH_POSITIONS`` (crash book, default 1_000_000; the scaling runs use a tenth,
once and four times that; the lrvx comparison a fifth; the ADL book that many candidates),
``DELEVERAGE_BENCH_LRVX_POSITIONS``, ``DELEVERAGE_BENCH_ADL_CANDIDATES``,
``DELEVERAGE_BENCH_ADL_COUNTERPARTIES``, ``DELEVERAGE_BENCH_WATERFALL_MARKETS`` (10),
``DELEVERAGE_BENCH_SEED`` (7), ``DELEVERAGE_BENCH_THREADS`` (0 = every core).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from typing import Any, Callable, Optional

import numpy as np

# lrvx must be imported before the deleverage engine has started a thread: imported later in
# the process, loading its extension fails with "libstdc++.so.6: cannot allocate memory in
# static TLS block" (glibc, lrvx 0.11.0). So it is imported here, when the benchmarks are
# collected, and the error (if any) is kept for require_lrvx().
try:
    import lrvx as _lrvx  # noqa: F401

    _LRVX_IMPORT_ERROR: Optional[BaseException] = None
except ImportError as _exc:  # not installed (or broken): reported by require_lrvx()
    _LRVX_IMPORT_ERROR = _exc

from margin_workload import best_of  # noqa: E402,F401  (one timer for every report)

import deleverage

try:
    from deleverage.books import MARKET_MAKER, generate_book, sample_exchange
except ImportError:  # asv also times the parent commit, which may predate the books package
    from deleverage.sample import MARKET_MAKER, generate_book, sample_exchange  # type: ignore[no-redef]
from deleverage.exchange import Exchange

#: Targets of the issue.
TARGET_CRASH_SECONDS_1M = 1.0  # whole step on the 1M-position crash
TARGET_CRASH_SECONDS_1M_FAST = 0.35  # the batch-speed issue's target for the same step
TARGET_GROWTH_TENFOLD = 11.0  # step time at 10x the positions (100k -> 1M), at most
TARGET_GROWTH_FOURFOLD = 4.4  # step time at 4x the positions (1M -> 4M), at most
TARGET_LRVX_RATIO = 100.0  # lrvx time / deleverage time on the 200k single-market crash, at least
TARGET_ADL_EVENT_SECONDS = 0.002  # one ADL event over 1M candidates, 1,000 counterparties
#: "Linear": ns/position of the largest book over the smallest (1.0 = perfectly linear).
TARGET_SCALING_RATIO = 1.5

LRVX_PIN = "lrvx==0.11.0"
LRVX_MISSING = (f"lrvx is not importable: the lrvx comparison benchmark needs it. Install it with "
                f"`pip install {LRVX_PIN}` (it belongs in the `bench` extra of pyproject.toml).")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip().replace("_", "")
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


# ------------------------------------------------------------------ crash (targets 1 and 2)


@dataclasses.dataclass(frozen=True)
class CrashSpec:
    """A generated book and the crash applied to it."""

    positions: int
    markets: int = 10
    seed: int = 7
    leverage: float = 10.0  # sample_exchange's log-normal leverage centre
    shock: float = -0.28  # fraction applied to the shocked marks
    shocked_markets: int = 0  # the first k markets; 0 = every market
    insurance_fund: float = 1_000.0  # quote, shared pool
    slippage_bps: float = 50.0  # MarketClose slippage (the lrvx run uses the same)
    maintenance_margin: float = 0.005  # sample_exchange's default
    threads: int = 0

    @property
    def accounts(self) -> int:
        return max(1, self.positions // 10)

    @property
    def shocked(self) -> list[int]:
        k = self.markets if self.shocked_markets <= 0 else min(self.shocked_markets, self.markets)
        return list(range(k))

    def scaled(self, positions: int) -> "CrashSpec":
        return dataclasses.replace(self, positions=max(10, int(positions)))

    def label(self) -> str:
        k = len(self.shocked)
        which = "every market" if k == self.markets else f"{k} of {self.markets} markets"
        return (f"{self.positions:_} positions / {self.accounts:_} accounts / {self.markets} markets, leverage "
                f"{self.leverage:g}, {self.shock:+.0%} on {which}, fund {self.insurance_fund:,.0f}, "
                f"slippage {self.slippage_bps:g} bps")

    @classmethod
    def from_env(cls, positions: int = 1_000_000) -> "CrashSpec":
        return cls(
            positions=_env_int("DELEVERAGE_BENCH_POSITIONS", positions),
            markets=_env_int("DELEVERAGE_BENCH_WATERFALL_MARKETS", 10),
            seed=_env_int("DELEVERAGE_BENCH_SEED", 7),
            leverage=_env_float("DELEVERAGE_BENCH_LEVERAGE", 10.0),
            shock=_env_float("DELEVERAGE_BENCH_SHOCK", -0.28),
            shocked_markets=_env_int("DELEVERAGE_BENCH_SHOCK_MARKETS", 0),
            insurance_fund=_env_float("DELEVERAGE_BENCH_FUND", 1_000.0),
            slippage_bps=_env_float("DELEVERAGE_BENCH_SLIPPAGE_BPS", 50.0),
            threads=_env_int("DELEVERAGE_BENCH_THREADS", 0),
        )


def scaling_sizes(spec: CrashSpec) -> list[int]:
    """Book sizes of the linearity runs: a tenth, once and four times the crash size
    (100k, 1M, 4M by default)."""
    return [max(100, spec.positions // 10), spec.positions, 4 * spec.positions]


def lrvx_positions(spec: CrashSpec) -> int:
    return _env_int("DELEVERAGE_BENCH_LRVX_POSITIONS", max(100, spec.positions // 5))


def lrvx_sizes(spec: CrashSpec) -> list[int]:
    """Book sizes of the lrvx comparison in the report: a hundredth, a twentieth, a fifth and
    once the crash size (10k, 50k, 200k and 1M by default)."""
    return sorted({max(100, spec.positions // 100), max(100, spec.positions // 20), lrvx_positions(spec), spec.positions})


def shocked_marks(spec: CrashSpec, marks: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The shocked markets and their new marks (quote, on the 0.01 tick grid, >= 0.01)."""
    ms = spec.shocked
    new = np.maximum(np.round(np.asarray(marks, dtype=np.float64)[ms] * (1.0 + spec.shock), 2), 0.01)
    return ms, new


def build_crash(spec: CrashSpec) -> Exchange:
    """The generated book with the fund deposited and the shocked marks set (not yet
    revalued: the step revalues them). Not timed."""
    ex = sample_exchange(spec.positions, spec.accounts, spec.markets, seed=spec.seed, leverage=spec.leverage,
                         maintenance_margin=spec.maintenance_margin, threads=spec.threads)
    if spec.insurance_fund > 0:
        ex.insurance.deposit(spec.insurance_fund)
    ms, new = shocked_marks(spec, ex.marks())
    ex.set_marks(ms, new)
    return ex


def crash_executor(spec: CrashSpec) -> deleverage.MarketClose:
    return deleverage.MarketClose(counterparty=MARKET_MAKER, slippage_bps=spec.slippage_bps)


def run_crash(ex: Exchange, spec: CrashSpec) -> deleverage.WaterfallResult:
    """The timed call: the whole waterfall step."""
    return ex.liquidate(executor=crash_executor(spec), mode="close", policy="queue")


def compiled_liquidate_call(ex: Exchange, spec: CrashSpec) -> Callable[[], Any]:
    """The compiled step without the Python result wrapper (unit conversion of the event
    table): informative only, it passes what ``Exchange.liquidate`` passes to the engine (the
    configuration of ``WaterfallSpec.engine_config``)."""
    config = deleverage.WaterfallSpec(executor=crash_executor(spec), mode="close", policy="queue").engine_config(ex)
    core = ex.core
    return lambda: core.liquidate(config)


@dataclasses.dataclass
class CrashShares:
    """What the crash does to the book (from an untimed probe book)."""

    accounts: int
    liquidatable_before_shock: int
    liquidatable_at_shock: int
    bankrupt_at_shock: int

    @property
    def liquidatable_share(self) -> float:
        return self.liquidatable_at_shock / max(1, self.accounts)


def probe_crash(spec: CrashSpec) -> CrashShares:
    """Liquidatable / bankrupt counts at the shocked marks, on a book that is then discarded
    (a margin check before the timed step would take its revaluation out of the timing)."""
    ex = sample_exchange(spec.positions, spec.accounts, spec.markets, seed=spec.seed, leverage=spec.leverage,
                         maintenance_margin=spec.maintenance_margin, threads=spec.threads)
    before = int(np.count_nonzero(ex.check_margin(exact=True).liquidatable))
    ms, new = shocked_marks(spec, ex.marks())
    ex.set_marks(ms, new)
    r = ex.check_margin(exact=True)
    return CrashShares(ex.account_count, before, int(np.count_nonzero(r.liquidatable)), int(np.count_nonzero(r.bankrupt)))


def check_after_step(ex: Exchange, result: deleverage.WaterfallResult, *, expect_adl: bool = True,
                     expect_adl_closes: Optional[int] = None) -> dict[str, Any]:
    """Invariants after a step: conservation / zero net size / consistent caches, no bankrupt
    account and no liquidatable one left (the executor aside), ADL ran, no bad debt."""
    ex.check_invariants()
    r = ex.check_margin(exact=True)
    bankrupt = int(np.count_nonzero(r.bankrupt))
    still = r.account[r.liquidatable]
    still = still[still != MARKET_MAKER]
    t = result.totals
    assert bankrupt == 0, f"{bankrupt} accounts are bankrupt after the step"
    assert len(still) == 0, f"{len(still)} accounts are still liquidatable after the step"
    assert t.liquidated_accounts > 0, "the step liquidated nothing"
    assert t.bad_debt == 0, f"bad debt {t.bad_debt}"
    if expect_adl:
        assert t.adl_closes > 0, "ADL did not run (totals.adl_closes == 0): the crash is too mild or the fund too large"
    if expect_adl_closes is not None:
        assert t.adl_closes == expect_adl_closes, (t.adl_closes, expect_adl_closes)
    return result.summary()


def timed_fresh(build: Callable[[], Any], call: Callable[[Any], Any], rounds: int) -> tuple[float, list[float], Any, Any]:
    """Best of ``rounds`` calls, each on a freshly built state (build not timed). Returns
    (best seconds, all times, the last state, the last result)."""
    times: list[float] = []
    state = result = None
    for _ in range(max(1, rounds)):
        state = result = None
        gc.collect()
        state = build()
        gc.collect()
        t = time.perf_counter()
        result = call(state)
        times.append(time.perf_counter() - t)
    return min(times), times, state, result


# ------------------------------------------------------------------ lrvx (target 2)


def lrvx_importable() -> bool:
    return _LRVX_IMPORT_ERROR is None


def require_lrvx() -> None:
    """Raise (not skip): CI installs lrvx, so a missing one is a broken environment."""
    if _LRVX_IMPORT_ERROR is not None:
        raise RuntimeError(f"{LRVX_MISSING} (import failed: {_LRVX_IMPORT_ERROR})")


@dataclasses.dataclass
class LrvxCrash:
    """The generated book (as deleverage's sample_exchange builds it) and the shocked marks,
    ready to load into lrvx."""

    spec: CrashSpec
    book: Any  # deleverage.books.SampleBook
    shocked: list[tuple[int, float]]


def lrvx_crash_inputs(spec: CrashSpec) -> LrvxCrash:
    book = generate_book(spec.positions, spec.accounts, spec.markets, seed=spec.seed, leverage=spec.leverage)
    ms, new = shocked_marks(spec, book.marks)
    return LrvxCrash(spec, book, [(int(m), float(p)) for m, p in zip(ms, new)])


def build_lrvx(inp: LrvxCrash) -> Any:
    """``lrvx_adapter.build_lrvx_book`` with deleverage's settings: flat maintenance rate,
    the same slippage, the same fund, the market maker (account 0, collateral 1e12) taking
    each market's imbalance at the net entry notional. Not timed."""
    import lrvx_adapter

    b, s = inp.book, inp.spec
    return lrvx_adapter.build_lrvx_book(b.accounts, b.markets, b.sizes, b.entry_prices, b.collateral, b.marks,
                                        insurance_fund=s.insurance_fund, maintenance_margin=s.maintenance_margin,
                                        slippage_bps=s.slippage_bps, adl_ranking="pnl_ratio", adl_enabled=True,
                                        counterparty=MARKET_MAKER, counterparty_collateral=1e12)


def run_lrvx(state: Any, inp: LrvxCrash) -> dict:
    """The timed lrvx call: one ``on_marks`` with every shocked mark (lrvx walks every
    attached account once per listed market)."""
    if state.crashed:
        raise RuntimeError("this lrvx state was already crashed; build a new one")
    state.crashed = True
    return state.engine.on_marks(inp.shocked)


def lrvx_summary(state: Any, out: dict) -> dict[str, Any]:
    eng = state.engine
    return {
        "liquidated_accounts": len(set(out["liquidated"])),
        "liquidated_positions": len(out["liquidated"]),
        "adl_closeouts": len(out["adl_closed_out"]),
        "insurance_fund_used": state.insurance_fund - float(eng.insurance_fund_balance()),
        "deficit_paid_by_adl": float(sum(eng.deficits_paid_by_adl())),
    }


# ------------------------------------------------------------------ equal work with lrvx

#: A fund (quote) that no crash of these books exhausts. With it neither engine reaches ADL,
#: and the two do the same work: the same accounts liquidated, every one of their positions
#: closed at the same slipped mark, the same deficits paid by the fund. ``work_mismatch``
#: checks this on every run. With the small default fund the engines do different work
#: (deleverage closes ADL by lots at the bankruptcy price, lrvx closes whole positions up to
#: the deficit), so their times are not comparable there.
EQUAL_WORK_FUND = 1e12

#: Scenarios of the equal-work comparison: (name, shocked markets (0 = every one), shock).
EQUAL_WORK_CRASHES = (("every market -28%", 0, -0.28), ("market 0 only, -50%", 1, -0.5))

#: Relative tolerance on the fund used: lrvx sums float64 deficits, deleverage exact integers.
FUND_TOLERANCE = 1e-7


def equal_work_spec(spec: CrashSpec, shocked_markets: int, shock: float) -> CrashSpec:
    return dataclasses.replace(spec, shocked_markets=shocked_markets, shock=shock, insurance_fund=EQUAL_WORK_FUND)


@dataclasses.dataclass(frozen=True)
class Work:
    """What one engine did in a crash: the liquidated accounts, how many positions it closed
    in liquidations, its ADL closes and the fund it used (quote)."""

    accounts: frozenset
    positions_closed: int
    adl_closes: int
    fund_used: float


def deleverage_work(result: deleverage.WaterfallResult) -> Work:
    kind = np.asarray(result.events.kind)
    fills = kind == "liquidation_fill"
    return Work(frozenset(np.asarray(result.events.account)[fills].tolist()), int(np.count_nonzero(fills)),
                int(result.totals.adl_closes), float(result.totals.fund_used))


def lrvx_work(state: Any, out: dict) -> Work:
    return Work(frozenset(int(a) for a in out["liquidated"]), len(out["liquidated"]), len(out["adl_closed_out"]),
                state.insurance_fund - float(state.engine.insurance_fund_balance()))


def work_mismatch(dlv: Work, lrv: Work) -> Optional[str]:
    """None when both engines did the same work, else what differs."""
    if dlv.accounts != lrv.accounts:
        return (f"liquidated accounts differ: {len(dlv.accounts - lrv.accounts)} only in deleverage, "
                f"{len(lrv.accounts - dlv.accounts)} only in lrvx")
    if dlv.positions_closed != lrv.positions_closed:
        return f"positions closed differ: {dlv.positions_closed} against {lrv.positions_closed}"
    if dlv.adl_closes or lrv.adl_closes:
        return f"ADL ran ({dlv.adl_closes} against {lrv.adl_closes} closes): the fund was not large enough"
    if abs(dlv.fund_used - lrv.fund_used) > FUND_TOLERANCE * max(1.0, abs(dlv.fund_used)):
        return f"fund used differs: {dlv.fund_used!r} against {lrv.fund_used!r}"
    return None


# ------------------------------------------------------------------ one ADL event (target 3)


@dataclasses.dataclass(frozen=True)
class AdlSpec:
    candidates: int = 1_000_000  # accounts short 1 unit each in the ADL market
    counterparties: int = 1_000  # the bankrupt long is this many units
    seed: int = 7
    mark: float = 100.0
    move: float = -0.01  # the mark move that bankrupts the long
    short_collateral: float = 1_000.0
    bankrupt_margin: float = 0.006  # collateral of the long / its notional (MM is 0.5%)
    slippage_bps: float = 10.0
    threads: int = 0

    @property
    def bankrupt_account(self) -> int:
        return self.candidates + 1

    @property
    def new_mark(self) -> float:
        return round(self.mark * (1.0 + self.move), 2)

    def label(self) -> str:
        return (f"{self.candidates:_} shorts of 1 unit (candidates) / 1 bankrupt long of {self.counterparties:_} units / "
                f"mark {self.mark:g} -> {self.new_mark:g} / empty fund")

    @classmethod
    def from_env(cls, candidates: int = 1_000_000) -> "AdlSpec":
        n = _env_int("DELEVERAGE_BENCH_ADL_CANDIDATES", _env_int("DELEVERAGE_BENCH_POSITIONS", candidates))
        k = _env_int("DELEVERAGE_BENCH_ADL_COUNTERPARTIES", min(1_000, max(1, n // 20)))
        return cls(candidates=n, counterparties=min(k, n), seed=_env_int("DELEVERAGE_BENCH_SEED", 7),
                   threads=_env_int("DELEVERAGE_BENCH_THREADS", 0))


def build_adl_book(spec: AdlSpec, *, move_mark: bool = True, presort: bool = False) -> Exchange:
    """The ADL book; with ``move_mark`` the mark is already moved (not yet revalued). Entry
    prices of the shorts are spread over [99.50, 101.00] so their ranking scores differ.

    ``presort``: revalue once before the move (an unchanged-mark incremental check), which
    sorts the market's account list that ``load_positions(counterparty=...)`` leaves
    unsorted (the market maker is appended last); the step's revaluation then does not sort.
    """
    rng = np.random.default_rng(spec.seed)
    n, k = spec.candidates, spec.counterparties
    ex = Exchange(threads=spec.threads)
    ex.add_market("ADL", qty_decimals=3, price_decimals=2, maintenance_margin=0.005, initial_margin=0.01,
                  liquidation_fee=0.005, mark_price=spec.mark)
    ids = np.arange(1, n + 1, dtype=np.int64)
    ex.deposit(MARKET_MAKER, 1e12)
    ex.deposit(ids, spec.short_collateral)
    bk = spec.bankrupt_account
    ex.deposit(bk, round(spec.bankrupt_margin * k * spec.mark, 2))
    entries = np.round(rng.uniform(spec.mark * 0.995, spec.mark * 1.01, n), 2)
    ex.load_positions(np.append(ids, bk), np.zeros(n + 1, dtype=np.int32), np.append(np.full(n, -1.0), float(k)),
                      np.append(entries, spec.mark), counterparty=MARKET_MAKER)
    if presort:
        ex.check_margin(markets=[0], exact=True)
    if move_mark:
        ex.set_marks([0], [spec.new_mark])
    return ex


def adl_executor(spec: AdlSpec) -> deleverage.MarketClose:
    return deleverage.MarketClose(counterparty=MARKET_MAKER, slippage_bps=spec.slippage_bps)


def run_adl(ex: Exchange, spec: AdlSpec) -> deleverage.WaterfallResult:
    """The timed call: the step whose only liquidation is the bankrupt long, all ADL."""
    return ex.liquidate(executor=adl_executor(spec), mode="close", policy="queue")


def check_adl_step(ex: Exchange, result: deleverage.WaterfallResult, spec: AdlSpec) -> dict[str, Any]:
    t = result.totals
    assert t.liquidated_accounts == 1, t
    assert t.fund_used == 0, t
    kinds = set(result.events.kind.tolist())
    assert kinds == {"adl_close"}, kinds  # the whole position went to ADL
    assert ex.account_margin(spec.bankrupt_account, exact=True)["equity"] == 0
    return check_after_step(ex, result, expect_adl_closes=spec.counterparties)


class MarkFlip:
    """Callable: move the ADL market's mark between the two prices and revalue that market
    alone (``check_margin(markets=[0])``): the revaluation part of the step on its own."""

    def __init__(self, ex: Exchange, a: float, b: float):
        self.ex, self.prices, self.i = ex, (a, b), 0

    def __call__(self) -> Any:
        self.i ^= 1
        self.ex.set_marks([0], [self.prices[self.i]])
        return self.ex.check_margin(markets=[0], exact=True)


