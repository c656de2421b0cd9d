import json
from pathlib import Path

import pandas as pd
import pytest

from mmrpt.report.arms import claims, runs_table, summarise, write_report

ACC = {"ntp": 0.30, "masked_sft": 0.50, "random_mask": 0.45, "mmrpt": 0.60}


def _write_runs(eval_dir: Path, acc: dict[str, float], seeds=(0, 1)) -> None:
    eval_dir.mkdir(parents=True)
    for arm, a in acc.items():
        for s in seeds:
            m = {"arm": arm, "seed": s}
            for phase in ("zero_shot", "sft"):
                m[f"{phase}/lmeval/counter/acc"] = a + 0.02 * s
                m[f"{phase}/lmeval/counter/reliance"] = a / 2
                m[f"{phase}/vlmeval/counter/acc"] = a
                m[f"{phase}/masked_em/test_iid"] = a
            (eval_dir / f"{arm}-{s}.json").write_text(json.dumps(m))


def test_mean_and_spread_over_seeds_and_claims(tmp_path: Path):
    _write_runs(tmp_path / "eval", ACC)
    s = summarise(runs_table(tmp_path / "eval"))
    row = s[(s.phase == "sft") & (s.metric == "lmeval/counter/acc") & (s.arm == "mmrpt")]
    assert row["mean"].item() == pytest.approx(0.61) and row["n"].item() == 2
    assert row["std"].item() == pytest.approx(pd.Series([0.60, 0.62]).std())
    verdict = claims(s)
    assert verdict["zero_shot/lmeval/mmrpt_beats_ntp_and_masked_sft_counter"] is True
    assert verdict["sft/mmrpt_largest_reliance_counter"] is True
    # seeds outside the requested replicates are left out
    assert set(runs_table(tmp_path / "eval", seeds=[1]).seed) == {1}


def test_claims_fail_when_an_imitation_arm_is_better(tmp_path: Path):
    _write_runs(tmp_path / "eval", {**ACC, "masked_sft": 0.70})
    verdict = claims(summarise(runs_table(tmp_path / "eval")))
    assert verdict["zero_shot/lmeval/mmrpt_beats_ntp_and_masked_sft_counter"] is False
    assert verdict["zero_shot/mmrpt_largest_reliance_counter"] is False
    assert verdict["zero_shot/vlmeval/mmrpt_beats_ntp_and_masked_sft_counter"] is False


def test_write_report_files(tmp_path: Path):
    _write_runs(tmp_path / "eval", ACC, seeds=(0,))
    curves = tmp_path / "curves"
    curves.mkdir()
    pd.DataFrame({"step": [5, 10], "reward": [0.1, 0.3]}).to_csv(curves / "mmrpt-0.csv")
    report, _ = write_report(tmp_path / "eval", curves, tmp_path / "out")
    md = (tmp_path / "out/report.md").read_text()
    assert "| mmrpt | 0.600 (n=1) |" in md  # one seed: no spread shown
    assert report["zero_shot"]["lmeval/counter/acc"]["ntp"]["mean"] == pytest.approx(0.30)
    for f in ("runs.csv", "summary.csv", "arms_zero_shot.png", "arms_sft.png", "reward_curves.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="eval stage"):
        write_report(tmp_path / "missing", curves, tmp_path / "out2")


def test_table_and_claims_follow_the_benchmarks_that_ran(tmp_path: Path):
    """Real data: no probes, one real benchmark and masked-span EM on its own split name."""
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    for arm, a in {**ACC, "no_visual": 0.2}.items():
        m = {"arm": arm, "seed": 0, "zero_shot/failed": {"BLINK": "FileNotFoundError: x"}}
        for phase in ("zero_shot", "sft"):
            m[f"{phase}/vlmeval/MMStar/acc"] = a
            m[f"{phase}/vlmeval/MMStar/coarse_perception/acc"] = a / 2
            m[f"{phase}/masked_em/val"] = 1 - a
        (eval_dir / f"{arm}-0.json").write_text(json.dumps(m))
    report, _ = write_report(eval_dir, tmp_path / "curves", tmp_path / "out")
    md = (tmp_path / "out/report.md").read_text()
    assert "| arm | VLMEvalKit MMStar | masked-span EM val |" in md
    assert "| mmrpt | 0.600 (n=1) | 0.400 (n=1) |" in md and "| no_visual |" in md
    assert report["claims"] == {
        "zero_shot/vlmeval/MMStar/acc/mmrpt_beats_ntp_and_masked_sft": True,
        "zero_shot/masked_em/val/mmrpt_beats_ntp_and_masked_sft": False,
        "sft/vlmeval/MMStar/acc/mmrpt_beats_ntp_and_masked_sft": True,
        "sft/masked_em/val/mmrpt_beats_ntp_and_masked_sft": False,
    }
    assert (tmp_path / "out/arms_sft.png").stat().st_size > 0
