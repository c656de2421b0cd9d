"""The study's comparison: arms on the same probes over seeds, at each caption-bias value.

Input: per run (arm, seed) the per-probe outcome table of the eval stage
(mmrpt.evaluation.probe_outcomes: phase, steps, form, split, type, conflict, answer, prior,
picked, correct, picked_prior). Output: one JSON-able summary (metrics/study.json), a markdown
report and two plots.

Metrics (each an item set in one phase and scoring form):
- primary ``conflict``: zero-shot (after the arm, before SFT), fill-in form, colour probes whose
  true answer is not the language prior's (prior-conflict): accuracy, and ``prior_rate`` (the
  share that picks the prior's colour);
- ``sft_iid`` / ``sft_conflict``: question form after SFT (every sft.budgets snapshot and the
  final model): all test_iid probes, and the prior-conflict colour probes.
Comparisons: for each pair of arms, the paired difference over the same (seed, probe) items
with a 95% cluster-bootstrap interval (clusters = seeds, mmrpt.report.stats), the minimum
detectable effect from the bootstrap standard error, and the verdict ("effect detected" /
"no effect detected (MDE)", never "the claim fails"); with two seeds or more also the
seed-level view (``seed_level``: a t interval over the per-seed differences, its MDE at this
many seeds and the seeds a 5-point MDE would need), the one to read with few seeds.
Reference answerers in every table: oracle (1.0), prior-only (the prior's option where there
is one, else the first), constant (always the first option), computed on the same items.
Across bias values (``bias_effect``): does a comparison's difference need the bias? Each
value's difference minus the unbiased control's (bias 0), with a normal interval from the two
bootstrap standard errors. The two values are separate trainings, so their errors are taken as
independent; a positive covariance through shared probes would only narrow the true interval.
With two seeds or more on both sides also its seed-level view (``seed_change``: Welch's t over
the two sets of per-seed differences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mmrpt.report.stats import LEVEL, mde, paired_difference, seed_change, seed_level, verdict

PAIRS = (
    ("mmrpt", "masked_sft"),  # the primary comparison: RL with the verifier vs imitation
    ("mmrpt", "mmrpt_no_visual"),  # the reward's visual term
    ("mmrpt", "rft"),  # RL vs having a verifier
    ("rft", "masked_sft"),
    ("mmrpt", "ntp"),
)
PRIMARY = ("mmrpt", "masked_sft")


def items(table: pd.DataFrame, metric: str, steps: int | None = None) -> pd.DataFrame:
    """The rows of one metric (see the module docstring); ``steps``: the SFT budget."""
    colour_conflict = table.conflict & (table.type == "colour")
    if metric == "conflict":
        part = table[(table.phase == "zero_shot") & (table.form == "fillin") & colour_conflict]
    elif metric in ("sft_iid", "sft_conflict"):
        sel = (table.form == "question") & (table.steps == steps)
        sel &= (table.phase == "sft") if steps else (table.phase == "zero_shot")
        sel &= (table.split == "test_iid") if metric == "sft_iid" else colour_conflict
        part = table[sel]
    else:
        raise ValueError(f"unknown metric {metric!r}")
    return part.sort_values("id")


def references(part: pd.DataFrame) -> dict[str, float]:
    """Accuracy of the reference answerers on the same items."""
    prior_pick = np.where(part.prior >= 0, part.prior, 0)
    return {
        "oracle": 1.0,
        "prior_only": float((prior_pick == part.answer).mean()),
        "constant": float((part.answer == 0).mean()),
    }


def aligned(
    runs: Mapping[tuple[str, int], pd.DataFrame],
    a: str,
    b: str,
    metric: str,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correctness of arms ``a`` and ``b`` on the same (seed, probe) items, and the seeds as
    cluster labels."""
    xs, ys, cl = [], [], []
    for seed in sorted({s for (arm, s) in runs if arm == a} & {s for (arm, s) in runs if arm == b}):
        x = items(runs[a, seed], metric, steps).set_index("id").correct
        y = items(runs[b, seed], metric, steps).set_index("id").correct
        common = x.index.intersection(y.index)
        xs.append(x[common].to_numpy(float))
        ys.append(y[common].to_numpy(float))
        cl.append(np.full(len(common), seed))
    if not xs:
        raise ValueError(f"arms {a} and {b} share no seed")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(cl)


def compare(
    runs, a: str, b: str, metric: str, steps: int | None = None, n_boot: int = 2000
) -> dict:
    """Paired difference a - b on one metric, its interval, MDE and verdict."""
    x, y, clusters = aligned(runs, a, b, metric, steps)
    diff = paired_difference(x, y, clusters=clusters, n_boot=n_boot)
    # clustered design: the MDE from the bootstrap standard error, (z_.975 + z_.8) * se
    diff["mde"] = mde(1, sd_diff=diff["se"])
    diff["verdict"] = verdict(diff, diff["mde"])
    diff["a"], diff["b"] = float(x.mean()), float(y.mean())
    seeds = np.unique(clusters)
    if seeds.size >= 2:  # the conservative view: one difference per seed, t over seeds
        per_seed = [x[clusters == s].mean() - y[clusters == s].mean() for s in seeds]
        level = seed_level(per_seed)
        level["verdict"] = verdict(level, level["mde"])
        level["seeds"] = [int(s) for s in seeds]
        diff["seed_level"] = level
    return diff


def arm_table(runs, metric: str, steps: int | None = None) -> dict[str, dict]:
    """Per arm: mean accuracy over seeds and probes (with its seed spread) and the prior-pick
    rate; plus the reference answerers on the first run's items."""
    out: dict[str, dict] = {}
    arms = sorted({arm for arm, _ in runs})
    for arm in arms:
        per_seed = [items(t, metric, steps) for (a, _), t in sorted(runs.items()) if a == arm]
        accs = [float(p.correct.mean()) for p in per_seed if len(p)]
        if not accs:
            continue
        out[arm] = {
            "accuracy": float(np.mean(accs)),
            "seed_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
            "prior_rate": float(np.mean([p.picked_prior.mean() for p in per_seed if len(p)])),
            "n_items": int(np.mean([len(p) for p in per_seed])),
            "n_seeds": len(accs),
        }
    first = next(iter(runs.values()))
    out["references"] = references(items(first, metric, steps))
    return out


def summarise(
    runs: Mapping[tuple[str, int], pd.DataFrame],
    budgets: Sequence[int],
    tokens: Mapping[str, dict] | None = None,
    n_boot: int = 2000,
) -> dict:
    """The summary of one caption-bias value: arm tables, pairwise comparisons (the primary
    metric, and after SFT at the final budget), the SFT curves and the tokens per arm."""
    arms = {arm for arm, _ in runs}
    final = max(budgets)
    pairs = [p for p in PAIRS if set(p) <= arms]
    summary: dict = {
        "arms": sorted(arms),
        "seeds": sorted({s for _, s in runs}),
        "metrics": {
            "conflict": arm_table(runs, "conflict"),
            "sft_iid": arm_table(runs, "sft_iid", final),
            "sft_conflict": arm_table(runs, "sft_conflict", final),
        },
        "comparisons": {
            f"{a} vs {b}": {
                "conflict": compare(runs, a, b, "conflict", n_boot=n_boot),
                "sft_conflict": compare(runs, a, b, "sft_conflict", final, n_boot=n_boot),
                "sft_iid": compare(runs, a, b, "sft_iid", final, n_boot=n_boot),
            }
            for a, b in pairs
        },
        "curves": {
            metric: {
                arm: [
                    {"steps": k, "accuracy": arm_table(runs, metric, k)[arm]["accuracy"]}
                    for k in [0, *budgets]
                ]
                for arm in sorted(arms)
            }
            for metric in ("sft_iid", "sft_conflict")
        },
    }
    if tokens:
        summary["tokens"] = dict(tokens)
    return summary


def bias_effect(study: Mapping) -> dict[str, dict]:
    """Per bias value > 0 (when the study has bias 0), per comparison and metric: the
    difference at that value minus the difference at bias 0, its interval and MDE (see the
    module docstring), and with >= 2 seeds on both sides its seed-level view ("seed_level":
    stats.seed_change). Keys "<bias> - <control>"; empty without a bias-0 run."""
    by_value = {float(b): s for b, s in study.items()}
    if 0.0 not in by_value:
        return {}
    control = by_value[0.0]
    z = stats.norm.ppf(1 - (1 - LEVEL) / 2)
    out: dict[str, dict] = {}
    for b, s in sorted(by_value.items()):
        if b == 0.0:
            continue
        key = f"{b:g} - 0"
        out[key] = {}
        for pair, per_metric in s["comparisons"].items():
            if pair not in control["comparisons"]:
                continue
            out[key][pair] = {}
            for metric, c in per_metric.items():
                c0 = control["comparisons"][pair][metric]
                d = {"diff": c["diff"] - c0["diff"], "se": float(np.hypot(c["se"], c0["se"]))}
                d |= {"lo": d["diff"] - z * d["se"], "hi": d["diff"] + z * d["se"]}
                d["mde"] = mde(1, sd_diff=d["se"])
                d["n_clusters"] = min(c["n_clusters"], c0["n_clusters"])
                d["verdict"] = verdict(d, d["mde"])
                d["at_bias"], d["at_0"] = c["diff"], c0["diff"]
                if "seed_level" in c and "seed_level" in c0:  # Welch over per-seed differences
                    lvl = seed_change(c["seed_level"]["per_seed"], c0["seed_level"]["per_seed"])
                    lvl["verdict"] = verdict(lvl, lvl["mde"])
                    d["seed_level"] = lvl
                out[key][pair][metric] = d
    return out


def seed_cell(lvl: Mapping) -> str:
    """A seed-level view in one table cell: mean difference, interval, MDE and the verdict's
    word (or the verdict itself where the seeds have no spread)."""
    if lvl.get("zero_spread"):
        return lvl["verdict"]
    found = "effect" if lvl["verdict"].startswith("effect detected") else "no effect"
    return (
        f"{lvl['diff']:+.3f} [{lvl['lo']:+.3f}, {lvl['hi']:+.3f}], MDE {lvl['mde']:.3f}: "
        f"{found} detected"
    )


def markdown(
    study: Mapping[str, dict], budget_note: str = "", effects: Mapping | None = None
) -> str:
    """The study report: per bias value, the arm table with references and the comparisons;
    then the change from bias 0 (``effects``: bias_effect(study), computed when not given)."""
    lines = ["# The study: caption bias, verifier-driven RL and imitation", ""]
    if budget_note:
        lines += [budget_note, ""]
    for bias, s in study.items():
        lines += [f"## caption bias {bias}", "", f"Seeds {s['seeds']}; arms {s['arms']}.", ""]
        names = {
            "conflict": "prior-conflict colour, zero-shot, fill-in form (primary)",
            "sft_conflict": "prior-conflict colour after SFT, question form",
            "sft_iid": "iid probes after SFT, question form",
        }
        for metric, title in names.items():
            table = s["metrics"][metric]
            lines += [
                f"### {title}",
                "",
                "| arm | accuracy | seed std | prior rate | items |",
                "|---|---|---|---|---|",
            ]
            for arm in s["arms"]:
                if arm in table:
                    t = table[arm]
                    std = "" if t["seed_std"] is None else f"{t['seed_std']:.3f}"
                    lines.append(
                        f"| {arm} | {t['accuracy']:.3f} | {std} | "
                        f"{t['prior_rate']:.3f} | {t['n_items']} |"
                    )
            for ref, acc in table["references"].items():
                lines.append(f"| ({ref}) | {acc:.3f} | | | |")
            lines.append("")
        lines += [
            "### Paired comparisons (difference a - b, 95% cluster-bootstrap CI over seeds "
            "and probes; seed level: 95% t interval over the per-seed differences)",
            "",
            "| comparison | metric | a | b | difference | verdict | seed level | "
            "seeds for MDE 0.05 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for pair, per_metric in s["comparisons"].items():
            for metric, c in per_metric.items():
                lvl = c.get("seed_level")
                seed_cols = "(one seed) | "
                if lvl:
                    seed_cols = f"{seed_cell(lvl)} | {lvl['seeds_for_target']}"
                lines.append(
                    f"| {pair} | {metric} | {c['a']:.3f} | {c['b']:.3f} | "
                    f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] | "
                    f"{c['verdict']} | {seed_cols} |"
                )
        lines.append("")
        if "tokens" in s:
            lines += [
                "### Compute per arm (one run)",
                "",
                "| arm | tokens forwarded | tokens backpropagated | tokens generated |",
                "|---|---|---|---|",
            ]
            for arm, t in s["tokens"].items():
                lines.append(
                    f"| {arm} | {t.get('forward', 0):,.0f} | "
                    f"{t.get('backward', 0):,.0f} | {t.get('generated', 0):,.0f} |"
                )
            lines.append("")
    effects = bias_effect(study) if effects is None else effects
    if effects:
        lines += [
            "## Does the difference need the bias? (difference at the bias minus at bias 0)",
            "",
            "Normal 95% interval from the two bootstrap standard errors (separate trainings); "
            "seed level: Welch's 95% t interval over the two sets of per-seed differences.",
            "",
            "| biases | comparison | metric | at the bias | at 0 | change | verdict | seed level |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, per_pair in effects.items():
            for pair, per_metric in per_pair.items():
                for metric, d in per_metric.items():
                    lvl = d.get("seed_level")
                    seed_col = seed_cell(lvl) if lvl else "(< 2 seeds on a side)"
                    lines.append(
                        f"| {key} | {pair} | {metric} | {d['at_bias']:+.3f} | "
                        f"{d['at_0']:+.3f} | {d['diff']:+.3f} [{d['lo']:+.3f}, "
                        f"{d['hi']:+.3f}] | {d['verdict']} | {seed_col} |"
                    )
        lines.append("")
    return "\n".join(lines) + "\n"


def plots(study: Mapping[str, dict], out: str | Path) -> list[Path]:
    """curves.png (accuracy vs SFT steps per arm, per bias and metric) and forest.png (the
    paired differences with their intervals)."""
    from mmrpt.report.plots import forest, sft_curves

    out = Path(out)
    return [sft_curves(study, out / "curves.png"), forest(study, out / "forest.png")]
