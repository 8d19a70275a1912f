"""Builds the C++ core on its own (cpp/CMakeLists.txt, no Python involved) and runs its
GoogleTest suite through ctest, so one pytest run covers both languages.

GoogleTest is a system package (Debian's libgtest-dev), not a pip one. Without it the C++
unit suite is skipped with the reason in pytest's summary, so the README's two commands stay
green on a fresh machine; ``DELEVERAGE_REQUIRE_CPP_TESTS=1`` (set by .ci/run, which installs
GoogleTest) turns a missing GoogleTest into a failure, so CI always runs the suite."""

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


REQUIRE_CPP_TESTS = os.environ.get("DELEVERAGE_REQUIRE_CPP_TESTS", "") not in ("", "0", "false", "no")
NO_GTEST = ("GoogleTest not found, C++ unit suite not run: install it (`apt-get install -y libgtest-dev` on "
            "Debian/Ubuntu) or point CMAKE_PREFIX_PATH at one; DELEVERAGE_REQUIRE_CPP_TESTS=1 makes this a failure")


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


def _readme_embedding_commands() -> str:
    """The bash block of README.md's "Embedding the C++ core" section, verbatim."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Embedding the C++ core"):]
    match = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    assert match is not None, "README's embedding section has no bash block"
    return match.group(1)


@pytest.fixture(scope="session")
def readme_embedding(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Runs the README's embedding commands as written, from a fresh folder holding the
    repository's cpp/ (the README says: from the repository root): configure and build the
    core (and its unit tests when GoogleTest is found), ctest, install under ./install, build
    cpp/examples against that install with find_package, run the example. Returns the folder
    (its build/cpp is reused by the unit-test run) and the result."""
    root = tmp_path_factory.mktemp("readme-embed")
    (root / "cpp").symlink_to(CPP, target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = str(Path(_cmake()).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", _readme_embedding_commands()], cwd=root, env=env,
                         capture_output=True, text=True)
    return root, ran


def test_cpp_unit_tests_pass(readme_embedding: tuple[Path, subprocess.CompletedProcess[str]],
                             tmp_path: Path) -> None:
    root, _ = readme_embedding
    build = Path(os.environ.get("DELEVERAGE_CPP_BUILD_DIR", root / "build" / "cpp"))
    if not (build / "tests").is_dir():
        # The README's build found no GoogleTest (or none is given): configure with the tests
        # ON, which fails without GoogleTest instead of silently building no tests. Python is
        # hidden from CMake: the core must not need it.
        build = tmp_path / "cpp-tests"
        configure = subprocess.run(
            [_cmake(), "-S", str(CPP), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             "-DDELEVERAGE_BUILD_TESTS=ON", "-DCMAKE_DISABLE_FIND_PACKAGE_Python=ON",
             "-DCMAKE_DISABLE_FIND_PACKAGE_Python3=ON"],
            capture_output=True, text=True)
        if configure.returncode != 0 and "GTest" in configure.stderr + configure.stdout:
            if REQUIRE_CPP_TESTS:
                pytest.fail("DELEVERAGE_REQUIRE_CPP_TESTS is set but " + NO_GTEST + "\n" + configure.stderr[-2000:])
            pytest.skip(NO_GTEST)
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


def test_readme_embedding_commands_work_as_written(readme_embedding: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    """`cmake --install` of the core, then cpp/examples built with find_package(deleverage)
    against that tree alone, and run: the embedding path an exchange engineer takes, with
    the README's commands exactly (with or without GoogleTest on the machine)."""
    root, ran = readme_embedding
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    prefix = root / "install"
    assert (prefix / "include" / "deleverage" / "engine.hpp").exists()
    assert (prefix / "include" / "deleverage" / "deleverage.hpp").exists()
    # the example's account: $30 long 2 BTC at 100, mark 90 -> equity 10, maintenance 9 (5%),
    # initial 18 (10%), as computed by hand in cpp/tests/test_engine.cpp
    assert "equity 10.000000  maintenance 9.000000  initial 18.000000  liquidatable no" in ran.stdout, ran.stdout
    # then the mark falls to 80: bankruptcy price 100 - 30 / 2 = 85.0; an ADL fill of 1 BTC at
    # 85 realizes 85 - 100 = -15 (balance 15, equity 15 + 80 - 100 = -5) and +15 for account 2
    assert "ADL at 85.0: account 1 equity -5.000000, account 2 balance 1015.000000" in ran.stdout, ran.stdout


def test_core_builds_without_googletest_and_on_demands_it(tmp_path: Path) -> None:
    """`cmake -S cpp` configures without GoogleTest (tests off, with a message saying so);
    `-DDELEVERAGE_BUILD_TESTS=ON` refuses to configure without it. GoogleTest is hidden from
    CMake here, so this runs the same on machines with and without it."""
    hide = ["-DCMAKE_DISABLE_FIND_PACKAGE_GTest=ON", "-DCMAKE_DISABLE_FIND_PACKAGE_Python=ON"]
    auto = subprocess.run([_cmake(), "-S", str(CPP), "-B", str(tmp_path / "auto"), *hide], capture_output=True, text=True)
    assert auto.returncode == 0, auto.stdout[-3000:] + auto.stderr[-3000:]
    assert "GoogleTest not found, C++ unit tests not built" in auto.stdout + auto.stderr
    assert not (tmp_path / "auto" / "tests").exists()
    on = subprocess.run([_cmake(), "-S", str(CPP), "-B", str(tmp_path / "on"), *hide, "-DDELEVERAGE_BUILD_TESTS=ON"],
                        capture_output=True, text=True)
    assert on.returncode != 0
    assert "GTest" in on.stdout + on.stderr


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
