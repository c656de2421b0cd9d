import math

import pandas as pd

from mmrpt.data.probes import TYPES
from mmrpt.evaluation.reference import ConstantAnswerer, OracleAnswerer
from mmrpt.evaluation.vlmevalkit import export_probes, run_vlmevalkit
from tests.evaluation.conftest import (
    SPLITS,
    Spy,
    assert_blank_and_true_images,
    assert_chance,
    n_probes,
    read_probes,
)


def test_export_is_a_custom_mcq_tsv(tiny, tmp_path):
    name = export_probes(tiny.data, "test_iid", tmp_path)
    table = pd.read_csv(tmp_path / f"{name}.tsv", sep="\t")
    probes = read_probes(tiny.data, "test_iid")
    assert name == "mmrpt_probes_iid" and len(table) == len(probes)
    assert list(table.columns[:2]) == ["index", "image"]
    assert {"question", "A", "B", "C", "D", "answer", "category"} <= set(table.columns)
    for row, p in zip(table.itertuples(), probes, strict=True):
        options = [getattr(row, c) for c in "ABCD"]
        assert options[: len(p["choices"])] == p["choices"]
        assert all(isinstance(o, float) and math.isnan(o) for o in options[len(p["choices"]) :])
        assert row.answer == "ABCD"[p["answer"]] and row.category == p["type"]
    assert table["image"].str.len().max() > 64  # base64 once per scene, an index otherwise
    assert (table["image"].str.len() <= 64).any()


def test_checkpoint_runs_offline_with_standard_outputs(tiny, tmp_path):
    acc = run_vlmevalkit(
        tiny.model,
        tiny.data,
        SPLITS,
        tmp_path / "out",
        blank=True,
        lmu_data=tmp_path / "LMUData",
        batch_size=16,
    )
    for split in ("iid", "counter"):
        for variant in (split, f"{split}_blank"):
            assert 0.0 <= acc[f"vlmeval/{variant}/acc"] <= 1.0
            assert {f"vlmeval/{variant}/{t}/acc" for t in TYPES} <= set(acc)
        for model in ("mmrpt", "mmrpt_blank"):
            stem = tmp_path / "out" / f"{model}_mmrpt_probes_{split}"
            assert stem.with_suffix(".xlsx").exists()  # predictions (infer_data_job)
            assert (tmp_path / "out" / f"{stem.name}_acc.csv").exists()  # dataset.evaluate
            predictions = pd.read_excel(stem.with_suffix(".xlsx"), dtype={"prediction": str})
            predictions = predictions["prediction"].fillna("")
            assert (predictions == predictions.str.lower()).all()


def test_oracle_scores_one(tiny, tmp_path):
    acc = run_vlmevalkit(
        None,
        tiny.data,
        SPLITS,
        tmp_path / "out",
        blank="both",
        lmu_data=tmp_path / "LMUData",
        answerer=OracleAnswerer(tiny.data),
    )
    assert len(acc) == 2 * 2 * (1 + len(TYPES)) and set(acc.values()) == {1.0}


def test_constant_answerer_scores_chance_and_blank_changes_the_images(tiny, tmp_path):
    limit = 6
    spy = Spy(ConstantAnswerer())
    acc = run_vlmevalkit(
        None,
        tiny.data,
        SPLITS,
        tmp_path / "out",
        limit=limit,
        blank="both",
        lmu_data=tmp_path / "LMUData",
        answerer=spy,
    )
    assert_chance(acc, "vlmeval", tiny.data, limit)
    assert_blank_and_true_images(spy.queries, tiny.data, n_probes(tiny.data, limit))


def test_probe_predictions_are_never_read_as_option_letters(tiny):
    from vlmeval.utils.matching_util import can_infer

    from mmrpt.evaluation.vlmevalkit import VLMEvalModel

    class Says:
        def answer(self, queries):
            return ["A red circle" for _ in queries]

    image = next((tiny.data / "images").glob("test_iid-*.png"))
    message = [
        {"type": "image", "value": str(image)},
        {"type": "text", "value": "What colour is the small circle at the top left?"},
    ]
    model = VLMEvalModel(Says())
    options = {"A": "green", "B": "red", "C": "blue", "D": "yellow"}
    assert can_infer("A red circle", dict(options)) == "A"  # VLMEvalKit's reading
    prediction = model.generate([dict(m) for m in message], dataset="mmrpt_probes_iid")
    assert prediction == "a red circle" and can_infer(prediction, dict(options)) == "B"
    assert model.generate([dict(m) for m in message], dataset="MMStar") == "A red circle"


def test_importing_the_harness_keeps_gradients_on():
    import subprocess
    import sys

    code = (
        "import torch, mmrpt.evaluation.vlmevalkit, vlmeval.vlm, vlmeval.inference;"
        "assert torch.is_grad_enabled()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class Says:
    """An answerer that always answers ``text``."""

    def __init__(self, text: str):
        self.text = text

    def answer(self, queries):
        return [self.text] * len(queries)

    def score_options(self, queries):
        raise NotImplementedError


def test_local_benchmark_runs_as_is_and_a_failing_one_is_recorded(tiny, tmp_path, monkeypatch):
    """A local MMStar.tsv (md5 not VLMEvalKit's) is used without a download; a benchmark with
    no local file fails alone; nothing is written into the benchmark folder; no socket."""
    import socket

    from tests.real_data import write_mmstar

    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    bench = tmp_path / "LMUData"
    write_mmstar(bench, n=6)
    failures: dict = {}
    acc = run_vlmevalkit(
        None,
        tiny.data,
        ["test_iid"],
        tmp_path / "out",
        limit=2,
        answerer=Says("B"),
        datasets=["MMStar", "BLINK"],
        lmu_data=bench,
        benchmarks_local=True,
        failures=failures,
    )
    assert acc["vlmeval/MMStar/acc"] == 2 / 6  # answers B; B is right for rows 1 and 4
    assert "vlmeval/iid/acc" in acc  # the probes' results are kept too
    assert list(failures) == ["BLINK"] and "no local benchmark file" in failures["BLINK"]
    assert sorted(p.name for p in bench.iterdir()) == ["MMStar.tsv"]
    assert not list((tmp_path / "out").rglob("*.tsv"))  # probe TSVs live in a private folder
