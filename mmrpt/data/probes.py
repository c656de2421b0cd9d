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

Each probe also says what a reader of captions alone would answer: ``prior`` is the index of
the option the world's language prior picks (colour: the shape's prior colour; shape: the
shape whose prior colour is the named colour, none for yellow; count, position, relation:
none, null) and ``conflict`` whether the true answer differs from it (False where there is no
prior, so the prior-agreeing probes are ``prior is not None and not conflict``). The
study's prior-conflict subset is ``type == "colour" and conflict``.

``colour_all``: one colour probe per object of the scene instead of one random object (ids
``<scene>-colour-<k>``, ``k`` the object's index in ``meta["scene"]``), so a counter-prior
split of N scenes gives one prior-conflict probe per object (about 2N at max_objects 3). Their
option orders come from a second random stream, so every other probe is exactly the default's.

One line of ``probes/<split>.jsonl``::

    {"id": "test_iid-000003-colour", "scene_id": "test_iid-000003", "split": "test_iid",
     "type": "colour", "image": "images/test_iid-000003.png",
     "question": "What colour is ...?", "choices": ["blue", "red", ...], "answer": 1,
     "statements": ["A large blue circle is at the top left.", ...],
     "prior": 1, "conflict": false}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import count
from typing import NamedTuple

import numpy as np

from mmrpt.data.records import Record
from mmrpt.data.world import (
    COLOURS,
    COLS,
    NUMBERS,
    PRIOR_COLOUR,
    ROWS,
    SHAPES,
    Obj,
    relation,
    scene_of,
)

TYPES = ("count", "colour", "shape", "position", "relation")
RELATIONS = ("left of", "right of", "above", "below")
LETTERS = "ABCD"
PRIOR_SHAPE = {c: s for s, c in PRIOR_COLOUR.items()}  # red -> circle, ...; yellow has none


def _unique(objs: Sequence[Obj], key) -> list[Obj]:
    keys = [key(o) for o in objs]
    return [o for o, k in zip(objs, keys, strict=True) if keys.count(k) == 1]


def _count_sentence(word: str) -> str:
    return f"There is {word} object." if word == "one" else f"There are {word} objects."


class Question(NamedTuple):
    kind: str
    question: str
    answer: str
    options: list[str]  # includes the answer
    sentence: Callable[[str], str]  # option -> caption sentence (the world's grammar)
    prior: str | None  # the option the language prior picks; None where there is none


def _colour_question(o: Obj) -> Question:
    return Question(
        "colour",
        f"What colour is the {o.size} {o.shape} at the {o.position}?",
        o.colour,
        list(COLOURS),
        lambda c, o=o: f"A {o.size} {c} {o.shape} is at the {o.position}.",
        PRIOR_COLOUR[o.shape],
    )


def _questions(objs: list[Obj], rng: np.random.Generator, max_objects: int) -> Iterator[Question]:
    """Up to one question of each type (TYPES order) for one scene."""
    n = len(objs)
    counts = list(NUMBERS[1 : max(max_objects, 3) + 2])
    others = [c for c in counts if c != NUMBERS[n]]
    yield Question(
        "count",
        "How many objects are there?",
        NUMBERS[n],
        [NUMBERS[n], *rng.choice(others, size=3, replace=False).tolist()],
        _count_sentence,
        None,
    )
    yield _colour_question(objs[int(rng.integers(n))])
    o = objs[int(rng.integers(n))]
    yield Question(
        "shape",
        f"What shape is the {o.size} {o.colour} object at the {o.position}?",
        o.shape,
        list(SHAPES),
        lambda s, o=o: f"A {o.size} {o.colour} {s} is at the {o.position}.",
        PRIOR_SHAPE.get(o.colour),
    )
    named = _unique(objs, lambda o: (o.size, o.colour, o.shape))
    if named:
        o = named[int(rng.integers(len(named)))]
        cells = [f"{r} {c}" for r in ROWS for c in COLS if f"{r} {c}" != o.position]
        yield Question(
            "position",
            f"Where is the {o.size} {o.colour} {o.shape}?",
            o.position,
            [o.position, *rng.choice(cells, size=3, replace=False).tolist()],
            lambda p, o=o: f"A {o.size} {o.colour} {o.shape} is at the {p}.",
            None,
        )
    named = _unique(objs, lambda o: o.name)
    pairs = [
        (a, b) for a in named for b in named if a is not b and (a.row == b.row) != (a.col == b.col)
    ]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        yield Question(
            "relation",
            f"Where is the {a.name} relative to the {b.name}?",
            relation(a, b),
            list(RELATIONS),
            lambda r, a=a, b=b: f"The {a.name} is {r} the {b.name}.",
            None,
        )


def _probe(record: Record, pid: str, q: Question, rng: np.random.Generator, slot: count) -> dict:
    """One probe: wrong options shuffled by ``rng``, the answer at the next place of
    ``slot`` (the type's cycle), the prior's place and whether the answer conflicts with it."""
    wrong = [c for c in q.options if c != q.answer]
    wrong = [wrong[i] for i in rng.permutation(len(wrong))]
    k = next(slot) % len(q.options)
    choices = [*wrong[:k], q.answer, *wrong[k:]]
    prior = None if q.prior is None else choices.index(q.prior)
    return {
        "id": pid,
        "scene_id": record.id,
        "split": record.meta.get("split"),
        "type": q.kind,
        "image": record.image,
        "question": q.question,
        "choices": choices,
        "answer": k,
        "statements": [q.sentence(c) for c in choices],
        "prior": prior,
        "conflict": prior is not None and prior != k,
    }


def make_probes(
    records: Iterable[Record], *, seed: int, max_objects: int, colour_all: bool = False
) -> list[dict]:
    """Probes for the records of one split (deterministic from ``seed`` and the records).
    ``colour_all``: a colour probe per object (see the module docstring)."""
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 1])  # colour_all's option orders, never rng
    slot = {t: count() for t in TYPES}  # cycles the answer's place per type
    probes = []
    for r in records:
        scene = scene_of(r)
        for q in _questions(scene, rng, max_objects):
            if colour_all and q.kind == "colour":
                rng.permutation(len(q.options) - 1)  # the default's draw: keeps rng in step
                probes += [
                    _probe(r, f"{r.id}-colour-{i}", _colour_question(o), extra, slot["colour"])
                    for i, o in enumerate(scene)
                ]
            else:
                probes.append(_probe(r, f"{r.id}-{q.kind}", q, rng, slot[q.kind]))
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
            for o in scene
        ):
            return choice
        if probe["type"] == "shape" and any(
            f"the {o.size} {o.colour} object at the {o.position}?" in q and o.shape == choice
            for o in scene
        ):
            return choice
        if probe["type"] == "position" and any(
            q.endswith(f"the {o.size} {o.colour} {o.shape}?") and o.position == choice
            for o in scene
        ):
            return choice
        if probe["type"] == "relation" and any(
            q == f"Where is the {a.name} relative to the {b.name}?" and relation(a, b) == choice
            for a in scene
            for b in scene
            if a is not b
        ):
            return choice
    raise ValueError(f"no option of probe {probe['id']} is true of its scene")
