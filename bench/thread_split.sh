#!/usr/bin/env bash
# Two cores, one stage: one process with two torch threads, one with one thread, or two
# data-parallel processes of one thread each (launch.num_processes=2: torchrun, gloo)? Tells
# whether a stage finishes sooner split in two processes than on two threads. HEAD in a
# `git worktree` under /tmp/ts_HEAD, data stage once (and UPSTREAM stages, e.g. "warmup
# score_heads score score_merge mask primer" before rl), then STAGE in the three layouts.
#   bash bench/thread_split.sh warmup -S warmup.max_steps=200 -S warmup.save_steps=100
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STAGE=$1; shift
export PATH=$ROOT/.venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
d=/tmp/ts_HEAD
[ -d "$d" ] || git -C "$ROOT" worktree add -f -q --detach "$d" HEAD
cd "$d"
for s in data ${UPSTREAM:-}; do
  [ -f "metrics/$s.json" ] || [ -f "metrics/$s@0.json" ] || python -m mmrpt $s > "$s.log" 2>&1
done
run() {  # tag threads [args]
  local tag=$1 threads=$2; shift 2
  rm -rf "checkpoints/${STAGE}_$tag" "models/${STAGE}_$tag"
  OMP_NUM_THREADS=$threads /usr/bin/time -f "$tag ($threads thread(s)): %e s wall %U s user" \
    python -m mmrpt "$STAGE" "$@" -S "$STAGE.checkpoint_dir=checkpoints/${STAGE}_$tag" \
    -S "$STAGE.out_dir=models/${STAGE}_$tag" > "/tmp/ts_$tag.log" 2>&1
  tail -1 "/tmp/ts_$tag.log"
}
run two_threads 2 "$@"
run one_thread 1 "$@"
run two_processes 1 "$@" -S launch.num_processes=2
