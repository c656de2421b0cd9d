"""Scoring memory at the real vocabulary: per-token caption losses (the counterfactual score's
and warmup's vision check's pass) from full logits vs from hidden states with the output head
applied in chunks to the target positions (mmrpt.modeling.encode.target_losses).

Model: a config-built Qwen2.5-VL with the real token layout (151,936 vocabulary; tiny width,
mmrpt.modeling.qwen_layout). Inputs: 1280x720 images (the processor's default bounds: ~1,200
image tokens each) and a ~60-token caption. Each method runs in a fresh subprocess; peak =
ru_maxrss after the passes minus after loading the model and encoding the inputs.

    python bench/score_memory.py [--batch 2] [--width 1280] [--height 720] [--chunk ROWS]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAPTION = (
    "Dr. Smith stands beside a red car on a wet street. It is 5 p.m. and the lights are on. "
    "A sign, i.e. the one on the left, reads 3.5 m. Two people wait at the crossing."
)


def worker(method: str, model_dir: str, batch: int, width: int, height: int, chunk: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from mmrpt.modeling.encode import collate, encode, target_losses, token_losses
    from mmrpt.modeling.loader import load_vlm

    torch.set_num_threads(1)
    model, processor = load_vlm(model_dir, dtype=torch.float32)
    model.eval()
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        for _ in range(batch)
    ]
    encs = [encode(processor, im, "Describe the image.", CAPTION) for im in images]
    data = collate(encs, processor.tokenizer.pad_token_id)
    labels = data.pop("labels")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.no_grad():
        if method == "full_logits":
            losses = token_losses(model(**data).logits, labels)
        else:
            losses = target_losses(model, data, labels, chunk)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    return {
        "method": method,
        "tokens_per_sample": int(data["input_ids"].shape[1]),
        "vocab": int(model.config.get_text_config().vocab_size),
        "peak_mb": peak / 1024,
        "seconds": seconds,
        "loss_sum": float(losses.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: budget)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        r = worker(args.worker, args.model, args.batch, args.width, args.height, args.chunk)
        print(json.dumps(r))
        return
    from mmrpt.modeling.qwen_layout import build_qwen25_vl

    with tempfile.TemporaryDirectory() as d:
        build_qwen25_vl([CAPTION] * 50, d)
        rows = []
        for method in ("full_logits", "chunked"):
            cmd = [sys.executable, __file__, "--worker", method, "--model", d]
            cmd += ["--batch", str(args.batch), "--width", str(args.width)]
            cmd += ["--height", str(args.height)]
            cmd += ["--chunk", str(args.chunk)] if args.chunk else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    full, ours = rows
    print(json.dumps(rows, indent=1))
    print(
        f"batch {args.batch} x {full['tokens_per_sample']} tokens, vocab {full['vocab']}: "
        f"peak {full['peak_mb']:.0f} MB -> {ours['peak_mb']:.0f} MB "
        f"({full['peak_mb'] / max(ours['peak_mb'], 1):.1f}x), time {full['seconds']:.2f} s -> "
        f"{ours['seconds']:.2f} s, |loss sum diff| {abs(full['loss_sum'] - ours['loss_sum']):.1e}"
    )


if __name__ == "__main__":
    main()
