"""Per-operation latency of the C++ core, measured from C++ (bench/latency/latency.cpp).

Builds ``bench/latency`` (Release, linking the core from this tree) into
``build/bench-latency`` and runs it on a book of ``DELEVERAGE_BENCH_POSITIONS`` positions
(default 1,000,000; 4 per account), one sample per op per position up to 1,000,000.
The program prints p50 / p99 / p99.9 / max in ns for: a trade, the buyer's margin check
right after it, a cold margin check and one ADL fill, and writes them as JSON
(``build/bench-latency/latency.json``). Target: margin check after a trade, p99 <= 1 us
(asserted only with ``DELEVERAGE_BENCH_ENFORCE=1``: the numbers depend on the machine).

    pytest bench/test_latency.py -s                                   # full size
    DELEVERAGE_BENCH_POSITIONS=20000 pytest bench/test_latency.py     # CI smoke
    build/bench-latency/deleverage_latency --positions 1000000 --json out.json
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ENFORCE
from margin_workload import _env_int

ROOT = Path(__file__).resolve().parents[1]
OPS = ("trade", "margin_after_trade", "margin_cold", "adl_fill", "clock_overhead")


def _build() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.fail("cmake is not installed: `pip install cmake` (it is in the test extras)")
    build = ROOT / "build" / "bench-latency"
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build / "CMakeCache.txt").exists() else []
    for cmd in ([cmake, "-S", str(ROOT / "bench" / "latency"), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release"],
                [cmake, "--build", str(build), "-j", "2"]):
        ran = subprocess.run(cmd, capture_output=True, text=True)
        assert ran.returncode == 0, " ".join(cmd) + "\n" + ran.stdout[-3000:] + ran.stderr[-3000:]
    return build


def test_cpp_latency(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    build = _build()
    positions = _env_int("DELEVERAGE_BENCH_POSITIONS", 1_000_000)
    samples = min(max(positions, 1_000), 1_000_000)
    out = build / "latency.json"
    ran = subprocess.run([str(build / "deleverage_latency"), "--positions", str(positions), "--samples", str(samples),
                          "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    result = json.loads(out.read_text())
    ops = result["ops"]
    assert set(ops) == set(OPS)
    for name in OPS:
        h = ops[name]
        assert h["count"] == samples, name
        assert 0 <= h["min_ns"] <= h["p50_ns"] <= h["p99_ns"] <= h["p999_ns"] <= h["max_ns"], (name, h)
    assert result["positions"] >= positions - 8
    line = "C++ latency (ns, {:_} positions): ".format(result["positions"]) + "; ".join(
        f"{n} p50 {ops[n]['p50_ns']} p99 {ops[n]['p99_ns']} p99.9 {ops[n]['p999_ns']}" for n in OPS[:4])
    with capsys.disabled():  # the report line, also under -q and output capture
        print(f"\n[deleverage bench] {line}")
    request.node.user_properties.append(("latency", result))
    if ENFORCE:
        assert ops["margin_after_trade"]["p99_ns"] <= 1_000, line
