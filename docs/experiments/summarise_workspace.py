"""The study's summary of workspaces as they stand (their arms x seeds outcome tables), for a
workspace whose SFT and eval were rerun after the study command (e.g. a longer sft.steps), or
bias values run with different seeds (more seeds added at one value): the same study.json
sections (with the change from bias 0 when bias 0 is among them) and report.md the study
writes (flows.study.load_runs, mmrpt.report.study.summarise / bias_effect / markdown /
plots), under --out. One --bias per workspace, in order.

    python docs/experiments/summarise_workspace.py /work/sft900_s45 --bias 0.6 --out DIR
    python docs/experiments/summarise_workspace.py studies/s4/bias-0.0 studies/s4/bias-0.6 \
        --bias 0 0.6 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flows.study import load_runs  # noqa: E402
from mmrpt.report.study import bias_effect, markdown, plots, summarise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path, nargs="+")
    ap.add_argument("--bias", type=float, nargs="+", required=True, help="data.caption_bias")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    if len(args.bias) != len(args.workspace):
        ap.error(f"{len(args.workspace)} workspaces but {len(args.bias)} --bias values")
    if len(set(args.bias)) != len(args.bias):
        ap.error(f"each --bias once: {args.bias}")
    spaces = dict(zip(args.bias, args.workspace, strict=True))
    summary = {}
    for bias, ws in spaces.items():
        runs, budgets, tokens = load_runs(ws)
        summary[str(bias)] = summarise(runs, budgets, tokens, n_boot=args.n_boot)
    effects = bias_effect(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    where = {str(b): str(ws) for b, ws in spaces.items()}
    (args.out / "study.json").write_text(
        json.dumps({"study": summary, "bias_effect": effects, "workspaces": where}, indent=1) + "\n"
    )
    (args.out / "report.md").write_text(markdown(summary, effects=effects))
    plots(summary, args.out)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
