"""The study's summary of workspaces as they stand (their arms x seeds outcome tables), for a
workspace whose SFT and eval were rerun after the study command (e.g. a longer sft.steps), or
bias values run with different seeds (more seeds added at one value): the same study.json
sections (with the change from bias 0 when bias 0 is among them) and report.md the study
writes (flows.study.write_study), under --out. One --bias per workspace, in order.

    python docs/experiments/summarise_workspace.py /work/sft900_s45 --bias 0.6 --out DIR
    python docs/experiments/summarise_workspace.py studies/s4/bias-0.0 studies/s4/bias-0.6 \
        --bias 0 0.6 --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flows.study import write_study  # noqa: E402


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
    spaces = {b: ws.resolve() for b, ws in zip(args.bias, args.workspace, strict=True)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_study(ROOT, spaces, args.out, {}, args.n_boot, study_json=args.out / "study.json")
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
