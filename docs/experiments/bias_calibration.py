"""Calibration for the study (issue 17): can GRPO with the scene verifier correct a descriptive
caption bias that imitation copies? One seed, components called directly (not the pipeline).

World with `caption_bias` b on train captions (a conflict object, colour != its shape's prior,
is named with the prior colour with probability b); the tiny VLM is warmed up on those captions;
fill-in samples hide the colour word of object sentences (the biased attribute); a primer (short
supervised fill-in on a disjoint subset) teaches the answer format; then from the primer:
  masked_sft : supervised fill-in of the (biased) caption words,
  grpo_visual: GRPO whose reward is the scene verifier (visual 1.0, format 0.2),
  grpo_exact : GRPO paying exact match with the (biased) caption word (exact 1.0, format 0.2).
Held-out captions are true to the image. Reported per model on test_counter (every object a
conflict) and test_iid: greedy accuracy of the colour word (true colour) and the rate of
answering the shape's prior colour, plus the primer's pass@8 on test_counter (headroom).

    python docs/experiments/bias_calibration.py --bias 0.6 --out /tmp/calib [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.config import Params  # noqa: E402
from mmrpt.data import world  # noqa: E402
from mmrpt.data.records import Record  # noqa: E402
from mmrpt.generation import generate  # noqa: E402
from mmrpt.images import open_rgb  # noqa: E402
from mmrpt.masking.samples import MaskedSample, fillin_target  # noqa: E402
from mmrpt.modeling.loader import load_vlm  # noqa: E402
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm  # noqa: E402
from mmrpt.pretrain.warmup import CaptionDataset  # noqa: E402
from mmrpt.rl.fillin import FillInDataset  # noqa: E402
from mmrpt.rl.grpo import grpo_dataset, make_grpo_trainer  # noqa: E402
from mmrpt.rl.rewards import parse  # noqa: E402
from mmrpt.training import make_trainer, save_model_atomic, seed_everything  # noqa: E402

OBJECT = re.compile(r"A (\w+) (\w+) (\w+) is at the (\w+) (\w+)\.")


def colour_samples(records: list[Record], instruction: str, max_masks: int = 1) -> list:
    """Hide the colour word of up to ``max_masks`` object sentences per record (first ones)."""
    out = []
    for r in records:
        spans, idx = [], []
        for i, s in enumerate(r.sentences):
            m = OBJECT.fullmatch(r.caption[s.start : s.end])
            if m and len(spans) < max_masks:
                a = s.start + m.start(2)
                spans.append((a, a + len(m[2])))
                idx.append(i)
        if spans:
            out.append(MaskedSample.build(r, spans, idx, [1.0] * len(spans), instruction))
    return out


def truth(sample) -> tuple[str, str]:
    """(true colour, the shape's prior colour) of the first hidden object, from the scene."""
    a = sample.spans[0][0]
    start = sample.caption.rfind(". ", 0, a)
    sentence = sample.caption[start + 2 if start >= 0 else 0 : sample.caption.find(".", a) + 1]
    size, _, shape, row, col = OBJECT.fullmatch(sentence).groups()
    for o in sample.meta["scene"]:
        if (o["size"], o["shape"], world.ROWS[o["row"]], world.COLS[o["col"]]) == (
            size,
            shape,
            row,
            col,
        ):
            return o["colour"], world.PRIOR_COLOUR[shape]
    raise ValueError(f"no object for {sentence!r}")


def evaluate(model, processor, samples, root: Path, n_pass: int = 0) -> dict:
    images = [open_rgb(root / s.image) for s in samples]
    prompts = [s.prompt for s in samples]
    greedy = generate(model, processor, images, prompts, 24, 32)
    rows = []
    for s, c in zip(samples, greedy, strict=True):
        answer = parse(c).answers.get(1, "").strip().lower()
        true, prior = truth(s)
        rows.append((answer == true, answer == prior))
    out = {
        "n": len(rows),
        "accuracy": float(np.mean([r[0] for r in rows])),
        "prior_rate": float(np.mean([r[1] for r in rows])),
    }
    if n_pass:
        torch.manual_seed(0)
        sampled = generate(
            model, processor, images, prompts, 24, 8, temperature=0.8, num_samples=n_pass
        )
        hits = [
            [
                parse(c).answers.get(1, "").strip().lower() == truth(s)[0]
                for c in sampled[j * n_pass : (j + 1) * n_pass]
            ]
            for j, s in enumerate(samples)
        ]
        out[f"pass@{n_pass}"] = float(np.mean([any(h) for h in hits]))
        out["sampled_accuracy"] = float(np.mean([np.mean(h) for h in hits]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bias", type=float, default=0.6)
    ap.add_argument("--out", default="/tmp/calib")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--warmup-steps", type=int, default=800)
    ap.add_argument("--primer-steps", type=int, default=150)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    p = Params()
    seed_everything(args.seed)
    root = out / "world"
    t0 = time.time()
    splits = {}
    for split, n in (("train", args.n_train), ("test_iid", 300), ("test_counter", 300)):
        splits[split] = list(
            world.generate_split(
                split,
                n,
                root,
                seed=args.seed,
                image_size=p.data.image_size,
                max_objects=p.data.max_objects,
                prior_strength=p.data.prior_strength,
                caption_bias=args.bias,
            )
        )
    named = [
        (o["colour"], c)
        for r in splits["train"]
        for o, c in zip(
            r.meta["scene"],
            r.meta.get("named_colours") or [o["colour"] for o in r.meta["scene"]],
            strict=True,
        )
        if o["colour"] != world.PRIOR_COLOUR[o["shape"]]
    ]
    log = {"bias": args.bias, "measured_bias": float(np.mean([a != b for a, b in named]))}
    instruction = p.mask.instruction
    spec = TinySpec(**p.model.tiny.model_dump(), image_size=p.data.image_size)
    texts = (
        [r.caption for r in splits["train"]]
        + world.vocabulary_text()
        + [instruction, fillin_target(["a", "b"]), "[1] [2] [3]"] * 50
    )
    model, processor = load_vlm(
        build_tiny_vlm(texts, spec, out / "init", seed=args.seed), dtype=torch.float32
    )
    make_trainer(
        model,
        processor,
        CaptionDataset(splits["train"], root, processor, p.warmup.prompt),
        out_dir=out / "ck_warmup",
        max_steps=args.warmup_steps,
        batch_size=16,
        lr=p.warmup.lr,
        weight_decay=0.01,
        warmup_ratio=0.05,
        save_steps=10**6,
        save_total_limit=1,
        log_steps=100,
        seed=args.seed,
    ).train()
    save_model_atomic(model, processor, out / "warmup")
    log["warmup_s"] = time.time() - t0
    train = colour_samples(splits["train"], instruction)
    held = {s: colour_samples(splits[s], instruction) for s in ("test_iid", "test_counter")}
    primer_n = 600
    make_trainer(
        model,
        processor,
        FillInDataset(train[:primer_n], root, processor),
        out_dir=out / "ck_primer",
        max_steps=args.primer_steps,
        batch_size=16,
        lr=p.primer.lr,
        weight_decay=0.0,
        warmup_ratio=0.05,
        save_steps=10**6,
        save_total_limit=1,
        log_steps=50,
        seed=args.seed,
    ).train()
    save_model_atomic(model, processor, out / "primer")
    log["primer"] = {
        s: evaluate(model, processor, v, root, n_pass=8 if s == "test_counter" else 0)
        for s, v in held.items()
    }
    print(json.dumps(log, indent=2), flush=True)
    rest = train[primer_n:]
    arms = {
        "masked_sft": None,
        "grpo_visual": {"format": 0.2, "visual": 1.0},
        "grpo_exact": {"format": 0.2, "exact": 1.0},
    }
    for arm, weights in arms.items():
        seed_everything(args.seed)
        model, processor = load_vlm(out / "primer", dtype=torch.float32)
        t1 = time.time()
        if weights is None:
            trainer = make_trainer(
                model,
                processor,
                FillInDataset(rest, root, processor),
                out_dir=out / f"ck_{arm}",
                max_steps=args.steps,
                batch_size=8,
                lr=p.rl.sft_lr,
                weight_decay=0.0,
                warmup_ratio=0.0,
                save_steps=10**6,
                save_total_limit=1,
                log_steps=25,
                seed=args.seed,
            )
        else:
            trainer = make_grpo_trainer(
                model,
                processor,
                grpo_dataset(rest, root),
                out_dir=out / f"ck_{arm}",
                steps=args.steps,
                batch_size=8,
                num_generations=8,
                temperature=1.0,
                lr=p.rl.lr,
                beta=0.0,
                loss_type="dapo",
                max_completion_length=24,
                reward_weights=weights,
                save_steps=10**6,
                seed=args.seed,
                log_completions_steps=0,
            )
        trainer.train()
        rewards = [h.get("reward") for h in trainer.state.log_history if "reward" in h]
        log[arm] = {s: evaluate(model, processor, v, root) for s, v in held.items()}
        log[arm]["train_s"] = time.time() - t1
        if rewards:
            log[arm]["reward_first_last"] = [rewards[0], rewards[-1]]
        print(json.dumps({arm: log[arm]}, indent=2), flush=True)
    (out / "result.json").write_text(json.dumps(log, indent=2))
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
