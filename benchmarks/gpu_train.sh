#!/usr/bin/env bash
# Training throughput and MFU on one GPU (an H200: 989 dense bf16 TFLOP/s), ViT-B/32 then
# ViT-B/16, bf16, batch 256, synthetic in-memory batches. About 5 minutes on an H200.
#   bash benchmarks/gpu_train.sh [OUT_DIR]
# On a CPU-only machine, TINY=1 runs the same script on the debug towers (checks it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_train_results}"
mkdir -p "$out"
py="${PYTHON:-.venv/bin/python}"
if [[ "${TINY:-0}" == 1 ]]; then
  "$py" -m benchmarks.gpu_train --model openwit-debug --batch 8 --steps 3 --warmup 1 | tee "$out/tiny.json"
  exit 0
fi
for model in ViT-B-32 ViT-B-16; do
  timeout 300 "$py" -m benchmarks.gpu_train --model "$model" --batch 256 --steps 60 --warmup 10 \
    | tail -1 | tee "$out/$model.json"
done
