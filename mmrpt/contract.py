"""The stage contract: what a stage reads, its inputs and its outputs, declared once.

A ``Stage`` names the params keys it reads (dotted: ``"warmup"`` is the whole section,
``"warmup.prompt"`` one key), its inputs (``deps``) and outputs (``outs``, ``metrics``,
``tables``) as paths in DVC's template syntax (``${data.out_dir}``; per-run stages also
``${item.arm}`` and ``${item.seed}``, per-worker stages ``${item.worker}``), and the source it
runs (``code``). From that one
declaration (mmrpt/pipeline.py holds them all):

- dvc.yaml is generated (``python -m mmrpt dvc-yaml``; a test fails on any difference), so
  DVC's params, deps and outs are exactly the declared ones;
- the stage receives a ``ParamsView``: the params narrowed to what it declared, typed
  (pydantic values), where reading an undeclared key raises ``UndeclaredParam`` (every test
  that runs the stage checks the declaration that way); the keys it reads are recorded, so a
  test can also find declared keys that are never read;
- the resume fingerprint hashes the declared values (less ``resume_ignores``, keys that only
  shape the stage's final evaluation, themselves declared) and the stage's input files;
- MLflow logs exactly the declared values.

The ``tracking`` section is the tracking module's, not a stage's: readable everywhere, never a
DVC param (changing the MLflow store reruns nothing).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mmrpt.io import digest, inputs_stamp

FREE = ("tracking",)  # readable by every stage, never a stage input


class UndeclaredParam(AttributeError):
    """A stage read a params key its declaration (mmrpt/pipeline.py) does not list."""


def _covers(declared: Iterable[str], key: str) -> str:
    """'declared' if a declared key is ``key`` or one of its sections, 'section' if ``key`` is
    a section holding declared keys, '' otherwise."""
    for d in declared:
        if key == d or key.startswith(d + "."):
            return "declared"
    if any(d.startswith(key + ".") for d in declared):
        return "section"
    return ""


class ParamsView:
    """Read-only attribute access to the declared part of a pydantic params model.

    ``view.warmup.lr`` returns the typed value when ``warmup`` or ``warmup.lr`` is declared and
    raises UndeclaredParam otherwise; sections come back as views. Every key read is added to
    ``reads`` (shared by the views of one stage)."""

    __slots__ = ("_model", "_declared", "_prefix", "_stage", "_reads")

    def __init__(
        self,
        model: BaseModel,
        declared: Iterable[str],
        stage: str,
        prefix: str = "",
        reads: set[str] | None = None,
    ):
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_declared", tuple(declared))
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_reads", set() if reads is None else reads)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        key = self._prefix + name
        value = getattr(self._model, name)  # AttributeError for a key that does not exist
        if not self._prefix and name in FREE:
            return value
        cover = _covers(self._declared, key)
        if not cover:
            raise UndeclaredParam(
                f"stage {self._stage} reads params key {key!r} but does not declare it "
                f"(add it to the stage's reads in mmrpt/pipeline.py)"
            )
        if isinstance(value, BaseModel):
            return ParamsView(value, self._declared, self._stage, key + ".", self._reads)
        if cover == "section":
            if not isinstance(value, dict):
                raise UndeclaredParam(
                    f"stage {self._stage} reads all of {key!r} but declares only parts of it"
                )
            # a dict-valued key (e.g. arms) of which some entries are declared: those only
            value = {k: v for k, v in value.items() if _covers(self._declared, f"{key}.{k}")}
            self._reads.update(f"{key}.{k}" for k in value)
            return value
        self._reads.add(key)
        return value

    def __setattr__(self, name, value):
        raise AttributeError("params are read-only")

    def model_dump(self) -> dict[str, Any]:
        """The declared fields of this section as a dict (each one counts as read)."""
        return {
            name: getattr(self, name)
            if not isinstance(getattr(self._model, name), BaseModel)
            else getattr(self, name).model_dump()
            for name in type(self._model).model_fields
            if _covers(self._declared, self._prefix + name)
        }

    @property
    def reads(self) -> set[str]:
        return self._reads


def values(params: BaseModel, keys: Iterable[str]) -> dict[str, Any]:
    """{dotted key: value} of ``keys`` (sections dumped), e.g. for logging and hashing."""
    out = {}
    for key in keys:
        node: Any = params
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        out[key] = node.model_dump() if isinstance(node, BaseModel) else node
    return out


_TEMPLATE = re.compile(r"\$\{([\w.]+)\}")


def resolve(template: str, params: BaseModel, item: dict[str, Any] | None = None) -> str:
    """Fill ``${a.b}`` from params and ``${item.x}`` from ``item`` (DVC's syntax)."""

    def sub(m: re.Match) -> str:
        key = m.group(1)
        if key.startswith("item."):
            if item is None:
                raise KeyError(f"{template}: ${{{key}}} outside a per-run stage")
            return str(item[key.removeprefix("item.")])
        return str(values(params, [key])[key])

    return _TEMPLATE.sub(sub, template)


@dataclass(frozen=True)
class Stage:
    """One stage's declaration (see the module docstring). Path fields map a name (how the
    stage's code asks for the path) to a DVC template."""

    name: str
    reads: tuple[str, ...]
    deps: dict[str, str] = field(default_factory=dict)
    outs: dict[str, str] = field(default_factory=dict)
    persist: tuple[str, ...] = ()  # names in outs that survive a rerun (resumable work)
    # folders the stage owns that DVC does not track: resumable caches and third-party raw
    # output whose bytes differ run to run (timestamps), so dvc.lock stays the same
    scratch: dict[str, str] = field(default_factory=dict)
    # small files kept in git (cache: false outs): the stage's metrics in detail (JSON), plot
    # data (drawn as the top-level plots of dvc.yaml say)
    metrics: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    # the DVC metrics file: a few headline numbers under keys shared by every such file, so
    # `dvc metrics show` is one narrow table (a row per file)
    headline: str | None = None
    code: tuple[str, ...] = ()
    per_run: bool = False  # once per (arm, seed): the arms x seeds matrix
    # a params key listing worker ids: the stage runs once per worker (DVC matrix), each on
    # its share of the input
    workers: str | None = None
    distributed: bool = False  # runs in launch.num_processes processes (mmrpt/launch.py)
    section: str = ""  # its params.yaml section when not its name (a step of another stage)
    resume_ignores: tuple[str, ...] = ()  # declared keys that do not shape resumable work

    def __post_init__(self):
        stray = [k for k in self.resume_ignores if not _covers(self.reads, k)]
        if stray:
            raise ValueError(f"stage {self.name}: resume_ignores {stray} are not reads")
        missing = [n for n in self.persist if n not in self.outs]
        if missing:
            raise ValueError(f"stage {self.name}: persist {missing} are not outs")
        if self.per_run and self.workers:
            raise ValueError(f"stage {self.name}: per_run and workers do not combine")

    @property
    def params_section(self) -> str:
        return self.section or self.name

    @property
    def matrix(self) -> dict[str, str] | None:
        """DVC's matrix of the stage (None: it runs once)."""
        if self.per_run:
            return {"arm": "${arms}", "seed": "${seeds}"}
        if self.workers:
            return {"worker": "${" + self.workers + "}"}
        return None

    def cmd(self) -> str:
        run = " --arm ${item.arm} --seed ${item.seed}" if self.per_run else ""
        run += " --worker ${item.worker}" if self.workers else ""
        return f"python -m mmrpt {self.name}{run}"


@dataclass
class StageContext:
    """What a running stage gets: its params view, its run (arm, seed) and its paths."""

    stage: Stage
    params: Any  # ParamsView over mmrpt.config.Params
    full: BaseModel  # the whole validated params (for tracking and fingerprints only)
    arm: str | None = None
    seed: int | None = None
    worker: int | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The declared keys, with this run's ``${item.*}`` filled in."""
        return tuple(resolve(k, self.full, self.item) for k in self.stage.reads)

    @property
    def item(self) -> dict[str, Any] | None:
        if self.stage.workers:
            return {"worker": self.worker}
        return {"arm": self.arm, "seed": self.seed} if self.stage.per_run else None

    @property
    def run_name(self) -> str:
        """The (arm, seed) replicate's name '<arm>-<seed>', or the worker's '<worker>' (the
        DVC matrix item after the '@')."""
        return str(self.worker) if self.stage.workers else f"{self.arm}-{self.seed}"

    def _path(self, table: dict[str, str], name: str) -> Path:
        return Path(resolve(table[name], self.full, self.item))

    def dep(self, name: str) -> Path:
        return self._path(self.stage.deps, name)

    def out(self, name: str) -> Path:
        return self._path(self.stage.outs, name)

    def scratch(self, name: str) -> Path:
        return self._path(self.stage.scratch, name)

    def metrics_path(self, name: str = "metrics") -> Path:
        return self._path(self.stage.metrics, name)

    def table_path(self, name: str) -> Path:
        return self._path(self.stage.tables, name)

    def headline_path(self) -> Path:
        if self.stage.headline is None:
            raise KeyError(f"stage {self.stage.name} declares no headline metrics file")
        return Path(resolve(self.stage.headline, self.full, self.item))

    def declared_values(self) -> dict[str, Any]:
        return values(self.full, self.reads)

    def logged_params(self) -> dict[str, Any]:
        """What MLflow logs for this stage: the declared values, flattened, and the run."""
        flat: dict[str, Any] = {}

        def walk(key: str, v: Any) -> None:
            if isinstance(v, dict) and v:
                for k, x in v.items():
                    walk(f"{key}.{k}", x)
            else:
                flat[key] = v

        for key, v in self.declared_values().items():
            walk(key, v)
        if self.stage.per_run:
            flat |= {"run.arm": self.arm, "run.seed": self.seed}
        if self.stage.workers:
            flat["run.worker"] = self.worker
        return flat

    def fingerprint(
        self, *extra: Any, inputs: Iterable[str] | None = None, run: bool = True
    ) -> str:
        """Identity of the stage's resumable work: its declared values (less
        ``resume_ignores``), its run (unless ``run`` is false: work that any worker may do),
        the content of its input files (data deps, not code; ``inputs``: dep names, default
        all) and ``extra``."""
        ignored = {resolve(k, self.full, self.item) for k in self.stage.resume_ignores}
        reads = {k: v for k, v in self.declared_values().items() if k not in ignored}
        for key in ignored:  # a single key ignored inside a declared section
            section, _, leaf = key.rpartition(".")
            if section in reads and isinstance(reads[section], dict):
                reads[section] = {k: v for k, v in reads[section].items() if k != leaf}
        names = self.stage.deps if inputs is None else inputs
        stamp = inputs_stamp(self.dep(n) for n in names)
        return digest([reads, self.item if run else None, stamp, list(extra)])
