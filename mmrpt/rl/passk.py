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

import argparse
import json
import sys
from collections.abc import Sequence
from math import comb
from pathlib import Path

import numpy as np
import torch

from mmrpt.pretrain.warmup import open_rgb
from mmrpt.rl.fillin import generate, read_samples
from mmrpt.rl.rewards import blank_hits, exact_reward


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k of the n samples (drawn without replacement) is
    right, when c of them are."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    return 1.0 - comb(n - c, k) / comb(n, k)


def headroom(model, processor, samples: Sequence[dict], images: Sequence, n: int = 16,
             temperature: float = 0.8, ks: Sequence[int] = (1, 2, 4, 8, 16),
             max_new_tokens: int = 96, batch_size: int = 8) -> tuple[dict, list[str]]:
    """Greedy exact match and pass@k per blank of the model's answers (see summarise), and
    its greedy completions (for a paired comparison)."""
    prompts = [s["prompt"] for s in samples]
    greedy = generate(model, processor, images, prompts, max_new_tokens, 32)
    sampled = generate(model, processor, images, prompts, max_new_tokens, batch_size,
                       temperature=temperature, num_samples=n, progress=True)
    return ({"samples": len(samples), "n": n, "temperature": temperature,
             **summarise(samples, greedy, sampled, n, ks)}, greedy)


def summarise(samples: Sequence[dict], greedy: Sequence, sampled: Sequence, n: int,
              ks: Sequence[int] = (1, 2, 4, 8, 16)) -> dict:
    """Per blank: greedy right?, how many of its prompt's n samples (``sampled[j*n:(j+1)*n]``)
    right; summarised overall and by label when samples have ``labels`` (1 = the sentence needs
    the image). greedy_wrong_reachable: share of greedy-wrong blanks some sample gets right."""
    if len(greedy) != len(samples) or len(sampled) != n * len(samples):
        raise ValueError(f"need one greedy and {n} sampled completions per sample")
    ks = sorted({k for k in ks if k <= n} | {n})
    rows = []  # (label, greedy right, right of n)
    for j, s in enumerate(samples):
        g = blank_hits(greedy[j], s["targets"])
        right = np.sum([blank_hits(c, s["targets"]) for c in sampled[j * n:(j + 1) * n]],
                       axis=0, dtype=int)
        labels = s.get("labels") or [None] * len(s["targets"])
        rows += [(label, hit, int(c)) for label, hit, c in zip(labels, g, right, strict=True)]

    def part(rs):
        wrong = [c for _, g, c in rs if not g]
        return {"blanks": len(rs),
                "greedy_exact_match": float(np.mean([g for _, g, _ in rs])),
                "sampled_exact_match": float(np.mean([c / n for *_, c in rs])),
                **{f"pass@{k}": float(np.mean([pass_at_k(n, c, k) for *_, c in rs]))
                   for k in ks},
                "greedy_wrong": len(wrong),
                "greedy_wrong_reachable": float(np.mean([c > 0 for c in wrong])) if wrong
                else float("nan")}

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
    return {"exact_match": float(a.mean()), "baseline_exact_match": float(b.mean()),
            "difference": float(d.mean()), "stderr": float(d.std(ddof=1) / np.sqrt(d.size)),
            "better": int((d > 0).sum()), "worse": int((d < 0).sum())}


def main(argv: list[str] | None = None) -> int:
    from mmrpt.modeling.loader import CheckpointError, load_vlm
    from mmrpt.stages.common import device

    parser = argparse.ArgumentParser(prog="mmrpt passk", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True,
                        help="a local fill-in model folder (primer, an rl arm)")
    parser.add_argument("--samples", required=True, help="masked samples (.jsonl)")
    parser.add_argument("--root", default="data/world", help="image root (default: %(default)s)")
    parser.add_argument("-n", type=int, default=16, help="samples per prompt (default: 16)")
    parser.add_argument("-T", "--temperature", type=float, default=0.8,
                        help="sampling temperature (default: 0.8, params.yaml rl.temperature)")
    parser.add_argument("--max-new-tokens", type=int, default=96,
                        help="greedy and sampled alike (default: 96, as the rl stage's eval)")
    parser.add_argument("--limit", type=int, default=300, help="first N samples (default: 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline", help="also compare greedy exact match per sample with "
                        "this model folder (e.g. the primer an arm started from)")
    parser.add_argument("--out", help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    if min(args.n, args.max_new_tokens, args.limit) < 1 or args.temperature <= 0:
        parser.error("-n, --temperature, --max-new-tokens and --limit must be positive")

    def fail(message) -> int:
        print(f"mmrpt passk: {message}", file=sys.stderr)
        return 2

    try:
        for path in filter(None, (args.model, args.baseline)):
            if not Path(path).is_dir():
                raise CheckpointError(f"{path}: not a model folder")
        samples = read_samples(args.samples)[: args.limit]
        if not samples or (args.baseline and len(samples) < 2):
            return fail(f"{args.samples}: {len(samples)} samples (need 1, or 2 with --baseline)")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        model, processor = load_vlm(args.model, dtype=torch.float32)
        base = args.baseline and load_vlm(args.baseline, dtype=torch.float32)
        images = [open_rgb(Path(args.root) / s["image"]) for s in samples]
        torch.manual_seed(args.seed)
        summary, greedy = headroom(model.to(device()), processor, samples, images, args.n,
                                   args.temperature, max_new_tokens=args.max_new_tokens)
        result = {"model": args.model, "samples_file": args.samples, **summary}
        if base:
            base_greedy = generate(base[0].to(device()), base[1], images,
                                   [s["prompt"] for s in samples], args.max_new_tokens, 32)
            targets = [s["targets"] for s in samples]
            result["paired"] = {"baseline": args.baseline,
                                **paired(exact_reward(greedy, targets),
                                         exact_reward(base_greedy, targets))}
    except (OSError, KeyError, ValueError, CheckpointError) as e:  # unreadable input
        return fail(f"{type(e).__name__}: {e}")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0
