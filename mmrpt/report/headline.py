"""The headline numbers of one run: the few keys every DVC metrics file shares, so
`dvc metrics show` (and `dvc exp show`) is one narrow table with a row per run.

From a run's evaluation (metrics/eval/<run>.json, keys "<phase>/<harness>/<split>/acc"):
masked-span exact match on the first held-out split, zero-shot probe accuracy (iid and
counter-prior, lm-eval's caption-form scoring) and vision reliance, and after-SFT question
answering (VLMEvalKit). Real benchmarks add one key each: ``sft_<name>`` (after SFT).
"""

from __future__ import annotations

PROBES = {
    "conflict_acc": "zero_shot/conflict_acc",  # the study's primary numbers (eval.outcomes)
    "prior_rate": "zero_shot/prior_rate",
    "iid_acc": "zero_shot/lmeval/iid/acc",
    "counter_acc": "zero_shot/lmeval/counter/acc",
    "reliance": "zero_shot/lmeval/counter/reliance",
    "sft_iid_acc": "sft/vlmeval/iid/acc",
    "sft_counter_acc": "sft/vlmeval/counter/acc",
}
PROBE_SPLITS = ("iid", "counter", "iid_blank", "counter_blank")


def run_headline(metrics: dict) -> dict[str, float]:
    """The headline of one run from its evaluation metrics (absent numbers are left out)."""
    out: dict[str, float] = {}
    masked = sorted(k for k in metrics if k.startswith("zero_shot/masked_em/"))
    if masked:
        out["masked_em"] = metrics[masked[0]]
    out |= {k: metrics[v] for k, v in PROBES.items() if v in metrics}
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if (
            len(parts) == 4
            and parts[:2] == ["sft", "vlmeval"]
            and parts[3] == "acc"
            and parts[2] not in PROBE_SPLITS
            and not parts[2].endswith("_blank")
        ):
            out[f"sft_{parts[2].lower()}"] = value
    return {k: round(float(v), 4) for k, v in out.items()}
