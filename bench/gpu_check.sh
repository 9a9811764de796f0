#!/usr/bin/env bash
# The GPU check of issues 17 and 22 as one script: about 6 minutes on one H100/H200-class GPU (bf16, SDPA).
#   1. recording overhead at the Qwen2.5-VL-3B shape: plain generate vs record + chain/cot maps vs eager output_attentions
#   2. a GRPO step at the 3B shape with the chain reward vs without, and the peak memory of each
#   3. bf16 maps against a float32 forward of the same weights, map time and memory, maps vs the naive path (3B shape)
#   4. the 4-bit (QLoRA) base: maps against the dequantized twin, peak memory
# Needs a CUDA build of torch and bitsandbytes in the environment (`make install TORCH=torch` on a machine with a network).
# Each step writes its numbers to outputs/gpu_check/; bench/results/bf16_maps_3b.json is overwritten with the GPU run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-outputs/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
run() { local name=$1; shift; echo "== $name: $*"; local t=$SECONDS; "$PY" "$@" 2>&1 | tee "$OUT/$name.txt"; echo "== $name took $((SECONDS - t)) s"; }
run overhead bench/saliency_overhead.py --size 3b --device cuda --dtype bfloat16 --batch 4 --new-tokens 256 --image 448 --repeats 3 --no-scaling
run grpo_step bench/grpo_step.py --size 3b --device cuda --dtype bfloat16 --batch 4 --generations 4 --length 256 --image 448 --steps 4 --rounds 1
run bf16_maps bench/bf16_maps.py --3b --device cuda
run qlora bench/quantized_maps.py --size 3b --device cuda --bits 4
echo "== done in $SECONDS s; numbers in $OUT/"
