import json
from pathlib import Path

from mmrpt.cli import main


def test_eval_then_report(primed_project: Path, caplog):
    p = primed_project
    for arm in ("ntp", "masked_sft"):
        for stage in ("rl", "sft", "eval"):
            assert main([stage, "--arm", arm, "--seed", "0"]) == 0, (stage, arm)
    m = json.loads((p / "metrics/eval/masked_sft-0.json").read_text())
    rl = json.loads((p / "metrics/rl/masked_sft-0.json").read_text())
    assert m["zero_shot/masked_em/test_iid"] == rl["exact_match"]  # taken from the rl stage
    for phase in ("zero_shot", "sft"):
        for key in (
            "lmeval/iid/acc",
            "lmeval/counter_blank/acc",
            "vlmeval/counter/acc",
            "lmeval/iid/colour/acc",
            "masked_em/test_counter",
        ):
            assert 0.0 <= m[f"{phase}/{key}"] <= 1.0, (phase, key)
        assert m[f"{phase}/lmeval/iid/reliance"] == (
            m[f"{phase}/lmeval/iid/acc"] - m[f"{phase}/lmeval/iid_blank/acc"]
        )
    # lm-eval's and VLMEvalKit's own output files
    assert list((p / "eval/masked_sft-0/sft/lmeval").glob("*/results_*.json"))
    assert list((p / "eval/masked_sft-0/zero_shot/vlmevalkit").glob("*.xlsx"))
    # a rerun reuses the finished phases instead of evaluating again
    caplog.clear()
    with caplog.at_level("INFO"):
        assert main(["eval", "--arm", "masked_sft", "--seed", "0"]) == 0
    assert sum("finished earlier" in r.getMessage() for r in caplog.records) == 2
    assert json.loads((p / "metrics/eval/masked_sft-0.json").read_text()) == m

    assert main(["report"]) == 0
    report = json.loads((p / "metrics/report.json").read_text())
    assert set(report["zero_shot"]["lmeval/counter/acc"]) == {"ntp", "masked_sft"}
    assert report["sft"]["vlmeval/iid/acc"]["ntp"]["n"] == 1
    md = (p / "reports/report.md").read_text()
    assert "| masked_sft |" in md and "## sft" in md
    assert (p / "reports/arms_zero_shot.png").stat().st_size > 0
