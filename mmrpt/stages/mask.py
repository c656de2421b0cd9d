"""Stage `mask`: choose the caption parts to hide and write the masked samples.

Reads the score table, applies the selector and threshold of params.mask, and writes
``<out_dir>/<split>.jsonl`` (one MaskedSample per line, with the RL/SFT prompt and the
reference answer) plus an HTML gallery. Captions where nothing qualifies, or that are too
short to hide anything, are counted in metrics/mask.json, not dropped silently: they are listed
in ``<out_dir>/skipped.jsonl`` with the reason.
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.data.records import read_manifest
from mmrpt.data.world import colour_span
from mmrpt.io import write_json_atomic, write_jsonl_atomic
from mmrpt.masking.samples import MaskedSample, write_samples
from mmrpt.masking.select import caption_tau, select_by_label, select_by_score, select_random
from mmrpt.report.gallery import masked_gallery
from mmrpt.safety import empty_owned
from mmrpt.stages.common import require_splits

log = logging.getLogger(__name__)


def mask_split(
    records,
    by_id,
    mp,
    selector: str,
    column: str,
    corpus_tau: float,
    rng: np.random.Generator,
    split: str,
):
    """Masked samples of one split with one selector (``mp``: the mask params), plus the
    skipped ids with reasons."""
    samples, skipped = [], []
    for r in records:
        g = by_id.get(r.id)
        if g is None:
            skipped.append({"split": split, "id": r.id, "reason": "no scores"})
            continue
        if len(r.sentences) < 2:
            skipped.append({"split": split, "id": r.id, "reason": "fewer than 2 sentences"})
            continue
        scores = g[column].to_numpy(dtype=float)
        labels = [s.label for s in r.sentences]
        if mp.granularity == "attribute":  # only sentences that carry the attribute qualify
            attr = [colour_span(r.sentence_text(i)) for i in range(len(r.sentences))]
            scores = np.where([a is not None for a in attr], scores, np.nan)
            labels = [lab if a is not None else 0 for lab, a in zip(labels, attr, strict=True)]
        tau = caption_tau(scores, mp.k) if mp.threshold == "mean_std" else corpus_tau
        by_score = select_by_score(scores, tau, mp.max_masks)
        if selector == "random":
            candidates = (
                [i for i, a in enumerate(attr) if a is not None]
                if mp.granularity == "attribute"
                else list(range(len(scores)))
            )
            pick = select_random(len(candidates), max(len(by_score), 1), rng)
            chosen = sorted(candidates[i] for i in pick)
        elif selector == "label":
            chosen = select_by_label(labels, mp.max_masks, rng)
        else:
            chosen = by_score
        if not chosen:
            skipped.append({"split": split, "id": r.id, "reason": "no sentence qualifies"})
            continue
        if mp.granularity == "span":
            spans = [(int(g.peak_start.iloc[i]), int(g.peak_end.iloc[i])) for i in chosen]
        elif mp.granularity == "attribute":
            spans = [
                (r.sentences[i].start + attr[i][0], r.sentences[i].start + attr[i][1])
                for i in chosen
            ]
        else:
            spans = [(r.sentences[i].start, r.sentences[i].end) for i in chosen]
        mentions = colour_mentions(r.caption, spans) if mp.hide_mentions else []
        samples.append(
            MaskedSample.build(
                r,
                spans,
                chosen,
                [scores[i] for i in chosen],
                mp.instruction,
                think=mp.think,
                mentions=mentions,
            )
        )
    return samples, skipped


def colour_mentions(caption: str, spans: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Every other "<colour> <shape>" in ``caption`` with the colour and the following shape
    word of a hidden colour span, as (start, end, blank index) of the colour word: hidden with
    that blank's placeholder (mask.hide_mentions), so the caption's text cannot give it away.
    A span that overlaps another blank stays visible (mask_caption refuses overlaps)."""
    out: dict[tuple[int, int], int] = {}
    order = sorted(spans)
    for i, (a, b) in enumerate(order):
        shape = caption[b:].split(maxsplit=1)[0].strip(".,;")
        for m in re.finditer(rf"\b{re.escape(caption[a:b])}(?= {re.escape(shape)}\b)", caption):
            span = (m.start(), m.end())
            if not any(span[0] < y and x < span[1] for x, y in order):
                out.setdefault(span, i)  # a mention of two blanks' words: the first's
    return [(a, b, i) for (a, b), i in sorted(out.items())]


def run(ctx: StageContext) -> dict:
    mp = ctx.params.mask
    root = ctx.dep("data")
    require_splits(root, "mask.splits", mp.splits)
    table = pd.read_parquet(ctx.dep("scores"))
    unscored = [s for s in mp.splits if s not in set(table.split)]
    if unscored:
        raise ParamsError(
            f"mask.splits: {unscored} were not scored; add them to score.splits "
            "(or leave both null: every split of the data)"
        )
    if "label" in mp.selectors and table.label.isna().all():
        raise ParamsError(
            "mask.selectors: the label oracle needs ground-truth labels and the data has none"
        )
    out = empty_owned(ctx.out("masks"))  # no selector or split of earlier params survives
    metrics: dict = {}
    with tracking.stage_run(ctx):
        for selector in mp.selectors:
            column = "d_cf" if selector == "counterfactual" else "d_vis"
            if column == "d_cf" and table[column].isna().all():
                raise ValueError("mask selector counterfactual needs score.counterfactual=true")
            train = table.split == "train"
            corpus_tau = float(
                np.nanquantile(
                    table.loc[train, column] if train.any() else table[column], mp.quantile
                )
            )
            rng = np.random.default_rng(ctx.params.seed)
            skipped_all: list[dict] = []
            for split in mp.splits:
                records = read_manifest(root / f"{split}.jsonl")
                by_id = {
                    sid: g.sort_values("sentence")
                    for sid, g in table[table.split == split].groupby("sample_id")
                }
                samples, skipped = mask_split(
                    records, by_id, mp, selector, column, corpus_tau, rng, split
                )
                assert len(records) == len(samples) + len(skipped)  # nothing silently lost
                skipped_all += skipped
                write_samples(out / selector / f"{split}.jsonl", samples)
                reasons = {
                    reason: sum(s["reason"] == reason for s in skipped)
                    for reason in ("no scores", "fewer than 2 sentences", "no sentence qualifies")
                }
                key = f"{selector}/{split}"
                metrics |= {
                    f"{key}/n_records": len(records),
                    f"{key}/n_masked": len(samples),
                    f"{key}/n_no_mask": reasons["no sentence qualifies"],
                    f"{key}/n_too_short": reasons["fewer than 2 sentences"],
                    f"{key}/n_unscored": reasons["no scores"],
                    f"{key}/masks_per_sample": float(np.mean([len(s.targets) for s in samples]))
                    if samples
                    else 0.0,
                }
                labels = [lab for s in samples for lab in s.labels if lab is not None]
                if labels:
                    all_dep = sum(s.label == 1 for r in records for s in r.sentences)
                    metrics[f"{key}/precision"] = float(np.mean(np.array(labels) == 1))
                    metrics[f"{key}/recall"] = float(sum(np.array(labels) == 1) / max(all_dep, 1))
                if split == mp.splits[0] and mp.gallery_samples:
                    gallery = masked_gallery(
                        samples[: mp.gallery_samples],
                        root,
                        out / selector / "gallery.html",
                        f"masked samples ({split}, selector={selector})",
                    )
                    tracking.log_artifact(gallery, f"gallery/{selector}")
            write_jsonl_atomic(out / selector / "skipped.jsonl", skipped_all)
        tracking.log_metrics(metrics)
    write_json_atomic(ctx.metrics_path(), metrics)
    log.info("mask: %s", {k: v for k, v in metrics.items() if "train/" in k})
    return metrics
