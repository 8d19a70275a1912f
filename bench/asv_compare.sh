#!/usr/bin/env bash
# Benchmark regression check between two commits (default: HEAD~1 and HEAD) with
# `asv continuous`: asv builds each commit in its own virtualenv (asv.conf.json), runs the key
# benchmarks on both, prints the comparison, and exits non-zero when one got slower by more
# than the factor (bench/README.md, "Regression tracking", says how the factor was chosen).
#
#   bench/asv_compare.sh                 # HEAD~1 against HEAD, smoke sizes
#   bench/asv_compare.sh v0.1.0 HEAD     # any two commits
#
# Knobs: DELEVERAGE_ASV_FACTOR (default 1.5), DELEVERAGE_ASV_BENCH (a regular expression of
# benchmark names), and the usual DELEVERAGE_BENCH_* sizes (smoke defaults below).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
head=${2:-HEAD}
factor=${DELEVERAGE_ASV_FACTOR:-1.5}
# the key benchmarks: full margin check, crash step, single-account liquidation, allocation
bench=${DELEVERAGE_ASV_BENCH:-'^bench_margin\.FullCheck\.time_engine|^bench_waterfall\.CrashStep\.time_liquidate|^bench_waterfall\.OnlineLiquidation\.time_one_account|^bench_allocate\.Allocate\.time_kernel'}
export DELEVERAGE_BENCH_POSITIONS=${DELEVERAGE_BENCH_POSITIONS:-50000}
export DELEVERAGE_BENCH_WINNERS=${DELEVERAGE_BENCH_WINNERS:-200000}
asv machine --yes >/dev/null
# Both commits' samples are taken in alternating rounds, so that a slow minute on a shared
# machine hits both alike; every benchmark gets 2 rounds of 5 to 10 samples.
status=0
asv continuous --factor "$factor" --interleave-rounds -a rounds=2 -a "repeat=(5, 10, 20.0)" \
  --show-stderr --split -b "$bench" "$base" "$head" || status=$?
# every key benchmark's ratio, changed or not (continuous prints only the changed ones)
asv compare --factor "$factor" --split "$base" "$head" | grep -E '^(\||All|Benchmarks|BENCHMARKS|$)' || true
if [ $status -ne 0 ]; then
  echo "asv_compare: a key benchmark is more than $factor times slower at $head than at $base (or failed there)"
fi
exit $status
