"""Small real-format inputs the real-data tests make on the fly: a caption corpus (JSONL with
JPEG and PNG images of mixed sizes, natural multi-sentence captions with abbreviations,
numbers and ellipses), a LLaVA-style SFT JSON (single-image, multi-image and text-only
conversations, several turns) and an MMStar.tsv in VLMEvalKit's format (index, question,
answer, category, l2-category, bench, image as base64, A-D)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

COLOURS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (30, 160, 60)}
SIZES = [(96, 64), (64, 96), (120, 90), (80, 80), (140, 70), (72, 100)]
THINGS = ["car", "bus", "kite", "boat"]
CAPTIONS = [
    "Dr. Lee stands next to a {c} {t} on a quiet street. The photo was taken at 5 p.m. in "
    "late autumn. A sign nearby reads 3.5 m.",
    "A {c} {t} is parked by the kerb, i.e. in front of the shop. Its windows are dark... "
    "Nobody is around.",
    "Items on the pavement, e.g. bags and boxes, lie near the {t}. The {t} is {c}. It looks new.",
]


def _image(i: int, colour: str) -> Image.Image:
    w, h = SIZES[i % len(SIZES)]
    rng = np.random.default_rng(i)
    a = np.clip(rng.normal(0, 20, (h, w, 3)) + COLOURS[colour], 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def write_corpus(folder: Path, splits: dict[str, int]) -> dict[str, str]:
    """``<folder>/<split>.jsonl`` and their images (even rows JPEG, odd rows PNG; sizes from
    SIZES; one row per split has a 6000x28 image, refused at ingest). Returns data.inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    inputs, k = {}, 0
    for split, n in splits.items():
        rows = []
        for i in range(n):
            colour = list(COLOURS)[k % 3]
            name = f"img/{split}-{i}.{'jpg' if k % 2 == 0 else 'png'}"
            _image(k, colour).save(folder / name)
            caption = CAPTIONS[k % len(CAPTIONS)].format(c=colour, t=THINGS[k % len(THINGS)])
            rows.append({"id": f"{split}-{i}", "image": name, "caption": caption})
            k += 1
        Image.new("RGB", (6000, 28)).save(folder / "img" / f"{split}-wide.png")
        rows.append(
            {"id": f"{split}-wide", "image": f"img/{split}-wide.png", "caption": "A line. Thin."}
        )
        (folder / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        inputs[split] = str(folder / f"{split}.jsonl")
    return inputs


def write_llava(folder: Path, n: int = 8) -> Path:
    """A LLaVA-style JSON: single-image (several turns), two-image and text-only items."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir(exist_ok=True)
    items = []
    for i in range(n):
        colour = list(COLOURS)[i % 3]
        _image(100 + i, colour).save(folder / "images" / f"{i}.jpg")
        kind = i % 3
        if kind == 0:
            items.append(
                {
                    "id": f"single-{i}",
                    "image": f"images/{i}.jpg",
                    "conversations": [
                        {"from": "human", "value": "<image>\nWhat colour is the vehicle?"},
                        {"from": "gpt", "value": f"It is {colour}."},
                        {"from": "human", "value": "Is it moving?"},
                        {"from": "gpt", "value": "No, it is parked."},
                    ],
                }
            )
        elif kind == 1:
            items.append(
                {
                    "id": f"pair-{i}",
                    "image": [f"images/{i}.jpg", f"images/{i - 1}.jpg"],
                    "conversations": [
                        {"from": "human", "value": "First: <image> Second: <image> Same colour?"},
                        {"from": "gpt", "value": "No."},
                    ],
                }
            )
        else:
            items.append(
                {
                    "id": f"text-{i}",
                    "conversations": [
                        {"from": "human", "value": "What is 2 + 3?"},
                        {"from": "gpt", "value": "5"},
                    ],
                }
            )
    path = folder / "llava.json"
    path.write_text(json.dumps(items))
    return path


def write_mmstar(folder: Path, n: int = 6, name: str = "MMStar") -> Path:
    """``<folder>/<name>.tsv`` in VLMEvalKit's MMStar format (its md5 is not VLMEvalKit's)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % 3]
        buf = io.BytesIO()
        _image(200 + i, colour).save(buf, format="JPEG")
        rows.append(
            {
                "index": i,
                "question": "What colour is the image mostly?",
                "answer": "ABC"[i % 3],
                "category": ["coarse perception", "fine-grained perception"][i % 2],
                "l2-category": "colour",
                "bench": "test",
                "image": base64.b64encode(buf.getvalue()).decode(),
                "A": "red",
                "B": "blue",
                "C": "green",
                "D": "grey",
            }
        )
    path = folder / f"{name}.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path
