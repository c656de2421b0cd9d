"""The prior-only reference answerer through both harnesses, on a small world folder written
here (scenes, manifests, probes as the data stage writes them; no checkpoint needed)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from mmrpt.data import world
from mmrpt.data.probes import TYPES, make_probes
from mmrpt.data.records import write_manifest
from mmrpt.evaluation.lmeval import run_lmeval, short_name
from mmrpt.evaluation.reference import PriorAnswerer
from mmrpt.evaluation.scorer import Query
from mmrpt.evaluation.vlmevalkit import run_vlmevalkit
from tests.evaluation.conftest import SPLITS, read_probes


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prior_world")
    for split in SPLITS:
        records = list(
            world.generate_split(
                split, 24, root, seed=0, image_size=56, max_objects=3, prior_strength=0.7
            )
        )
        write_manifest(root / f"{split}.jsonl", records)
        probes = make_probes(records, seed=0, max_objects=3)
        (root / "probes").mkdir(exist_ok=True)
        (root / "probes" / f"{split}.jsonl").write_text(
            "".join(json.dumps(p) + "\n" for p in probes)
        )
    return root


def prior_share(data: Path, split: str, kind: str | None = None) -> float:
    """What the prior-only answerer must score: the share of probes whose answer is the prior
    option (the first option where a probe has no prior)."""
    hits = [
        p["answer"] == (p["prior"] if p["prior"] is not None else 0)
        for p in read_probes(data, split)
        if kind in (None, p["type"])
    ]
    return sum(hits) / len(hits)


def assert_prior_scores(acc: dict[str, float], harness: str, data: Path):
    for split in SPLITS:
        for variant in (short_name(split), f"{short_name(split)}_blank"):
            assert acc[f"{harness}/{variant}/acc"] == pytest.approx(prior_share(data, split))
            for kind in TYPES:
                assert acc[f"{harness}/{variant}/{kind}/acc"] == pytest.approx(
                    prior_share(data, split, kind), abs=1e-9
                )
    # counter-prior scenes: the prior colour is never right; in-distribution it mostly is
    assert acc[f"{harness}/counter/colour/acc"] == 0.0
    assert acc[f"{harness}/iid/colour/acc"] > 0.5


@pytest.mark.parametrize("form", ["question", "statement"])
def test_prior_answerer_through_lmeval(data, tmp_path, form):
    acc = run_lmeval(
        None, data, SPLITS, tmp_path, blank="both", answerer=PriorAnswerer(data), form=form
    )
    assert_prior_scores(acc, "lmeval", data)


def test_prior_answerer_through_vlmevalkit(data, tmp_path):
    acc = run_vlmevalkit(
        None,
        data,
        SPLITS,
        tmp_path / "out",
        blank="both",
        lmu_data=tmp_path / "LMUData",
        answerer=PriorAnswerer(data),
    )
    assert_prior_scores(acc, "vlmeval", data)


def test_prior_answerer_picks_the_prior_option(data):
    probes = {p["type"]: p for p in read_probes(data, "test_counter")}
    colour, count = probes["colour"], probes["count"]
    image = Image.new("RGB", (8, 8))
    source = str(data / colour["image"])
    answerer = PriorAnswerer(data)
    asked = [
        Query(image, colour["question"], tuple(colour["choices"]), source),
        Query(image, "Describe the image.", tuple(colour["statements"]), source),
        Query(image, count["question"], tuple(count["choices"]), str(data / count["image"])),
    ]
    assert answerer.answer(asked) == [
        colour["choices"][colour["prior"]],
        colour["statements"][colour["prior"]],
        count["choices"][0],
    ]  # no prior: the first option
    shape = next(s for s in world.SHAPES if s in colour["question"])
    assert colour["choices"][colour["prior"]] == world.PRIOR_COLOUR[shape]
    scores = answerer.score_options(asked[:1])[0]
    assert [ok for _, ok in scores] == [i == colour["prior"] for i in range(4)]
    with pytest.raises(KeyError, match="no probe"):
        answerer.answer([Query(image, "What is this?", (), source)])
    with pytest.raises(ValueError, match="source"):
        answerer.answer([Query(image, colour["question"], tuple(colour["choices"]))])
