"""Stage `score` (one worker, ``--worker w`` of score.workers): per-sentence visual dependency
of the worker's share of the captions; `score_merge` joins the workers' shards.

The corpus (score.splits) is cut in shards of score.shard_size records; worker w scores the
shards mmrpt.scoring.shards assigns it, and each of its launch.num_processes processes a
share of those. A finished shard is a parquet file (written to a temp name, then renamed) in
the worker's folder, so a killed run resumes at the first missing shard; shards are kept
when only the reporting params or the number of workers or processes change.
Columns: split, sample_id, sentence, start, end, label, n_tokens, d_vis (the chosen layers),
peak_start/peak_end (the most visually attended word), d_cf (counterfactual, if enabled).
Diagnostics (main process; on every worker when heads are chosen on dev, so all choose the
same heads): per-layer and per-head AUROC on the diagnostic and report splits, in the
worker's diagnostics.json (score_merge reports worker 0's).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mmrpt import distributed, tracking
from mmrpt.config import Params, ParamsError
from mmrpt.contract import StageContext
from mmrpt.data.records import Record, read_manifest
from mmrpt.images import open_rgb
from mmrpt.io import write_json_atomic, write_parquet_atomic
from mmrpt.modeling.loader import image_token_id, load_vlm
from mmrpt.scoring import shards as plan
from mmrpt.scoring.attention import capture, text_decoder_layers
from mmrpt.scoring.layers import auroc, band_layers
from mmrpt.scoring.sentences import attention_scores, counterfactual_scores, token_counts
from mmrpt.stages.common import work_dir
from mmrpt.training import device, seed_everything

log = logging.getLogger(__name__)


def _inputs(records: list[Record], root: Path):
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
    images, captions, spans = _inputs(records, root)
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


def head_scores(model, processor, records, root, params: Params) -> tuple[np.ndarray, list]:
    """Diagnostic pass over every (layer, head): sentence D_vis (layers, heads, sentences)
    and the sentences' labels."""
    sp = params.score
    cfg = model.config.get_text_config()
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    images, captions, spans = _inputs(records, root)
    out = []
    for i in range(0, len(records), sp.batch_size):
        j = slice(i, i + sp.batch_size)
        with capture(model, list(range(n_layers)), per_head=True) as cap:
            out += [
                a
                for a, _ in attention_scores(
                    model,
                    processor,
                    cap,
                    images[j],
                    captions[j],
                    spans[j],
                    params.warmup.prompt,
                    image_token_id(model),
                    sp.text_keys,
                )
            ]
    labels = [s.label for r in records for s in r.sentences]
    return np.concatenate(out, axis=1).reshape(n_layers, n_heads, -1), labels


def check_heads(params: Params, n_layers: int, n_heads: int) -> None:
    """score.layers / score.heads must index the loaded model: checked before any work (the
    depth is only known once the model is, e.g. for model.path)."""
    for key, given, n, what in (
        ("score.layers", params.score.layers, n_layers, "layers"),
        ("score.heads", params.score.heads, n_heads, "heads per layer"),
    ):
        if given is not None and (not given or not all(0 <= i < n for i in given)):
            raise ParamsError(
                f"{key}={given} out of range: the model has {n} {what} (indices 0..{n - 1})"
            )


def choose_heads(
    params: Params,
    n_layers: int,
    n_heads: int,
    dev_auroc: np.ndarray | None,
    dev: tuple[np.ndarray, list] | None = None,
) -> dict[int, list[int]]:
    """The (layer, head) pairs D_vis averages. select=dev: the score.top_heads best heads by
    dev AUROC, or (top_heads null) the k best, 1 <= k <= max_top_heads, whose averaged score
    has the highest dev AUROC (``dev`` = the dev per-head scores and labels)."""
    sp = params.score
    if sp.select == "band":
        layers = sp.layers if sp.layers is not None else band_layers(n_layers, sp.layer_band)
        heads = sp.heads if sp.heads is not None else list(range(n_heads))
        if max(layers) >= n_layers or max(heads) >= n_heads:
            raise ValueError(
                f"score.layers {layers} / score.heads {heads} out of range: the "
                f"model has {n_layers} layers of {n_heads} heads"
            )
        return {layer: list(heads) for layer in layers}
    order = np.argsort(-np.nan_to_num(dev_auroc, nan=-1).ravel(), kind="stable")
    k = sp.top_heads
    if k is None:
        scores, labels = dev
        flat = scores.reshape(n_layers * n_heads, -1)
        combined = [
            auroc(flat[order[:j]].mean(axis=0), labels)
            for j in range(1, min(sp.max_top_heads, len(order)) + 1)
        ]
        k = int(np.nanargmax(combined)) + 1
    order = order[:k]
    chosen: dict[int, list[int]] = {}
    for flat in sorted(order):
        chosen.setdefault(int(flat // n_heads), []).append(int(flat % n_heads))
    return chosen


def diagnostics(model, processor, root: Path, params: Params, n_layers: int, n_heads: int):
    """Per-head AUROC on the diagnostic split (where heads are chosen) and per-layer AUROC
    on it and the report split (those of them the data has); the chosen heads."""
    sp = params.score
    metrics: dict = {"n_layers": n_layers, "n_heads": n_heads}
    diag = {}
    for split in dict.fromkeys((sp.diagnostic_split, sp.report_split)):
        path = root / f"{split}.jsonl"
        if path.exists():
            records = read_manifest(path)[: sp.diagnostic_samples]
            diag[split] = head_scores(model, processor, records, root, params)
    dev_auroc = None
    if sp.diagnostic_split in diag:
        scores, labels = diag[sp.diagnostic_split]
        dev_auroc = np.array(
            [[auroc(scores[la, h], labels) for h in range(n_heads)] for la in range(n_layers)]
        )
    elif sp.select == "dev":
        raise ValueError(f"score.select=dev needs the {sp.diagnostic_split} split")
    heads = choose_heads(params, n_layers, n_heads, dev_auroc, diag.get(sp.diagnostic_split))
    metrics["heads"] = {str(k): v for k, v in heads.items()}
    for split, (scores, labels) in diag.items():
        prefix = "" if split == sp.report_split else f"{split}/"
        for layer in range(n_layers):
            metrics[f"{prefix}auroc_layer_{layer}"] = auroc(scores[layer].mean(0), labels)
        band = band_layers(n_layers, sp.layer_band)
        metrics[f"{prefix}auroc_paper_band"] = auroc(scores[band].mean((0, 1)), labels)
    head_auroc = None if dev_auroc is None else np.where(np.isnan(dev_auroc), None, dev_auroc)
    return {"metrics": metrics, "head_auroc": None if head_auroc is None else head_auroc.tolist()}


def run(ctx: StageContext) -> dict:
    params = ctx.params
    sp = params.score
    worker, workers = ctx.worker, len(sp.workers)
    rank, procs = distributed.rank(), distributed.world_size()
    seed_everything(params.seed)
    root = ctx.dep("data")
    model, processor = load_vlm(
        ctx.dep("model"), dtype=torch.float32, trust_remote_code=params.model.trust_remote_code
    )
    model.to(device()).eval()
    cfg = model.config.get_text_config()
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    if len(text_decoder_layers(model)) != n_layers:
        raise ValueError("model config and decoder modules disagree on the layer count")
    check_heads(params, n_layers, n_heads)
    with tracking.stage_run(ctx):
        diag = None
        if distributed.is_main() and (worker == 0 or sp.select == "dev"):
            diag = diagnostics(model, processor, root, params, n_layers, n_heads)
        diag = distributed.broadcast(diag)
        heads = (
            {int(k): v for k, v in diag["metrics"]["heads"].items()}
            if diag
            else choose_heads(params, n_layers, n_heads, None)
        )
        # every worker's folder has the same fingerprint (their shards are interchangeable)
        folder = work_dir(ctx.out("shards"), ctx.fingerprint(heads, run=False))
        if distributed.is_main() and diag:
            write_json_atomic(folder / plan.DIAGNOSTICS, diag)
        manifests = {split: read_manifest(root / f"{split}.jsonl") for split in sp.splits}
        corpus = plan.plan([(s, len(r)) for s, r in manifests.items()], sp.shard_size)
        mine = plan.share(corpus, worker, workers, rank, procs)
        t0, scored = time.perf_counter(), 0
        for shard in tqdm(mine, desc=f"score worker {worker}.{rank}", unit="shard"):
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
        for stale in folder.glob("*.parquet"):  # shards of another division of the work
            if stale.name not in names:
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
