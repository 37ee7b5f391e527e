#!/usr/bin/env bash
# The 12 combinations (2 tasks x 3 regimes x fft/lora) on the mini backbone, one after another.
# Paraphrase on a 3,000-pair subsample (2 SFT epochs; DPO-only: 2 epochs at the SFT rate;
# sft-dpo: 2 SFT epochs then 1 DPO epoch); sonnets with the preset defaults (shuffled pairs).
# Usage: benchmarks/engine_table.sh DATA_DIR OUT_DIR ; then python benchmarks/engine_table.py OUT_DIR
set -euo pipefail
data="$1"; out="$2"; mkdir -p "$out"
for params in fft lora; do
  for regime in sft dpo sft-dpo; do
    extra=()
    [ "$regime" = dpo ] && extra=(--dpo-epochs 2 --dpo-lr "$([ $params = fft ] && echo 1e-3 || echo 3e-3)")
    sftdpo train --quiet --task paraphrase --regime "$regime" --params "$params" --data-dir "$data" \
      --out "$out/paraphrase-$regime-$params" --train-size 3000 --epochs 2 --resume "${extra[@]}"
  done
done
for params in fft lora; do
  for regime in sft dpo sft-dpo; do
    sftdpo train --quiet --task sonnet --regime "$regime" --params "$params" --data-dir "$data" \
      --out "$out/sonnet-$regime-$params" --resume
  done
done
