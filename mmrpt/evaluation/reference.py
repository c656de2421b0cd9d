"""Three rule-based answerers that pin the harnesses and the study's tables down: an oracle that
reads the scene ground truth (must score exactly 1.0), a constant answerer that always takes
the first option (must score exactly the share of probes whose answer sits first: chance, by
the probes' slot cycling), and a prior-only answerer that answers from the language prior
alone, never from the image (the probe's ``prior`` option where it has one, else the first
option: it scores exactly the share of probes whose answer is that option, e.g. 0 on the
colour probes of test_counter). All implement the scorer's ``Answerer`` protocol, so they run
through lm-eval and VLMEvalKit exactly where a checkpoint would.

The oracle never reads a probe's stored answer: it finds the probe by (scene id, question),
where the scene id is the image file's stem (the world names images by record id), and
recomputes the true option from the scene (``probes.oracle_answer``). Options in caption form
(the statement probes) are judged sentence by sentence by the world's verifier.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mmrpt.data.probes import oracle_answer
from mmrpt.data.records import read_manifest
from mmrpt.data.world import Obj, scene_of, verify_sentence
from mmrpt.evaluation.scorer import OptionScore, Query

WRONG = -1.0  # log-likelihood given to every option the reference does not pick


def read_probe_files(data_root: str | Path) -> list[dict]:
    """Every probe of a world folder (``probes/*.jsonl``)."""
    probes = []
    for path in sorted((Path(data_root) / "probes").glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            probes += [json.loads(line) for line in f if line.strip()]
    return probes


def _picks(options: Sequence[str], pick: str) -> list[OptionScore]:
    return [(0.0, True) if o == pick else (WRONG, False) for o in options]


class ConstantAnswerer:
    """Always the first option."""

    def score_options(self, queries: Sequence[Query]) -> list[list[OptionScore]]:
        return [[(0.0, True)] + [(WRONG, False)] * (len(q.options) - 1) for q in queries]

    def answer(self, queries: Sequence[Query]) -> list[str]:
        if any(not q.options for q in queries):
            raise ValueError("the constant answerer needs the options of each query")
        return [q.options[0] for q in queries]


class OracleAnswerer:
    """Answers from the scene ground truth of a world folder (``data_root``)."""

    def __init__(self, data_root: str | Path):
        self.root = Path(data_root)
        self.probes = {(p["scene_id"], p["question"]): p for p in read_probe_files(self.root)}
        self._scenes: dict[str, list[Obj]] = {}

    def _scene(self, scene_id: str) -> list[Obj]:
        if scene_id not in self._scenes:
            split = scene_id.rsplit("-", 1)[0]  # record ids are <split>-<number>
            for r in read_manifest(self.root / f"{split}.jsonl"):
                self._scenes[r.id] = scene_of(r)
        return self._scenes[scene_id]

    def _true_statement(self, query: Query) -> str:
        scene = self._scene(Path(query.source).stem)
        true = [o for o in query.options if verify_sentence(o, scene)]
        if len(true) != 1:
            raise ValueError(
                f"{len(true)} of the options {query.options} are true of {query.source}"
            )
        return true[0]

    def truth(self, query: Query) -> str:
        if query.source is None:
            raise ValueError("the oracle needs the image file of each query (Query.source)")
        probe = self.probes.get((Path(query.source).stem, query.question))
        if probe is None:
            if query.options and all(verify_sentence(o, []) is not None for o in query.options):
                return self._true_statement(query)  # caption-form options
            raise KeyError(f"no probe of {self.root} asks {query.question!r} about {query.source}")
        return oracle_answer(probe, self._scene(probe["scene_id"]))

    def score_options(self, queries: Sequence[Query]) -> list[list[OptionScore]]:
        return [_picks(q.options, self.truth(q)) for q in queries]

    def answer(self, queries: Sequence[Query]) -> list[str]:
        return [self.truth(q) for q in queries]


class PriorAnswerer:
    """Answers from the language prior alone (the probes' ``prior`` field of a world folder):
    the prior option where the probe has one, else the first option; in caption form the
    statement of that option. Never looks at the image or the scene. A query is matched to
    its probe by (scene id, question) or, in caption form, (scene id, statements)."""

    def __init__(self, data_root: str | Path):
        self.root = Path(data_root)
        self.picks: dict[tuple, str] = {}
        for p in read_probe_files(self.root):
            i = 0 if p.get("prior") is None else p["prior"]
            self.picks[p["scene_id"], p["question"]] = p["choices"][i]
            self.picks[p["scene_id"], tuple(p["statements"])] = p["statements"][i]

    def pick(self, query: Query) -> str:
        if query.source is None:
            raise ValueError(
                "the prior answerer needs the image file of each query "
                "(Query.source) to find its probe, never its pixels"
            )
        scene_id = Path(query.source).stem
        for key in ((scene_id, query.question), (scene_id, tuple(query.options))):
            if key in self.picks:
                return self.picks[key]
        raise KeyError(
            f"no probe of {self.root} asks {query.question!r} with options "
            f"{query.options} about {query.source}"
        )

    def score_options(self, queries: Sequence[Query]) -> list[list[OptionScore]]:
        return [_picks(q.options, self.pick(q)) for q in queries]

    def answer(self, queries: Sequence[Query]) -> list[str]:
        return [self.pick(q) for q in queries]
