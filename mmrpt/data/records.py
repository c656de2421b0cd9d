"""The one on-disk format every stage reads: a JSONL manifest of image-caption records.

A dataset folder holds ``<split>.jsonl`` manifests, an ``images/`` folder and, per ingest,
``rejects.jsonl`` (one line per refused input row, with the reason). The synthetic world and
every real-data reader (JSONL, parquet, WebDataset) write exactly this, so everything
downstream has one code path.

One manifest line::

    {"id": "train-000017", "image": "images/train-000017.png",
     "caption": "A photo. There is a red circle.",
     "sentences": [{"start": 0, "end": 8, "label": 0}, {"start": 9, "end": 31, "label": 1}],
     "meta": {...}}

``sentences`` are character spans into ``caption``; ``label`` is the ground-truth vision
dependency (1 = needs the image, 0 = does not, null = unknown, as for real data). ``meta``
holds whatever the source knows (the synthetic world stores the scene there).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from mmrpt.io import write_lines_atomic


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    label: int | None = None


@dataclass(frozen=True)
class Record:
    id: str
    image: str  # path relative to the dataset folder
    caption: str
    sentences: tuple[Sentence, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def sentence_text(self, i: int) -> str:
        s = self.sentences[i]
        return self.caption[s.start : s.end]

    def to_json(self) -> str:
        d = asdict(self)
        d["sentences"] = [asdict(s) for s in self.sentences]
        return json.dumps(d, ensure_ascii=False)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Record:
        return Record(
            id=str(d["id"]),
            image=str(d["image"]),
            caption=str(d["caption"]),
            sentences=tuple(Sentence(**s) for s in d["sentences"]),
            meta=dict(d.get("meta") or {}),
        )


# A sentence ends at . ! or ? followed by whitespace (or the end of the text). Good enough for
# English captions; abbreviations ("e.g. ") split wrongly, which only costs a finer granularity.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def split_sentences(text: str) -> tuple[Sentence, ...]:
    """Character spans of the sentences of ``text`` (whitespace between them excluded)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        a, b = a + lead, a + len(piece.rstrip())
        if b > a:
            out.append(Sentence(a, b))
    return tuple(out)


def read_manifest(path: str | os.PathLike) -> list[Record]:
    with open(path, encoding="utf-8") as f:
        return [Record.from_dict(json.loads(line)) for line in f if line.strip()]


def write_manifest(path: str | os.PathLike, records: Iterable[Record]) -> int:
    return write_lines_atomic(path, (r.to_json() for r in records))


def iter_manifest(path: str | os.PathLike) -> Iterator[Record]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield Record.from_dict(json.loads(line))
