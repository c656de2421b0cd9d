"""The study's comparison on simulated outcome tables: an effect put in is detected with an
interval that covers it, a null is not, the reference answerers and the curves are right."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.study import finished_workspaces, workspace_params, write_study
from mmrpt.config import Params
from mmrpt.report.study import bias_effect, items, markdown, plots, references, summarise

N_COLOUR, N_OTHER = 400, 200


def outcome_table(rng, p_conflict: float, p_iid: float, budgets=(50,), final=100) -> pd.DataFrame:
    """One run's outcomes: conflict colour probes (test_counter) right with p_conflict, iid
    probes right with p_iid; every phase/form the eval stage writes."""
    rows = []
    for phase, steps, forms in [
        ("zero_shot", 0, ("fillin", "question")),
        *[("sft", k, ("question",)) for k in (*budgets, final)],
    ]:
        for form in forms:
            for i in range(N_COLOUR):  # answer slot cycles; prior in another slot
                answer, prior = i % 4, (i + 1) % 4
                ok = rng.random() < p_conflict
                picked = answer if ok else prior
                rows.append(
                    {
                        "id": f"c{i}",
                        "scene": f"s{i}",
                        "split": "test_counter",
                        "type": "colour",
                        "conflict": True,
                        "answer": answer,
                        "prior": prior,
                        "picked": picked,
                        "correct": ok,
                        "picked_prior": picked == prior,
                        "form": form,
                        "phase": phase,
                        "steps": steps,
                    }
                )
            for i in range(N_OTHER):
                answer = i % 4
                ok = rng.random() < p_iid
                picked = answer if ok else (answer + 2) % 4
                rows.append(
                    {
                        "id": f"i{i}",
                        "scene": f"t{i}",
                        "split": "test_iid",
                        "type": "count",
                        "conflict": False,
                        "answer": answer,
                        "prior": -1,
                        "picked": picked,
                        "correct": ok,
                        "picked_prior": False,
                        "form": form,
                        "phase": phase,
                        "steps": steps,
                    }
                )
    return pd.DataFrame(rows)


def runs(effect: float, seeds=(0, 1, 2, 3), rng_seed: int = 0):
    rng = np.random.default_rng(rng_seed)
    out = {}
    for s in seeds:
        out["mmrpt", s] = outcome_table(rng, 0.5 + effect, 0.8)
        out["masked_sft", s] = outcome_table(rng, 0.5, 0.8)
    return out


def test_items_pick_the_metric_rows():
    t = outcome_table(np.random.default_rng(1), 0.5, 0.8)
    assert len(items(t, "conflict")) == N_COLOUR
    assert set(items(t, "conflict").form) == {"fillin"}
    assert len(items(t, "sft_iid", 100)) == N_OTHER
    assert set(items(t, "sft_iid", 0).phase) == {"zero_shot"}  # step 0 = before SFT
    with pytest.raises(ValueError, match="unknown metric"):
        items(t, "speed")


def test_reference_answerers_on_the_same_items():
    part = pd.DataFrame({"answer": [0, 1, 2, 3], "prior": [0, 2, -1, -1]})
    # prior-only picks 0, 2, 0, 0 -> right on the first only; constant picks 0 -> first only
    assert references(part) == {"oracle": 1.0, "prior_only": 0.25, "constant": 0.25}


def test_an_effect_is_detected_and_its_interval_covers_it(tmp_path):
    s = summarise(runs(0.15), budgets=[50, 100], n_boot=500)
    c = s["comparisons"]["mmrpt vs masked_sft"]["conflict"]
    assert c["verdict"].startswith("effect detected")
    assert c["lo"] < 0.15 < c["hi"] and c["diff"] == pytest.approx(0.15, abs=0.04)
    assert c["mde"] < 0.08  # 4 seeds x 400 conflict probes: ~2.8 * sqrt(0.45 / 1600) = 0.047,
    # wider with the two-level bootstrap
    iid = s["comparisons"]["mmrpt vs masked_sft"]["sft_iid"]
    assert iid["verdict"].startswith("no effect detected")
    m = s["metrics"]["conflict"]
    assert m["mmrpt"]["n_seeds"] == 4 and m["mmrpt"]["n_items"] == N_COLOUR
    assert m["masked_sft"]["prior_rate"] == pytest.approx(1 - m["masked_sft"]["accuracy"])
    assert [p["steps"] for p in s["curves"]["sft_iid"]["mmrpt"]] == [0, 50, 100]
    study = {0.0: summarise(runs(0.0), budgets=[50, 100], n_boot=300), 0.6: s}
    assert study[0.0]["comparisons"]["mmrpt vs masked_sft"]["conflict"]["verdict"].startswith(
        "no effect detected"
    )
    md = markdown(study)
    assert "## caption bias 0.6" in md and "(prior_only)" in md and "effect detected" in md
    # the edge appears with the bias: its change from bias 0 is detected, and covers 0.15
    change = bias_effect(study)["0.6 - 0"]["mmrpt vs masked_sft"]["conflict"]
    assert change["verdict"].startswith("effect detected")
    assert change["lo"] < 0.15 < change["hi"] and change["at_0"] == pytest.approx(0, abs=0.04)
    assert "Does the difference need the bias?" in md
    lvl = change["seed_level"]  # Welch over the two sets of four per-seed differences
    assert lvl["n_seeds"] == 4 and lvl["lo"] < 0.15 < lvl["hi"]
    assert lvl["verdict"].startswith("effect detected") and lvl["n_control"] == 4
    cell = f"{lvl['diff']:+.3f} [{lvl['lo']:+.3f}, {lvl['hi']:+.3f}], MDE {lvl['mde']:.3f}"
    assert f"{cell}: effect detected |" in md
    for png in plots(study, tmp_path):
        assert png.stat().st_size > 5000


def test_seeds_that_disagree_widen_the_seed_level_interval():
    """Imitation copies the bias at two of four seeds (mmrpt +0.3 there, 0 elsewhere): the
    seed-level t interval is far wider than the cluster bootstrap's, reaches 0, and says how
    many seeds a 5-point MDE would need; the report shows both."""
    rng = np.random.default_rng(5)
    runs_ = {}
    for seed, effect in enumerate((0.3, 0.0, 0.3, 0.0)):
        runs_["mmrpt", seed] = outcome_table(rng, 0.5, 0.8)
        runs_["masked_sft", seed] = outcome_table(rng, 0.5 - effect, 0.8)
    s = summarise(runs_, budgets=[100], n_boot=500)
    c = s["comparisons"]["mmrpt vs masked_sft"]["conflict"]
    lvl = c["seed_level"]
    assert lvl["n_seeds"] == 4 and lvl["seeds"] == [0, 1, 2, 3]
    assert lvl["diff"] == pytest.approx(c["diff"])  # equal probes per seed: the same mean
    assert [round(d, 1) for d in lvl["per_seed"]] == [0.3, 0.0, 0.3, 0.0]
    assert lvl["hi"] - lvl["lo"] > 1.5 * (c["hi"] - c["lo"])
    assert lvl["lo"] < 0 and lvl["verdict"].startswith("no effect detected (MDE")
    assert lvl["seeds_for_target"] > 50  # sd ~0.17: (2.8 * 0.17 / 0.05)^2 ~ 92
    md = markdown({"0.6": s})
    assert "seed level" in md and f"| {lvl['seeds_for_target']} |" in md


def test_arms_with_identical_outcomes_get_no_test_at_any_level():
    """Both arms answer every probe alike at every seed, at both bias values: the bootstrap
    says no difference at all, the seed level and the change from bias 0 say there was no
    spread to test (not a zero-width interval read as a detected effect)."""
    rng = np.random.default_rng(7)
    same = {}
    for s in range(3):
        same["mmrpt", s] = same["masked_sft", s] = outcome_table(rng, 0.5, 0.8)
    study = {b: summarise(same, budgets=[50, 100], n_boot=200) for b in ("0.0", "0.6")}
    c = study["0.6"]["comparisons"]["mmrpt vs masked_sft"]["conflict"]
    assert c["verdict"] == "no difference at all (zero spread: MDE undefined)"
    assert c["seed_level"]["zero_spread"]
    change = bias_effect(study)["0.6 - 0"]["mmrpt vs masked_sft"]["conflict"]
    assert change["seed_level"]["zero_spread"] and change["seed_level"]["mde"] is None
    md = markdown(study)
    assert md.count("zero spread over seeds (difference +0.000): no test, MDE undefined |") >= 3


def test_a_difference_that_does_not_need_the_bias_is_not_called_a_change():
    """The same effect at both bias values: the change is not detected; no bias-0 run, no
    change table."""
    study = {"0.0": summarise(runs(0.15), budgets=[100], n_boot=300)}
    study["0.6"] = summarise(runs(0.15, rng_seed=1), budgets=[100], n_boot=300)
    change = bias_effect(study)["0.6 - 0"]["mmrpt vs masked_sft"]["conflict"]
    assert change["verdict"].startswith("no effect detected")
    assert change["at_bias"] > 0.1 and change["at_0"] > 0.1
    assert change["seed_level"]["verdict"].startswith("no effect detected")
    assert bias_effect({"0.6": study["0.6"]}) == {}
    assert "need the bias" not in markdown({"0.6": study["0.6"]})


def test_the_study_flow_writes_each_bias_and_the_change_from_bias_0(tmp_path):
    """flows.study.write_study on two workspaces as the pipeline leaves them (params.yaml,
    per-probe outcomes, rl metrics): study.json holds both bias values and the change of the
    primary comparison from bias 0, which is detected when only the biased world has it."""
    root = Path(__file__).resolve().parents[2]
    overrides = [
        "seeds=[0, 1, 2, 3]",
        "arms={masked_sft: {objective: sft}, mmrpt: {objective: grpo}}",
        "sft.budgets=[50]",
        "sft.steps=100",
    ]
    spaces = {}
    for bias, effect in ((0.0, 0.0), (0.6, 0.15)):
        ws = spaces[bias] = tmp_path / "studies" / f"bias-{bias}"
        raw = workspace_params(root, root / "profiles/study.yaml", bias, overrides)
        (ws / "metrics" / "rl").mkdir(parents=True)
        (ws / "params.yaml").write_text(yaml.safe_dump(raw))
        p = Params.model_validate(raw)
        (ws / p.eval.out_dir / "outcomes").mkdir(parents=True)
        for (arm, seed), table in runs(effect, rng_seed=int(bias * 10)).items():
            table.to_parquet(ws / p.eval.out_dir / "outcomes" / f"{arm}-{seed}.parquet")
            rl = {"tokens/forward": 10.0 * (1 + (arm == "mmrpt")), "loss": 1.0}
            (ws / "metrics" / "rl" / f"{arm}-{seed}.json").write_text(json.dumps(rl))
    # a finished workspace of another bias value is found (the study command summarises it
    # beside the ones it ran); one with a run's outcomes missing, or no params, is not
    assert finished_workspaces(tmp_path / "studies", {0.6}) == {0.0: spaces[0.0]}
    assert finished_workspaces(tmp_path / "studies", set()) == spaces
    p0 = Params.model_validate(yaml.safe_load((spaces[0.0] / "params.yaml").read_text()))
    (spaces[0.0] / p0.eval.out_dir / "outcomes" / "mmrpt-3.parquet").rename(tmp_path / "x")
    (tmp_path / "studies" / "bias-0.3").mkdir()
    assert finished_workspaces(tmp_path / "studies", {0.6}) == {}
    (tmp_path / "x").rename(spaces[0.0] / p0.eval.out_dir / "outcomes" / "mmrpt-3.parquet")
    write_study(tmp_path, spaces, tmp_path / "reports", {"biases": [0.0, 0.6]}, n_boot=300)
    study = json.loads((tmp_path / "metrics" / "study.json").read_text())
    assert set(study["study"]) == {"0.0", "0.6"}
    assert study["workspaces"] == {"0.0": "studies/bias-0.0", "0.6": "studies/bias-0.6"}
    assert study["study"]["0.6"]["tokens"]["mmrpt"] == {"forward": 20.0}
    change = study["bias_effect"]["0.6 - 0"]["mmrpt vs masked_sft"]["conflict"]
    assert change["verdict"].startswith("effect detected") and change["lo"] < 0.15 < change["hi"]
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "## caption bias 0.0" in report and "need the bias" in report
    assert (tmp_path / "reports" / "forest.png").stat().st_size > 5000
