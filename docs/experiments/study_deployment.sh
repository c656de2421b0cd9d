#!/usr/bin/env bash
# The study through Prefect, started the way the README says: a local server, the mmrpt-cpu
# process pool, `prefect deploy --name study`, a worker on this checkout ($MMRPT_HOME), and
# `prefect deployment run 'mmrpt-study/study'` at the smoke profile's sizes (biases 0 and 0.6)
# in a `git archive` copy of HEAD ($1, default a new temporary folder); then it prints the
# copy's metrics/study.json in brief. The server and worker are stopped at exit.
#   bash docs/experiments/study_deployment.sh [WORK]
set -euo pipefail
TMP=$(mktemp -d)
WORK=$(realpath -m "${1:-$TMP/work}")  # absolute, from the caller's folder
cd "$(dirname "$0")/../.."
ROOT=$PWD
PORT=${PORT:-4317}
export PATH=${VENV:-$ROOT/.venv}/bin:$PATH PYTHONPATH=$ROOT MMRPT_HOME=$ROOT \
  PREFECT_HOME=$TMP/prefect PREFECT_API_URL=http://127.0.0.1:$PORT/api \
  PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  DVC_NO_ANALYTICS=1 MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=1

mkdir -p "$WORK"
git archive HEAD | tar -x -C "$WORK"
(cd "$WORK" && git init -q && git add -A &&
  git -c user.name=mmrpt -c user.email=mmrpt@localhost commit -qm "study copy of $(git -C "$ROOT" rev-parse --short HEAD)")

SERVER= WORKER=
stop() {  # the worker before the server; SIGKILL after 15 s (a worker may ignore SIGTERM)
  for pid in $WORKER $SERVER; do
    kill -- -"$pid" 2>/dev/null || continue
    for _ in $(seq 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- -"$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}
trap stop EXIT
setsid prefect server start --host 127.0.0.1 --port "$PORT" >"$TMP/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 120); do  # our server, healthy (not another one left on the port)
  kill -0 "$SERVER" 2>/dev/null || { cat "$TMP/server.log"; exit 1; }
  curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null || { cat "$TMP/server.log"; exit 1; }
prefect work-pool create mmrpt-cpu --type process >/dev/null
prefect --no-prompt deploy --name study
setsid prefect worker start --pool mmrpt-cpu >"$TMP/worker.log" 2>&1 &
WORKER=$!
params=$(python -c 'import json, sys; print(json.dumps({"workdir": sys.argv[1],
  "profile": "profiles/study_smoke.yaml", "root": "studies/smoke", "out": "reports/study_smoke"}))' "$WORK")
start=$(date +%s)
rc=0
prefect deployment run 'mmrpt-study/study' --params "$params" --watch --watch-timeout 3600 \
  >"$TMP/run.log" 2>&1 || rc=$?
grep -v "^\s*$" "$TMP/run.log" | tail -5
echo "deployment run: $(( $(date +%s) - start )) s, exit $rc (worker log: $TMP/worker.log)"
[ "$rc" = 0 ] && grep -q Completed "$TMP/run.log" || { tail -40 "$TMP/worker.log"; exit 1; }
python - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
s = json.loads((work / "metrics/study.json").read_text())
for bias, part in s["study"].items():
    c = part["comparisons"]["mmrpt vs masked_sft"]["conflict"]
    print(f"bias {bias}: seeds {part['seeds']}, arms {part['arms']}, primary {c['verdict']}")
print("report:", sorted(p.name for p in (work / "reports/study_smoke").iterdir()))
EOF
