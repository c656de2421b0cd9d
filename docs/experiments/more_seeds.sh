#!/usr/bin/env bash
# More seeds for the primary metric at one bias value (issue 17, docs/LOG.md): batches of four
# seeds from $FIRST, $BATCHES batches; each batch reproduces the rl arms of a copy ($WS) of the
# finished study workspace $SRC (docs/experiments/more_seeds.py), then scores their rl models
# zero-shot on the prior-conflict colour probes (docs/experiments/start_point.py
# --from-models) into $OUTDIR/sp_<first seed of the batch>.json. Then:
#   python docs/experiments/seed_level.py <earlier start_point.json files> $OUTDIR/sp_*.json
# The defaults are the run of 2026-12-03 (session 9). On a machine without $SRC, BUILD=0.6 makes
# $WS from this checkout first (more_seeds.py --build: data to primer, ~11 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=${VENV:-$PWD/.venv}/bin:$PATH HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_NO_ADVISORY_WARNINGS=1 DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
  MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
SRC=${SRC:-/work/study_s67/studies/cpu_hm_s67/bias-0.6}
WS=${WS:-/work/seeds_b06/bias-0.6}
OUTDIR=${OUTDIR:-/work/seeds_b06}
FIRST=${FIRST:-8}
BATCHES=${BATCHES:-4}
mkdir -p "$OUTDIR"
for ((b = 0; b < BATCHES; b++)); do
  s=$((FIRST + 4 * b))
  seeds="$s $((s + 1)) $((s + 2)) $((s + 3))"
  if [ -n "${BUILD:-}" ]; then from=(--build "$BUILD"); else from=("$SRC"); fi
  /usr/bin/time -v python docs/experiments/more_seeds.py "${from[@]}" "$WS" --seeds $seeds \
    > "$OUTDIR/run_$s.log" 2>&1
  runs=$(for x in $seeds; do echo mmrpt-$x masked_sft-$x; done)
  /usr/bin/time -v python docs/experiments/start_point.py "$WS" --from-models --runs $runs \
    > "$OUTDIR/sp_$s.json" 2> "$OUTDIR/sp_$s.err"
  echo "batch $s done $(date)" >> "$OUTDIR/progress.txt"
done
