import re
from pathlib import Path

import numpy as np
import pytest
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
        "There are two objects.": True,
        "There are three objects.": False,
        "A large red circle is at the top left.": True,
        "A small red circle is at the top left.": False,
        "A large red circle is at the bottom left.": False,
        "The red circle is left of the blue square.": True,
        "The red circle is right of the blue square.": False,
        "The blue square is above the red circle.": False,
        "Circles have no corners.": None,
        "It was made by a computer program.": None,
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
        assert [(s.start, s.end) for s in split_sentences(r.caption)] == [
            (s.start, s.end) for s in r.sentences
        ]


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


def _digest(chunks) -> str:
    import hashlib

    return hashlib.sha256(b"".join(chunks)).hexdigest()[:16]


# sha256 prefixes of the first 50 records of each split at KW (manifest lines; decoded pixels)
# and of their default probes, captured from the generator as it was before caption_bias and
# the probes' prior fields were added (the probes' hash leaves the new fields out).
BEFORE_BIAS = {
    "train": ("d6f5cd4d3f6dc1e6", "55371a8903f52c36", "a9852b64eaa1c704"),
    "dev": ("fedb218842dc84c0", "ecdb017eaab5bd7d", "0f2aaea24536c732"),
    "test_iid": ("0c840374146ed74d", "b54f066cff766f88", "1ed0e6966b621720"),
    "test_counter": ("128937c8cb66f155", "6861bddf6b496e1b", "a7a3b46d211327df"),
}


def test_default_world_and_probes_are_unchanged(tmp_path: Path):
    import json

    from mmrpt.data.probes import make_probes

    for split, (text, pixels, probes) in BEFORE_BIAS.items():
        recs = list(world.generate_split(split, 50, tmp_path, **KW, caption_bias=0.0))
        assert _digest(r.to_json().encode() + b"\n" for r in recs) == text, split
        assert (
            _digest(np.asarray(Image.open(tmp_path / r.image)).tobytes() for r in recs) == pixels
        ), split
        old_fields = [
            {k: v for k, v in p.items() if k not in ("prior", "conflict")}
            for p in make_probes(recs, seed=0, max_objects=3)
        ]
        assert _digest(json.dumps(p).encode() + b"\n" for p in old_fields) == probes, split
        assert all("named_colours" not in r.meta for r in recs)


def _biased(split: str, n: int, out: Path, bias: float, image_size: int = 24):
    return list(
        world.generate_split(split, n, out, **{**KW, "image_size": image_size}, caption_bias=bias)
    )


def _as_named(r) -> list[world.Obj]:
    """The scene as the caption names it."""
    return [
        world.Obj(**{**o, "colour": c})
        for o, c in zip(r.meta["scene"], r.meta["named_colours"], strict=True)
    ]


@pytest.mark.parametrize("bias", [0.3, 0.8, 1.0])
def test_caption_bias_rate_and_consistent_naming(tmp_path: Path, bias: float):
    recs = _biased("train", 3000, tmp_path, bias)
    renamed, eligible = 0, 0
    for r in recs:
        scene, named = world.scene_of(r), _as_named(r)
        for o, c in zip(scene, r.meta["named_colours"], strict=True):
            prior = world.PRIOR_COLOUR[o.shape]
            if o.colour == prior:
                assert c == o.colour  # nothing to bias: named truly
            else:
                eligible += 1
                renamed += c == prior
                assert c in (o.colour, prior)
        # every vision-dependent sentence is true of the scene as named (one name per object)
        for i, s in enumerate(r.sentences):
            if s.label == 1:
                _check_sentence(r.sentence_text(i), named)
        assert [s.label for s in r.sentences].count(0) == 3
    # binomial: within 3 standard deviations of caption_bias (exact at 1.0)
    assert abs(renamed / eligible - bias) <= 3 * np.sqrt(bias * (1 - bias) / eligible)
    assert eligible > 1500


def test_biased_sentences_are_false_of_the_image(tmp_path: Path):
    recs = _biased("train", 200, tmp_path, 0.5)
    checked = 0
    for r in recs:
        scene = world.scene_of(r)
        for o, c in zip(scene, r.meta["named_colours"], strict=True):
            said = f"A {o.size} {c} {o.shape} is at the {o.position}."
            true = f"A {o.size} {o.colour} {o.shape} is at the {o.position}."
            if c != o.colour:
                assert said in r.caption and true not in r.caption
                assert world.verify_sentence(said, scene) is False  # the verifier sees the image
                assert world.verify_sentence(true, scene) is True
                checked += 1
    assert checked > 30


def test_bias_changes_train_captions_only(tmp_path: Path):
    plain = {s: _biased(s, 200, tmp_path / "plain", 0.0, 56) for s in world.SPLITS}
    biased = {s: _biased(s, 200, tmp_path / "biased", 0.5, 56) for s in world.SPLITS}
    for split in world.SPLITS:
        for p, b in zip(plain[split], biased[split], strict=True):
            # same scenes and pixels at every bias level: only the caption stream differs
            assert p.meta["scene"] == b.meta["scene"]
            assert (tmp_path / "plain" / p.image).read_bytes() == (
                tmp_path / "biased" / b.image
            ).read_bytes()
            if split != "train":  # held-out splits: untouched, true to the image
                assert b.to_json() == p.to_json()
                for i, s in enumerate(b.sentences):
                    if s.label == 1:
                        _check_sentence(b.sentence_text(i), world.scene_of(b))
    changed = sum(
        p.caption != b.caption for p, b in zip(plain["train"], biased["train"], strict=True)
    )
    assert changed > 20


def test_caption_bias_is_a_probability(tmp_path: Path):
    with pytest.raises(ValueError, match="caption_bias"):
        next(world.generate_split("train", 1, tmp_path, **KW, caption_bias=1.5))
