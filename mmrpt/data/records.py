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
from functools import lru_cache
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


# The world's captions are plain ("There is a red circle."): a sentence ends at . ! or ?
# followed by whitespace. The world's verifier (the reward's visual term) splits with this, so
# the embedded default behaves exactly as before.
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def split_at_punctuation(text: str) -> tuple[Sentence, ...]:
    """Sentences of ``text`` ending at . ! or ? before whitespace (the world's captions;
    "Dr." or "5 p.m." would end a sentence here)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    return _trimmed(text, spans)


def _trimmed(text: str, spans) -> tuple[Sentence, ...]:
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        a, b = a + lead, a + len(piece.rstrip())
        if b > a:
            out.append(Sentence(a, b))
    return tuple(out)


@lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> tuple[Sentence, ...]:
    """Character spans of the sentences of ``text`` (whitespace between them excluded), by
    pysbd's rule-based English segmenter: abbreviations ("Dr.", "e.g.", "i.e.", "5 p.m."),
    decimal numbers ("3.5 m") and ellipses do not end a sentence. Each segment is located in
    ``text`` after the previous one (pysbd returns the text's own characters with
    clean=False); a segment it cannot find (never seen) falls back to the rest of the text."""
    spans, pos = [], 0
    for piece in _segmenter().segment(text) if text.strip() else []:
        core = piece.strip()
        start = text.find(core, pos) if core else -1
        if start < 0:
            spans.append((pos, len(text)))
            pos = len(text)
            break
        spans.append((start, start + len(core)))
        pos = start + len(core)
    if pos < len(text):
        spans.append((pos, len(text)))
    return _trimmed(text, spans)


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
