#!/usr/bin/env bash
# Installs the library into a scratch prefix, runs the installed `dual-attention` program, builds
# examples/ as a downstream CMake project with find_package(DualAttention), and runs one of the
# programs. Args: <build dir> <torch cmake prefix>.
set -euo pipefail
build_dir=$1
torch_prefix=$2
src_dir="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$build_dir/downstream-install"
rm -rf "$prefix"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null
# The installed program and library find theirs through RUNPATH, not the environment.
if ! help=$(env -u LD_LIBRARY_PATH "$prefix/bin/dual-attention" --help 2>&1) ||
  [[ $help != *"usage: dual-attention"* ]]; then
  echo "downstream: the installed $prefix/bin/dual-attention does not start: $help" >&2
  exit 1
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$src_dir/examples/downstream" -B "$build_dir/downstream-build" "${launcher[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix;$torch_prefix" >/dev/null
cmake --build "$build_dir/downstream-build" -j 2 --target relational_attention >/dev/null
"$build_dir/downstream-build/relational_attention"
