"""How much could GRPO sharpen a fill-in policy? pass@k of its sampled answers vs greedy.

GRPO only raises the probability of answers the policy already samples: a blank it never gets
right in k rollouts gives no signal, and a blank it gets right greedily has nothing to gain.
So, per blank of held-out masked samples, greedy exact match against pass@k of ``n`` samples
at the rollout temperature (the unbiased estimator of Chen et al. 2021: 1 - C(n-c, k)/C(n, k)
with c of n samples right) measures the room a run has, and where the room is (blanks whose
sentence needs the image, label 1, vs the rest). Ours because the pass@k helpers in lm-eval and
evaluate belong to code-execution metrics (they run the completions as programs).

    python -m mmrpt passk --model models/primer --samples data/masked/attention/dev.jsonl
    python -m mmrpt passk --model models/rl/mmrpt-0 --baseline models/primer --samples ...

``--baseline`` adds the paired comparison of greedy exact match per sample (the rl stage's
metric: each sample's mean over its blanks), with its standard error.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from pathlib import Path

import numpy as np
import torch

from mmrpt.generation import generate
from mmrpt.images import open_rgb
from mmrpt.masking.samples import MaskedSample, read_samples
from mmrpt.rl.rewards import blank_hits, exact_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k of the n samples (drawn without replacement) is
    right, when c of them are."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def headroom(
    model,
    processor,
    samples: Sequence[MaskedSample],
    images: Sequence,
    n: int = 16,
    temperature: float = 0.8,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
    max_new_tokens: int = 96,
    batch_size: int = 8,
) -> tuple[dict, list[str]]:
    """Greedy exact match and pass@k per blank of the model's answers (see summarise), and
    its greedy completions (for a paired comparison)."""
    prompts = [s.prompt for s in samples]
    greedy = generate(model, processor, images, prompts, max_new_tokens, 32)
    sampled = generate(
        model,
        processor,
        images,
        prompts,
        max_new_tokens,
        batch_size,
        temperature=temperature,
        num_samples=n,
        progress=True,
    )
    return (
        {
            "samples": len(samples),
            "n": n,
            "temperature": temperature,
            **summarise(samples, greedy, sampled, n, ks),
        },
        greedy,
    )


def summarise(
    samples: Sequence[MaskedSample],
    greedy: Sequence,
    sampled: Sequence,
    n: int,
    ks: Sequence[int] = (1, 2, 4, 8, 16),
) -> dict:
    """Per blank: greedy right?, how many of its prompt's n samples (``sampled[j*n:(j+1)*n]``)
    right; summarised overall and by label when samples have ``labels`` (1 = the sentence needs
    the image). greedy_wrong_reachable: share of greedy-wrong blanks some sample gets right."""
    if len(greedy) != len(samples) or len(sampled) != n * len(samples):
        raise ValueError(f"need one greedy and {n} sampled completions per sample")
    ks = sorted({k for k in ks if k <= n} | {n})
    rows = []  # (label, greedy right, right of n)
    for j, s in enumerate(samples):
        g = blank_hits(greedy[j], s.targets, s.think)
        right = np.sum(
            [blank_hits(c, s.targets, s.think) for c in sampled[j * n : (j + 1) * n]],
            axis=0,
            dtype=int,
        )
        labels = s.labels or [None] * len(s.targets)
        rows += [(label, hit, int(c)) for label, hit, c in zip(labels, g, right, strict=True)]

    def part(rs):
        wrong = [c for _, g, c in rs if not g]
        return {
            "blanks": len(rs),
            "greedy_exact_match": float(np.mean([g for _, g, _ in rs])),
            "sampled_exact_match": float(np.mean([c / n for *_, c in rs])),
            **{f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for *_, c in rs])) for k in ks},
            "greedy_wrong": len(wrong),
            "greedy_wrong_reachable": float(np.mean([c > 0 for c in wrong]))
            if wrong
            else float("nan"),
        }

    out = {"all": part(rows)}
    for label in sorted({r[0] for r in rows if r[0] is not None}):
        out[f"label_{label}"] = part([r for r in rows if r[0] == label])
    return out


def paired(scores: Sequence[float], baseline: Sequence[float]) -> dict:
    """Per-sample exact match of a model against a baseline on the same samples: the mean
    difference with its standard error, and how many samples got better or worse."""
    a, b = np.asarray(scores, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError("need the same two or more samples for both models")
    d = a - b
    return {
        "exact_match": float(a.mean()),
        "baseline_exact_match": float(b.mean()),
        "difference": float(d.mean()),
        "stderr": float(d.std(ddof=1) / np.sqrt(d.size)),
        "better": int((d > 0).sum()),
        "worse": int((d < 0).sum()),
    }


def run_passk(
    model_path: str,
    samples_path: str,
    root: str = "data/world",
    *,
    n: int = 16,
    temperature: float = 0.8,
    max_new_tokens: int = 96,
    limit: int = 300,
    seed: int = 0,
    baseline: str | None = None,
) -> dict:
    """pass@k of the model at ``model_path`` on the first ``limit`` samples of
    ``samples_path`` (see headroom), and with ``baseline`` the paired greedy comparison."""
    from mmrpt.modeling.loader import CheckpointError, load_vlm
    from mmrpt.training import device

    for path in filter(None, (model_path, baseline)):
        if not Path(path).is_dir():
            raise CheckpointError(f"{path}: not a model folder")
    samples = read_samples(samples_path)[:limit]
    if not samples or (baseline and len(samples) < 2):
        raise ValueError(f"{samples_path}: {len(samples)} samples (need 1, or 2 with a baseline)")
    model, processor = load_vlm(model_path, dtype=torch.float32)
    base = baseline and load_vlm(baseline, dtype=torch.float32)
    images = [open_rgb(Path(root) / s.image) for s in samples]
    torch.manual_seed(seed)
    summary, greedy = headroom(
        model.to(device()),
        processor,
        samples,
        images,
        n,
        temperature,
        max_new_tokens=max_new_tokens,
    )
    result = {"model": model_path, "samples_file": samples_path, **summary}
    if base:
        base_greedy = generate(
            base[0].to(device()), base[1], images, [s.prompt for s in samples], max_new_tokens, 32
        )
        targets, thinks = [s.targets for s in samples], [s.think for s in samples]
        result["paired"] = {
            "baseline": baseline,
            **paired(
                exact_reward(greedy, targets, thinks), exact_reward(base_greedy, targets, thinks)
            ),
        }
    return result
