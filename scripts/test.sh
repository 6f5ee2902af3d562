#!/usr/bin/env bash
# The test command: set up (idempotent), build, then run the C++ (ctest) and Python (pytest) suites.
# Exits 0 iff everything passed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"

status=0
echo "== C++ suite (ctest)"
(cd build && OMP_NUM_THREADS=2 ctest --output-on-failure) || status=1

if compgen -G "tests/python/test_*.py" >/dev/null; then
  echo "== Python suite (pytest)"
  PYTHONPATH="$ROOT/build/python${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=2 \
    .venv/bin/python -m pytest -q tests/python || status=1
fi
exit $status
