#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 25) from the
# committed seed corpus. New inputs go to a temporary directory, so the repository is not
# modified; a crash or failed oracle stops the run with the input saved under $FUZZ_OUT.
# Needs `pip install atheris` and the package installed in the active Python.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"
SECONDS_EACH="${FUZZ_SECONDS:-25}"
OUT="${FUZZ_OUT:-$(mktemp -d)}"
status=0
for target in snapshot journal batch; do
  mkdir -p "$OUT/$target"
  echo "fuzz: $target for ${SECONDS_EACH}s (new inputs in $OUT/$target)"
  if ! "$PYTHON" "fuzz_$target.py" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="$OUT/$target-" -print_final_stats=1 "$OUT/$target" "corpus/$target" > "$OUT/$target.log" 2>&1; then
    echo "fuzz: $target FAILED; last lines of $OUT/$target.log:"
    tail -40 "$OUT/$target.log"
    status=1
  else
    grep -E "^Done|stat::number_of_executed_units" "$OUT/$target.log" | tail -2
  fi
done

# The C++ readers under libFuzzer with ASan/UBSan (coverage-guided in the core itself), when
# clang is installed (cpp/fuzz/README.md).
if command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: building cpp/fuzz/fuzz_core.cpp with clang (libFuzzer, ASan, UBSan)"
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I../cpp/include \
    ../cpp/fuzz/fuzz_core.cpp $(find ../cpp/src -name '*.cpp' | sort) -o "$OUT/fuzz_core" -lpthread
  mkdir -p "$OUT/core"
  echo "fuzz: core for ${SECONDS_EACH}s (new inputs in $OUT/core)"
  if ! "$OUT/fuzz_core" -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=20 -artifact_prefix="$OUT/core-" \
      -print_final_stats=1 "$OUT/core" ../cpp/fuzz/corpus > "$OUT/core.log" 2>&1; then
    echo "fuzz: core FAILED; last lines of $OUT/core.log:"
    tail -60 "$OUT/core.log"
    status=1
  else
    grep -E "^Done|stat::number_of_executed_units" "$OUT/core.log" | tail -2
  fi
else
  echo "fuzz: clang++ not found, skipping the C++ libFuzzer target"
fi
exit $status
