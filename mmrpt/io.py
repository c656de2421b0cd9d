"""Files the pipeline writes: atomic writes (temp file, then rename, so a crash never leaves
half a file), JSONL reading, and resumable work folders keyed by a fingerprint.

Every writer here creates its parent folder; none deletes anything but the temp file it made,
except ``fingerprint_dir``, which empties only a folder the project created (mmrpt.safety).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrpt.safety import MARKER, empty_owned, marker_of


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(path.name + ".tmp")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_lines_atomic(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Write ``lines`` (one per line) through a temp file; returns how many."""
    path = Path(path)
    tmp = _tmp(path)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    return write_lines_atomic(path, (json.dumps(r, ensure_ascii=False) for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_csv_atomic(
    path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None
) -> Path:
    """One CSV with a stable column order: ``columns`` first (the header when ``rows`` is
    empty), then the rows' other keys sorted by name."""
    import pandas as pd

    path = Path(path)
    keys = sorted({k for r in rows for k in r} - set(columns or []))
    tmp = _tmp(path)
    pd.DataFrame(rows, columns=[*(columns or []), *keys]).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def write_parquet_atomic(path: str | os.PathLike, frame) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def digest(obj: Any) -> str:
    """A short stable hash of JSON-able data (pydantic models are dumped first)."""
    blob = json.dumps(
        obj,
        sort_keys=True,
        default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


SMALL_FILE = 256 << 20  # content-hashed below this size; (size, mtime) above


def inputs_stamp(paths: Iterable[str | os.PathLike]) -> str:
    """Identity of input files and folders, for resume fingerprints: content hashes of small
    files (manifests, configs), size and mtime of large ones (weights), with relative names.
    A missing path stamps as missing."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            name = str(f.relative_to(p)) if p.is_dir() else f.name
            if not f.exists():
                h.update(f"{p}: missing\n".encode())
                continue
            st = f.stat()
            if st.st_size < SMALL_FILE:
                ident = hashlib.md5(f.read_bytes()).hexdigest()
            else:
                ident = f"{st.st_size}:{st.st_mtime_ns}"
            h.update(f"{p}/{name}:{ident}\n".encode())
    return h.hexdigest()[:16]


def fingerprint_dir(path: str | os.PathLike, fingerprint: str) -> Path:
    """A resumable work folder: kept if it was made with the same fingerprint, else emptied
    and started over. Only a folder the project created is emptied (mmrpt.safety.NotOwned
    otherwise); a new one is marked as the project's."""
    path = Path(path)
    stamp = path / "fingerprint.txt"
    if path.exists() and (not stamp.exists() or stamp.read_text().strip() != fingerprint):
        empty_owned(path)
    path.mkdir(parents=True, exist_ok=True)
    if marker_of(path) is None:
        (path / MARKER).write_text("fingerprint_dir\n", encoding="utf-8")
    stamp.write_text(fingerprint)
    return path
