#!/usr/bin/env bash
# Where a GRPO step's time goes (docs/LOG.md, 2026-12-04): the main job's params with a
# shortened warmup and primer (150 steps each: the rl arm's cost per step does not need a good
# model) in $DIR, then 10 steps of the mmrpt arm under cProfile at one thread, and the
# cumulative times of TRL's step parts. Runs from this checkout (~8 min on 2 cores).
#   DIR=/tmp/prof_main bash docs/experiments/profile_grpo.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${DIR:-/tmp/prof_main}
export PATH=${VENV:-$ROOT/.venv}/bin:$PATH PYTHONPATH=$ROOT OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} \
  HF_HUB_OFFLINE=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1
mkdir -p "$DIR" && cd "$DIR"
[ -f params.yaml ] || cp "$ROOT/params.yaml" .
if [ ! -f models/primer/model.safetensors ]; then
  for a in "data" "warmup -S warmup.max_steps=150 -S warmup.eval_samples=20" "score_heads" \
    "score --worker 0 -S score.diagnostic_samples=100" "score_merge" "mask" \
    "primer -S primer.max_steps=150 -S primer.eval_samples=20"; do
    # shellcheck disable=SC2086
    python -m mmrpt $a > /dev/null
  done
fi
python -m cProfile -o rl.prof -m mmrpt rl --arm mmrpt --seed 0 -S rl.steps=10 \
  -S rl.eval_samples=10 -S rl.save_steps=100 -S rl.log_completions_steps=0 > rl.log 2>&1
python - <<'PY'
import pstats

stats = pstats.Stats("rl.prof").stats
parts = {  # (file suffix, function): what it is
    ("grpo_trainer.py", "training_step"): "whole optimizer steps",
    ("grpo_trainer.py", "_generate"): "rollout generation",
    ("grpo_trainer.py", "_compute_loss"): "loss forward",
    ("_tensor.py", "backward"): "backward",
    ("grpo.py", "_calculate_rewards"): "rewards",
}
for (file, fn), what in parts.items():
    hits = [v for (f, _, name), v in stats.items() if f.endswith(file) and name == fn]
    cum = max((v[3] for v in hits), default=0.0)
    calls = max((v[1] for v in hits), default=0)
    print(f"{what:24s} {cum:7.2f} s in {calls} calls")
PY
