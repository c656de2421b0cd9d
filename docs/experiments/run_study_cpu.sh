#!/usr/bin/env bash
# The shortened study runs of 2026-12-02 (docs/LOG.md): caption biases $BIASES (default 0.6),
# seeds $SEEDS (default [0]), the arms $ARMS (default three), no SFT budgets; $ROOT and $OUT:
# where. Run from a `git archive` copy of the commit (made a
# git repository: the study's workspaces copy its tracked files), with this checkout's .venv:
#   mkdir /work/study_run && git archive d4a0fa2 | tar -x -C /work/study_run && cd /work/study_run
#   git init -q && git add -A && git commit -qm d4a0fa2
#   VENV=/work/main/.venv SEEDS='[0]' bash docs/experiments/run_study_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=${VENV:-$PWD/.venv}/bin:$PATH PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_NO_ADVISORY_WARNINGS=1 DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
  MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
ARMS=${ARMS:-'{masked_sft: {objective: sft}, mmrpt: {objective: grpo, reward_weights: {format: 0.2, visual: 1.0}}, mmrpt_no_visual: {objective: grpo, reward_weights: {format: 0.2, exact: 1.0, prefix: 0.5, semantic: 0.1}}}'}
/usr/bin/time -v python -m mmrpt study --biases ${BIASES:-0.6} --root "${ROOT:-studies/cpu}" --out "${OUT:-reports/study_cpu}" \
  --max-parallel 2 -S "seeds=${SEEDS:-[0]}" -S "arms=$ARMS" -S 'sft.budgets=[]'
