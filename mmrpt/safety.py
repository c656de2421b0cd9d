"""What the pipeline may delete, where its outputs may go, and which user text it accepts.

Folders it owns. A folder the project creates as a stage output gets a marker file
(``.mmrpt-owner``, holding the params key that named it); everything under a marked folder is
the project's. Nothing is emptied, replaced or removed unless it is inside a marked folder, so
a param such as ``warmup.checkpoint_dir=.`` can never empty the working folder: ``claim``
refuses a non-empty folder without the marker, naming the param. A folder recorded as an
output in ``dvc.lock`` (written by an earlier version, before markers) is adopted: DVC
itself deletes and rewrites such folders.

Where outputs go. ``path_conflicts`` (run by the params schema at load time) refuses an
output that is, holds or sits inside another output, the project folder, its source, metrics,
MLflow store or state, and an input that sits inside an output (a stage would overwrite it).

User text. Captions, conversation turns and prompts must never turn into control tokens:
``text_problem`` names what is wrong with a text (a special token of the ``<|...|>`` family,
which is every special token of Qwen2-VL and Qwen2.5-VL, or Qwen2.5's ``<tool_call>``; a lone
surrogate, i.e. not Unicode; too many characters), and the readers reject such rows with that
reason. Target tokenisation also splits special tokens (mmrpt.modeling.encode), in depth.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

MARKER = ".mmrpt-owner"
STATE_DIR = ".mmrpt"  # the workspace's own state (locks, checkpoint records): git-ignored


class Refused(RuntimeError):
    """The stage refuses to go on (bad params, input or workspace state); the message says why
    and what to do. The CLI prints it as one line and exits 2."""


class NotOwned(Refused):
    """A folder the pipeline would empty or replace was not created by it."""


# ---------------------------------------------------------------------------------- ownership
def marker_of(path: Path) -> Path | None:
    """The marker that makes ``path`` the project's: its own or the nearest ancestor's."""
    p = Path(os.path.abspath(path))
    for folder in (p, *p.parents):
        if (folder / MARKER).is_file():
            return folder / MARKER
    return None


def _dvc_outputs(root: Path) -> set[Path]:
    """Output folders recorded in ``root/dvc.lock`` (absolute)."""
    lock = root / "dvc.lock"
    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    outs = set()
    for stage in (data.get("stages") or {}).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and isinstance(out.get("path"), str):
                outs.add(Path(os.path.abspath(root / out["path"])))
    return outs


def claim(path: str | os.PathLike, owner: str) -> Path:
    """Make ``path`` an output folder of the project (``owner``: the params key naming it):
    create it with a marker, mark an empty or DVC-recorded one, keep a marked one. A file, or
    a non-empty folder the project did not create, is refused with a message naming
    ``owner``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotOwned(f"{owner}={path}: is a file, not a folder; choose another path")
    if (path / MARKER).is_file():
        return path
    if path.is_dir() and any(path.iterdir()):
        legacy = Path(os.path.abspath(path)) in _dvc_outputs(Path.cwd())
        if not legacy:
            raise NotOwned(
                f"{owner}={path}: the folder exists, is not empty and was not created by "
                f"mmrpt (no {MARKER} marker); its contents would be replaced. Choose another "
                f"path for {owner}, or empty or remove the folder yourself"
            )
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(owner + "\n", encoding="utf-8")
    return path


def _check_owned(path: Path, what: str) -> None:
    if marker_of(path) is None:
        raise NotOwned(
            f"{path}: not created by mmrpt (no {MARKER} marker in it or above it): "
            f"refusing to {what} it"
        )


def remove_owned(path: str | os.PathLike) -> None:
    """Remove a file or folder under a marked folder; a missing one is fine."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    _check_owned(path, "remove")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def empty_owned(path: str | os.PathLike) -> Path:
    """Remove everything in a marked folder but its marker (the folder stays the project's);
    create the folder if it is missing."""
    path = Path(path)
    if path.exists():
        _check_owned(path, "empty")
        for child in path.iterdir():
            if child.name != MARKER:
                remove_owned(child)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fresh_dir(path: str | os.PathLike) -> Path:
    """A new empty folder at ``path`` (a temp folder beside an output, ``models/warmup.tmp``),
    marked as the project's unless a folder above it is. A leftover of an earlier try is
    removed (it was marked when it was made)."""
    path = Path(path)
    remove_owned(path)
    path.mkdir(parents=True)
    if marker_of(path.parent) is None:
        (path / MARKER).write_text("temp\n", encoding="utf-8")
    return path


def replace_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp`` to ``out``, replacing ``out`` (which must be the
    project's, or missing). The result keeps ``out``'s own marker."""
    tmp, out = Path(tmp), Path(out)
    if (out / MARKER).is_file():
        (tmp / MARKER).write_text((out / MARKER).read_text(encoding="utf-8"), encoding="utf-8")
    remove_owned(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


# ------------------------------------------------------------------------------ output paths
SOURCE = ("mmrpt", "flows", "tests", "bench", "docs", "deploy", ".git", ".dvc", STATE_DIR)
PROJECT_FILES = ("params.yaml", "dvc.yaml", "dvc.lock", "pyproject.toml", "Makefile")


def _real(root: Path, p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(root / Path(p).expanduser()))


def _inside(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or inside it."""
    return a == b or b in a.parents


def path_conflicts(
    outputs: Mapping[str, str],
    reserved: Mapping[str, str],
    inputs: Mapping[str, str],
    root: str | os.PathLike,
) -> list[str]:
    """Why these paths cannot work together (empty: they can). ``outputs``: {params key:
    folder a stage writes}; ``reserved``: {name: path the pipeline keeps for itself or must
    never write (metrics, the MLflow store, source)}; ``inputs``: {params key: path a stage
    reads}. Relative paths are taken from ``root`` (the project folder)."""
    base = Path(os.path.realpath(root))
    outs = {k: _real(base, v) for k, v in outputs.items()}
    keep = {k: _real(base, v) for k, v in reserved.items()}
    found = []
    for key, p in list(outs.items()):
        if _inside(base, p):  # every other check would fire too: say this one only
            found.append(f"{key}={outputs[key]} is or holds the project folder {base}")
            del outs[key]
    for (k1, p1), (k2, p2) in itertools.combinations(outs.items(), 2):
        if _inside(p1, p2) or _inside(p2, p1):
            found.append(
                f"{k1}={outputs[k1]} and {k2}={outputs[k2]} overlap (one is or holds the "
                "other): each stage replaces its own output folder"
            )
    for key, p in outs.items():
        for name, r in keep.items():
            if _inside(p, r) or _inside(r, p):
                found.append(f"{key}={outputs[key]} overlaps {name} ({reserved[name]})")
    for key, p in _real_inputs(base, inputs).items():
        for out_key, o in outs.items():
            if _inside(p, o):
                found.append(
                    f"{key}={inputs[key]} is inside the output {out_key}={outputs[out_key]}, "
                    "which a stage replaces"
                )
    return found


def _real_inputs(base: Path, inputs: Mapping[str, str]) -> dict[str, Path]:
    """Glob patterns stand for their fixed leading folder."""
    out = {}
    for key, raw in inputs.items():
        parts = Path(raw).parts
        fixed = list(itertools.takewhile(lambda s: not re.search(r"[*?\[]", s), parts))
        if fixed:
            out[key] = _real(base, Path(*fixed))
    return out


# --------------------------------------------------------------------------------- user text
# Every special token of Qwen2-VL / Qwen2.5-VL is <|...|> (im_start, im_end, endoftext,
# vision_start/end/pad, image_pad, video_pad, object_ref_*, box_*, quad_*, fim_*, repo_name,
# file_sep); Qwen2.5 adds <tool_call> and </tool_call> as added tokens.
SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>|</?tool_call>")


def text_problem(text: str, max_chars: int | None = None, what: str = "caption") -> str | None:
    """The reason to reject ``text`` (None when it is fine): a lone surrogate (not Unicode:
    it cannot be written as UTF-8), more than ``max_chars`` characters, or a special token."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} not Unicode: lone surrogate"
    if max_chars is not None and len(text) > max_chars:
        return f"{what} too long: {len(text)} characters > {max_chars}"
    m = SPECIAL_TOKEN.search(text)
    if m:
        return f"special token in {what}: {m.group()}"
    return None


def utf8_safe(texts: Iterable[str]) -> bool:
    """Every text can be written as UTF-8 (no lone surrogates)."""
    try:
        for t in texts:
            t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
