#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/) under ASan + UBSan for SECONDS each (default 60), one after
# the other, and prints each one's executions, speed, coverage and findings. Not part of
# scripts/test.sh. Builds build-sanitize/ first (as scripts/sanitize.sh does).
#   scripts/fuzz.sh [SECONDS] [TARGET...]      e.g. scripts/fuzz.sh 600 fuzz_config
# Seeds come from tests/fixtures; the corpus grows in build-sanitize/fuzz-corpus/<target>/ and is
# reused by the next run. A finding is written to build-sanitize/fuzz-findings/<target>/; minimise
# it (<target> -minimize_crash=1 -runs=10000 FILE) and commit it under tests/fixtures/fuzz/ with a
# regression test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_completion_request)
BUILD_DIR="${SANITIZE_BUILD_DIR:-build-sanitize}"

# Build (and configure) exactly as sanitize.sh, the targets to run only.
SANITIZE_BUILD_DIR="$BUILD_DIR" SANITIZE_TARGETS="${TARGETS[*]}" bash scripts/sanitize.sh --build-only

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_odr_violation=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/fuzz/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS=1

seeds() {  # the seed files of a target (and the findings committed for it)
  case "$1" in
    fuzz_safetensors) find tests/fixtures -name '*.safetensors' -size -32k ;;
    fuzz_config) find tests/fixtures -name 'config.json' ;;
    fuzz_tokenizer)
      # GPT-2's tokenizer cut to 300 tokens, in the three formats (from the cached ranks).
      local ranks="${DUAL_ATTENTION_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dual-attention}/gpt2.tiktoken"
      if [ -f "$ranks" ]; then
        .venv/bin/python fuzz/make_tokenizer_seeds.py --ranks "$ranks" \
          --out "$BUILD_DIR/fuzz-seeds/fuzz_tokenizer" >/dev/null
        find "$BUILD_DIR/fuzz-seeds/fuzz_tokenizer" -type f
      fi ;;
  esac
  [ -d "tests/fixtures/fuzz/$1" ] && find "tests/fixtures/fuzz/$1" -type f
  return 0
}

status=0
for target in "${TARGETS[@]}"; do
  corpus="$BUILD_DIR/fuzz-corpus/$target"
  findings="$BUILD_DIR/fuzz-findings/$target"
  mkdir -p "$corpus" "$findings"
  i=0
  while read -r seed; do
    cp "$seed" "$corpus/seed-$i-$(basename "$seed")"
    i=$((i + 1))
  done < <(seeds "$target")
  dict="fuzz/${target#fuzz_}.dict"
  log="$BUILD_DIR/fuzz-findings/$target.log"
  echo "== $target: $SECONDS_EACH s, $i seeds, dictionary $dict"
  if ! "$BUILD_DIR/fuzz/$target" "$corpus" -dict="$dict" -max_len=32768 -timeout=10 \
      -rss_limit_mb=4096 -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
      -artifact_prefix="$findings/" >"$log" 2>&1; then
    status=1
    echo "$target: FINDING (see $log and $findings/)"
  fi
  # The last status line ("#N DONE cov: C ft: F ... exec/s: E") and the final stats.
  grep -E '^#[0-9]+' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
done
exit $status
