from collections import Counter
from dataclasses import asdict
from pathlib import Path

from mmrpt.data import world
from mmrpt.data.probes import PRIOR_SHAPE, TYPES, make_probes, oracle_answer
from mmrpt.data.records import Record


def _records(split: str, n: int, tmp_path: Path):
    return list(
        world.generate_split(
            split, n, tmp_path, seed=3, image_size=84, max_objects=3, prior_strength=0.7
        )
    )


def test_probes_are_answerable_balanced_and_deterministic(tmp_path):
    records = _records("test_iid", 200, tmp_path)
    probes = make_probes(records, seed=0, max_objects=3)
    assert probes == make_probes(records, seed=0, max_objects=3)
    scenes = {r.id: world.scene_of(r) for r in records}
    kinds = Counter(p["type"] for p in probes)
    assert set(kinds) == set(TYPES) and kinds["count"] == 200
    for p in probes:
        # exactly one option is true of the scene, and it is the stored answer
        assert oracle_answer(p, scenes[p["scene_id"]]) == p["choices"][p["answer"]]
        assert len(set(p["choices"])) == len(p["choices"])
        # caption form: only the true option's sentence is true of the scene
        truth = [world.verify_sentence(t, scenes[p["scene_id"]]) for t in p["statements"]]
        assert truth == [i == p["answer"] for i in range(len(p["choices"]))], p
    for kind in TYPES:  # the answer's place cycles: no letter bias per type
        slots = Counter(p["answer"] for p in probes if p["type"] == kind)
        assert max(slots.values()) - min(slots.values()) <= 1


def test_counter_prior_colour_questions_never_have_the_prior_answer(tmp_path):
    probes = make_probes(_records("test_counter", 100, tmp_path), seed=0, max_objects=3)
    colour = [p for p in probes if p["type"] == "colour"]
    for p in colour:
        shape = next(s for s in world.SHAPES if s in p["question"])
        assert p["choices"][p["answer"]] != world.PRIOR_COLOUR[shape]
        assert p["choices"][p["prior"]] == world.PRIOR_COLOUR[shape] and p["conflict"] is True


def _record(objs: list[world.Obj], rid: str = "test_iid-000000") -> Record:
    return Record(
        rid, f"images/{rid}.png", "", (), {"split": "test_iid", "scene": [asdict(o) for o in objs]}
    )


def test_prior_and_conflict_hand_case():
    blue_circle = world.Obj("circle", "blue", "large", 0, 0)
    red_square = world.Obj("square", "red", "small", 0, 1)
    yellow_tri = world.Obj("triangle", "yellow", "small", 1, 1)
    cases = [  # one-object scenes: colour prior from the shape, shape prior from the colour
        (blue_circle, {"colour": ("red", True), "shape": ("square", True)}),
        (
            world.Obj("circle", "red", "small", 2, 2),
            {"colour": ("red", False), "shape": ("circle", False)},
        ),
        (red_square, {"colour": ("blue", True), "shape": ("circle", True)}),
        (yellow_tri, {"colour": ("green", True), "shape": (None, False)}),  # no yellow prior
    ]
    for obj, expected in cases:
        for p in make_probes([_record([obj])], seed=0, max_objects=3):
            prior, conflict = expected.get(p["type"], (None, False))  # count, position: none
            assert (p["prior"] is None) == (prior is None), p
            if prior is not None:
                assert p["choices"][p["prior"]] == prior
            assert p["conflict"] is conflict, p


def test_prior_fields_follow_the_questions(tmp_path):
    records = _records("test_iid", 200, tmp_path)
    for p in make_probes(records, seed=0, max_objects=3):
        words = p["question"].rstrip("?").split()
        if p["type"] == "colour":  # "What colour is the <size> <shape> at ..."
            prior = world.PRIOR_COLOUR[words[5]]
        elif p["type"] == "shape":  # "What shape is the <size> <colour> object at ..."
            prior = PRIOR_SHAPE.get(words[5])
        else:
            prior = None
        assert (None if p["prior"] is None else p["choices"][p["prior"]]) == prior, p
        assert p["conflict"] == (prior is not None and p["prior"] != p["answer"])


def test_colour_all_asks_every_object_and_keeps_the_other_probes(tmp_path):
    records = _records("test_counter", 300, tmp_path)
    default = make_probes(records, seed=0, max_objects=3)
    every = make_probes(records, seed=0, max_objects=3, colour_all=True)
    assert every == make_probes(records, seed=0, max_objects=3, colour_all=True)
    assert [p for p in every if p["type"] != "colour"] == [
        p for p in default if p["type"] != "colour"
    ]
    colour = [p for p in every if p["type"] == "colour"]
    scenes = {r.id: world.scene_of(r) for r in records}
    assert len(colour) == sum(len(s) for s in scenes.values())  # about 2 per scene
    for p in colour:
        scene_id, kind, k = p["id"].rsplit("-", 2)
        o = scenes[scene_id][int(k)]  # the k-th object of meta["scene"]
        assert (scene_id, kind) == (p["scene_id"], "colour")
        assert p["question"] == f"What colour is the {o.size} {o.shape} at the {o.position}?"
        assert oracle_answer(p, scenes[scene_id]) == p["choices"][p["answer"]] == o.colour
        assert p["conflict"] is True  # counter-prior: every colour probe conflicts
    slots = Counter(p["answer"] for p in colour)
    assert max(slots.values()) - min(slots.values()) <= 1
