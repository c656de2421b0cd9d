"""RL benchmark: our rl stage's GRPO trainer vs a bare TRL GRPOTrainer, same run.

Same model (the primer, the model every arm starts from), same masked train samples (those
after the primer's), same settings (params.yaml's rl section through mmrpt.rl.grpo.grpo_config).
"ours" is make_grpo_trainer with our reward table and dataset columns; "bare" is TRL's
GRPOTrainer on the prompt and image columns only, with as many reward functions that return
0. Both run with learning rate 0, so both sample the same completions token for token (checked:
tokens per step must agree) while the optimizer step still runs: the difference is our
overhead, not a different trajectory. Both trainers get the RolloutTiming mixin (perf_counter
around TRL methods) for the generation/update split.

Interleaving: each trainer runs in its own process, both started together; they take turns
step by step (ours, bare, ours, bare, ...) by passing a token through a file between steps,
outside the timed windows, so load from other jobs on a shared machine hits both alike. The
first ``warmup`` steps of each are dropped. Each worker uses ``threads`` torch threads (default
1): on a shared 2-core machine two threads per process stall on each other whenever the other
core is taken (a parallel region waits for its slowest thread), which made identical work
differ by 35% between neighbouring steps; one thread each is slower but steady. Besides the
ratio of mean step times, the median of the per-step ratios (step i of ours over step i of
bare, run back to back) is reported, which load drift cannot bias.

Without pipeline outputs (fresh clone) it falls back to the tiny model from params (untrained)
and label-masked synthetic-world samples, and says so.

    python bench/rl_bench.py [--steps 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEYS = ("timing/step_s", "timing/generation_s", "timing/reward_s", "timing/update_s", "tokens/s")


def source(params, tmp: Path) -> tuple[str, list, Path, str]:
    """(model folder, samples, image root, description): the pipeline's, else synthetic."""
    from mmrpt.masking.samples import read_samples, samples_path

    masked = ROOT / samples_path(params.mask.out_dir, params.mask.selectors[0], "train")
    model_dir = ROOT / params.primer.out_dir
    if masked.exists() and (model_dir / "model.safetensors").exists():
        samples = read_samples(masked)[params.primer.n_samples :]
        return str(model_dir), samples, ROOT / params.data.out_dir, "primer + masked train"
    from mmrpt.data import world
    from mmrpt.masking.select import label_masked_sample
    from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm

    dp, rng = params.data, np.random.default_rng(params.seed)
    records = world.generate_split(
        "train",
        64,
        tmp / "world",
        seed=params.seed,
        image_size=dp.image_size,
        max_objects=dp.max_objects,
        prior_strength=dp.prior_strength,
    )
    samples = [
        s
        for r in records
        if (s := label_masked_sample(r, params.mask.max_masks, params.mask.instruction, rng))
    ]
    spec = TinySpec(**params.model.tiny.model_dump(), image_size=dp.image_size)
    texts = world.vocabulary_text() * 20 + [s.prompt for s in samples]
    build_tiny_vlm(texts, spec, tmp / "model", seed=params.seed)
    return str(tmp / "model"), samples, tmp / "world", "untrained tiny + label masks (fallback)"


def baton(turn: Path, me: str, other: str, timeout: float = 900.0):
    """A callback that waits for ``me`` in ``turn`` before the first step and after each
    step (after RolloutTiming closed the step's clock), and hands the turn to ``other``."""
    from transformers import TrainerCallback

    def wait():
        deadline = time.monotonic() + timeout
        while turn.read_text() != me:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{me}: no turn from {other} in {timeout:.0f} s")
            time.sleep(0.005)

    class Baton(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            wait()

        def on_step_end(self, args, state, control, **kwargs):
            tmp = turn.with_suffix(f".{me}")
            tmp.write_text(other)
            tmp.replace(turn)
            if state.global_step < state.max_steps:
                wait()

    return Baton()


def worker(which: str, params_file: str, steps: int, warmup: int, tmp: str, threads: int) -> dict:
    """One trainer's run; the data and model are those run() put in ``tmp``."""
    import torch
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from mmrpt.config import load_params
    from mmrpt.modeling.loader import load_vlm
    from mmrpt.rl.grpo import RolloutTiming, grpo_config, grpo_dataset, make_grpo_trainer
    from mmrpt.rl.rewards import minilm

    torch.set_num_threads(threads)
    params = load_params(params_file)
    rp = params.rl
    src = json.loads((Path(tmp) / "source.json").read_text())
    model, processor = load_vlm(src["model"], dtype=torch.float32)
    dataset = grpo_dataset(src["samples"], src["root"])
    names = [n for n, w in rp.reward_weights.items() if w > 0]
    settings = dict(
        out_dir=Path(tmp) / which,
        steps=steps + warmup,
        batch_size=rp.batch_size,
        num_generations=rp.num_generations,
        temperature=rp.temperature,
        lr=0.0,
        beta=rp.beta,
        loss_type=rp.loss_type,
        max_completion_length=rp.max_completion_length,
        save_steps=10**9,
        seed=params.seed,
    )
    if which == "ours":
        if "semantic" in names:
            minilm()  # loaded once per stage run, not per step (and not inside the seeded run)
        trainer = make_grpo_trainer(
            model,
            processor,
            dataset,
            reward_weights=rp.reward_weights,
            log_completions_steps=0,
            **settings,
        )
    else:

        class TimedGRPOTrainer(RolloutTiming, GRPOTrainer):
            pass

        def zero(completions, **_):
            return [0.0] * len(completions)

        processor.tokenizer.padding_side = "left"
        trainer = TimedGRPOTrainer(
            model=model,
            processing_class=processor,
            train_dataset=dataset.select_columns(["prompt", "image"]),
            reward_funcs=[zero] * len(names),
            args=grpo_config(reward_weights=[rp.reward_weights[n] for n in names], **settings),
        )
    rows: list[dict] = []

    class Record(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "timing/step_s" in logs:
                rows.append({k: logs[k] for k in KEYS})

    trainer.args.logging_steps = 1
    trainer.add_callback(Record())
    trainer.add_callback(baton(Path(tmp) / "turn", which, "bare" if which == "ours" else "ours"))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = rows[warmup:]
    return {
        "which": which,
        "rows": rows,
        "tokens": [r["tokens/s"] * r["timing/step_s"] for r in rows],
        "peak_train_mb": (peak - base) / 1024,
        "peak_mb": peak / 1024,
    }


def summarise(res: dict) -> dict:
    rows = res["rows"]
    step = float(np.sum([r["timing/step_s"] for r in rows]))
    mean = {
        k: float(np.mean([r[f"timing/{k}"] for r in rows]))
        for k in ("step_s", "generation_s", "reward_s", "update_s")
    }
    return {
        "s_per_step": mean["step_s"],
        "generation_s": mean["generation_s"],
        "reward_s": mean["reward_s"],
        "update_s": mean["update_s"],
        "tokens_per_s": float(np.sum(res["tokens"])) / step,
        "tokens_per_step": float(np.mean(res["tokens"])),
        "peak_mb": res["peak_mb"],
    }


def run(
    params_file: str | Path = ROOT / "params.yaml",
    steps: int = 10,
    warmup: int = 2,
    threads: int = 1,
) -> dict:
    """Both trainers in their own processes, taking turns step by step."""
    from mmrpt.config import load_params

    with tempfile.TemporaryDirectory() as tmp:
        model_dir, samples, root, desc = source(load_params(params_file), Path(tmp))
        (Path(tmp) / "source.json").write_text(
            json.dumps({"model": model_dir, "samples": samples, "root": str(root)})
        )
        (Path(tmp) / "turn").write_text("ours")
        procs = {
            which: subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    which,
                    str(params_file),
                    tmp,
                    "--steps",
                    str(steps),
                    "--warmup",
                    str(warmup),
                    "--threads",
                    str(threads),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
            for which in ("ours", "bare")
        }
        outs = {which: p.communicate() for which, p in procs.items()}
    for which, p in procs.items():
        if p.returncode:
            for q in procs.values():
                q.kill()
            raise RuntimeError(f"rl bench worker {which} failed:\n{outs[which][1][-3000:]}")
    runs = {which: json.loads(out.strip().splitlines()[-1]) for which, (out, _) in outs.items()}
    o, b = summarise(runs["ours"]), summarise(runs["bare"])
    paired = [
        x["timing/step_s"] / y["timing/step_s"]
        for x, y in zip(runs["ours"]["rows"], runs["bare"]["rows"], strict=True)
    ]
    return {
        "ours": o,
        "bare": b,
        "source": desc,
        "steps": steps,
        "threads": threads,
        "paired_ratio_median": float(np.median(paired)),
        "paired_ratio_iqr": [float(q) for q in np.percentile(paired, [25, 75])],
        "same_completions": bool(
            np.allclose(runs["ours"]["tokens"], runs["bare"]["tokens"], rtol=1e-6)
        ),
        "overhead": o["s_per_step"] / b["s_per_step"] - 1,
        "tokens_ratio": o["tokens_per_s"] / b["tokens_per_s"],
    }


def report(res: dict) -> str:
    o, b = res["ours"], res["bare"]
    lines = [
        f"rl bench ({res['source']}): {res['steps']} steps per trainer, interleaved, "
        f"{res['threads']} thread(s) each, "
        f"{o['tokens_per_step']:.0f} tokens/step, same completions: "
        f"{res['same_completions']}",
        f"{'':<10}{'s/step':>8}{'gen s':>8}{'reward s':>10}{'update s':>10}{'tokens/s':>10}"
        f"{'peak MB':>9}",
    ]
    for name, r in (("bare TRL", b), ("ours", o)):
        lines.append(
            f"{name:<10}{r['s_per_step']:>8.3f}{r['generation_s']:>8.3f}"
            f"{r['reward_s']:>10.3f}{r['update_s']:>10.3f}{r['tokens_per_s']:>10.0f}"
            f"{r['peak_mb']:>9.0f}"
        )
    lo, hi = res["paired_ratio_iqr"]
    lines.append(
        f"overhead ours/bare: {res['overhead']:+.1%} (target <= +10%); per-step "
        f"ratio median {res['paired_ratio_median']:.3f} (IQR {lo:.3f}-{hi:.3f})"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=10, help="measured steps per trainer")
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped at the start")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trainer")
    ap.add_argument("--worker", nargs=3, metavar=("WHICH", "PARAMS", "TMP"))
    args = ap.parse_args()
    if args.worker:
        which, params_file, tmp = args.worker
        print(json.dumps(worker(which, params_file, args.steps, args.warmup, tmp, args.threads)))
        return
    print(report(run(args.params, args.steps, args.warmup, args.threads)))


if __name__ == "__main__":
    main()
