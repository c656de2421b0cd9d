"""The scene-world probes (and real benchmarks) through VLMEvalKit, scored by generation.

Why our own pieces: VLMEvalKit's Qwen2-VL wrapper hard-codes CUDA and flash-attention 2 and
cannot load our tiny checkpoints; a custom model is a ``BaseModel`` subclass. ``VLMEvalModel``
wraps any ``Answerer`` (the scorer over one of our checkpoints, or a reference answerer):
prompt = image + question, prediction = a greedy short answer.

- Probes become custom MCQ datasets: ``$LMUData/mmrpt_probes_<iid|counter>.tsv`` with index,
  image (base64 of the PNG file; later probes of a scene hold the index of the scene's first
  row, VLMEvalKit's space saver), image_path, question, A-D (empty past the options), answer
  (letter), category (probe type). VLMEvalKit builds them as CustomMCQDataset by name alone.
- Inference and scoring are VLMEvalKit's own: ``infer_data_job`` (its result xlsx) and the
  dataset's ``evaluate`` with judge ``exact_matching`` (nproc 1; any other judge would call an
  API). ``can_infer`` maps a prediction to an option letter: a standalone capital A-D is read
  as that letter, otherwise the one option text contained in the prediction. Our answers are
  option texts, and on probe datasets the prediction is lower-cased so a stray capital word
  ("A red circle") is never read as option A.
- Batching: VLMEvalKit's local-model loop calls ``generate`` one sample at a time.
  ``prefetch`` builds every prompt the loop will build and answers them in batches first;
  ``generate`` then returns the stored answer (or answers alone on a miss).
- Images of probe datasets are written losslessly (the PNG bytes) and named after the source
  file; VLMEvalKit's default dump re-encodes to JPEG. The scene id in the name is what the
  reference oracle locates its scene by.
- Blank mode (``blank=True``) shows the model a grey image of the same size instead of each
  image, on any dataset; results go under the model name ``mmrpt_blank``.

Real benchmarks pass straight to VLMEvalKit's ``build_dataset`` (``datasets=[...]``) with
$LMUData = ``lmu_data`` (the user's benchmark folder; the probes' TSVs never go there, they go
to a private $LMUData, and images VLMEvalKit dumps go to ``out_dir/images``). By default
VLMEvalKit checks each TSV's md5 against its table and downloads on a mismatch (any local or
trimmed copy mismatches). ``benchmarks_local=True`` uses the TSVs in ``lmu_data`` as they are:
``prepare_tsv`` (VLMEvalKit's check-and-download) is bypassed for the build, a missing file
fails that benchmark, nothing is downloaded, and the log says so. A benchmark that fails
(missing file, a build or evaluation error) is recorded in ``failures`` and the others go on.
Judges, from VLMEvalKit's
code (run.py's defaults and each dataset's ``evaluate``):

- no judge, rule-based: ChartQA_TEST (relaxed accuracy), TextVQA_VAL, DocVQA_VAL, InfoVQA_VAL,
  OCRBench, POPE, MME, HallusionBench;
- MCQ, exact matching works (an LLM judge is only an optional answer extractor for
  predictions ``can_infer`` cannot map; unmapped ones count as wrong): MMBench_DEV_EN (circular
  evaluation), MMStar, BLINK, SEEDBench_IMG, AI2D_TEST, ScienceQA_TEST, RealWorldQA,
  MMMU_DEV_VAL (MMBench_TEST_* have no public answers);
- need an LLM judge (their ``evaluate`` asserts a working OpenAI API): MMVet, LLaVABench,
  MMBench-Video (gpt-4-turbo), MathVista, MathVerse, MathVision, DynaMath, LogicVista
  (gpt-4o-mini), WildVision, MMDU, MIA-Bench (gpt-4o). Pass them only with a judge configured
  (not supported by ``run_vlmevalkit``, which always uses exact matching).

``run_vlmevalkit`` sets $LMUData for each dataset it builds (otherwise VLMEvalKit creates
~/LMUData) and restores it afterwards.

No pickle from an output folder is ever loaded. VLMEvalKit resumes from its own pickles in its
work folder (``<model>_<dataset>_PREV.pkl``, ``<rank><world>_<dataset>.pkl``, judge
``*_result.pkl``: ``vlmeval.smp.load`` unpickles them) and our output folders can come from a
DVC remote or a shared disk. So every run gets a fresh private work folder
(``tempfile.mkdtemp``, mode 0700) where VLMEvalKit only reads back what it wrote in this
process, and the probe datasets a fresh private $LMUData; the finished files (predictions,
scores; not VLMEvalKit's pickles) are then copied into ``out_dir``, replacing earlier ones.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import string
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import torch

from mmrpt.evaluation.lmeval import read_probes, short_name, variants
from mmrpt.evaluation.scorer import Answerer, Query, Scorer, blank_image, load_image


class _NoEnvFileError(logging.Filter):
    """VLMEvalKit's import logs an ERROR when it finds no .env file of API keys beside its
    package: we never call an API (judge exact_matching), so that line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Did not detect the .env file")


logging.getLogger().addFilter(_NoEnvFileError())
_grad = torch.is_grad_enabled()
from vlmeval.vlm.base import BaseModel  # noqa: E402

# Importing vlmeval.vlm runs torch.set_grad_enabled(False) for the whole process; undo it, so
# a process that evaluates and then trains (a Prefect flow, a test) still gets gradients.
torch.set_grad_enabled(_grad)

# build_dataset warns twice per run about every custom MCQ TSV ("not officially supported",
# "will assume ... Custom MCQ dataset"): that is exactly how our probe datasets are meant to
# load, so these two warnings are noise (the others stay).
warnings.filterwarnings("ignore", message=r"Dataset mmrpt_probes_\w+ is not officially supported")
warnings.filterwarnings("ignore", message=r"Will assume unsupported dataset mmrpt_probes_\w+")

PREFIX = "mmrpt_probes"
LETTERS = "ABCD"
log = logging.getLogger(__name__)


def dataset_name(split: str) -> str:
    return f"{PREFIX}_{short_name(split)}"


def is_probe_dataset(name: str | None) -> bool:
    return bool(name) and name.startswith(f"{PREFIX}_")


def export_probes(
    data_root: str | Path, split: str, lmu_data: str | Path, limit: int | None = None
) -> str:
    """Write ``$LMUData/<name>.tsv`` for the probes of ``split`` (the first ``limit`` of each
    type, as lm-eval's limit). ``lmu_data`` must not hold images of an earlier export of this
    name (they would be shown instead: VLMEvalKit names images by the source file); run_vlmevalkit
    exports to a fresh private folder. Returns the name."""
    root, lmu, name = Path(data_root), Path(lmu_data), dataset_name(split)
    rows, first, seen = [], {}, {}
    for p in read_probes(root, split):
        seen[p["type"]] = seen.get(p["type"], 0) + 1
        if limit is not None and seen[p["type"]] > limit:
            continue
        if len(p["choices"]) > len(LETTERS):
            raise ValueError(f"probe {p['id']} has more than {len(LETTERS)} options")
        index = len(rows)
        if p["image"] in first:
            image = str(first[p["image"]])
        else:
            first[p["image"]] = index
            image = base64.b64encode((root / p["image"]).read_bytes()).decode()
        options = dict(zip(LETTERS, p["choices"], strict=False))
        rows.append(
            {
                "index": index,
                "image": image,
                "image_path": Path(p["image"]).name,
                "question": p["question"],
                **{c: options.get(c) for c in LETTERS},
                "answer": LETTERS[p["answer"]],
                "category": p["type"],
                "id": p["id"],
            }
        )
    lmu.mkdir(parents=True, exist_ok=True)
    if (lmu / "images" / name).exists():  # images dumped for another export of this name
        raise FileExistsError(f"{lmu / 'images' / name}: export probes to a fresh $LMUData")
    pd.DataFrame(rows).to_csv(lmu / f"{name}.tsv", sep="\t", index=False)
    return name


class VLMEvalModel(BaseModel):
    """A VLMEvalKit model over an ``Answerer``: image + question -> short answer."""

    INTERLEAVE = False

    def __init__(self, answerer: Answerer, blank: bool = False):
        super().__init__()
        self.answerer, self.blank = answerer, blank
        self._answers: dict[tuple, str] = {}

    def use_custom_prompt(self, dataset: str) -> bool:
        return is_probe_dataset(dataset)

    def build_prompt(self, line, dataset: str | None = None) -> list[dict]:
        """Image (the PNG bytes, named after the source file) + the question alone; the
        options ride along for the reference answerers (the scorer never shows them)."""
        from vlmeval.smp import LMUDataRoot

        path = Path(LMUDataRoot()) / "images" / dataset / str(line["image_path"])
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(line["image"]))
        options = [str(line[c]) for c in LETTERS if c in line and not pd.isna(line[c])]
        return [
            {"type": "image", "value": str(path)},
            {"type": "text", "value": str(line["question"]), "options": options},
        ]

    def _query(self, message: list[dict], dataset: str | None) -> Query:
        images = [m["value"] for m in message if m["type"] == "image"]
        texts = [m for m in message if m["type"] == "text"]
        if not images:
            raise ValueError(
                f"{dataset}: a sample without an image (text-only benchmarks are not supported)"
            )
        path = images[0]
        if len(images) > 1:  # VLMEvalKit's own single-image fallback (BLINK: concatenated)
            _, path = self.message_to_promptimg(message, dataset)
        image = load_image(path)
        options = next((tuple(m["options"]) for m in texts if m.get("options")), ())
        return Query(
            blank_image(image) if self.blank else image,
            "\n".join(m["value"] for m in texts),
            options,
            source=path,
        )

    @staticmethod
    def _key(message: list[dict]) -> tuple:
        return tuple((m["type"], m["value"]) for m in message)

    def prefetch(self, dataset) -> int:
        """Answer, in batches, every prompt VLMEvalKit's loop will ask for ``dataset``."""
        self.set_dump_image(dataset.dump_image)
        name = dataset.dataset_name
        messages = []
        for i in range(len(dataset.data)):
            line = dataset.data.iloc[i]
            msg = (
                self.build_prompt(line, name)
                if self.use_custom_prompt(name)
                else dataset.build_prompt(line)
            )
            messages.append(self.preproc_content(msg))
        answers = self.answerer.answer([self._query(m, name) for m in messages])
        for m, a in zip(messages, answers, strict=True):
            self._answers[self._key(m)] = a
        return len(messages)

    def generate_inner(self, message: list[dict], dataset: str | None = None) -> str:
        key = self._key(message)
        if key not in self._answers:
            self._answers[key] = self.answerer.answer([self._query(message, dataset)])[0]
        text = self._answers[key]
        return text.lower() if is_probe_dataset(dataset) else text


@contextlib.contextmanager
def _lmu_data(path: Path) -> Iterator[Path]:
    old = os.environ.get("LMUData")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["LMUData"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("LMUData", None)
        else:
            os.environ["LMUData"] = old


@contextlib.contextmanager
def _local_tsv() -> Iterator[None]:
    """While building a dataset: VLMEvalKit's prepare_tsv takes the TSV in $LMUData as it is
    (no md5 check, no download); a missing file raises FileNotFoundError."""
    from vlmeval.dataset.image_base import ImageBaseDataset
    from vlmeval.smp import LMUDataRoot

    original = ImageBaseDataset.prepare_tsv

    def prepare_tsv(self, url, file_md5=None):
        path = Path(LMUDataRoot()) / url.split("/")[-1]
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no local benchmark file (benchmarks_local: no download)"
            )
        return original(self, url, None)

    ImageBaseDataset.prepare_tsv = prepare_tsv
    try:
        yield
    finally:
        ImageBaseDataset.prepare_tsv = original


def benchmark_dir(lmu_data: str | Path | None) -> Path | None:
    """The benchmark folder: ``lmu_data``, else $LMUData of the environment, else None."""
    folder = lmu_data or os.environ.get("LMUData")
    return Path(folder).resolve() if folder else None


def run_vlmevalkit(
    model_path: str | Path | None,
    data_root: str | Path,
    splits: Sequence[str] = ("test_iid", "test_counter"),
    out_dir: str | Path = "eval/vlmevalkit",
    limit: int | None = None,
    blank: bool | str = False,
    *,
    answerer: Answerer | None = None,
    datasets: Sequence[str] = (),
    lmu_data: str | Path | None = None,
    benchmarks_local: bool = False,
    failures: dict[str, str] | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    device: str | None = None,
) -> dict[str, float]:
    """Probe (and benchmark) accuracies of one checkpoint (or ``answerer``) via VLMEvalKit.

    ``splits``: the probe splits (their TSVs go to a private $LMUData). ``limit``: the first
    ``limit`` probes of each (split, probe type), as in lm-eval. ``blank``: as
    ``lmeval.variants`` (True = also blank). ``datasets``: real VLMEvalKit benchmark names,
    read from ``lmu_data`` (default $LMUData), run after the probes; ``benchmarks_local``: use
    their TSVs as they are (see the module docstring). A benchmark that fails is logged and
    recorded in ``failures`` ({"<name>[_blank]": error}); the others' results are kept.
    VLMEvalKit runs in a fresh private work folder (nothing in ``out_dir`` is read, see the
    module docstring); its prediction/result files are then copied to ``out_dir``. Returns
    ``{"vlmeval/iid/acc", "vlmeval/iid/colour/acc", ..., "vlmeval/iid_blank/acc", ...}``; a
    benchmark under its own name (``vlmeval/MMStar/acc``, per category
    ``vlmeval/MMStar/<category>/acc``).
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    bench = benchmark_dir(lmu_data)
    if datasets and bench is None:
        raise ValueError("benchmarks need a folder: pass lmu_data or set $LMUData")
    failures = {} if failures is None else failures
    if answerer is None:
        if model_path is None:
            raise ValueError("run_vlmevalkit needs model_path or answerer")
        answerer = Scorer.load(
            model_path, device=device, batch_size=batch_size, max_new_tokens=max_new_tokens
        )
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mmrpt-vlmeval-") as private:
        work, probes_lmu = Path(private) / "work", Path(private) / "LMUData"
        work.mkdir()
        names = [export_probes(data_root, s, probes_lmu, limit) for s in splits]
        names += list(datasets)
        for is_blank in variants(blank):
            model = VLMEvalModel(answerer, blank=is_blank)
            model_name = "mmrpt_blank" if is_blank else "mmrpt"
            for name in names:
                key = name.removeprefix(f"{PREFIX}_") + ("_blank" if is_blank else "")
                probe = is_probe_dataset(name)
                try:
                    with _lmu_data(probes_lmu if probe else bench):
                        result = _run_dataset(
                            model,
                            model_name,
                            name,
                            work,
                            out_dir / "images" / name,
                            local=benchmarks_local and not probe,
                        )
                except Exception as e:  # one benchmark never discards the others' results
                    if probe:
                        raise
                    failures[key] = f"{type(e).__name__}: {str(e)[:300]}"
                    log.error("VLMEvalKit %s failed, the others go on: %s", key, failures[key])
                    continue
                out.update(_flatten(result, f"vlmeval/{key}"))
        for f in sorted(work.iterdir()):
            if f.is_file() and f.suffix != ".pkl":  # VLMEvalKit's own resume state stays behind
                tmp = out_dir / f"{f.name}.tmp"  # then rename: never a half-copied result
                shutil.copyfile(f, tmp)
                os.replace(tmp, out_dir / f.name)
    return out


def _run_dataset(
    model: VLMEvalModel, model_name: str, name: str, work: Path, images: Path, local: bool
):
    """Build ``name`` from $LMUData, answer it in ``work`` (a fresh folder) and score it (exact
    matching): VLMEvalKit's table. A real benchmark's image dumps go to ``images``."""
    from vlmeval.dataset import build_dataset
    from vlmeval.inference import infer_data_job
    from vlmeval.smp import LMUDataRoot

    if local:
        log.info(
            "VLMEvalKit %s: using %s as it is (benchmarks_local: md5 not checked, no download)",
            name,
            Path(LMUDataRoot()) / f"{name}.tsv",
        )
    with _local_tsv() if local else contextlib.nullcontext():
        dataset = build_dataset(name)
    if dataset is None:
        raise FileNotFoundError(f"VLMEvalKit cannot build dataset {name} from {LMUDataRoot()}")
    if not is_probe_dataset(name):
        dataset.img_root = str(images)  # dumps go to our folder
    model.prefetch(dataset)
    infer_data_job(model, work_dir=str(work), model_name=model_name, dataset=dataset)
    return dataset.evaluate(
        str(work / f"{model_name}_{name}.xlsx"), model="exact_matching", nproc=1
    )


def _flatten(result, prefix: str) -> dict[str, float]:
    """VLMEvalKit's score table -> flat floats. MCQ tables: Overall -> acc, each category
    -> <category>/acc; other tables and dicts: every numeric entry under its own name."""
    if isinstance(result, pd.DataFrame):
        row = result.iloc[0].to_dict()
    elif isinstance(result, dict):
        row = result
    else:
        return {}
    out = {}
    for k, v in row.items():
        if k == "split" or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        name = "acc" if k == "Overall" else f"{_slug(str(k))}/acc"
        out[f"{prefix}/{name}"] = float(v)
    return out


def _slug(text: str) -> str:
    keep = string.ascii_letters + string.digits + "_-."
    return "".join(c if c in keep else "_" for c in text)
