#!/usr/bin/env bash
# The multi-process path end to end on one machine (bench/dist_job.py): `dvc repro` of a fresh
# copy with every training stage and score worker in 2 processes (torchrun), DeepSpeed ZeRO-3,
# scoring split over 2 workers; then the bar's checks (one MLflow run per stage, global batch
# per step, processes per score worker). Prints a JSON summary; exit 1 if a check fails.
# On a GPU: finishes inside 8 minutes or is interrupted. --smoke (CPU, 2 cores): ~6-10 min,
# capped at 25.
#
#   bash bench/gpu_dist.sh                 # GPU: 2 processes (on 1 GPU they share it: gloo,
#                                          # since NCCL refuses two ranks on one device)
#   bash bench/gpu_dist.sh --zero 2        # ZeRO-2; --zero none: plain DDP
#   bash bench/gpu_dist.sh --processes 8   # one per GPU of an 8-GPU machine (nccl)
#   bash bench/gpu_dist.sh --smoke         # the same path on CPU with tiny sizes (gloo)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
export TOKENIZERS_PARALLELISM=false MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PATH="$(dirname "$PY"):$PATH"   # dvc and torchrun of the same environment
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
cap=480
for a in "$@"; do [ "$a" = --smoke ] && cap=1500; done
exec timeout --signal=INT --kill-after=10 "$cap" "$PY" bench/dist_job.py "$@"
