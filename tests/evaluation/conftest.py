"""One tiny world (the data stage on the tiny params: scenes, manifests and probes) and one
tiny untrained checkpoint (built from mmrpt/modeling/tiny.py, seconds instead of a warmup
run), shared by the evaluation tests."""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from mmrpt.data import world
from mmrpt.modeling.tiny import TinySpec, build_tiny_vlm
from tests.tiny_params import TINY

SPLITS = ("test_iid", "test_counter")


@dataclass(frozen=True)
class Tiny:
    root: Path  # the project folder
    data: Path  # data/world
    model: Path  # the checkpoint folder


@pytest.fixture(scope="package")
def tiny(tmp_path_factory) -> Tiny:
    from mmrpt.cli import main

    root = tmp_path_factory.mktemp("eval_project")
    (root / "params.yaml").write_text(yaml.safe_dump(TINY))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["data"]) == 0
    data = root / "data" / "world"
    captions = [
        json.loads(line)["caption"] for line in (data / "train.jsonl").read_text().splitlines()
    ]
    spec = TinySpec(**TINY["model"]["tiny"], image_size=TINY["data"]["image_size"])
    model = build_tiny_vlm(captions + world.vocabulary_text(), spec, root / "models" / "tiny")
    return Tiny(root, data, model)


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread is several times faster than two here."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def read_probes(data: Path, split: str) -> list[dict]:
    return [
        json.loads(line)
        for line in (data / "probes" / f"{split}.jsonl").read_text().splitlines()
        if line.strip()
    ]


def first_option_share(
    data: Path, split: str, limit: int | None = None, kind: str | None = None
) -> float:
    """Share of (the first ``limit`` per type of) the probes whose answer is option 0: what
    an always-first-option answerer must score."""
    seen: dict[str, int] = {}
    hits = []
    for p in read_probes(data, split):
        seen[p["type"]] = seen.get(p["type"], 0) + 1
        if (limit is None or seen[p["type"]] <= limit) and kind in (None, p["type"]):
            hits.append(p["answer"] == 0)
    return sum(hits) / len(hits)


class Spy:
    """Wraps an answerer and records every query it is asked."""

    def __init__(self, inner):
        self.inner, self.queries = inner, []

    def score_options(self, queries):
        self.queries += queries
        return self.inner.score_options(queries)

    def answer(self, queries):
        self.queries += queries
        return self.inner.answer(queries)


def assert_blank_and_true_images(queries, data: Path, n_probes: int):
    """Every probe was asked twice, once with its true image and once with a plain grey
    image of the same size."""
    from PIL import Image, ImageChops

    from mmrpt.data.world import BACKGROUND

    blank = [
        q for q in queries if q.image.getcolors(1) == [(q.image.width * q.image.height, BACKGROUND)]
    ]
    true = [q for q in queries if all(q is not b for b in blank)]
    assert len(blank) == len(true) == n_probes
    for q in true:
        with Image.open(data / "images" / Path(q.source).name) as im:
            assert ImageChops.difference(im.convert("RGB"), q.image).getbbox() is None
    assert {q.image.size for q in blank} == {q.image.size for q in true}


def assert_chance(acc: dict[str, float], harness: str, data: Path, limit: int | None):
    """The always-first-option answerer scores exactly the first-option share, per split and
    probe type, with and without the image."""
    from mmrpt.data.probes import TYPES
    from mmrpt.evaluation.lmeval import short_name

    for split in SPLITS:
        for variant in (short_name(split), f"{short_name(split)}_blank"):
            assert acc[f"{harness}/{variant}/acc"] == pytest.approx(
                first_option_share(data, split, limit), abs=1e-9
            )
            for kind in TYPES:
                assert acc[f"{harness}/{variant}/{kind}/acc"] == pytest.approx(
                    first_option_share(data, split, limit, kind), abs=1e-9
                )


def n_probes(data: Path, limit: int | None) -> int:
    """How many probes of SPLITS a run with ``limit`` (per split and type) asks."""
    counts: dict[tuple[str, str], int] = {}
    for split in SPLITS:
        for p in read_probes(data, split):
            counts[split, p["type"]] = counts.get((split, p["type"]), 0) + 1
    return sum(n if limit is None else min(n, limit) for n in counts.values())
