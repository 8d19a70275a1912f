#!/usr/bin/env bash
# The C++ tests and the pytest suite against a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (any finding fails the run). Called by .ci/run; runs alone too:
#   .ci/sanitize.sh            # both parts
#   .ci/sanitize.sh cpp        # only the C++ tests
#   .ci/sanitize.sh python     # only the Python extension + pytest
# Separate build dirs (build/sanitize-*) and venv (.ci/venv-sanitize), so the normal build
# is untouched. Budget: about 8 minutes on 2 cores (most of it compiling).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PART=${1:-all}
JOBS=${DELEVERAGE_SANITIZE_JOBS:-2}
SAN=address,undefined
# Debug (-O0 -g) by default: the optimizer removes some of what UBSan checks (a reference
# bound to *nullptr in a prefetch was reported at -O0 and not at -O2), and the tests are
# small enough that unoptimized code does not matter. DELEVERAGE_SANITIZE_BUILD_TYPE overrides.
SANITIZE_BUILD_TYPE=${DELEVERAGE_SANITIZE_BUILD_TYPE:-Debug}
PYTHON=${PYTHON:-python3}
start=$(date +%s)

# halt_on_error: the first UB report stops the run; print_stacktrace names the line.
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1}

if [ "$PART" = all ] || [ "$PART" = cpp ]; then
  echo "== sanitize: C++ core + GoogleTest ($SAN)"
  B=build/sanitize-cpp
  GEN=(); command -v ninja >/dev/null && [ ! -f "$B/CMakeCache.txt" ] && GEN=(-G Ninja)
  cmake -S cpp -B "$B" "${GEN[@]}" -DCMAKE_BUILD_TYPE=${SANITIZE_BUILD_TYPE} -DDELEVERAGE_BUILD_TESTS=ON \
    -DDELEVERAGE_SANITIZE=$SAN -DCMAKE_DISABLE_FIND_PACKAGE_Python=ON >/dev/null
  cmake --build "$B" -j "$JOBS"
  # Every C++ test runs (leak checking on: the core owns all its memory).
  ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=1" ctest --test-dir "$B" --output-on-failure -j "$JOBS"
  echo "== sanitize: C++ done after $(( $(date +%s) - start )) s"
fi

if [ "$PART" = all ] || [ "$PART" = python ]; then
  echo "== sanitize: Python extension + pytest ($SAN)"
  V=.ci/venv-sanitize
  [ -x "$V/bin/python" ] || "$PYTHON" -m venv "$V"
  "$V/bin/python" -m pip install -q --upgrade pip
  # the build tools and the test extra's packages (pyproject.toml; mypy, cmake and ninja are
  # not needed here)
  "$V/bin/python" -m pip install -q scikit-build-core pybind11 numpy "pytest>=7" "hypothesis>=6.80" "pandas>=2.0" \
    "pytest-benchmark>=4" "matplotlib>=3.7" "pyarrow>=14" "dask[distributed]>=2024.1"
  # The module and the core it links are instrumented (DELEVERAGE_SANITIZE is PUBLIC on the core).
  CMAKE_BUILD_PARALLEL_LEVEL=$JOBS "$V/bin/python" -m pip install -q --no-deps --no-build-isolation \
    -C cmake.define.DELEVERAGE_SANITIZE=$SAN -C cmake.build-type=${SANITIZE_BUILD_TYPE} \
    -C build-dir=build/sanitize-py "$ROOT"
  # CPython itself is not instrumented: the ASan runtime must be loaded first, and CPython
  # leaks at exit by design, so leak checking is off here. libstdc++ is preloaded too: python
  # does not link it, and without it ASan's __cxa_throw interceptor finds no real function and
  # aborts at the first C++ exception ("CHECK failed: asan_interceptors.cpp ... __cxa_throw").
  PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
  # The whole suite, hypothesis profile as usual, but for the typing check (mypy: no compiled
  # code), test_cpp_core (it builds its own uninstrumented core; the part above runs the
  # same C++ tests instrumented) and the check that docs/policy_lab.md's tables are the
  # script's output (a docs check, 16 full comparisons: slow at -O0; tests/test_compare.py
  # runs the same code here). Extra pytest arguments: DELEVERAGE_SANITIZE_PYTEST_ARGS.
  # --capture=sys: a sanitizer report (written to fd 2 by the runtime) reaches the log even
  # when it ends the process in the middle of a test.
  LD_PRELOAD="$PRELOAD" ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
    "$V/bin/python" -m pytest -q -p no:cacheprovider --capture=sys tests \
      --ignore=tests/test_cpp_core.py --ignore=tests/test_typing.py \
      --deselect tests/test_docs_numbers.py::test_policy_lab_tables_are_what_their_script_prints \
      ${DELEVERAGE_SANITIZE_PYTEST_ARGS:-}
  echo "== sanitize: Python done after $(( $(date +%s) - start )) s"
fi
echo "== sanitize: all clean in $(( $(date +%s) - start )) s"
