"""`python -m mmrpt <stage>`: run one pipeline stage with params.yaml (plus overrides)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mmrpt.config import STAGES, ParamsError, load_params


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from mmrpt.report.compare import main as compare

        return compare(argv[1:])
    if argv[:1] == ["passk"]:
        from mmrpt.rl.passk import main as passk

        return passk(argv[1:])
    parser = argparse.ArgumentParser(
        prog="mmrpt", description="MMRPT pipeline stages: " + ", ".join(STAGES),
        epilog="Also: `python -m mmrpt compare --help` compares MLflow runs; `python -m mmrpt "
               "passk --help` measures a fill-in policy's pass@k (GRPO's headroom).")
    parser.add_argument("stage", choices=STAGES, help="the stage to run")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a param, e.g. -S warmup.lr=1e-3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MMRPT_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params, args.overrides)
    except (ParamsError, FileNotFoundError) as e:
        print(f"mmrpt: {e}", file=sys.stderr)
        return 2
    try:
        importlib.import_module(f"mmrpt.stages.{args.stage}").run(params)
    except ParamsError as e:  # a check that needs the model or data (e.g. score.layers)
        print(f"mmrpt: {e}", file=sys.stderr)
        return 2
    return 0
