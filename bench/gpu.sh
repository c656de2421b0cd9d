#!/usr/bin/env bash
# GRPO throughput of the rl stage's trainer on one H100/H200, offline: builds a ~0.5B (or
# --size 1.5b) Qwen2-VL-architecture model from config, runs GRPO steps in bf16 on
# synthetic-world masked samples until --steps (300) or the time budget, and prints
# tokens/s/GPU, the generation/update split and the update phase's MFU (bench/gpu_rl.py says
# how FLOPs are counted). Finishes inside 8 minutes: the Python budget stops training at 420 s
# from its start, and a hard cap interrupts at 470 s (the steps done are still reported).
#
#   bash bench/gpu.sh                 # 0.5B, bf16, one GPU
#   bash bench/gpu.sh --size 1.5b     # any bench/gpu_rl.py flag passes through
#   bash bench/gpu.sh --zero2         # through DeepSpeed ZeRO-2 (mmrpt/deepspeed/zero2.json)
#   bash bench/gpu.sh --smoke         # tiny sizes, a few steps: checks the code path on CPU
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export TOKENIZERS_PARALLELISM=false MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
args=()
for a in "$@"; do
  case "$a" in
    --smoke) args+=(--size smoke --steps 4 --warmup 1 --batch 2 --generations 2
                    --max-completion 16 --image-size 112 --time-budget 240) ;;
    --zero2) export RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1
             export MASTER_PORT=${MASTER_PORT:-29517}
             args+=(--deepspeed mmrpt/deepspeed/zero2.json) ;;
    *) args+=("$a") ;;
  esac
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
exec timeout --signal=INT --kill-after=10 470 "$PY" bench/gpu_rl.py "${args[@]}"
