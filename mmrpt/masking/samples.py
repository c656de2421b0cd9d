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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmrpt.io import write_lines_atomic

THINK = "I compare the caption with the image."


def placeholder(i: int) -> str:
    return f"[{i + 1}]"


def format_answer(targets: Sequence[str]) -> str:
    """The reference answer text: '[1] first hidden text [2] second ...'."""
    return " ".join(f"{placeholder(i)} {t}" for i, t in enumerate(targets))


def mask_caption(
    caption: str,
    spans: Sequence[tuple[int, int]],
    mentions: Sequence[tuple[int, int, int]] = (),
) -> tuple[str, list[str]]:
    """Replace each (non-overlapping) span by its numbered placeholder, left to right.
    ``mentions``: further spans (a, b, i) that repeat blank i (0-based, in span order), hidden
    with the same placeholder so the rest of the caption does not give the answer away."""
    blanks = {tuple(sp): i for i, sp in enumerate(sorted(spans))}
    hidden = sorted([(a, b, i) for (a, b), i in blanks.items()] + [tuple(m) for m in mentions])
    out, pos = [], 0
    for a, b, i in hidden:
        if a < pos:
            raise ValueError(f"overlapping mask spans at {a}")
        out += [caption[pos:a], placeholder(i)]
        pos = b
    out.append(caption[pos:])
    return "".join(out), [caption[a:b] for a, b in sorted(spans)]


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
    synthetic world's scene); ``mentions``: further spans (a, b, blank index) hidden with a
    blank's placeholder (mask.hide_mentions)."""

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
    mentions: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def target(self) -> str:
        """The supervised completion: the hidden texts in the answer format."""
        return fillin_target(self.targets, THINK if self.think else None)

    @property
    def answer(self) -> str:
        return format_answer(self.targets)

    @property
    def occurrence(self) -> list[int]:
        """Per blank, which of its placeholders in the masked caption (0: the first) stands
        for the hidden text itself; the others are hidden mentions."""
        return [
            sum(m[2] == i and m[0] < a for m in self.mentions)
            for i, (a, _) in enumerate(sorted(self.spans))
        ]

    @staticmethod
    def build(
        record,
        spans: Sequence[tuple[int, int]],
        sentences: Sequence[int],
        scores: Sequence[float],
        instruction: str,
        think: bool = True,
        mentions: Sequence[tuple[int, int, int]] = (),
    ) -> MaskedSample:
        """Hide ``spans`` of ``record``'s caption (sentence indices ``sentences``), and
        ``mentions`` with the placeholder of the blank they repeat."""
        masked, targets = mask_caption(record.caption, spans, mentions)
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
            mentions=[tuple(m) for m in mentions],
        )

    def to_json(self) -> str:
        d = asdict(self) | {"answer": self.answer}
        if not d["mentions"]:  # files without hidden mentions stay as they were
            del d["mentions"]
        return json.dumps(d, ensure_ascii=False)

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
            mentions=[tuple(m) for m in d.get("mentions", [])],
        )


def write_samples(path: str | os.PathLike, samples: Iterable[MaskedSample]) -> int:
    return write_lines_atomic(path, (s.to_json() for s in samples))


def read_samples(path: str | os.PathLike) -> list[MaskedSample]:
    with open(path, encoding="utf-8") as f:
        return [MaskedSample.from_dict(json.loads(line)) for line in f if line.strip()]


def samples_path(masks_dir: str | os.PathLike, selector: str, split: str) -> Path:
    """Where the mask stage writes ``selector``'s samples of ``split``."""
    return Path(masks_dir) / selector / f"{split}.jsonl"
