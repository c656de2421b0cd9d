"""Stage `score_heads`: which (layer, head) pairs D_vis averages, chosen once for all score
workers, and the per-layer diagnostics.

A diagnostic pass over every (layer, head) on the first score.diagnostic_samples records of
the diagnostic split (where heads are chosen: score.select=dev, the top_heads best by AUROC,
our choice) and of the report split (per-layer AUROC reported); select=band takes the paper's
upper-middle layers instead. Writes heads.json (the heads, the per-layer AUROC metrics, the
per-head AUROC matrix); the `score` workers read the heads from it, `score_merge` reports the
rest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from mmrpt import tracking
from mmrpt.config import Params, ParamsError
from mmrpt.contract import StageContext
from mmrpt.data.records import read_manifest
from mmrpt.io import write_json_atomic
from mmrpt.modeling.loader import image_token_id, load_vlm
from mmrpt.scoring.attention import capture, text_decoder_layers
from mmrpt.scoring.layers import auroc, band_layers
from mmrpt.scoring.sentences import attention_scores
from mmrpt.stages.common import has_labels, require_splits
from mmrpt.stages.score import record_inputs
from mmrpt.training import device, seed_everything

log = logging.getLogger(__name__)


def head_scores(model, processor, records, root, params: Params) -> tuple[np.ndarray, list]:
    """Diagnostic pass over every (layer, head): sentence D_vis (layers, heads, sentences)
    and the sentences' labels."""
    sp = params.score
    cfg = model.config.get_text_config()
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    images, captions, spans = record_inputs(records, root)
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


def check(root: Path, sp) -> list[str]:
    """Before any compute: the splits exist, and select=dev has labels to choose heads by.
    Returns the diagnostic/report splits that have ground-truth labels (AUROC is computed
    there only; real data has none)."""
    require_splits(root, "score.splits", sp.splits)
    require_splits(root, "score.diagnostic_split", [sp.diagnostic_split])
    require_splits(root, "score.report_split", [sp.report_split])
    labelled = [
        s
        for s in dict.fromkeys((sp.diagnostic_split, sp.report_split))
        if s and has_labels(root, s)
    ]
    if sp.select == "dev" and sp.diagnostic_split not in labelled:
        raise ParamsError(
            f"score.select=dev chooses heads by AUROC against ground-truth labels and "
            f"score.diagnostic_split={sp.diagnostic_split} has none: set score.select=band "
            "(the paper's layer band, no labels needed)"
        )
    return labelled


def diagnostics(
    model,
    processor,
    root: Path,
    params: Params,
    n_layers: int,
    n_heads: int,
    labelled: list[str],
):
    """The chosen heads; per-layer AUROC on the diagnostic and the report split (the
    ``labelled`` ones: AUROC needs labels) as metrics; per-head AUROC on the diagnostic split,
    (layers, heads)."""
    sp = params.score
    metrics: dict = {"n_layers": n_layers, "n_heads": n_heads}
    diag = {}
    for split in labelled:
        records = read_manifest(root / f"{split}.jsonl")[: sp.diagnostic_samples]
        diag[split] = head_scores(model, processor, records, root, params)
    dev_auroc = None
    if sp.diagnostic_split in diag:
        scores, labels = diag[sp.diagnostic_split]
        dev_auroc = np.array(
            [[auroc(scores[la, h], labels) for h in range(n_heads)] for la in range(n_layers)]
        )
    heads = choose_heads(params, n_layers, n_heads, dev_auroc, diag.get(sp.diagnostic_split))
    metrics["heads"] = {str(k): v for k, v in heads.items()}
    for split, (scores, labels) in diag.items():
        prefix = "" if split == sp.report_split else f"{split}/"
        for layer in range(n_layers):
            metrics[f"{prefix}auroc_layer_{layer}"] = auroc(scores[layer].mean(0), labels)
        band = band_layers(n_layers, sp.layer_band)
        metrics[f"{prefix}auroc_paper_band"] = auroc(scores[band].mean((0, 1)), labels)
    head_auroc = None
    if dev_auroc is not None:  # JSON: null where a head's AUROC is undefined
        head_auroc = [[None if np.isnan(v) else float(v) for v in row] for row in dev_auroc]
    return {"heads": metrics["heads"], "metrics": metrics, "head_auroc": head_auroc}


def preflight(ctx: StageContext) -> None:
    check(ctx.dep("data"), ctx.params.score)  # before the model is even looked for


def run(ctx: StageContext) -> dict:
    params = ctx.params
    labelled = check(ctx.dep("data"), params.score)
    seed_everything(params.seed)
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
        found = diagnostics(model, processor, ctx.dep("data"), params, n_layers, n_heads, labelled)
        tracking.log_metrics(found["metrics"])
        tracking.log_dict(found["heads"], "heads.json")
    write_json_atomic(ctx.out("heads"), found)
    log.info("score_heads: %s", found["heads"])
    return found
