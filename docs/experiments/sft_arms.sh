#!/usr/bin/env bash
# SFT and eval for arms whose rl models exist in a study workspace (issue 17's bar 2: every
# arm >= 20 points above the prior-only answerer on iid probes after SFT): for each seed, the
# arms' SFT two at a time (one thread each), then their eval, through the CLI in the
# workspace (its own code copy and params), then the per-run iid view
# (docs/experiments/sft_dev.py --split test_iid) into $WS/sft_iid_arms.json.
# The defaults are the run of 2026-12-03 (session 9): the rft and mmrpt_no_visual arms of
# seeds 4-5 at caption bias 0.6 (their rl runs: docs/LOG.md, session 6).
set -euo pipefail
WS=${WS:-/work/sft900_s45}
ARMS=${ARMS:-rft mmrpt_no_visual}
SEEDS=${SEEDS:-4 5}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WS"
export PATH=${VENV:-$HERE/.venv}/bin:$PATH PYTHONPATH=$WS OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 \
  TRANSFORMERS_NO_ADVISORY_WARNINGS=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
for stage in sft eval; do
  for s in $SEEDS; do
    pids=()
    for a in $ARMS; do
      python -m mmrpt $stage --arm "$a" --seed "$s" > "logs_${stage}_${a}_$s.txt" 2>&1 &
      pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done  # a failed stage stops the script (set -e)
  done
done
runs=$(for s in $SEEDS; do for a in $ARMS; do echo "$a-$s"; done; done)
python "$HERE/docs/experiments/sft_dev.py" "$WS" $runs --split test_iid > sft_iid_arms.json
