"""GPU benchmark of the rl stage's GRPO trainer: a ~0.5B or ~1.5B Qwen2-VL-architecture model
built from config (nothing downloaded), synthetic-world masked samples (label masks), bf16,
our full reward table; prints tokens/s/GPU, the generation/update split and the MFU of the
update phase. Run through bench/gpu.sh (which also caps the wall time).

FLOPs of the update phase, per optimizer step: 6 x P_text x T + 6 x P_vision x V, where
T = prompt + completion tokens of the step's rollouts (unpadded, image tokens included; the
rollouts are trained on once: beta = 0, one update per generation, so no reference or old-policy
forward), P_text the language model's parameters (the tied embedding counted once, for the
lm_head matmul), P_vision the vision tower's (patch embedding, blocks and merger) and
V = image patches the tower sees (4 per image token: 2x2 merge), 2 FLOPs per multiply-add,
x3 for forward + backward. Attention's T^2 term is left out (small at these lengths), and
padding is not counted as useful work. MFU = FLOPs / (update seconds x peak), peak = 989
TFLOP/s (H100/H200 dense bf16). Update seconds = step - rollout phase: data loading, loss,
backward and the optimizer step.

The model is untrained: completions run to max_completion_length (a fixed, worst-case load)
and rewards are near 0, which changes no cost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transformers import TrainerCallback  # noqa: E402

from mmrpt.config import MaskParams, RLParams  # noqa: E402
from mmrpt.data import world  # noqa: E402
from mmrpt.masking.select import label_masked_sample  # noqa: E402
from mmrpt.modeling.tiny import (  # noqa: E402
    TinySpec,
    build_model,
    build_processor,
    train_tokenizer,
)
from mmrpt.rl.grpo import grpo_dataset, make_grpo_trainer  # noqa: E402
from mmrpt.training import TrainOptions  # noqa: E402

PEAK_FLOPS = 989e12  # H100 SXM / H200 dense bf16
# Qwen2-0.5B / Qwen2-1.5B language models (hidden, MLP, layers, heads, kv heads) with an
# 8-block vision tower (Qwen2-VL's has 32 blocks of 1280: 675M; ours keeps the total near
# the name); smoke = the test suite's tiny sizes, for a CPU check of the code path.
SIZES = {
    "smoke": dict(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        vision_depth=1,
        vision_embed_dim=16,
        vision_heads=2,
    ),
    "0.5b": dict(
        vocab_size=4096,
        hidden_size=896,
        intermediate_size=4864,
        num_layers=24,
        num_heads=14,
        num_kv_heads=2,
        vision_depth=8,
        vision_embed_dim=1024,
        vision_heads=16,
    ),
    "1.5b": dict(
        vocab_size=4096,
        hidden_size=1536,
        intermediate_size=8960,
        num_layers=28,
        num_heads=12,
        num_kv_heads=2,
        vision_depth=8,
        vision_embed_dim=1024,
        vision_heads=16,
    ),
}


def samples(out: Path, n: int, image_size: int, seed: int = 0) -> list[dict]:
    records = world.generate_split(
        "train", n, out, seed=seed, image_size=image_size, max_objects=3, prior_strength=0.7
    )
    rng = np.random.default_rng(seed)
    return [s for r in records if (s := label_masked_sample(r, 2, MaskParams().instruction, rng))]


def param_counts(model) -> tuple[int, int]:
    """(language model incl. the tied embedding/lm_head, vision tower) parameters."""
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    total = sum(p.numel() for p in model.parameters())  # tied weights counted once
    return total - vision, vision


class Budget(TrainerCallback):
    """Stops training when the next step would end past the deadline; records each step."""

    def __init__(self, deadline: float):
        self.deadline, self.rows, self.last = deadline, [], None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        step = now - self.last if self.last else 0.0
        self.last = now
        if now + 1.5 * step > self.deadline:
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "timing/step_s" in logs:
            self.rows.append(
                {
                    k: logs[k]
                    for k in (
                        "timing/step_s",
                        "timing/generation_s",
                        "timing/reward_s",
                        "timing/update_s",
                        "tokens/s",
                    )
                }
            )


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mmrpt-gpu-"))
    try:
        bench(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench(tmp: Path) -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the figures")
    ap.add_argument("--batch", type=int, default=16, help="prompts per step")
    ap.add_argument("--generations", type=int, default=8, help="rollouts per prompt")
    ap.add_argument(
        "--micro-batches",
        type=int,
        help="update slices per step (default: 4 for 0.5b, 8 for 1.5b, else 1)",
    )
    ap.add_argument("--max-completion", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=448, help="448 px = 256 image tokens")
    ap.add_argument(
        "--time-budget",
        type=float,
        default=420.0,
        help="seconds from start; training stops before, then the report",
    )
    ap.add_argument("--deepspeed", help="DeepSpeed config, e.g. mmrpt/deepspeed/zero2.json")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    if args.micro_batches is None:
        args.micro_batches = {"0.5b": 4, "1.5b": 8}.get(args.size, 1)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name()}", flush=True)

    data = samples(tmp / "world", max(64, 2 * args.batch), args.image_size)
    spec = TinySpec(**SIZES[args.size], image_size=args.image_size)
    tokenizer = train_tokenizer(
        world.vocabulary_text() * 20 + [s.prompt for s in data], spec.vocab_size
    )
    processor = build_processor(tokenizer, args.image_size)
    with torch.device(device):  # initialise the weights where they will live
        model = build_model(spec, tokenizer).to(dtype)
    p_text, p_vision = param_counts(model)
    image = processor.image_processor(
        images=[world.render([], args.image_size, np.random.default_rng(0))]
    )
    patches = int(image["image_grid_thw"].prod())
    print(
        f"model {args.size}: {p_text / 1e6:.0f}M language + {p_vision / 1e6:.0f}M vision "
        f"parameters, {patches} patches ({patches // 4} image tokens) per image; "
        f"{len(data)} samples; built in {time.perf_counter() - t_start:.0f} s",
        flush=True,
    )

    budget = Budget(t_start + args.time_budget)
    rl = RLParams()
    trainer = make_grpo_trainer(
        model,
        processor,
        grpo_dataset(data, tmp / "world"),
        out_dir=tmp / "ck",
        steps=args.steps,
        batch_size=args.batch,
        num_generations=args.generations,
        temperature=1.0,
        lr=1e-6,
        beta=0.0,
        loss_type="dapo",
        max_completion_length=args.max_completion,
        reward_weights=rl.reward_weights,
        save_steps=10**9,
        seed=0,
        callbacks=[budget],
        options=TrainOptions(deepspeed=args.deepspeed, bf16=cuda),
        log_completions_steps=0,
        micro_batches=args.micro_batches,
    )
    trainer.args.logging_steps = 1
    try:
        trainer.train()
    except KeyboardInterrupt:  # gpu.sh's hard cap: report what was measured
        print("interrupted: reporting the steps done", flush=True)
    rows = budget.rows[args.warmup :] or budget.rows
    if not rows:
        raise SystemExit("no step finished inside the time budget")
    step = np.array([r["timing/step_s"] for r in rows])
    gen = np.array([r["timing/generation_s"] for r in rows])
    upd = np.array([r["timing/update_s"] for r in rows])
    tokens = np.array([r["tokens/s"] for r in rows]) * step
    rollouts = args.batch * args.generations
    flops = 6 * p_text * tokens + 6 * p_vision * patches * rollouts
    res = {
        "size": args.size,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "steps_measured": len(rows),
        "steps_done": len(budget.rows),
        "params_text": p_text,
        "params_vision": p_vision,
        "tokens_per_step": float(tokens.mean()),
        "tokens_per_s_per_gpu": float(tokens.sum() / step.sum()),
        "s_per_step": float(step.mean()),
        "generation_s": float(gen.mean()),
        "reward_s": float(np.mean([r["timing/reward_s"] for r in rows])),
        "update_s": float(upd.mean()),
        "generation_share": float(gen.sum() / step.sum()),
        "update_tflops": float(flops.sum() / upd.sum() / 1e12),
        "mfu_update": float(flops.sum() / upd.sum() / PEAK_FLOPS),
        "mfu_step": float(flops.sum() / step.sum() / PEAK_FLOPS),
        "wall_s": time.perf_counter() - t_start,
    }
    print(json.dumps(res, indent=1))
    print(
        f"\n{res['device']}, {args.size}: {res['steps_measured']} steps measured "
        f"({res['steps_done']} done), {rollouts} rollouts/step, "
        f"{res['tokens_per_step']:.0f} tokens/step\n"
        f"tokens/s/GPU {res['tokens_per_s_per_gpu']:.0f}; s/step {res['s_per_step']:.2f} = "
        f"generation {res['generation_s']:.2f} ({res['generation_share']:.0%}, of which "
        f"rewards {res['reward_s']:.2f}) + update {res['update_s']:.2f}\n"
        f"update phase {res['update_tflops']:.1f} TFLOP/s = MFU {res['mfu_update']:.1%} of "
        f"989 TFLOP/s (target >= 25%; whole step {res['mfu_step']:.1%}); "
        f"wall {res['wall_s']:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
