"""The study's summary of one workspace as it stands (its arms x seeds outcome tables), for a
workspace whose SFT and eval were rerun after the study command (e.g. a longer sft.steps):
the same study.json section and report.md the study writes (flows.study.load_runs,
mmrpt.report.study.summarise / markdown / plots), under --out.

    python docs/experiments/summarise_workspace.py /work/sft900_s45 --bias 0.6 --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flows.study import load_runs  # noqa: E402
from mmrpt.report.study import markdown, plots, summarise  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--bias", type=float, required=True, help="its data.caption_bias")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args()
    runs, budgets, tokens = load_runs(args.workspace)
    summary = {str(args.bias): summarise(runs, budgets, tokens, n_boot=args.n_boot)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.json").write_text(
        json.dumps({"study": summary, "workspace": str(args.workspace)}, indent=1) + "\n"
    )
    (args.out / "report.md").write_text(markdown(summary))
    plots(summary, args.out)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    main()
