from collections import Counter
from pathlib import Path

from mmrpt.data import world
from mmrpt.data.probes import TYPES, make_probes, oracle_answer


def _records(split: str, n: int, tmp_path: Path):
    return list(world.generate_split(split, n, tmp_path, seed=3, image_size=84, max_objects=3,
                                     prior_strength=0.7))


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
