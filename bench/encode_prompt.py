"""What one warmup sample costs to encode, and what the prompt-ids cache saves
(mmrpt/modeling/encode._encode_prompt): the processor's call split into its text and image
parts, the dataset item without the cache (the processor on every call, as before 7f0e1ea)
and with it, and a check that both give the same ids and pixels on every train record.
Needs a workspace after `make main` (data/world, models/warmup).

    python bench/encode_prompt.py [--data data/world] [--model models/warmup]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmrpt.data.records import read_manifest  # noqa: E402
from mmrpt.images import open_rgb  # noqa: E402
from mmrpt.modeling import encode as module  # noqa: E402
from mmrpt.modeling.loader import load_vlm  # noqa: E402
from mmrpt.pretrain.warmup import CaptionDataset  # noqa: E402


def ms_per_call(f, n: int) -> float:
    f(0)
    t0 = time.perf_counter()
    for i in range(n):
        f(i)
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/world")
    ap.add_argument("--model", default="models/warmup")
    ap.add_argument("--prompt", default="Describe the image.")
    ap.add_argument("--n", type=int, default=1000, help="calls per timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.data)
    records = read_manifest(root / "train.jsonl")
    _, processor = load_vlm(args.model, dtype=torch.float32)
    n = min(args.n, len(records))
    images = [open_rgb(root / records[i].image) for i in range(n)]
    text = module.chat_prompt(processor, args.prompt)

    def uncached(i: int):  # encode() before the cache: the processor on every call
        im = open_rgb(root / records[i].image)
        processor(text=[text], images=[im], return_tensors="pt")
        processor.tokenizer(
            records[i].caption,
            add_special_tokens=False,
            return_offsets_mapping=True,
            split_special_tokens=True,
        )

    dataset = CaptionDataset(records, root, processor, args.prompt)
    rows = {
        "processor (text + image)": ms_per_call(
            lambda i: processor(text=[text], images=[images[i]], return_tensors="pt"), n
        ),
        "image processor alone": ms_per_call(
            lambda i: processor.image_processor(images=[images[i]], return_tensors="pt"), n
        ),
        "dataset item, no cache": ms_per_call(uncached, n),
        "dataset item, cached prompt": ms_per_call(lambda i: dataset[i], n),
    }
    for name, ms in rows.items():
        print(f"{name:30s} {ms:.3f} ms")
    saved = rows["dataset item, no cache"] - rows["dataset item, cached prompt"]
    print(f"saved per 16,000 samples (the main job's warmup): {saved * 16:.1f} s")
    bad = 0
    for i, r in enumerate(records):
        item = dataset[i]
        want = processor(text=[text], images=[open_rgb(root / r.image)], return_tensors="pt")
        bad += item.input_ids[: item.target_start] != want["input_ids"][0].tolist()
        bad += not torch.equal(item.pixel_values, want["pixel_values"])
    print(f"records whose ids or pixels differ from the processor's: {bad} of {len(records)}")


if __name__ == "__main__":
    main()
