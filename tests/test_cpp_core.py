"""Builds the C++ core on its own (cpp/CMakeLists.txt, no Python involved) and runs its
GoogleTest suite through ctest, so one pytest run covers both languages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPP = ROOT / "cpp"


def _cmake() -> str:
    exe = shutil.which("cmake")
    if exe is None:
        pytest.fail("cmake is not installed: `pip install cmake` (it is in the test extras)")
    return exe


def test_core_has_no_python_headers() -> None:
    offenders = []
    for folder in (CPP / "src", CPP / "include"):
        for path in folder.rglob("*"):
            if path.suffix in {".hpp", ".cpp", ".h", ".cc"}:
                text = path.read_text()
                if re.search(r'#include\s*[<"](Python\.h|pybind11|nanobind)', text):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_cpp_unit_tests_pass(tmp_path_factory: pytest.TempPathFactory) -> None:
    build = Path(os.environ.get("DELEVERAGE_CPP_BUILD_DIR", tmp_path_factory.mktemp("cpp-build")))
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    # Configure with Python hidden from CMake: the core must not need it.
    configure = subprocess.run(
        [_cmake(), "-S", str(CPP), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_DISABLE_FIND_PACKAGE_Python=ON", "-DCMAKE_DISABLE_FIND_PACKAGE_Python3=ON"],
        capture_output=True, text=True)
    if configure.returncode != 0 and "GTest" in configure.stderr + configure.stdout:
        pytest.fail("GoogleTest not found: install Debian's libgtest-dev (`apt-get install -y libgtest-dev`)\n"
                    + configure.stderr[-2000:])
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    jobs = str(os.cpu_count() or 2)
    built = subprocess.run([_cmake(), "--build", str(build), "-j", jobs], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-3000:]
    ctest = shutil.which("ctest") or str(Path(_cmake()).with_name("ctest"))
    ran = subprocess.run([ctest, "--test-dir", str(build), "--output-on-failure", "-j", jobs], capture_output=True, text=True)
    sys.stdout.write(ran.stdout[-3000:])
    assert ran.returncode == 0, ran.stdout[-8000:] + ran.stderr[-2000:]
    match = re.search(r"tests passed.* out of (\d+)", ran.stdout)
    assert match is not None and int(match.group(1)) > 0, "ctest ran no tests"


def test_installed_core_builds_the_embedding_example(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`cmake --install` of the core, then cpp/examples built with find_package(deleverage)
    against that tree alone, and run: the embedding path an exchange engineer takes."""
    root = tmp_path_factory.mktemp("embed")
    build, prefix, example = root / "core", root / "install", root / "example"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 2)
    steps = [
        [_cmake(), "-S", str(CPP), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
         "-DDELEVERAGE_BUILD_TESTS=OFF", "-DCMAKE_DISABLE_FIND_PACKAGE_Python=ON"],
        [_cmake(), "--build", str(build), "-j", jobs],
        [_cmake(), "--install", str(build), "--prefix", str(prefix)],
        [_cmake(), "-S", str(CPP / "examples"), "-B", str(example), *generator, f"-DCMAKE_PREFIX_PATH={prefix}"],
        [_cmake(), "--build", str(example), "-j", jobs],
    ]
    for cmd in steps:
        ran = subprocess.run(cmd, capture_output=True, text=True)
        assert ran.returncode == 0, " ".join(cmd) + "\n" + ran.stdout[-3000:] + ran.stderr[-3000:]
    assert (prefix / "include" / "deleverage" / "engine.hpp").exists()
    exe = example / "risk_service_example"
    out = subprocess.run([str(exe)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # the example's account: $30 long 2 BTC at 100, mark 90 -> equity 10, maintenance 9 (5%),
    # initial 18 (10%), as computed by hand in cpp/tests/test_engine.cpp
    assert "equity 10.000000  maintenance 9.000000  initial 18.000000  liquidatable no" in out.stdout, out.stdout
    # then the mark falls to 80: bankruptcy price 100 - 30 / 2 = 85.0; an ADL fill of 1 BTC at
    # 85 realizes 85 - 100 = -15 (balance 15, equity 15 + 80 - 100 = -5) and +15 for account 2
    assert "ADL at 85.0: account 1 equity -5.000000, account 2 balance 1015.000000" in out.stdout, out.stdout
    assert (prefix / "include" / "deleverage" / "deleverage.hpp").exists()


def test_public_headers_are_documented() -> None:
    """Each public header opens with a comment saying what it is, before any code, and the
    umbrella header lists every one of them."""
    include = CPP / "include" / "deleverage"
    umbrella = (include / "deleverage.hpp").read_text()
    undocumented, unlisted = [], []
    for path in sorted(include.rglob("*.hpp")):
        lines = path.read_text().splitlines()
        head = []
        for line in lines:
            if not line.startswith("//"):
                break
            head.append(line)
        if len(" ".join(head)) < 60:  # at least a sentence
            undocumented.append(str(path.relative_to(include)))
        if path.parent == include and path.name != "deleverage.hpp" and path.name not in umbrella:
            unlisted.append(path.name)
    assert undocumented == []
    assert unlisted == []
