"""Scoring benchmark: our D_vis path vs the naive `output_attentions=True` eager pass.

Same model, same inputs, same run. Each method runs in a fresh subprocess so that its peak
memory (ru_maxrss after the passes minus ru_maxrss after loading) is its own. Inputs are long
enough to matter: a 448 px image (256 image tokens) and a ~330-token caption, >= 580 tokens in
all. The model is a Qwen2-VL-architecture model built from config (8 layers x 256, 8 heads).

    python bench/score_bench.py [--batch 8] [--batches 3] [--rounds 1] [--threads 1]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(dirpath: Path) -> None:
    from mmrpt.data import world
    from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm

    spec = TinySpec(
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=512,
        num_layers=8,
        num_heads=8,
        num_kv_heads=4,
        vision_depth=2,
        vision_embed_dim=64,
        vision_heads=4,
        image_size=448,
    )
    build_tiny_vlm(world.vocabulary_text() * 20, spec, dirpath)


def inputs(n: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    sentence = "A large red circle is at the top left. Squares have four equal sides."
    caption = " ".join([sentence] * 18)
    images = [
        Image.fromarray(rng.integers(0, 255, (448, 448, 3), dtype=np.uint8)) for _ in range(n)
    ]
    from mmrpt.data.records import split_sentences

    spans = [(s.start, s.end) for s in split_sentences(caption)]
    return images, [caption] * n, [spans] * n


def worker(method: str, model_dir: str, batch: int, batches: int, threads: int = 1) -> dict:
    import torch

    from mmrpt.modeling.encode import collate, encode, sentence_of_tokens
    from mmrpt.modeling.loader import image_token_id, load_vlm
    from mmrpt.scoring.attention import capture
    from mmrpt.scoring.sentences import attention_scores, key_masks

    torch.set_num_threads(threads)
    model, processor = load_vlm(model_dir, dtype=torch.float32)
    model.eval()
    images, captions, spans = inputs(batch)
    tid = image_token_id(model)
    layers = [4, 5]  # the paper's 50-75% band of 8 layers
    keys = ("sink", "prompt", "caption")
    prompt = "Describe the image."
    n_tokens = len(encode(processor, images[0], prompt, captions[0]).input_ids)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for _ in range(batches):
        if method == "ours":
            with capture(model, layers) as cap:
                out = attention_scores(
                    model, processor, cap, images, captions, spans, prompt, tid, keys
                )
            result = np.stack([a.mean(0) for a, _ in out])
        else:
            encs = [
                encode(processor, im, prompt, c) for im, c in zip(images, captions, strict=True)
            ]
            b = collate(encs, processor.tokenizer.pad_token_id)
            b.pop("labels")
            img, txt = key_masks(encs, b["input_ids"].shape[1], tid, keys)
            cfg = model.config.get_text_config()
            cfg._attn_implementation = "eager"
            with torch.no_grad():
                attn = model(**b, output_attentions=True).attentions  # every layer, (B,H,T,T)
            result = []
            for i, e in enumerate(encs):
                sent = np.array(sentence_of_tokens(e.offsets, spans[i]))
                w = torch.stack([attn[la][i] for la in layers])  # (L, H, T, T)
                q = w[:, :, e.target_start : e.target_start + len(sent)]
                share = (q[..., img[i]].sum(-1) / (q[..., img[i] | txt[i]].sum(-1))).mean((0, 1))
                result.append([share[sent == s].mean().item() for s in range(len(spans[i]))])
            result = np.array(result)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": method,
        "samples_per_s": batch * batches / seconds,
        "peak_extra_mb": (peak - base) / 1024,
        "tokens": n_tokens,
        "scores": result.tolist(),
    }


def run(batch: int = 8, batches: int = 3, rounds: int = 1, threads: int = 1) -> dict:
    """Both methods, interleaved (naive, ours, naive, ours, ...), each pass in its own
    subprocess with ``threads`` torch threads (1: on a shared machine two threads stall on
    each other whenever the other core is busy); per method the median over the rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        runs: dict[str, list[dict]] = {"naive": [], "ours": []}
        for _ in range(rounds):
            for method in ("naive", "ours"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        method,
                        tmp,
                        "--batch",
                        str(batch),
                        "--batches",
                        str(batches),
                        "--threads",
                        str(threads),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                runs[method].append(json.loads(out.strip().splitlines()[-1]))
    res = {}
    for method, rs in runs.items():
        res[method] = rs[0] | {
            "samples_per_s": float(np.median([r["samples_per_s"] for r in rs])),
            "peak_extra_mb": float(np.median([r["peak_extra_mb"] for r in rs])),
        }
    n, o = res["naive"], res["ours"]
    return {
        "naive": n,
        "ours": o,
        "tokens": o["tokens"],
        "rounds": rounds,
        "speed_ratio": o["samples_per_s"] / n["samples_per_s"],
        "memory_ratio": n["peak_extra_mb"] / max(o["peak_extra_mb"], 1),
        "max_abs_diff": float(np.abs(np.array(n["scores"]) - np.array(o["scores"])).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per pass")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "MODEL_DIR"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.batch, args.batches, args.threads)))
        return
    res = run(args.batch, args.batches, args.rounds, args.threads)
    n, o = res["naive"], res["ours"]
    print(f"scoring bench: {res['tokens']} tokens/sample, batch {args.batch} x {args.batches}")
    print(f"{'method':<8}{'samples/s':>12}{'peak extra MB':>16}")
    for r in (n, o):
        print(f"{r['method']:<8}{r['samples_per_s']:>12.2f}{r['peak_extra_mb']:>16.0f}")
    print(f"speed ratio ours/naive: {res['speed_ratio']:.2f}x")
    print(f"memory ratio naive/ours: {res['memory_ratio']:.2f}x")
    print(f"max |D_vis difference|: {res['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()
