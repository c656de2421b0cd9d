"""The multi-process path end to end: `dvc repro` of a fresh copy (bench/main_job.py) with every
training stage and score worker in N processes (launch.num_processes, torchrun), DeepSpeed
ZeRO-3 (or ZeRO-2, or none), scoring split over two workers (score@0, score@1, merged), then
checks what the issue's bar asks: each stage item ran once in MLflow, rl and sft trained on
the global batch (samples per step = the batch params), the score workers ran N processes.
Run through bench/gpu_dist.sh (which also caps the wall time); ``--smoke`` is the CPU check
of the same path (tiny sizes, gloo).

    python bench/dist_job.py --smoke                  # CPU, 2 processes, ZeRO-3
    python bench/dist_job.py --processes 2 --zero 2   # GPU(s): one per process, or shared
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.main_job import run  # noqa: E402

# CPU smoke: the test suite's tiny sizes, two arms
SMOKE = {
    "data.n_train": 64,
    "data.n_dev": 8,
    "data.n_test": 16,
    "data.image_size": 112,
    "model.tiny": {
        "vocab_size": 400,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_layers": 2,
        "num_heads": 2,
        "num_kv_heads": 1,
        "vision_depth": 1,
        "vision_embed_dim": 16,
        "vision_heads": 2,
    },
    "arms": {"mmrpt": {"objective": "grpo"}, "masked_sft": {"objective": "sft"}},
    "warmup.max_steps": 10,
    "warmup.batch_size": 8,
    "warmup.eval_samples": 16,
    "score.batch_size": 8,
    "score.shard_size": 20,
    "score.diagnostic_samples": 8,
    "score.replacements": 2,
    "mask.gallery_samples": 4,
    "primer.n_samples": 32,
    "primer.max_steps": 20,
    "primer.batch_size": 8,
    "primer.eval_samples": 8,
    "primer.max_new_tokens": 24,
    "rl.steps": 4,
    "rl.batch_size": 4,
    "rl.num_generations": 2,
    "rl.max_completion_length": 40,
    "rl.save_steps": 2,
    "rl.eval_samples": 8,
    "sft.steps": 4,
    "sft.batch_size": 4,
    "sft.save_steps": 2,
    "eval.limit": 10,
    "eval.masked_samples": 8,
    "eval.harnesses": ["lmeval"],
}
# GPU: the embedded model and world, shortened to minutes
GPU = {
    "data.n_train": 800,
    "data.n_dev": 100,
    "data.n_test": 100,
    "warmup.max_steps": 150,
    "score.shard_size": 64,
    "score.diagnostic_samples": 100,
    "primer.n_samples": 200,
    "primer.max_steps": 40,
    "rl.steps": 10,
    "rl.save_steps": 5,
    "rl.eval_samples": 50,
    "sft.steps": 10,
    "eval.limit": 10,
    "eval.masked_samples": 50,
}


def overrides(profile: dict, processes: int, zero: str, backend: str) -> list[str]:
    values = dict(profile)
    values |= {"launch.num_processes": processes, "launch.backend": backend}
    values["score.workers"] = [0, 1]
    if zero != "none":
        values["launch.deepspeed"] = f"mmrpt/deepspeed/zero{zero}.json"
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def check(repo: Path, profile: dict, processes: int) -> dict:
    """The bar's checks on the finished copy; returns what was found."""
    import mlflow
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns/mlflow.db'}")
    names = Counter(
        r.info.run_name
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    )
    found: dict = {"mlflow_runs": dict(names), "problems": []}
    for name, n in names.items():
        if n != 1:
            found["problems"].append(f"{n} MLflow runs named {name}")
    for stage, batch in (("rl", params["rl"]["batch_size"]), ("sft", params["sft"]["batch_size"])):
        for arm in params["arms"]:
            m = json.loads((repo / f"metrics/{stage}/{arm}-0.json").read_text())
            found[f"{stage}/{arm}-0 samples_per_step"] = m["samples_per_step"]
            if m["samples_per_step"] != batch:
                found["problems"].append(f"{stage}/{arm}-0: {m['samples_per_step']} != {batch}")
    for w in (0, 1):
        m = json.loads((repo / f"metrics/score/{w}.json").read_text())
        if m["num_processes"] != processes:
            found["problems"].append(f"score@{w} ran {m['num_processes']} processes")
    found["score"] = json.loads((repo / "metrics/score.json").read_text()).get("auroc")
    found["report"] = (repo / "reports/report.md").exists()
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny sizes")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--zero", choices=["2", "3", "none"], default="3")
    ap.add_argument("--backend", choices=["auto", "nccl", "gloo"], default="auto")
    ap.add_argument("--keep", action="store_true", help="keep the copy")
    args = ap.parse_args()
    profile = SMOKE if args.smoke else GPU
    t0 = time.perf_counter()
    res = run(overrides(profile, args.processes, args.zero, args.backend), keep=True)
    found = check(Path(res["copy"]), profile, args.processes)
    print(json.dumps({"wall_s": round(time.perf_counter() - t0), **res, **found}, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(Path(res["copy"]).parent, ignore_errors=True)
    return 1 if found["problems"] or not found["report"] else 0


if __name__ == "__main__":
    sys.exit(main())
