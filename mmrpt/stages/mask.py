"""Stage `mask`: choose the caption parts to hide and write the masked samples.

Reads the score table, applies the selector and threshold of params.mask, and writes
``<out_dir>/<split>.jsonl`` (one MaskedSample per line, with the RL/SFT prompt and the
reference answer) plus an HTML gallery. Captions where nothing qualifies, or that are too
short to hide anything, are counted in metrics/mask.json, not dropped silently: they are listed
in ``<out_dir>/skipped.jsonl`` with the reason.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mmrpt import tracking
from mmrpt.config import Params
from mmrpt.data.records import read_manifest, write_jsonl_atomic
from mmrpt.masking.select import (
    MaskedSample,
    caption_tau,
    format_answer,
    mask_caption,
    select_by_label,
    select_by_score,
    select_random,
)
from mmrpt.report.gallery import masked_gallery
from mmrpt.stages.common import write_metrics

log = logging.getLogger(__name__)


def run(params: Params) -> dict:
    mp = params.mask
    root = Path(params.data.out_dir)
    out = Path(mp.out_dir)
    table = pd.read_parquet(Path(params.score.out_dir) / "scores.parquet")
    column = "d_cf" if mp.selector == "counterfactual" else "d_vis"
    if column == "d_cf" and table[column].isna().all():
        raise ValueError("mask.selector=counterfactual needs score.counterfactual=true")
    corpus_tau = float(np.nanquantile(table.loc[table.split == "train", column]
                                      if (table.split == "train").any() else table[column],
                                      mp.quantile))
    rng = np.random.default_rng(params.seed)
    metrics: dict = {}
    skipped: list[str] = []
    with tracking.stage_run("mask", params):
        for split in mp.splits:
            records = read_manifest(root / f"{split}.jsonl")
            by_id = {sid: g.sort_values("sentence") for sid, g in
                     table[table.split == split].groupby("sample_id")}
            samples, n_none, n_short, n_unscored = [], 0, 0, 0
            for r in records:
                g = by_id.get(r.id)
                if g is None:
                    n_unscored += 1
                    skipped.append(json.dumps({"split": split, "id": r.id, "reason": "no scores"}))
                    continue
                scores = g[column].to_numpy(dtype=float)
                if len(r.sentences) < 2:
                    n_short += 1
                    skipped.append(json.dumps({"split": split, "id": r.id,
                                               "reason": "fewer than 2 sentences"}))
                    continue
                tau = caption_tau(scores, mp.k) if mp.threshold == "mean_std" else corpus_tau
                by_score = select_by_score(scores, tau, mp.max_masks)
                if mp.selector == "random":
                    chosen = select_random(len(scores), max(len(by_score), 1), rng)
                elif mp.selector == "label":
                    chosen = select_by_label([s.label for s in r.sentences], mp.max_masks, rng)
                else:
                    chosen = by_score
                if not chosen:
                    n_none += 1
                    skipped.append(json.dumps({"split": split, "id": r.id,
                                               "reason": "no sentence qualifies"}))
                    continue
                if mp.granularity == "span":
                    spans = [(int(g.peak_start.iloc[i]), int(g.peak_end.iloc[i])) for i in chosen]
                else:
                    spans = [(r.sentences[i].start, r.sentences[i].end) for i in chosen]
                masked, targets = mask_caption(r.caption, spans)
                samples.append(MaskedSample(
                    id=r.id, image=r.image, caption=r.caption, masked_caption=masked,
                    targets=targets, spans=spans, sentences=chosen,
                    labels=[r.sentences[i].label for i in chosen],
                    scores=[float(scores[i]) for i in chosen], meta=r.meta).to_dict()
                    | {"prompt": f"{mp.instruction}\nCaption: {masked}",
                       "answer": format_answer(targets)})
            lines = (json.dumps(s, ensure_ascii=False) for s in samples)
            write_jsonl_atomic(out / f"{split}.jsonl", lines)
            labels = [lab for s in samples for lab in s["labels"] if lab is not None]
            all_dep = sum(s.label == 1 for r in records for s in r.sentences)
            metrics |= {
                f"{split}/n_records": len(records), f"{split}/n_masked": len(samples),
                f"{split}/n_no_mask": n_none, f"{split}/n_too_short": n_short,
                f"{split}/n_unscored": n_unscored,
                f"{split}/masks_per_sample": float(np.mean([len(s["targets"]) for s in samples]))
                if samples else 0.0,
            }
            if labels:
                metrics[f"{split}/precision"] = float(np.mean(np.array(labels) == 1))
                metrics[f"{split}/recall"] = float(sum(np.array(labels) == 1) / max(all_dep, 1))
            assert len(records) == len(samples) + n_none + n_short + n_unscored
            if split == mp.splits[0] and mp.gallery_samples:
                gallery = masked_gallery(samples[: mp.gallery_samples], root,
                                         out / "gallery.html",
                                         f"masked samples ({split}, selector={mp.selector})")
                tracking.log_artifact(gallery, "gallery")
        write_jsonl_atomic(out / "skipped.jsonl", skipped)
        tracking.log_metrics(metrics)
    write_metrics("mask", metrics)
    log.info("mask: %s", metrics)
    return metrics
