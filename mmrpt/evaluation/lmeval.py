"""The scene-world probes through EleutherAI's lm-evaluation-harness, scored by log-likelihood.

Why our own model class: lm-eval's built-in ``hf-multimodal`` only generates for image
requests (its ``loglikelihood`` raises NotImplementedError), and multiple-choice probes are
scored by the log-likelihood of each option given the image. ``MMRPTLM`` (registered as
``mmrpt-vlm``) implements image-conditioned ``loglikelihood`` and ``generate_until`` on top
of the scorer (mmrpt/evaluation/scorer.py) or any ``Answerer`` (the reference answerers).

Conventions (as lm-eval's hf_vlms): a request is ``(context, continuation, {"visual":
[image]})``; ``<image>`` in the context marks the image and is removed, the rest is the
question; the image goes first in the user turn. Options sharing (context, image) are scored
together from one prompt encoding.

The benchmark is data: mmrpt/evaluation/lm_eval_tasks/ holds the task template and its
blank-image variant; ``write_tasks`` writes, per run, one data file and one small YAML per
(split, probe type) with absolute paths (images are paths; the blank control is a grey PNG of
the same size), and one group per split (``mmrpt_probes_iid``, ``mmrpt_probes_iid_blank``,
...) whose accuracy is over all its probes. Images travel as paths, not PIL objects, so
lm-eval's samples name the file the model saw (and need no per-sample image hashing).
``run_lmeval`` runs them through ``lm_eval.simple_evaluate`` and writes lm-eval's own results
JSON and per-task samples (EvaluationTracker) under ``out_dir``. The task files go to a fresh
private folder per run, never to ``out_dir``: lm-eval indexes every YAML of its include path,
and a YAML's ``!function`` tag imports Python code from beside it, so a task folder that came
with an output folder (a DVC remote, a shared disk) could run code.

Two probe forms (``form``): "statement" (the default of the eval stage: the context is the
captioning prompt and the options are the probe's caption sentences, so a caption-pretrained
model is measured zero-shot on what it can do: rank true descriptions of the image above
false ones) and "question" (the question with the short option texts as answers, the form
SFT teaches and VLMEvalKit generates in).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from PIL import Image

from mmrpt.data.probes import TYPES
from mmrpt.evaluation.scorer import (
    Answerer,
    OptionScore,
    Query,
    Scorer,
    blank_image,
    load_image,
)

PLACEHOLDER = "<image>"
TEMPLATES = Path(__file__).parent / "lm_eval_tasks"
SHORT = {"test_iid": "iid", "test_counter": "counter"}  # split -> name in task and metric keys
PREFIX = "mmrpt_probes"


def short_name(split: str) -> str:
    return SHORT.get(split, split)


@register_model("mmrpt-vlm")
class MMRPTLM(LM):
    """lm-eval model over a checkpoint folder (``pretrained``) or a given ``answerer``."""

    MULTIMODAL = True

    def __init__(
        self,
        pretrained: str | None = None,
        answerer: Answerer | None = None,
        batch_size: int | str | None = 32,
        device: str | None = None,
        max_new_tokens: int | str = 8,
        **_ignored,
    ):
        super().__init__()
        if answerer is None:
            if pretrained is None:
                raise ValueError("mmrpt-vlm needs pretrained=<checkpoint folder>")
            answerer = Scorer.load(
                pretrained,
                device=device,
                batch_size=int(batch_size or 32),
                max_new_tokens=int(max_new_tokens),
            )
        self.answerer = answerer

    @staticmethod
    def _query(request, options: Sequence[str] = ()) -> Query:
        context, aux = request.args[0], request.args[-1]
        if not isinstance(aux, dict) or "visual" not in aux:
            raise NotImplementedError(
                "mmrpt-vlm scores image-conditioned requests only "
                "(a task without doc_to_image gives none)"
            )
        visual = aux["visual"]
        images = visual if isinstance(visual, list) else [visual]
        if len(images) != 1:
            raise ValueError(f"mmrpt-vlm takes exactly one image per request, got {len(images)}")
        image = images[0]
        source = request.doc.get("image") if isinstance(request.doc, dict) else None
        if isinstance(image, str):  # a path (our tasks): opened once per file
            source, image = source or image, load_image(image)
        question = context.replace(PLACEHOLDER, "").strip()
        return Query(image, question, tuple(options), source)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[OptionScore]:
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(
                (r.args[0], id(r.args[-1].get("visual") if isinstance(r.args[-1], dict) else None)),
                [],
            ).append(i)
        members = list(groups.values())
        queries = [self._query(requests[m[0]], [requests[i].args[1] for i in m]) for m in members]
        out: list[OptionScore | None] = [None] * len(requests)
        for m, scores in zip(members, self.answerer.score_options(queries), strict=True):
            for i, s in zip(m, scores, strict=True):
                out[i] = s
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("mmrpt-vlm does not score image likelihoods (rolling)")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        answers = self.answerer.answer([self._query(r) for r in requests])
        out = []
        for r, text in zip(requests, answers, strict=True):
            until = r.args[1].get("until") if isinstance(r.args[1], dict) else None
            for stop in [until] if isinstance(until, str) else until or []:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
        return out


def read_probes(data_root: str | Path, split: str) -> list[dict]:
    with open(Path(data_root) / "probes" / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


FORMS = ("statement", "question")


def write_tasks(
    data_root: str | Path,
    splits: Sequence[str],
    task_dir: str | Path,
    variants: Sequence[str] = ("", "_blank"),
    form: str = "question",
    prompt: str = "Describe the image.",
) -> list[str]:
    """Write data files, task YAMLs and group YAMLs for ``splits``; returns the group names.
    ``variants``: "" (the image) and/or "_blank" (blank-image control). ``form``: see the
    module docstring; ``prompt`` is the context of the statement form."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    root, task_dir = Path(data_root).resolve(), Path(task_dir).resolve()
    (task_dir / "data").mkdir(parents=True, exist_ok=True)
    groups = []
    for split in splits:
        by_type: dict[str, list[dict]] = {}
        for p in read_probes(root, split):
            image = root / p["image"]
            statement = form == "statement"
            by_type.setdefault(p["type"], []).append(
                {
                    **p,
                    "image": str(image),
                    "blank_image": str(_blank_file(image, task_dir)),
                    "context": PLACEHOLDER + (prompt if statement else p["question"]),
                    "choices": p["statements"] if statement else p["choices"],
                }
            )
        for variant in variants:
            group = f"{PREFIX}_{short_name(split)}{variant}"
            template = TEMPLATES / f"_mmrpt_probe{variant}.yaml"
            tasks = []
            for kind, rows in by_type.items():
                data = task_dir / "data" / f"{split}-{kind}.jsonl"
                data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
                tasks.append(f"{group}_{kind}")
                _dump(
                    task_dir / f"{tasks[-1]}.yaml",
                    {
                        "include": str(template),
                        "task": tasks[-1],
                        "dataset_kwargs": {
                            "data_files": {"test": str(data)},
                            "cache_dir": str(task_dir / "hf_datasets_cache"),
                        },
                    },
                )
            _dump(
                task_dir / f"{group}.yaml",
                {
                    "group": group,
                    "task": tasks,
                    "aggregate_metric_list": [
                        {"metric": "acc", "aggregation": "mean", "weight_by_size": True}
                    ],
                    "metadata": {"version": 1.0},
                },
            )
            groups.append(group)
    return groups


def _blank_file(image: Path, task_dir: Path) -> Path:
    """The blank control of ``image``: a grey PNG of its size, written once per size."""
    with Image.open(image) as im:
        size = im.size
    path = task_dir / "blank" / f"{size[0]}x{size[1]}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        blank_image(Image.new("RGB", size)).save(path)
    return path


def _dump(path: Path, obj: dict) -> None:
    path.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")


def variants(blank: bool | str) -> tuple[bool, ...]:
    """Which image variants to run (is_blank flags): False -> the image only; True or "both"
    -> the image and the blank-image control; "only" -> the control only."""
    if blank is False:
        return (False,)
    if blank is True or blank == "both":
        return (False, True)
    if blank == "only":
        return (True,)
    raise ValueError(f"blank must be False, True, 'both' or 'only', not {blank!r}")


def run_lmeval(
    model_path: str | Path | None,
    data_root: str | Path,
    splits: Sequence[str] = ("test_iid", "test_counter"),
    out_dir: str | Path = "eval/lmeval",
    limit: int | None = None,
    blank: bool | str = False,
    *,
    answerer: Answerer | None = None,
    batch_size: int = 32,
    device: str | None = None,
    bootstrap_iters: int = 0,
    form: str = "question",
    prompt: str = "Describe the image.",
) -> dict[str, float]:
    """Probe accuracies of one checkpoint (or ``answerer``) through lm-eval.

    ``limit``: the first ``limit`` probes of each (split, probe type), lm-eval's per-task
    limit. ``blank``: see ``variants`` (True = also the blank-image control). Writes the task
    files to a private temp folder (module docstring) and lm-eval's results/samples under
    ``out_dir/<model>``.
    Returns ``{"lmeval/iid/acc", "lmeval/iid/colour/acc", ..., "lmeval/iid_blank/acc",
    "lmeval/iid_blank/colour/acc", ...}`` (accuracy over all probes of the split / per type).
    """
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    out_dir = Path(out_dir)
    if answerer is None:
        if model_path is None:
            raise ValueError("run_lmeval needs model_path or answerer")
        answerer = Scorer.load(model_path, device=device, batch_size=batch_size)
    name = str(model_path) if model_path is not None else type(answerer).__name__
    tracker = EvaluationTracker(output_path=str(out_dir))
    with tempfile.TemporaryDirectory(prefix="mmrpt-lmeval-") as tasks:
        groups = write_tasks(
            data_root,
            splits,
            tasks,
            ["_blank" if b else "" for b in variants(blank)],
            form,
            prompt,
        )
        results = simple_evaluate(
            model=MMRPTLM(answerer=answerer),
            model_args={"pretrained": name},
            tasks=groups,
            task_manager=TaskManager(include_path=tasks, include_defaults=False),
            limit=limit,
            log_samples=True,
            evaluation_tracker=tracker,
            bootstrap_iters=bootstrap_iters,
        )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return flat_accuracies(results["results"], groups)


def flat_accuracies(results: dict, groups: Sequence[str], harness: str = "lmeval") -> dict:
    """lm-eval's results -> {"lmeval/iid/acc": ..., "lmeval/iid/colour/acc": ...}."""
    out = {}
    for group in groups:
        key = group.removeprefix(f"{PREFIX}_")
        out[f"{harness}/{key}/acc"] = float(results[group]["acc,none"])
        for kind in TYPES:
            if f"{group}_{kind}" in results:
                out[f"{harness}/{key}/{kind}/acc"] = float(results[f"{group}_{kind}"]["acc,none"])
    return out
