"""Concurrent use from Python threads (docs/threading.md): read-only batch checks on
several threads, each on its own ``Exchange.copy()`` or sharing one exchange, with the GIL
released while the engine works, and another Python thread that was waiting runs meanwhile.
Every result is compared with hand-computed values."""

from __future__ import annotations

import sys
import threading

import numpy as np

import deleverage

N_PAIRS = 20_000


def _book() -> tuple[deleverage.Exchange, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of accounts holding 1..7 lots of BTC long and short, entered at 100.0."""
    ex = deleverage.Exchange(6, threads=1)
    ex.add_market("BTC", qty_decimals=3, price_decimals=1, mark_decimals=1, maintenance_margin=0.05, initial_margin=0.10)
    ids = np.arange(10, 10 + 2 * N_PAIRS, dtype=np.int64)
    deposits = 2_000_000 + (ids % 997) * 1_000
    ex.deposit(ids, deposits, exact=True)
    lots = (np.arange(2 * N_PAIRS) // 2) % 7 + 1
    sizes = np.where(np.arange(2 * N_PAIRS) % 2 == 0, lots, -lots).astype(np.int64)
    ex.load_positions(ids, np.zeros(2 * N_PAIRS, dtype=np.int64), sizes, np.full(2 * N_PAIRS, 1000, dtype=np.int64),
                      exact=True)
    return ex, ids, deposits, sizes


def _expected(deposits: np.ndarray, sizes: np.ndarray, mark: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # money_decimals 6, lots of 0.001, ticks of 0.1: value(q, p) = q * p * 100 micro-units.
    # equity = deposit + q * (mark - 1000) * 100; maintenance = |q| * mark * 100 * 5%, rounded up.
    equity = deposits + sizes * (mark - 1000) * 100
    mm = -((-np.abs(sizes) * mark * 100 * 5) // 100)
    im = -((-np.abs(sizes) * mark * 100 * 10) // 100)
    return equity, mm, im


def test_read_only_batch_checks_on_copies_run_while_a_waiting_thread_proceeds() -> None:
    ex, ids, deposits, sizes = _book()
    # Each worker checks its own copy at its own mark; two more share the original exchange
    # (their calls serialize on its mutex). Marks differ so a mix-up between copies shows.
    marks = [900, 950, 1010, 1100]
    copies = []
    for mark in marks:
        c = ex.copy()
        c.set_marks("BTC", mark, exact=True)
        copies.append(c)
    ex.set_marks("BTC", 980, exact=True)
    jobs = [(c, m) for c, m in zip(copies, marks)] + [(ex, 980), (ex, 980)]
    rounds = 12

    go = threading.Event()
    started = threading.Event()
    waiter_ran = threading.Event()
    before_first: list[bool] = [True for _ in jobs]
    seen_by_worker: list[list[bool]] = [[] for _ in jobs]
    results: list[list[deleverage.MarginReport]] = [[] for _ in jobs]
    failures: list[BaseException] = []

    def waiter() -> None:
        # Waits until a worker is about to start its checks, then needs the GIL only for a
        # moment: it can run before that worker's loop ends only if the engine calls release it.
        started.wait()
        waiter_ran.set()

    def worker(k: int) -> None:
        try:
            go.wait()
            target, _ = jobs[k]
            before_first[k] = waiter_ran.is_set()
            started.set()
            for _ in range(rounds):
                results[k].append(target.check_margin(exact=True))
                seen_by_worker[k].append(waiter_ran.is_set())
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=waiter)] + [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    # A long switch interval: the interpreter no longer forces the GIL from one thread to
    # another, so a thread only gets it when the holder releases it (blocking waits, or the
    # engine's calls, which release it while they work).
    old = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)

    assert not failures, failures
    assert waiter_ran.is_set()
    # The waiting thread ran while a worker was inside its loop of checks: after its first
    # call began and before its last returned. With the GIL held by the engine, the waiter
    # could run only between two workers' loops (checked to fail with a pure-Python loop).
    assert any(not b and flags[-1] for b, flags in zip(before_first, seen_by_worker)), (before_first, seen_by_worker)
    for k, (_, mark) in enumerate(jobs):
        equity, mm, im = _expected(deposits, sizes, mark)
        assert len(results[k]) == rounds
        for r in results[k]:
            np.testing.assert_array_equal(r.account, ids)
            np.testing.assert_array_equal(r.equity, equity)
            np.testing.assert_array_equal(r.maintenance, mm)
            np.testing.assert_array_equal(r.initial, im)
            np.testing.assert_array_equal(r.liquidatable, equity < mm)
    # the copies never touched each other or the original
    for c, mark in zip(copies, marks):
        assert c.marks(exact=True)[0] == mark
    assert ex.marks(exact=True)[0] == 980
    ex.check_invariants()
    for c in copies:
        c.check_invariants()


def test_a_writer_on_one_exchange_waits_for_readers_and_copies_are_unaffected() -> None:
    """Calls on one Exchange serialize: a writer moving the mark between readers' checks
    never produces a report mixing two marks; a copy taken first never sees the writes."""
    ex, ids, deposits, sizes = _book()
    ex.set_marks("BTC", 1000, exact=True)
    frozen = ex.copy()
    valid = {m: _expected(deposits, sizes, m)[0] for m in (1000, 990, 1020)}
    stop = threading.Event()
    reports: list[tuple[str, np.ndarray]] = []
    failures: list[BaseException] = []

    def reader(target: deleverage.Exchange, name: str) -> None:
        try:
            while not stop.is_set() or len(reports) < 4:
                reports.append((name, target.check_margin(exact=True).equity))
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    def writer() -> None:
        try:
            for k in range(30):
                ex.set_marks("BTC", (990, 1020)[k % 2], exact=True)
        except BaseException as e:  # noqa: BLE001
            failures.append(e)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(ex, "shared")), threading.Thread(target=reader, args=(frozen, "copy")),
               threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for name, equity in reports:
        if name == "copy":
            np.testing.assert_array_equal(equity, valid[1000])
        else:
            assert any(np.array_equal(equity, v) for v in valid.values()), "a report mixed two marks"
