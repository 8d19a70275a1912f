"""Where the time of a waterfall step goes: ``perf record`` on a loop of steps, grouped.

    python bench/profile_waterfall.py adl                # one ADL event over 1M candidates
    python bench/profile_waterfall.py adl --presort      # market list already sorted
    python bench/profile_waterfall.py crash --positions 1000000 --steps 3

Each step runs on a fresh book built beforehand (all books are built first, then ``perf
record -p <this process>`` is attached, then the steps run back to back), so the profile
holds only the steps. Samples inside ``Engine::liquidate`` are grouped by their call chain
into margin revaluation, the candidate scan, the ADL queue build (``Engine::adl_score``,
``find_slot``, ``make_heap``), the event itself, and so on; the ms column spreads the mean
measured step time over the groups.

The installed extension is stripped (pybind11 strips Release builds), so perf cannot name
its functions. Build an unstripped copy with the same optimization outside the tree and pass
it with ``--core``::

    cmake -S . -B /tmp/dlv_prof/build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \\
        "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O3 -g -fno-omit-frame-pointer -DNDEBUG" \\
        -Dpybind11_DIR=$(python -c "import pybind11; print(pybind11.get_cmake_dir())") \\
        -DPYBIND11_FINDPYTHON=ON -DPython_EXECUTABLE=$(which python)
    ninja -C /tmp/dlv_prof/build
    python bench/profile_waterfall.py adl --core /tmp/dlv_prof/build/cpp/bindings/_core.cpython-*.so

(``--core`` copies python/deleverage and that .so to a temporary directory and imports the
package from there, bypassing the editable install.) Needs ``perf`` and permission to
attach to the process (``kernel.perf_event_paranoid`` <= 1 or root).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def use_core(so_path: str) -> str:
    """Import deleverage from a temporary copy of python/deleverage with ``so_path`` as its
    extension (the editable-install redirect is removed from sys.meta_path)."""
    tmp = tempfile.mkdtemp(prefix="deleverage-prof-")
    pkg = os.path.join(tmp, "deleverage")
    shutil.copytree(os.path.join(REPO, "python", "deleverage"), pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy2(so_path, os.path.join(pkg, os.path.basename(so_path)))
    sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__ and "Editable" not in type(f).__name__]
    sys.path.insert(0, tmp)
    import deleverage._core as core

    if not os.path.realpath(core.__file__).startswith(os.path.realpath(tmp)):
        raise SystemExit(f"--core: deleverage._core still comes from {core.__file__}")
    return tmp


# Groups, first match wins. Each rule: (group, predicate on the frame symbols leaf-first and
# the leaf's source line).
def _has(syms: list[str], *names: str) -> bool:
    return any(n in s for s in syms for n in names)


def classify(syms: list[str], leaf_src: str) -> str | None:
    """The group of one sample from its frames (leaf first; with --call-graph dwarf, perf
    script lists inlined functions as frames of their own)."""
    in_step = _has(syms, "Engine::liquidate", "WaterfallRun", "StepState::", "Settlement::", "AdlCloses::", "Haircuts::")  # worker threads lack liquidate
    if not in_step:
        if _has(syms, "register_waterfall"):
            return "binding: result columns to numpy"
        return None
    leaf = syms[0] if syms else ""
    if _has(syms, "adl_score"):
        return "ADL queue build: Engine::adl_score (incl. 128-bit divisions)"
    if not _has(syms, "Engine::liquidate"):  # a worker thread of a parallel_for in the step
        if _has(syms, "WaterfallRun::queue"):
            return "ADL queue build: other work in the parallel score loop"
        if _has(syms, "WaterfallRun::compute_start_margins", "WaterfallRun::run"):
            return "step start: margins of every account (parallel)"
        return "step: other work on worker threads"
    if _has(syms, "sort_market_accounts"):
        return "revaluation: re-sort of the market account lists"
    if _has(syms, "revalue_moved_markets"):
        return "revaluation: cached account sums of the moved markets"
    if _has(syms, "compact_if_wasteful"):
        return "compaction of the position columns"
    if _has(syms, "AdlCloses::"):
        if _has(syms, "apply_fill", "set_position", "StepState::fill", "StepState::touch", "WaterfallEvents",
                "mark_winner", "adl_markets_"):
            return "ADL event: fills, backups, event rows"
        if _has(syms, "make_heap", "adjust_heap", "push_heap", "pop_heap"):
            return "ADL queue build: make_heap (+ the event's pops)"
        if _has(syms, "find_slot"):
            return "ADL queue build: find_slot per candidate"
        if any(s == "queue" or s.endswith("::queue") for s in syms):
            return "ADL queue build: loop (eligibility, side, push_back)"
        return "ADL event: pops, takes, other code in AdlCloses"
    if _has(syms, "Haircuts::"):
        return "haircuts (pending deficits)"
    if _has(syms, "closings"):
        return "liquidation: bankruptcy values (closings)"
    if _has(syms, "settle", "charge_fee", "pay_from_fund", "Settlement::plan"):
        return "liquidation: settlement, fees, fund"
    if _has(syms, "Settlement::liquidate", "Settlement::backstop"):
        return "liquidation: executor fills and other"
    if _has(syms, "WaterfallRun::compute_start_margins"):
        return "step start: margins of every account (parallel)"
    if _has(syms, "WaterfallRun::run"):
        if _has(syms, "margin_from_sums") or "WaterfallRun::run" in leaf or "divti3" in leaf:
            return "candidate scan: margin of every account (run())"
        if _has(syms, "std::pair<unsigned int, int>"):
            return "re-sort of the (winner, market) ADL log every round"
        if _has(syms, "introsort", "insertion_sort", "std::sort"):
            return "candidate sort (worst first)"
        if _has(syms, "memset", "fill_a", "assign"):
            return "step setup: per-account flag arrays"
        return "run(): other"
    return "step setup: per-account flag arrays, allocation, other"


def parse_perf_script(path: str) -> collections.Counter:
    out = subprocess.run(["perf", "script", "-i", path, "-F", "ip,sym,srcline"], capture_output=True, text=True, check=True).stdout
    counts: collections.Counter = collections.Counter()
    for block in out.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines:
            continue
        syms: list[str] = []
        srcs: list[str] = []
        for ln in lines:
            if ln.startswith("\t"):  # a frame: "\t<ip> <symbol>"
                parts = ln.strip().split(None, 1)
                syms.append(parts[1] if len(parts) > 1 else "")
                srcs.append("")
            elif srcs:  # "  file:line" of the frame above
                srcs[-1] = ln.strip()
        counts[classify(syms, srcs[0] if srcs else "")] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=["adl", "crash"])
    ap.add_argument("--core", help="unstripped _core extension to profile (see above)")
    ap.add_argument("--steps", type=int, default=6, help="steps (fresh books) in the profiled loop")
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--counterparties", type=int, default=1_000)
    ap.add_argument("--presort", action="store_true", help="adl: sort the market list before the step")
    ap.add_argument("--positions", type=int, default=1_000_000, help="crash: book size")
    ap.add_argument("--freq", type=int, default=1999, help="perf sampling frequency (Hz)")
    ap.add_argument("--call-graph", default="dwarf", help="perf --call-graph mode (dwarf or fp)")
    ap.add_argument("--out", default=None, help="perf.data path (default: a temporary file)")
    ap.add_argument("--top", type=int, default=15, help="also print the top N symbols")
    args = ap.parse_args(argv)

    if args.core:
        use_core(args.core)
    sys.path.insert(0, HERE)
    import waterfall_workload as ww  # noqa: E402  (after --core switched the package)

    import deleverage._core as core

    if args.workload == "adl":
        spec = ww.AdlSpec(candidates=args.candidates, counterparties=args.counterparties)
        label = spec.label() + (" / market list pre-sorted" if args.presort else "")
        build = lambda: ww.build_adl_book(spec, presort=args.presort)  # noqa: E731
        step = lambda ex: ww.run_adl(ex, spec)  # noqa: E731
    else:
        spec = ww.CrashSpec.from_env(args.positions)
        spec = spec.scaled(args.positions)
        label = spec.label()
        build = lambda: ww.build_crash(spec)  # noqa: E731
        step = lambda ex: ww.run_crash(ex, spec)  # noqa: E731

    print(f"# profile: {args.workload}: {label}; {args.steps} steps; extension {core.__file__}")
    t0 = time.perf_counter()
    books = [build() for _ in range(max(1, args.steps))]
    print(f"# built {len(books)} books in {time.perf_counter() - t0:.1f} s", flush=True)

    out = args.out or os.path.join(tempfile.mkdtemp(prefix="deleverage-perf-"), "perf.data")
    perf = subprocess.Popen(["perf", "record", "-F", str(args.freq), "--call-graph", args.call_graph, "-o", out,
                             "-p", str(os.getpid())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.5)  # let perf attach
    if perf.poll() is not None:
        raise SystemExit(f"perf record failed: {perf.stderr.read().decode() if perf.stderr else ''}")
    times = []
    for i in range(len(books)):
        ex = books[i]
        t = time.perf_counter()
        res = step(ex)
        times.append(time.perf_counter() - t)
        books[i] = None  # free as we go
        del ex
    perf.send_signal(signal.SIGINT)
    perf.wait()
    mean = sum(times) / len(times)
    print(f"# steps (ms): {', '.join(f'{t * 1e3:.1f}' for t in times)}; mean {mean * 1e3:.1f}, best {min(times) * 1e3:.1f}")
    print(f"# last step: {res.summary()}")
    print(f"# perf data: {out}")

    counts = parse_perf_script(out)
    inside = {k: v for k, v in counts.items() if k is not None}
    n_in = sum(inside.values())
    n_all = sum(counts.values())
    if n_in == 0:
        print("no samples inside Engine::liquidate: is the extension stripped? pass --core (see --help)")
        return 1
    print(f"# {n_in} of {n_all} samples inside the compiled step, worker threads included (the rest: the Python")
    print("# wrapper and the loop between steps)")
    print()
    cpu_ms = 1e3 / args.freq / len(times)  # one sample ~ 1/freq s of one thread's CPU
    print(f"| {'group':66} | {'share':>6} | {'CPU ms/step':>11} |")
    print(f"|{'-' * 68}|{'-' * 7}:|{'-' * 12}:|")
    for k, v in sorted(inside.items(), key=lambda kv: -kv[1]):
        print(f"| {k:66} | {v / n_in:6.1%} | {v * cpu_ms:11.2f} |")
    print(f"| {'total (CPU of every thread; the step is partly parallel)':66} | {1:6.1%} | {n_in * cpu_ms:11.2f} |")
    print()
    print(f"# share = of the samples in the step (all threads); CPU ms/step = samples / {args.freq} Hz / steps,")
    print(f"# compare with the mean wall time of a step, {mean * 1e3:.1f} ms (perf adds a little).")
    if args.top:
        rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--sort", "dso,sym", "-g", "none", "--stdio"],
                             capture_output=True, text=True).stdout
        rows = [ln for ln in rep.splitlines() if "%" in ln and not ln.startswith("#")]
        print(f"\n# top {args.top} symbols (self time, all samples):")
        for ln in rows[: args.top]:
            print(ln[:160])
    return 0


if __name__ == "__main__":
    sys.exit(main())
