"""The comparison of arms: every run's evaluation (metrics/eval/<arm>-<seed>.json) as one long
table, mean and spread over seeds per (phase, metric, arm), the paper's claims checked against
it, a markdown table and the plots (grouped bars per phase, GRPO reward curves).

The table's columns follow the metrics present: the scene probes' headline metrics where the
world's probes ran, every real benchmark that ran (``vlmeval/<name>/acc``) and the held-out
masked-span exact match of each split; the claims likewise (mmrpt beats both imitation arms
on each of them)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mmrpt.report.plots import grouped_bars, reward_curves

PHASES = ("zero_shot", "sft")
ARM_ORDER = ("ntp", "masked_sft", "random_mask", "mmrpt")
# Probe columns of the markdown table (all metrics are in the CSV and report.json).
HEADLINE = {
    "lmeval/iid/acc": "lm-eval iid",
    "lmeval/counter/acc": "lm-eval counter-prior",
    "lmeval/counter/colour/acc": "lm-eval counter colour",
    "lmeval/iid/reliance": "reliance iid",
    "lmeval/counter/reliance": "reliance counter",
    "vlmeval/iid/acc": "VLMEvalKit iid",
    "vlmeval/counter/acc": "VLMEvalKit counter-prior",
    "masked_em/test_iid": "masked-span EM",
}


def runs_table(eval_dir: str | Path, seeds: list[int] | None = None) -> pd.DataFrame:
    """Long table (arm, seed, phase, metric, value) of every run's evaluation."""
    rows = []
    for f in sorted(Path(eval_dir).glob("*.json")):
        m = json.loads(f.read_text())
        if seeds is not None and m.get("seed") not in seeds:
            continue
        for key, value in m.items():
            phase, _, metric = key.partition("/")
            if phase in PHASES and isinstance(value, int | float):
                rows.append(
                    {
                        "arm": m["arm"],
                        "seed": m["seed"],
                        "phase": phase,
                        "metric": metric,
                        "value": float(value),
                    }
                )
    return pd.DataFrame(rows, columns=["arm", "seed", "phase", "metric", "value"])


def headline(metrics) -> dict[str, str]:
    """{metric: column label} of the table over ``metrics``: the probe headline (HEADLINE)
    where present, then each benchmark's overall accuracy and each split's masked-span EM."""
    present = set(metrics)
    cols = {m: label for m, label in HEADLINE.items() if m in present}
    for m in sorted(present - set(cols)):
        parts = m.split("/")
        if (
            len(parts) == 3
            and parts[0] in ("vlmeval", "lmeval")
            and parts[2] == "acc"
            and parts[1] not in ("iid", "counter")
            and not parts[1].endswith("_blank")
        ):
            cols[m] = f"{'VLMEvalKit' if parts[0] == 'vlmeval' else 'lm-eval'} {parts[1]}"
    for m in sorted(present - set(cols)):
        if m.count("/") == 1 and m.startswith("masked_em/"):
            cols[m] = f"masked-span EM {m.partition('/')[2]}"
    return cols


def arm_order(arms) -> list[str]:
    """The paper's arms first, then any others (ablations) by name."""
    arms = set(arms)
    return [a for a in ARM_ORDER if a in arms] + sorted(arms - set(ARM_ORDER))


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof 1; NaN for one seed) and n per (phase, metric, arm)."""
    g = runs.groupby(["phase", "metric", "arm"])["value"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(), "n": g.count()}).reset_index()


def _mean(summary: pd.DataFrame, phase: str, metric: str, arm: str) -> float | None:
    row = summary[(summary.phase == phase) & (summary.metric == metric) & (summary.arm == arm)]
    return float(row["mean"].iloc[0]) if len(row) else None


def claims(summary: pd.DataFrame) -> dict[str, bool | None]:
    """The paper's claims on this run's numbers (None where a number is missing): mmrpt beats
    ntp and masked_sft on the counter-prior probes (each harness, zero-shot and after SFT) and
    has the largest vision reliance, where the probes ran; mmrpt beats both on every real
    benchmark that ran and on each split's masked-span EM."""
    out: dict[str, bool | None] = {}
    present = set(summary.metric)

    def beats(phase: str, metric: str) -> bool | None:
        ours = _mean(summary, phase, metric, "mmrpt")
        rivals = [_mean(summary, phase, metric, a) for a in ("ntp", "masked_sft")]
        return None if ours is None or None in rivals else all(ours > r for r in rivals)

    for phase in PHASES:
        for h in ("lmeval", "vlmeval"):
            if f"{h}/counter/acc" in present:
                out[f"{phase}/{h}/mmrpt_beats_ntp_and_masked_sft_counter"] = beats(
                    phase, f"{h}/counter/acc"
                )
        if "lmeval/counter/reliance" in present:
            rel = {a: _mean(summary, phase, "lmeval/counter/reliance", a) for a in ARM_ORDER}
            known = {a: v for a, v in rel.items() if v is not None}
            out[f"{phase}/mmrpt_largest_reliance_counter"] = (
                None
                if "mmrpt" not in known or len(known) < 2
                else max(known, key=known.get) == "mmrpt"
            )
        for metric in headline(present):
            if metric not in HEADLINE or metric.startswith("masked_em/"):
                out[f"{phase}/{metric}/mmrpt_beats_ntp_and_masked_sft"] = beats(phase, metric)
    return out


def markdown(summary: pd.DataFrame, verdict: dict[str, bool | None]) -> str:
    arms = arm_order(summary.arm)
    lines = [
        "# MMRPT: arms x benchmarks",
        "",
        "Mean ± std over seeds (n = seeds). acc = accuracy on the scene probes or the"
        " benchmark; reliance = accuracy with the image minus with the image blanked;"
        " masked-span EM = held-out exact match of the hidden caption sentences.",
        "",
    ]
    for phase in PHASES:
        part = summary[summary.phase == phase]
        labels = headline(part.metric)
        cols = list(labels)
        if not cols:
            continue
        lines += [
            f"## {phase.replace('_', '-')}",
            "",
            "| arm | " + " | ".join(labels[c] for c in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for arm in arms:
            cells = []
            for c in cols:
                r = part[(part.metric == c) & (part.arm == arm)]
                if not len(r):
                    cells.append("")
                    continue
                mean, std, n = r["mean"].iloc[0], r["std"].iloc[0], int(r["n"].iloc[0])
                cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "") + f" (n={n})")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## The paper's claims on these numbers", ""]
    lines += [
        f"- {k}: {'yes' if v else 'no' if v is not None else 'not measured'}"
        for k, v in verdict.items()
    ]
    return "\n".join(lines) + "\n"


def write_report(
    eval_dir: str | Path,
    rl_plots_dir: str | Path,
    out_dir: str | Path,
    seeds: list[int] | None = None,
    arms: list[str] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Write report.md, runs.csv, summary.csv and PNG plots to ``out_dir``; return
    (report json, summary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = runs_table(eval_dir, seeds)
    if arms is not None:
        runs = runs[runs.arm.isin(arms)]
    if runs.empty:
        raise FileNotFoundError(f"no evaluated runs in {eval_dir}: run the eval stage first")
    summary = summarise(runs)
    verdict = claims(summary)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "report.md").write_text(markdown(summary, verdict))
    for phase in PHASES:
        labels = headline(summary[summary.phase == phase].metric)
        part = summary[(summary.phase == phase) & summary.metric.isin(list(labels))]
        if len(part):
            grouped_bars(
                part,
                labels,
                arm_order(part.arm),
                out / f"arms_{phase}.png",
                title=f"arms, {phase.replace('_', '-')} (mean ± std over seeds)",
            )
    curves = {}
    for f in sorted(Path(rl_plots_dir).glob("*.csv")):
        df = pd.read_csv(f) if f.stat().st_size else pd.DataFrame()
        if "reward" in df and (seeds is None or int(f.stem.rsplit("-", 1)[1]) in seeds):
            curves[f.stem] = df
    if curves:
        reward_curves(curves, out / "reward_curves.png")
    report: dict = {"claims": verdict, "seeds": sorted(runs.seed.unique().tolist())}
    for r in summary.itertuples():
        report.setdefault(r.phase, {}).setdefault(r.metric, {})[r.arm] = {
            "mean": r.mean,
            "std": None if pd.isna(r.std) else r.std,
            "n": int(r.n),
        }
    return report, summary
