"""Image-conditioned multiple-choice probes of the scene world (the embedded benchmark).

Per scene, up to one probe of each type, answered from the scene's ground truth:

- count    : "How many objects are there?"                      -> "two"
- colour   : "What colour is the large circle at the top left?" -> "red"
- shape    : "What shape is the small blue object at the middle right?" -> "square"
- position : "Where is the large red circle?"                    -> "top left"
- relation : "Where is the red circle relative to the blue square?" -> "left of"

Only unambiguous questions are asked (the object named must be unique; relations only
between objects sharing a row or a column, so exactly one option is true). The correct
option's place cycles through the options per type, so a constant answerer scores exactly
chance. On ``test_counter`` no shape has its prior colour, so colour questions answered from
the caption prior fail there. The same probes serve SFT (train split, the answer as target),
VLMEvalKit (a custom MCQ TSV: generate an answer to the question) and lm-eval, which scores
the same choice in caption form: ``statements[i]`` is the caption sentence that option ``i``
makes ("A large red circle is at the top left."), and the model ranks them by log-likelihood
as its description of the image. That form needs no question-answering skill, so it measures
the grounding of caption-pretrained models zero-shot as well as after SFT.

One line of ``probes/<split>.jsonl``::

    {"id": "test_iid-000003-colour", "scene_id": "test_iid-000003", "split": "test_iid",
     "type": "colour", "image": "images/test_iid-000003.png",
     "question": "What colour is ...?", "choices": ["blue", "red", ...], "answer": 1,
     "statements": ["A large blue circle is at the top left.", ...]}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count

import numpy as np

from mmrpt.data.records import Record
from mmrpt.data.world import COLOURS, COLS, NUMBERS, ROWS, SHAPES, Obj, relation, scene_of

TYPES = ("count", "colour", "shape", "position", "relation")
RELATIONS = ("left of", "right of", "above", "below")
LETTERS = "ABCD"


def _unique(objs: Sequence[Obj], key) -> list[Obj]:
    keys = [key(o) for o in objs]
    return [o for o, k in zip(objs, keys, strict=True) if keys.count(k) == 1]


def _count_sentence(word: str) -> str:
    return f"There is {word} object." if word == "one" else f"There are {word} objects."


def _questions(objs: list[Obj], rng: np.random.Generator, max_objects: int
               ) -> Iterator[tuple[str, str, str, list[str], Callable[[str], str]]]:
    """(type, question, answer, options, option -> caption sentence) for one scene; the
    options include the answer; the sentences follow the world's caption grammar."""
    n = len(objs)
    counts = list(NUMBERS[1 : max(max_objects, 3) + 2])
    others = [c for c in counts if c != NUMBERS[n]]
    yield "count", "How many objects are there?", NUMBERS[n], [
        NUMBERS[n], *rng.choice(others, size=3, replace=False).tolist()], _count_sentence
    o = objs[int(rng.integers(n))]
    yield ("colour", f"What colour is the {o.size} {o.shape} at the {o.position}?", o.colour,
           list(COLOURS), lambda c, o=o: f"A {o.size} {c} {o.shape} is at the {o.position}.")
    o = objs[int(rng.integers(n))]
    yield ("shape", f"What shape is the {o.size} {o.colour} object at the {o.position}?",
           o.shape, list(SHAPES),
           lambda s, o=o: f"A {o.size} {o.colour} {s} is at the {o.position}.")
    named = _unique(objs, lambda o: (o.size, o.colour, o.shape))
    if named:
        o = named[int(rng.integers(len(named)))]
        cells = [f"{r} {c}" for r in ROWS for c in COLS if f"{r} {c}" != o.position]
        yield ("position", f"Where is the {o.size} {o.colour} {o.shape}?", o.position,
               [o.position, *rng.choice(cells, size=3, replace=False).tolist()],
               lambda p, o=o: f"A {o.size} {o.colour} {o.shape} is at the {p}.")
    named = _unique(objs, lambda o: o.name)
    pairs = [(a, b) for a in named for b in named
             if a is not b and (a.row == b.row) != (a.col == b.col)]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        yield ("relation", f"Where is the {a.name} relative to the {b.name}?", relation(a, b),
               list(RELATIONS), lambda r, a=a, b=b: f"The {a.name} is {r} the {b.name}.")


def make_probes(records: Iterable[Record], *, seed: int, max_objects: int) -> list[dict]:
    """Probes for the records of one split (deterministic from ``seed`` and the records)."""
    rng = np.random.default_rng(seed)
    slot = {t: count() for t in TYPES}  # cycles the answer's place per type
    probes = []
    for r in records:
        for kind, question, answer, options, sentence in _questions(scene_of(r), rng,
                                                                     max_objects):
            wrong = [c for c in options if c != answer]
            wrong = [wrong[i] for i in rng.permutation(len(wrong))]
            k = next(slot[kind]) % len(options)
            choices = [*wrong[:k], answer, *wrong[k:]]
            probes.append({"id": f"{r.id}-{kind}", "scene_id": r.id,
                           "split": r.meta.get("split"), "type": kind, "image": r.image,
                           "question": question, "choices": choices, "answer": k,
                           "statements": [sentence(c) for c in choices]})
    return probes


def oracle_answer(probe: dict, scene: Sequence[Obj]) -> str:
    """The option a perfect reader of the scene picks, recomputed from the scene alone (not
    from the stored answer), so the harness tests check the probes as well as the scorers."""
    q = probe["question"]
    for choice in probe["choices"]:
        if probe["type"] == "count" and NUMBERS.index(choice) == len(scene):
            return choice
        if probe["type"] == "colour" and any(
                f"the {o.size} {o.shape} at the {o.position}?" in q and o.colour == choice
                for o in scene):
            return choice
        if probe["type"] == "shape" and any(
                f"the {o.size} {o.colour} object at the {o.position}?" in q and o.shape == choice
                for o in scene):
            return choice
        if probe["type"] == "position" and any(
                q.endswith(f"the {o.size} {o.colour} {o.shape}?") and o.position == choice
                for o in scene):
            return choice
        if probe["type"] == "relation" and any(
                q == f"Where is the {a.name} relative to the {b.name}?"
                and relation(a, b) == choice for a in scene for b in scene if a is not b):
            return choice
    raise ValueError(f"no option of probe {probe['id']} is true of its scene")
