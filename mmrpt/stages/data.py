"""Stage `data`: write the dataset manifests (synthetic world, or ingest real files); the
synthetic world also writes its multiple-choice probes (mmrpt/data/probes.py) per split.
The output folder is emptied first: it holds exactly what the current params produce (no
split of an earlier source or split list survives a change)."""

from __future__ import annotations

import logging
from collections import Counter

from mmrpt import tracking
from mmrpt.config import ParamsError
from mmrpt.contract import StageContext
from mmrpt.data import world
from mmrpt.data.probes import make_probes
from mmrpt.data.records import read_manifest, write_manifest
from mmrpt.io import write_json_atomic, write_jsonl_atomic
from mmrpt.progress import bar
from mmrpt.safety import empty_owned
from mmrpt.stages.common import warn_untracked

log = logging.getLogger(__name__)


def run(ctx: StageContext) -> dict:
    p = ctx.params.data
    out = empty_owned(ctx.out("data"))
    metrics: dict = {}
    with tracking.stage_run(ctx):
        if p.source == "synthetic":
            sizes = {
                "train": p.n_train,
                "dev": p.n_dev,
                "test_iid": p.n_test,
                "test_counter": p.n_test,
            }
            for split, n in sizes.items():
                gen = world.generate_split(
                    split,
                    n,
                    out,
                    seed=ctx.params.seed,
                    image_size=p.image_size,
                    max_objects=p.max_objects,
                    prior_strength=p.prior_strength,
                    caption_bias=p.caption_bias,
                )
                write_manifest(out / f"{split}.jsonl", bar(gen, total=n, desc=split))
                probes = make_probes(
                    read_manifest(out / f"{split}.jsonl"),
                    seed=ctx.params.seed,
                    max_objects=p.max_objects,
                    colour_all=p.probe_colour_all and split != "train",
                )
                write_jsonl_atomic(out / "probes" / f"{split}.jsonl", probes)
                metrics[f"{split}/n_probes"] = len(probes)
            (out / "rejects.jsonl").write_text("")
        else:
            from mmrpt.data.readers import ingest, resolve_inputs

            for split, inputs in p.inputs.items():  # every input exists, before any work
                try:
                    resolve_inputs(inputs)
                except FileNotFoundError as e:
                    raise ParamsError(f"data.inputs.{split}: {e}") from None
            warn_untracked(
                "data.inputs",
                [x for v in p.inputs.values() for x in ([v] if isinstance(v, str) else v)],
                str(ctx.dep("corpus")),
            )
            rejects = out / "rejects.jsonl"
            rejects.write_text("")  # one ingest = one rejects file
            seen: dict[str, str] = {}  # ids are unique across splits (they name the images)
            for split, inputs in p.inputs.items():
                report = ingest(
                    p.source,
                    inputs,
                    out,
                    split,
                    min_sentences=p.min_sentences,
                    max_pixels=p.max_image_pixels,
                    min_side=p.min_image_side,
                    max_caption_chars=p.max_caption_chars,
                    seen=seen,
                )
                report.check()
                metrics[f"{split}/n_input"] = report.n_input
                metrics[f"{split}/n_accepted"] = report.n_accepted
                metrics[f"{split}/n_rejected"] = report.n_rejected
                for reason, n in report.reasons.items():
                    metrics[f"{split}/rejected/{reason}"] = n
        for manifest in sorted(out.glob("*.jsonl")):
            if manifest.name == "rejects.jsonl":
                continue
            records = read_manifest(manifest)
            labels = Counter(s.label for r in records for s in r.sentences)
            split = manifest.stem
            metrics[f"{split}/n_records"] = len(records)
            metrics[f"{split}/n_sentences"] = sum(labels.values())
            metrics[f"{split}/n_vision_dependent"] = labels.get(1, 0)
            metrics[f"{split}/n_vision_independent"] = labels.get(0, 0)
        tracking.log_metrics(metrics)
    write_json_atomic(ctx.metrics_path(), metrics)
    log.info("data: %s", metrics)
    return metrics
