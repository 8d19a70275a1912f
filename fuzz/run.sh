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
exit $status
