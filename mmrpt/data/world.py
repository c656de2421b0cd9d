"""The synthetic scene world: procedurally drawn scenes whose captions carry ground-truth labels.

Each scene is 1..N objects (shape, colour, size) in distinct cells of a 3x3 grid, drawn with
PIL. Its caption mixes vision-dependent sentences (count, one per object, a relation) with
exactly three vision-independent ones (an opening and a closing boilerplate sentence and one
generic statement), whose number and content never depend on the scene, so they leak no image
information. Every sentence carries its label.

Language priors: in the ``prior`` distribution (train, dev, test_iid) each shape takes its
prior colour (circle->red, square->blue, triangle->green) with probability ``prior_strength``;
in the ``counter`` distribution (test_counter) it never does, so a model that guesses colours
from the caption instead of the image fails there.

Caption bias (``caption_bias``, the paper's premise that captions follow linguistic habit
rather than the image): in the ``train`` split only, an object whose colour is not its shape's
prior colour is *named* with the prior colour with probability ``caption_bias``, in its object
sentence and in the relation sentence (one draw per object per caption, so a caption names an
object consistently; the relation pair is chosen by the names the caption uses). The image,
``meta["scene"]`` (ground truth), the probes and ``verify_sentence`` stay true to the image;
``meta["named_colours"]`` (aligned with ``meta["scene"]``) records the colours the caption
uses. Sentence labels do not change: a biased object sentence still needs the image (to be
corrected). dev, test_iid and test_counter ignore the bias: their captions stay true to the
image, so held-out splits are identical across bias levels. The coin flips come from their own
random stream, so ``caption_bias=0`` gives exactly the world without the option (no
``named_colours`` key either), and the same seed draws the same scenes and pixels at every
bias level: only train captions differ.

Deterministic from the seed: the same (seed, split) gives the same scenes, pixels and captions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmrpt.data.records import Record, Sentence

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
PRIOR_COLOUR = {"circle": "red", "square": "blue", "triangle": "green"}
RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
}
BACKGROUND = (200, 200, 200)
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

OPENINGS = (
    "This is a picture from the shape collection.",
    "Here is a rendered image.",
    "The image shows a simple drawing.",
    "This picture is part of a synthetic dataset.",
)
CLOSINGS = (
    "It was made by a computer program.",
    "The drawing was generated automatically.",
    "Such pictures are used to train models.",
    "No people appear in these pictures.",
)
GENERIC = (
    "Circles have no corners.",
    "Squares have four equal sides.",
    "Triangles have three corners.",
    "Red is a warm colour.",
    "Blue is a cool colour.",
    "Shapes are drawn on a grey background.",
    "Every object sits in one cell of a grid.",
    "Large objects are easier to see.",
)
SPLITS = {"train": "prior", "dev": "prior", "test_iid": "prior", "test_counter": "counter"}
BIASED_SPLITS = ("train",)  # caption_bias applies here; held-out captions stay true


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int
    col: int

    @property
    def position(self) -> str:
        return f"{ROWS[self.row]} {COLS[self.col]}"

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def sample_scene(
    rng: np.random.Generator, max_objects: int, prior_strength: float, counter_prior: bool
) -> list[Obj]:
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(9, size=n, replace=False)
    objs = []
    for cell in cells:
        shape = SHAPES[rng.integers(len(SHAPES))]
        prior = PRIOR_COLOUR[shape]
        others = [c for c in COLOURS if c != prior]
        if counter_prior or rng.random() >= prior_strength:
            colour = others[rng.integers(len(others))]
        else:
            colour = prior
        objs.append(Obj(shape, colour, SIZES[rng.integers(2)], int(cell) // 3, int(cell) % 3))
    return objs


def render(objs: list[Obj], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the scene; object centres are jittered a little inside their grid cell."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = size / 3
    for o in objs:
        r = cell * (0.42 if o.size == "large" else 0.22)
        jitter = cell / 2 - r
        cx = (o.col + 0.5) * cell + rng.uniform(-jitter, jitter) * 0.5
        cy = (o.row + 0.5) * cell + rng.uniform(-jitter, jitter) * 0.5
        box = (cx - r, cy - r, cx + r, cy + r)
        if o.shape == "circle":
            draw.ellipse(box, fill=RGB[o.colour])
        elif o.shape == "square":
            draw.rectangle(box, fill=RGB[o.colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=RGB[o.colour])
    return img


def relation(a: Obj, b: Obj) -> str:
    """A true spatial relation of ``a`` to ``b`` (columns first, then rows)."""
    if a.col != b.col:
        return "left of" if a.col < b.col else "right of"
    return "above" if a.row < b.row else "below"


def describe(objs: list[Obj], rng: np.random.Generator) -> list[tuple[str, int]]:
    """Caption sentences with their vision-dependency labels (1 = needs the image), for the
    objects as the caption names them (``generate_split`` passes renamed copies under bias)."""
    n = len(objs)
    dep = [(f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} object{'s' if n > 1 else ''}.", 1)]
    ordered = sorted(objs, key=lambda o: (o.row, o.col))  # reading order, as people describe
    for o in ordered:
        dep.append((f"A {o.size} {o.colour} {o.shape} is at the {o.position}.", 1))
    # A relation between the first two objects (reading order) that have different names, so
    # the sentence is unambiguous; none if all objects look alike.
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :] if a.name != b.name]
    if pairs:
        a, b = pairs[0]
        dep.append((f"The {a.name} is {relation(a, b)} the {b.name}.", 1))
    generic = (GENERIC[rng.integers(len(GENERIC))], 0)
    dep.insert(int(rng.integers(1, len(dep) + 1)), generic)
    opening = (OPENINGS[rng.integers(len(OPENINGS))], 0)
    closing = (CLOSINGS[rng.integers(len(CLOSINGS))], 0)
    return [opening, *dep, closing]


def join_sentences(sentences: list[tuple[str, int]]) -> tuple[str, tuple[Sentence, ...]]:
    caption, spans = "", []
    for text, label in sentences:
        if caption:
            caption += " "
        spans.append(Sentence(len(caption), len(caption) + len(text), label))
        caption += text
    return caption, tuple(spans)


def named_colours(objs: list[Obj], coins: np.ndarray, caption_bias: float) -> list[str]:
    """The colour a biased caption names each object with: its shape's prior colour where the
    object's ``coins`` value (uniform in [0, 1), one per object) is below ``caption_bias`` and
    its colour differs from the prior; its true colour otherwise."""
    return [
        PRIOR_COLOUR[o.shape] if u < caption_bias else o.colour
        for o, u in zip(objs, coins, strict=True)
    ]


def generate_split(
    split: str,
    n: int,
    out_dir: Path,
    *,
    seed: int,
    image_size: int,
    max_objects: int,
    prior_strength: float,
    caption_bias: float = 0.0,
) -> Iterator[Record]:
    """Yield ``n`` records of ``split`` and write their PNGs under ``out_dir/images``.
    ``caption_bias`` (train only): see the module docstring."""
    if not 0.0 <= caption_bias <= 1.0:
        raise ValueError(f"caption_bias is a probability, got {caption_bias}")
    distribution = SPLITS[split]
    rng = np.random.default_rng([seed, list(SPLITS).index(split)])
    biased = caption_bias > 0 and split in BIASED_SPLITS
    coin_rng = np.random.default_rng([seed, list(SPLITS).index(split), 1])  # never rng
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        objs = sample_scene(rng, max_objects, prior_strength, distribution == "counter")
        img = render(objs, image_size, rng)
        meta = {"split": split, "distribution": distribution, "scene": [asdict(o) for o in objs]}
        named = objs
        if biased:
            colours = named_colours(objs, coin_rng.random(len(objs)), caption_bias)
            named = [replace(o, colour=c) for o, c in zip(objs, colours, strict=True)]
            meta["named_colours"] = colours
        caption, sentences = join_sentences(describe(named, rng))
        rid = f"{split}-{k:06d}"
        rel = f"images/{rid}.png"
        img.save(out_dir / rel)
        yield Record(rid, rel, caption, sentences, meta)


def scene_of(record: Record) -> list[Obj]:
    return [Obj(**o) for o in record.meta["scene"]]


def vocabulary_text() -> list[str]:
    """Every word and template of the world, for tokenizer training."""
    words = [
        *SHAPES,
        *COLOURS,
        *SIZES,
        *ROWS,
        *COLS,
        *NUMBERS,
        "object",
        "objects",
        "left of",
        "right of",
        "above",
        "below",
    ]
    return [*OPENINGS, *CLOSINGS, *GENERIC, " ".join(words)]


_COUNT = re.compile(r"There (?:is|are) (\w+) objects?\.?")
_OBJECT = re.compile(r"A (\w+) (\w+) (\w+) is at the (\w+) (\w+)\.?")
_RELATION = re.compile(r"The (\w+) (\w+) is (left of|right of|above|below) the (\w+) (\w+)\.?")


def colour_span(text: str) -> tuple[int, int] | None:
    """The character span of the colour word of an object sentence ("A large [red] circle is
    at the top left."), None for any other sentence: the attribute a biased caption gets
    wrong, which the study's attribute masks hide."""
    m = _OBJECT.fullmatch(text.strip())
    if not m or m[2] not in COLOURS:
        return None
    lead = len(text) - len(text.lstrip())
    return lead + m.start(2), lead + m.end(2)


def verify_sentence(text: str, scene: list[Obj]) -> bool | None:
    """Is a caption sentence true of the scene? None if it makes no claim we can check
    (boilerplate, generic statements, or text outside the world's grammar)."""
    text = text.strip()
    if m := _COUNT.fullmatch(text):
        return m[1] in NUMBERS and NUMBERS.index(m[1]) == len(scene)
    if m := _OBJECT.fullmatch(text):
        size, colour, shape, row, col = m.groups()
        if row not in ROWS or col not in COLS:
            return False
        return Obj(shape, colour, size, ROWS.index(row), COLS.index(col)) in scene
    if m := _RELATION.fullmatch(text):
        c1, s1, rel, c2, s2 = m.groups()
        return any(
            a is not b
            and (a.colour, a.shape, b.colour, b.shape) == (c1, s1, c2, s2)
            and relation(a, b) == rel
            for a in scene
            for b in scene
        )
    return None
