#!/usr/bin/env bash
# The demo: set up and build, then run each example program.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
run() {
  echo "== $(basename "$1") ${*:2}"
  "$@"
}
for exe in build/examples/*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  case "$(basename "$exe")" in
    make_tiny_lm | lm_from_pretrained) ;;  # they take arguments: run below
    *) run "$exe" ;;
  esac
done
# A checkpoint saved in C++, then loaded back the way a downloaded one is.
run build/examples/make_tiny_lm build/demo/tiny-dat
run build/examples/lm_from_pretrained build/demo/tiny-dat 3 14 15 9 2
