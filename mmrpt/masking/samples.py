"""The masked sample: the record that travels from the mask stage to the primer, the arms and
evaluation, with its one writer (``write_samples``) and one reader (``read_samples``).

A sample is a caption with numbered placeholders [1], [2], ... in place of the hidden texts,
the prompt built from it (``fillin_prompt``, the only place the template is written) and the
reference answer. The policy answers ``<think>...</think><answer>[1] ... [2] ...</answer>``
(``fillin_target``: in supervised targets the think block is a fixed short sentence, our
choice: the tiny model has no reasoning to imitate; the block exists so RL can grow it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmrpt.io import write_lines_atomic

THINK = "I compare the caption with the image."


def placeholder(i: int) -> str:
    return f"[{i + 1}]"


def format_answer(targets: Sequence[str]) -> str:
    """The reference answer text: '[1] first hidden text [2] second ...'."""
    return " ".join(f"{placeholder(i)} {t}" for i, t in enumerate(targets))


def mask_caption(caption: str, spans: Sequence[tuple[int, int]]) -> tuple[str, list[str]]:
    """Replace each (non-overlapping) span by its numbered placeholder, left to right."""
    out, targets, pos = [], [], 0
    for i, (a, b) in enumerate(sorted(spans)):
        if a < pos:
            raise ValueError(f"overlapping mask spans at {a}")
        out += [caption[pos:a], placeholder(i)]
        targets.append(caption[a:b])
        pos = b
    out.append(caption[pos:])
    return "".join(out), targets


def fillin_prompt(instruction: str, masked_caption: str) -> str:
    return f"{instruction}\nCaption: {masked_caption}"


def fillin_target(targets: Sequence[str], think: str | None = THINK) -> str:
    """The answer a policy writes: ``<think>...</think><answer>[1] ...</answer>``, or the
    answer alone when ``think`` is None (short completions)."""
    answer = f"<answer>{format_answer(targets)}</answer>"
    return answer if think is None else f"<think>{think}</think>{answer}"


@dataclass(frozen=True)
class MaskedSample:
    """One fill-in example. ``spans``: caption char spans of the hidden texts (in order);
    ``sentences``: their sentence indices; ``labels``: their ground-truth dependency (None
    where unknown); ``scores``: the selector's scores; ``meta``: the record's meta (the
    synthetic world's scene)."""

    id: str
    image: str
    caption: str
    masked_caption: str
    targets: list[str]
    spans: list[tuple[int, int]]
    sentences: list[int]
    labels: list[int | None]
    scores: list[float]
    meta: dict[str, Any]
    prompt: str
    think: bool = True  # the answer format has a <think> block

    @property
    def target(self) -> str:
        """The supervised completion: the hidden texts in the answer format."""
        return fillin_target(self.targets, THINK if self.think else None)

    @property
    def answer(self) -> str:
        return format_answer(self.targets)

    @staticmethod
    def build(
        record,
        spans: Sequence[tuple[int, int]],
        sentences: Sequence[int],
        scores: Sequence[float],
        instruction: str,
        think: bool = True,
    ) -> MaskedSample:
        """Hide ``spans`` of ``record``'s caption (sentence indices ``sentences``)."""
        masked, targets = mask_caption(record.caption, spans)
        return MaskedSample(
            id=record.id,
            image=record.image,
            caption=record.caption,
            masked_caption=masked,
            targets=targets,
            spans=[tuple(s) for s in spans],
            sentences=list(sentences),
            labels=[record.sentences[i].label for i in sentences],
            scores=[float(x) for x in scores],
            meta=record.meta,
            prompt=fillin_prompt(instruction, masked),
            think=think,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"answer": self.answer}, ensure_ascii=False)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> MaskedSample:
        return MaskedSample(
            id=str(d["id"]),
            image=str(d["image"]),
            caption=d["caption"],
            masked_caption=d["masked_caption"],
            targets=list(d["targets"]),
            spans=[tuple(s) for s in d["spans"]],
            sentences=list(d["sentences"]),
            labels=list(d["labels"]),
            scores=list(d["scores"]),
            meta=dict(d.get("meta") or {}),
            prompt=d["prompt"],
            think=bool(d.get("think", True)),
        )


def write_samples(path: str | os.PathLike, samples: Iterable[MaskedSample]) -> int:
    return write_lines_atomic(path, (s.to_json() for s in samples))


def read_samples(path: str | os.PathLike) -> list[MaskedSample]:
    with open(path, encoding="utf-8") as f:
        return [MaskedSample.from_dict(json.loads(line)) for line in f if line.strip()]


def samples_path(masks_dir: str | os.PathLike, selector: str, split: str) -> Path:
    """Where the mask stage writes ``selector``'s samples of ``split``."""
    return Path(masks_dir) / selector / f"{split}.jsonl"
