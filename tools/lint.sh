#!/usr/bin/env bash
# Lint checks of .ci/run: ruff over the Python (pyproject.toml [tool.ruff]) and clang-format
# over the C++ (.clang-format). Install the pinned tools with
#   pip install -r lint-requirements.txt
# and fix what they report with `ruff check --fix .` and `tools/lint.sh --fix`.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'cpp/*.cpp' 'cpp/*.hpp' 'bench/latency/*.cpp' 'bench/latency/*.hpp')
if [[ "${1:-}" == "--fix" ]]; then
  ruff check --fix .
  clang-format -i $files
  exit 0
fi
ruff check .
clang-format --dry-run --Werror $files
echo "lint: clean"
