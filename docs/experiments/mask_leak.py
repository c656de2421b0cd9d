"""Does the rest of the caption give a hidden colour word away? Per masked-samples file
(data/masked/<selector>/<split>.jsonl of a workspace with attribute masks): the share of
samples whose hidden "<colour> <shape>" is still named elsewhere in the masked caption (a
relation sentence, or another object of the same colour and shape), and, from the scene, the
share of targets that are conflict objects (colour != the shape's prior) and that are biased
(the caption's word != the object's true colour).

    python docs/experiments/mask_leak.py studies/cpu/bias-0.6/data/masked/label/train.jsonl ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mmrpt.data.world import _OBJECT, COLS, PRIOR_COLOUR, ROWS  # noqa: E402


def hidden_object(sample: dict, a: int, b: int) -> dict:
    """The scene object whose colour word is the caption span (a, b)."""
    start = sample["caption"].rfind(". ", 0, a)
    sentence = sample["caption"][
        start + 2 if start >= 0 else 0 : sample["caption"].find(".", b) + 1
    ]
    size, _, shape, row, col = _OBJECT.fullmatch(sentence.strip()).groups()
    for o in sample["meta"]["scene"]:
        if (o["size"], o["shape"], ROWS[o["row"]], COLS[o["col"]]) == (size, shape, row, col):
            return o
    raise ValueError(f"{sample['id']}: no object for {sentence!r}")


def leak_table(path: Path) -> dict:
    n = leaked = conflict = biased = 0
    for line in path.read_text().splitlines():
        s = json.loads(line)
        for t, (a, b) in zip(s["targets"], sorted(map(tuple, s["spans"])), strict=True):
            shape = s["caption"][b:].split()[0]
            o = hidden_object(s, a, b)
            n += 1
            leaked += f"{t} {shape}" in s["masked_caption"]
            conflict += o["colour"] != PRIOR_COLOUR[o["shape"]]
            biased += t != o["colour"]
    return {
        "file": str(path),
        "blanks": n,
        "named_elsewhere": round(leaked / n, 3),
        "conflict": round(conflict / n, 3),
        "biased": round(biased / n, 3),
    }


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(json.dumps(leak_table(Path(arg))))
