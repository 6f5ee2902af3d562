#!/usr/bin/env bash
# The whole C++ suite under AddressSanitizer + UndefinedBehaviorSanitizer: builds the library, the
# test binary and the fuzz targets with clang into build-sanitize/ (LibTorch itself is not
# instrumented), then runs every C++ test (651 tests in about a minute on 2 cores). scripts/test.sh
# (CI) runs it with SANITIZE_TARGETS=dual_attention_tests.
#   scripts/sanitize.sh [GTEST_FILTER]     (--build-only: build, run nothing)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${SANITIZE_BUILD_DIR:-build-sanitize}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
TORCH_PREFIX=$(.venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')

gen=()
command -v ninja >/dev/null && [ ! -f "$BUILD_DIR/CMakeCache.txt" ] && gen=(-G Ninja)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# -O1 -g1 (line tables): readable reports at a fraction of the compile time of -O2 -g.
cmake -S . -B "$BUILD_DIR" "${gen[@]}" "${launcher[@]}" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_FLAGS="-O1 -g1" -DPython_EXECUTABLE="$ROOT/.venv/bin/python" \
  -DDUAL_ATTENTION_SANITIZE=ON -DDUAL_ATTENTION_BUILD_FUZZERS=ON -DDUAL_ATTENTION_BUILD_TESTS=ON \
  -DDUAL_ATTENTION_BUILD_EXAMPLES=OFF -DDUAL_ATTENTION_BUILD_BENCHMARKS=OFF \
  -DDUAL_ATTENTION_BUILD_PYTHON=OFF >/dev/null
# SANITIZE_TARGETS (scripts/fuzz.sh sets it): build only these.
read -r -a targets <<<"${SANITIZE_TARGETS:-dual_attention_tests fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_completion_request}"
cmake --build "$BUILD_DIR" --target "${targets[@]}"
[ "${1:-}" = "--build-only" ] && exit 0

# LibTorch is not instrumented: its one-time allocations (registries, thread pools) are reported
# as leaks at exit, so leak reports are limited to this project's code (fuzz/lsan.supp).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_odr_violation=0}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/fuzz/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
start=$(date +%s)
"$BUILD_DIR/tests/dual_attention_tests" --gtest_brief=1 ${1:+--gtest_filter="$1"}
echo "sanitize: the C++ suite passed under ASan + UBSan in $(( $(date +%s) - start )) s"
