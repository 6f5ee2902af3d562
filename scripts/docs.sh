#!/usr/bin/env bash
# Builds the documentation site into build/docs/html: Doxygen's XML of the C++ headers, then
# Sphinx (MyST Markdown pages, Breathe for the C++ API, autodoc for the Python package, which
# must be built: build/python).
#   scripts/docs.sh            build (incrementally)
#   scripts/docs.sh --strict   warnings are errors, fresh build (scripts/test.sh runs this)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${DOCS_BUILD_DIR:-build/docs}"
sphinx_flags=(-q)
if [ "${1:-}" = "--strict" ]; then
  sphinx_flags+=(-W --keep-going -E)
fi
command -v doxygen >/dev/null || { echo "docs: doxygen is not installed (apt-get install doxygen)" >&2; exit 1; }
[ -d build/python/dual_attention_cpp ] ||
  { echo "docs: build/python/dual_attention_cpp is missing; build it first (scripts/setup.sh)" >&2; exit 1; }

mkdir -p "$OUT/doxygen"
# Doxygen's warnings (a comment naming a parameter that does not exist, bad markup) are errors too
# in strict mode.
DOXYGEN_OUTPUT="$OUT/doxygen" doxygen docs/Doxyfile 2> "$OUT/doxygen/warnings.log"
if [ -s "$OUT/doxygen/warnings.log" ]; then
  cat "$OUT/doxygen/warnings.log" >&2
  [ "${1:-}" = "--strict" ] && { echo "docs: Doxygen warned (see above)" >&2; exit 1; }
fi
DOXYGEN_XML="$ROOT/$OUT/doxygen/xml" PYTHONPATH="$ROOT/build/python${PYTHONPATH:+:$PYTHONPATH}" \
  .venv/bin/python -m sphinx -b html "${sphinx_flags[@]}" -d "$OUT/doctrees" docs "$OUT/html"
echo "docs: $OUT/html/index.html"
