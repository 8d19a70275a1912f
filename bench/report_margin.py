"""Margin-check comparison table with plain time.perf_counter (best of N), for the closing note.

    python bench/report_margin.py                      # 10M positions / 1M accounts / 100 markets
    python bench/report_margin.py --positions 1000000 --accounts 100000 --repeat 5

Defaults come from DELEVERAGE_BENCH_POSITIONS / _ACCOUNTS / _MARKETS like the pytest
benchmarks. The candidates are timed round-robin (one call of each per round) so that noise
on a shared machine hits all of them alike; the table shows the best round of each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import margin_workload as mw  # noqa: E402
import numba_peer  # noqa: E402


def _numba_target(peer: str) -> float:
    """How many times the default check a Numba peer must take: 2 for one thread, 1 for prange."""
    return mw.TARGET_NUMBA_PRANGE_OVER_DEFAULT if "prange" in peer else mw.TARGET_NUMBA_ONE_THREAD_OVER_DEFAULT


def main(argv: list[str] | None = None) -> int:
    env = mw.Sizes.from_env()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--positions", type=int, default=env.positions)
    ap.add_argument("--accounts", type=int, default=None, help="default: DELEVERAGE_BENCH_ACCOUNTS, else positions / 10")
    ap.add_argument("--markets", type=int, default=env.markets)
    ap.add_argument("--seed", type=int, default=env.seed)
    ap.add_argument("--threads", type=int, default=env.threads, help="engine threads (0 = every core)")
    ap.add_argument("--repeat", type=int, default=7, help="timed rounds (best is reported)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args(argv)
    accounts = args.accounts
    if accounts is None:
        accounts = env.accounts if args.positions == env.positions else max(1, args.positions // 10)
    sizes = mw.Sizes(args.positions, accounts, args.markets, args.seed, args.threads)

    print(f"# margin check: {sizes.label()}, seed {sizes.seed}")
    print(f"# {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, numpy {np.__version__}")
    w = mw.build_workload(sizes, lambda m: print("#", m, flush=True))
    ex = w.ex
    n_pos = ex.position_count

    # correctness first: numpy computes the same thing, the incremental check matches a full one
    cmp = mw.assert_numpy_agrees(ex.check_margin(exact=True), mw.numpy_margin_check(w.cols))
    assert mw.stream_sum(w.stream) == mw.expected_stream_sum(w.stream)
    move = mw.IncrementalMove(ex, w.incremental_market)
    mw.assert_incremental_matches_full(ex, move())
    move.restore()
    ex.check_invariants()

    # proportionality: moving k markets revalues about k times as many positions
    k_markets = [k for k in (4, 16) if k <= args.markets]
    moves_k = {k: mw.IncrementalMove(ex, [(w.incremental_market + i) % args.markets for i in range(k)]) for k in k_markets}
    core = ex.core  # the compiled call without the Python report wrapper (informative only)
    # the peer a quant would write instead: a Numba loop over the same columns (same numbers)
    if not numba_peer.available() and numba_peer.REQUIRED:
        raise SystemExit("DELEVERAGE_REQUIRE_NUMBA is set but " + numba_peer.MISSING)
    peers = numba_peer.candidates(w.cols)
    for peer in peers.values():
        mw.assert_numpy_agrees(ex.check_margin(exact=True), peer())
    reused = ex.check_margin()  # out=: a loop of checks writes into one report
    candidates = {
        "stream_sum (24 B/position)": lambda: mw.stream_sum(w.stream),
        "engine check_margin(exact=True)": lambda: ex.check_margin(exact=True),
        "engine check_margin(exact=False)": lambda: ex.check_margin(exact=False),
        "  of which compiled call": lambda: core.check_margin_quote(),
        "engine check_margin(out=report)": lambda: ex.check_margin(out=reused),
        "numpy float64 (1 core)": lambda: mw.numpy_margin_check(w.cols),
        **peers,
        "engine incremental, 1 market": move,
        **{f"engine incremental, {k} markets": mv for k, mv in moves_k.items()},
    }
    best = {k: float("inf") for k in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    t_start = time.perf_counter()
    for _ in range(max(1, args.repeat)):
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    move.restore()
    for mv in moves_k.values():
        mv.restore()
    ex.check_invariants()
    elapsed = time.perf_counter() - t_start

    eng = best["engine check_margin(exact=True)"]
    print(f"# timed {args.repeat} rounds in {elapsed:.1f} s; incremental market {w.incremental_market} "
          f"holds {w.incremental_positions:_} positions ({w.incremental_positions / n_pos:.2%})")
    print()
    print(f"| {'candidate':34} | {'best ms':>9} | {'ns/position':>11} | {'vs engine':>9} |")
    print(f"|{'-' * 36}|{'-' * 10}:|{'-' * 12}:|{'-' * 10}:|")
    for name, t in best.items():
        per = n_pos
        if name.startswith("engine incremental"):
            k = int(name.split(",")[1].split()[0])
            per = w.incremental_positions * k  # markets hold about the same number of positions
        print(f"| {name:34} | {t * 1e3:9.2f} | {t / per * 1e9:11.2f} | {t / eng:9.3f} |")

    share = w.incremental_positions / n_pos
    ratios = {
        "numpy / engine": (best["numpy float64 (1 core)"] / eng, f">= {mw.TARGET_NUMPY_OVER_ENGINE:g}",
                           best["numpy float64 (1 core)"] / eng >= mw.TARGET_NUMPY_OVER_ENGINE),
        "engine / stream": (eng / best["stream_sum (24 B/position)"], f"<= {mw.TARGET_ENGINE_OVER_STREAM:g}",
                            eng / best["stream_sum (24 B/position)"] <= mw.TARGET_ENGINE_OVER_STREAM),
        "engine bytes / position": (w.bytes_per_position, f"<= {mw.TARGET_BYTES_PER_POSITION:g}",
                                    w.bytes_per_position <= mw.TARGET_BYTES_PER_POSITION),
        "incremental / full": (best["engine incremental, 1 market"] / eng, f"~ {share:.4f} (share)",
                               best["engine incremental, 1 market"] / eng <= 2 * share),
        **{f"incremental {k} markets / 1 market": (best[f"engine incremental, {k} markets"] / best["engine incremental, 1 market"],
                                                    f"~ {k} (linear)", None) for k in k_markets},
        "engine default / exact": (best["engine check_margin(exact=False)"] / eng, f"<= {mw.TARGET_DEFAULT_OVER_EXACT:g}",
                                   best["engine check_margin(exact=False)"] / eng <= mw.TARGET_DEFAULT_OVER_EXACT),
        "engine out=report / exact": (best["engine check_margin(out=report)"] / eng, "(info)", None),
        **{f"{name} / engine (default)": (best[name] / best["engine check_margin(exact=False)"],
                                          f">= {_numba_target(name):g}",
                                          best[name] / best["engine check_margin(exact=False)"] >= _numba_target(name))
           for name in peers},
        **{f"{name} / engine (exact)": (best[name] / eng, "(info)", None) for name in peers},
        "numpy / engine compiled call": (best["numpy float64 (1 core)"] / best["  of which compiled call"], "(info)", None),
        "compiled call / stream": (best["  of which compiled call"] / best["stream_sum (24 B/position)"], "(info)", None),
    }
    print()
    print(f"| {'ratio':44} | {'measured':>9} | {'target':>16} | {'ok':4} |")
    print(f"|{'-' * 46}|{'-' * 10}:|{'-' * 17}:|{'-' * 6}|")
    for name, (v, target, ok) in ratios.items():
        mark = "" if ok is None else ("yes" if ok else "NO")
        print(f"| {name:44} | {v:9.3f} | {target:>16} | {mark:4} |")
    print()
    print(f"# numpy vs engine flags: {cmp['flag_mismatches']} mismatches over {cmp['accounts']:_} accounts "
          f"({cmp['liquidatable_engine']:_} liquidatable in the engine, {cmp['liquidatable_numpy']:_} in numpy)")
    if not peers:
        print(f"# numba peer skipped: {numba_peer.MISSING}")
    print(f"# engine memory {ex.memory_bytes / 2**20:.1f} MiB; stream array {w.stream.nbytes / 2**20:.1f} MiB "
          f"read at {w.stream.nbytes / best['stream_sum (24 B/position)'] / 1e9:.1f} GB/s")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": sizes.__dict__, "best_seconds": best, "comparison": cmp,
                       "bytes_per_position": w.bytes_per_position,
                       "ratios": {k: v[0] for k, v in ratios.items()}}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
