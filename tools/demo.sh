#!/usr/bin/env bash
# The end-to-end demo: make a small base/fine-tuned pair, compress it three ways (Delta-CoMe and, at
# the same bit budget, BitDelta and plain low-rank), inspect, verify, evaluate the error against the
# exact fine-tuned output on the CPU backend, and merge back to safetensors.
set -euo pipefail
cli=${1:-build/deltacome}
out=${2:-demo-out}
mkdir -p "$out"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$(date +%s%N)
step "1. a small Llama-shaped base/fine-tuned pair (long-tail delta spectra)"
"$cli" make-demo --out "$out" --layers 2 --hidden 256
step "2. compress with Delta-CoMe (8-bit x2, 3-bit x32, 2-bit for the rest of alpha = 1/16)"
"$cli" compress --base "$out/base.safetensors" --finetuned "$out/finetuned.safetensors" -o "$out/delta.dcz" --name demo-ft --base-name demo-base
step "3. inspect"
"$cli" inspect "$out/delta.dcz"
"$cli" inspect "$out/delta.dcz" --spectrum model.layers.0.mlp.down_proj.weight
step "4. verify checksums and the base fingerprint"
"$cli" verify "$out/delta.dcz" --base "$out/base.safetensors"
step "5. apply on the CPU backend: error against the exact fine-tuned layers"
"$cli" eval --base "$out/base.safetensors" --finetuned "$out/finetuned.safetensors" --delta "$out/delta.dcz" --tokens 8
step "6. baselines at the same budget: BitDelta and low-rank fp16"
"$cli" compress --quiet --scheme bitdelta --base "$out/base.safetensors" --finetuned "$out/finetuned.safetensors" -o "$out/bitdelta.dcz"
"$cli" compress --quiet --scheme lowrank --base "$out/base.safetensors" --finetuned "$out/finetuned.safetensors" -o "$out/lowrank.dcz"
for f in delta bitdelta lowrank; do
  printf '%-9s ' "$f"
  "$cli" eval --base "$out/base.safetensors" --finetuned "$out/finetuned.safetensors" --delta "$out/$f.dcz" --tokens 8 | tail -2 | head -1
done
step "7. merge back to a fine-tuned safetensors checkpoint"
"$cli" merge --quiet --base "$out/base.safetensors" --delta "$out/delta.dcz" -o "$out/merged.safetensors"
awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "\ndemo finished in %.1f s\n", (b - a) / 1e9 }'
