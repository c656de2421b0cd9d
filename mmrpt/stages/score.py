"""Stage `score` (one worker, ``--worker w`` of score.workers): per-sentence visual dependency
of the worker's share of the captions; `score_merge` joins the workers' shards.

The corpus (score.splits) is cut in shards of score.shard_size records; worker w scores the
shards mmrpt.scoring.shards assigns it, and each of its launch.num_processes processes a
share of those. A finished shard is a parquet file (written to a temp name, then renamed) in
the worker's folder, so a killed run resumes at the first missing shard; shards are kept
when only the reporting params or the number of workers or processes change.
Columns: split, sample_id, sentence, start, end, label, n_tokens, d_vis (the chosen layers),
peak_start/peak_end (the most visually attended word), d_cf (counterfactual, if enabled).
D_vis averages the (layer, head) pairs `score_heads` chose (its heads.json, an input).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmrpt import distributed, tracking
from mmrpt.config import Params
from mmrpt.contract import StageContext
from mmrpt.data.records import Record, read_manifest
from mmrpt.images import open_rgb
from mmrpt.io import write_json_atomic, write_parquet_atomic
from mmrpt.modeling.loader import image_token_id, load_vlm
from mmrpt.progress import bar
from mmrpt.scoring import shards as plan
from mmrpt.scoring.attention import capture
from mmrpt.scoring.sentences import attention_scores, counterfactual_scores, token_counts
from mmrpt.stages.common import require_splits, work_dir
from mmrpt.training import device, seed_everything

log = logging.getLogger(__name__)


def record_inputs(records: list[Record], root: Path):
    """The images, captions and sentence spans of ``records``."""
    images = [open_rgb(root / r.image) for r in records]
    spans = [[(s.start, s.end) for s in r.sentences] for r in records]
    return images, [r.caption for r in records], spans


def score_records(
    model,
    processor,
    records: list[Record],
    root: Path,
    params: Params,
    heads: dict[int, list[int]],
    split: str,
) -> pd.DataFrame:
    """The score table rows of ``records``: D_vis over the chosen (layer, head) pairs."""
    sp = params.score
    images, captions, spans = record_inputs(records, root)
    tid = image_token_id(model)
    att = []
    for i in range(0, len(records), sp.batch_size):
        j = slice(i, i + sp.batch_size)
        with capture(model, sorted(heads), heads) as cap:
            att += attention_scores(
                model,
                processor,
                cap,
                images[j],
                captions[j],
                spans[j],
                params.warmup.prompt,
                tid,
                sp.text_keys,
            )
    cf = None
    if sp.counterfactual and (split != "train" or sp.counterfactual_train):
        n = len(images)
        others = [[images[(i + k) % n] for i in range(n)] for k in range(1, sp.replacements + 1)]
        cf = counterfactual_scores(
            model,
            processor,
            images,
            others,
            captions,
            spans,
            params.warmup.prompt,
            sp.batch_size,
            reduce=sp.counterfactual_reduce,
        )
    counts = token_counts(processor, captions, spans)
    weights = np.array([len(heads[layer]) for layer in sorted(heads)], dtype=float)
    rows = []
    for i, r in enumerate(records):
        scores, peaks = att[i]  # scores: (layers, sentences), each a mean over its heads
        for s, sent in enumerate(r.sentences):
            d_vis = float(weights @ scores[:, s] / weights.sum()) if counts[i][s] else np.nan
            rows.append(
                {
                    "split": split,
                    "sample_id": r.id,
                    "sentence": s,
                    "start": sent.start,
                    "end": sent.end,
                    "label": sent.label,
                    "n_tokens": int(counts[i][s]),
                    "d_vis": d_vis,
                    "peak_start": peaks[s][0],
                    "peak_end": peaks[s][1],
                    "d_cf": float(cf[i][s]) if cf is not None else np.nan,
                }
            )
    df = pd.DataFrame(rows)
    df["label"] = df["label"].astype("Int8")
    return df


def preflight(ctx: StageContext) -> None:
    require_splits(ctx.dep("data"), "score.splits", ctx.params.score.splits)


def run(ctx: StageContext) -> dict:
    params = ctx.params
    sp = params.score
    worker, workers = ctx.worker, len(sp.workers)
    rank, procs = distributed.rank(), distributed.world_size()
    seed_everything(params.seed)
    root = ctx.dep("data")
    heads = {int(k): v for k, v in json.loads(ctx.dep("heads").read_text())["heads"].items()}
    model, processor = load_vlm(
        ctx.dep("model"), dtype=torch.float32, trust_remote_code=params.model.trust_remote_code
    )
    model.to(device()).eval()
    with tracking.stage_run(ctx):
        # every worker's folder has the same fingerprint (their shards are interchangeable);
        # the heads are an input (heads.json)
        folder = work_dir(ctx.out("shards"), ctx.fingerprint(run=False))
        manifests = {split: read_manifest(root / f"{split}.jsonl") for split in sp.splits}
        corpus = plan.plan([(s, len(r)) for s, r in manifests.items()], sp.shard_size)
        mine = plan.share(corpus, worker, workers, rank, procs)
        t0, scored = time.perf_counter(), 0
        for shard in bar(mine, desc=f"score worker {worker}.{rank}", unit="shard"):
            path = folder / shard.name
            if not path.exists():
                records = manifests[shard.split][shard.start : shard.stop]
                df = score_records(model, processor, records, root, params, heads, shard.split)
                write_parquet_atomic(path, df)
                scored += shard.stop - shard.start
        seconds = time.perf_counter() - t0
        distributed.barrier()
        scored = distributed.all_sum(scored)
        if not distributed.is_main():
            return {}
        owned = plan.share(corpus, worker, workers)
        names = {s.name for s in owned}
        listed = {s.name for s in corpus}
        for stale in folder.glob("*.parquet"):  # shards of another division of the work
            if stale.name in listed and stale.name not in names:  # (other splits' stay)
                stale.unlink()
        done = {
            "worker": worker,
            "num_workers": workers,
            "num_shards": len(corpus),
            "shards": {str(s.index): s.name for s in owned},
        }
        write_json_atomic(folder / plan.DONE, done)
        metrics = {
            "worker": worker,
            "num_workers": workers,
            "num_processes": procs,
            "shards": len(owned),
            "records": sum(s.stop - s.start for s in owned),
            "records_scored": scored,
        }
        tracking.log_metrics(metrics | {"seconds": seconds})
    write_json_atomic(ctx.table_path("worker"), metrics)
    log.info("score worker %d: %s", worker, metrics)
    return metrics
