import re
from pathlib import Path

import numpy as np
from PIL import Image

from mmrpt.data import world
from mmrpt.data.records import read_manifest, split_sentences, write_manifest

KW = dict(seed=3, image_size=112, max_objects=3, prior_strength=0.7)


def gen(split, n, out):
    recs = list(world.generate_split(split, n, out, **KW))
    write_manifest(out / f"{split}.jsonl", recs)
    return recs


def test_deterministic(tmp_path: Path):
    a = gen("train", 20, tmp_path / "a")
    b = gen("train", 20, tmp_path / "b")
    assert [r.to_json() for r in a] == [r.to_json() for r in b]
    for r in a:
        assert (tmp_path / "a" / r.image).read_bytes() == (tmp_path / "b" / r.image).read_bytes()
    c = list(world.generate_split("train", 20, tmp_path / "c", **{**KW, "seed": 4}))
    assert [r.caption for r in c] != [r.caption for r in a]


def _check_sentence(text: str, scene: list[world.Obj]) -> None:
    """A vision-dependent sentence must be a checkable claim that is true of the scene."""
    assert world.verify_sentence(text, scene) is True, text
    if m := re.fullmatch(r"The (\w+) (\w+) is .* the (\w+) (\w+)\.", text):
        assert m.groups()[:2] != m.groups()[2:]  # relations name two different-looking objects


def test_verify_sentence_rejects_false_claims():
    scene = [world.Obj("circle", "red", "large", 0, 0), world.Obj("square", "blue", "small", 2, 2)]
    cases = {
        "There are two objects.": True, "There are three objects.": False,
        "A large red circle is at the top left.": True,
        "A small red circle is at the top left.": False,
        "A large red circle is at the bottom left.": False,
        "The red circle is left of the blue square.": True,
        "The red circle is right of the blue square.": False,
        "The blue square is above the red circle.": False,
        "Circles have no corners.": None, "It was made by a computer program.": None,
        "A large red circle is at the nowhere left.": False,
    }
    for text, expected in cases.items():
        assert world.verify_sentence(text, scene) is expected, text


def test_labels_are_right(tmp_path: Path):
    independent = set(world.OPENINGS + world.CLOSINGS + world.GENERIC)
    for r in gen("train", 300, tmp_path) + gen("test_counter", 100, tmp_path):
        scene = world.scene_of(r)
        assert 1 <= len(scene) <= 3
        labels = [s.label for s in r.sentences]
        assert labels.count(0) == 3  # never depends on the scene: leaks nothing
        distinct = len({(o.colour, o.shape) for o in scene}) >= 2
        assert labels.count(1) == 1 + len(scene) + distinct
        for i, s in enumerate(r.sentences):
            text = r.sentence_text(i)
            if s.label == 0:
                assert text in independent
            else:
                _check_sentence(text, scene)
        # the spans are exactly what a sentence splitter finds
        assert [(s.start, s.end) for s in split_sentences(r.caption)] == \
               [(s.start, s.end) for s in r.sentences]


def test_priors_and_counter_split(tmp_path: Path):
    train = [o for r in gen("train", 600, tmp_path) for o in world.scene_of(r)]
    counter = [o for r in gen("test_counter", 300, tmp_path) for o in world.scene_of(r)]
    prior_rate = np.mean([o.colour == world.PRIOR_COLOUR[o.shape] for o in train])
    assert 0.64 < prior_rate < 0.76
    assert not any(o.colour == world.PRIOR_COLOUR[o.shape] for o in counter)


def test_pixels_show_the_objects(tmp_path: Path):
    for r in read_manifest_of(gen("dev", 50, tmp_path), tmp_path):
        img = np.asarray(Image.open(tmp_path / r.image))
        assert img.shape == (112, 112, 3)
        for o in world.scene_of(r):
            cell = 112 / 3
            y, x = int((o.row + 0.5) * cell), int((o.col + 0.5) * cell)
            patch = img[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3)
            if o.shape == "triangle":  # centre of a triangle's box can be off the shape
                continue
            assert (np.abs(patch - world.RGB[o.colour]).sum(axis=1) == 0).mean() > 0.5


def read_manifest_of(recs, root):
    return read_manifest(root / "dev.jsonl")
