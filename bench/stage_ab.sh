#!/usr/bin/env bash
# One stage, old code vs new code, same machine, alternating order: is a stage slower because
# of the code or because of the machine? Each ref gets a `git worktree` under /tmp, runs the
# data stage once, then the stage ROUNDS times per ref (order swapped every round), under
# cProfile (profiles: /tmp/ab_<ref>.<round>.prof). Prints wall and user seconds per run.
#   bash bench/stage_ab.sh 6e8e3b0 HEAD 2 warmup -S warmup.max_steps=200 -S warmup.save_steps=100
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=$1 NEW=$2 ROUNDS=$3 STAGE=$4; shift 4
export PATH=$ROOT/.venv/bin:$PATH HF_HUB_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1
for ref in "$OLD" "$NEW"; do
  d=/tmp/ab_$ref
  [ -d "$d" ] || git -C "$ROOT" worktree add -f -q "$d" "$ref"
  (cd "$d" && python -m mmrpt data > "$d.data.log" 2>&1)
done
run() {  # ref round [stage args]
  local ref=$1 round=$2; shift 2
  cd "/tmp/ab_$ref"
  rm -rf "checkpoints/${STAGE}_ab" "models/${STAGE}_ab"
  /usr/bin/time -f "$ref round $round: %e s wall %U s user" python -m cProfile -o "/tmp/ab_$ref.$round.prof" \
    -m mmrpt "$STAGE" "$@" -S "$STAGE.checkpoint_dir=checkpoints/${STAGE}_ab" \
    -S "$STAGE.out_dir=models/${STAGE}_ab" > "/tmp/ab_$ref.$round.log" 2>&1
  tail -1 "/tmp/ab_$ref.$round.log"
}
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then first=$OLD second=$NEW; else first=$NEW second=$OLD; fi
  (run "$first" "$r" "$@"); (run "$second" "$r" "$@")
done
