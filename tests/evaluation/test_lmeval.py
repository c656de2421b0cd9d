import json

import pytest
from lm_eval.api.registry import get_model

from mmrpt.data.probes import TYPES
from mmrpt.evaluation.lmeval import MMRPTLM, run_lmeval, variants
from mmrpt.evaluation.reference import ConstantAnswerer, OracleAnswerer
from tests.evaluation.conftest import (
    SPLITS,
    Spy,
    assert_blank_and_true_images,
    assert_chance,
    n_probes,
)


def test_checkpoint_runs_offline_with_standard_outputs(tiny, tmp_path):
    acc = run_lmeval(tiny.model, tiny.data, SPLITS, tmp_path, blank=True, batch_size=16)
    for split in ("iid", "counter"):
        for variant in (split, f"{split}_blank"):
            assert 0.0 <= acc[f"lmeval/{variant}/acc"] <= 1.0
            assert {f"lmeval/{variant}/{t}/acc" for t in TYPES} <= set(acc)
    (results,) = tmp_path.glob("*/results_*.json")
    saved = json.loads(results.read_text())
    assert saved["results"]["mmrpt_probes_iid"]["acc,none"] == acc["lmeval/iid/acc"]
    tasks = list(saved["configs"])
    assert len(tasks) == 2 * 2 * len(TYPES)
    for task in tasks:
        (samples,) = results.parent.glob(f"samples_{task}_*.jsonl")
        rows = [json.loads(line) for line in samples.read_text().splitlines()]
        assert rows and {"doc", "resps", "acc"} <= set(rows[0])


@pytest.mark.parametrize("form", ["question", "statement"])
def test_oracle_scores_one(tiny, tmp_path, form):
    acc = run_lmeval(
        None,
        tiny.data,
        SPLITS,
        tmp_path,
        blank="both",
        answerer=OracleAnswerer(tiny.data),
        form=form,
    )
    assert len(acc) == 2 * 2 * (1 + len(TYPES)) and set(acc.values()) == {1.0}


@pytest.mark.parametrize("form", ["question", "statement"])
def test_constant_answerer_scores_chance_and_blank_changes_the_images(tiny, tmp_path, form):
    limit = 6
    spy = Spy(ConstantAnswerer())
    acc = run_lmeval(
        None, tiny.data, SPLITS, tmp_path, limit=limit, blank="both", answerer=spy, form=form
    )
    assert_chance(acc, "lmeval", tiny.data, limit)
    assert_blank_and_true_images(spy.queries, tiny.data, n_probes(tiny.data, limit))


def test_blank_variants():
    assert variants(False) == (False,)
    assert variants(True) == variants("both") == (False, True)
    assert variants("only") == (True,)
    with pytest.raises(ValueError, match="blank"):
        variants("yes")


def test_registered_with_lm_eval(tiny):
    lm = get_model("mmrpt-vlm").create_from_arg_obj(
        {"pretrained": str(tiny.model)}, {"batch_size": 4, "max_batch_size": None}
    )
    assert isinstance(lm, MMRPTLM) and lm.answerer.batch_size == 4
