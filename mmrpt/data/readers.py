"""Ingest real image-caption data (JSONL, parquet, WebDataset) into our manifest format.

Every input row ends up either as a ``Record`` in ``<out_dir>/<split>.jsonl`` (image re-encoded
as ``images/<id>.png``) or as a line in ``<out_dir>/rejects.jsonl`` with a reason; nothing is
dropped silently, and ``IngestReport.check`` asserts ``n_input == n_accepted + n_rejected``.

WebDataset shards are read with the ``webdataset`` library:
``wds.WebDataset(urls, shardshuffle=False, empty_check=False)`` yields dicts of raw bytes per
key. We decode nothing there; images are decoded and validated here with PIL so that every
failure gets a reason. A shard that breaks mid-way costs the rest of that shard, counted as one
rejected row ("corrupt shard: ..."); a shard cut exactly at a member boundary reads as a
shorter, valid tar, so we also check for the end-of-archive marker.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmrpt.data.records import Record, Sentence, split_sentences, write_manifest
from mmrpt.progress import bar
from mmrpt.safety import Refused, text_problem, utf8_safe

logger = logging.getLogger(__name__)

Source = Literal["jsonl", "parquet", "webdataset"]
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # WebDataset keys, in order of preference
# Qwen2-VL processors refuse images whose long side exceeds 200x the short side
# (transformers' smart_resize raises mid-run): refused here at ingest instead.
MAX_ASPECT = 200


class BadInput(ValueError):
    """A row we refuse, with a short human-readable reason."""


@dataclass
class IngestReport:
    n_input: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # reason category -> count

    def check(self) -> None:
        if self.n_input != self.n_accepted + self.n_rejected:
            raise RuntimeError(
                f"rows lost: {self.n_input} in != {self.n_accepted} accepted"
                f" + {self.n_rejected} rejected"
            )


def load_image(data: bytes | str | os.PathLike, max_pixels: int, min_side: int = 1) -> Image.Image:
    """Open, fully decode and convert an image to RGB (alpha composited on white). Refused
    from the header, before decoding: more than ``max_pixels``, a side under ``min_side``,
    an aspect ratio over MAX_ASPECT (the processor would refuse it)."""
    if isinstance(data, bytes | bytearray):
        if not data:
            raise BadInput("empty image file")
        src: Any = io.BytesIO(data)
    else:
        if not os.path.isfile(data):
            raise BadInput(f"missing image file: {os.fspath(data)}")
        if os.path.getsize(data) == 0:
            raise BadInput("empty image file")
        src = data
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the guard; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                w, h = im.size  # from the header: checked before decoding any pixels
                if w * h > max_pixels:
                    raise BadInput(f"image too large: {w}x{h} > {max_pixels}")
                if min(w, h) < min_side:
                    raise BadInput(f"image too small: {w}x{h}, a side < {min_side} px")
                if max(w, h) > MAX_ASPECT * min(w, h):
                    raise BadInput(f"image aspect ratio over {MAX_ASPECT}: {w}x{h}")
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im))
    except BadInput:
        raise
    except Image.DecompressionBombError as e:
        raise BadInput(f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise BadInput("corrupt image: unrecognised image format") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise BadInput(f"corrupt image: {type(e).__name__}: {str(e)[:200]}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode.startswith("I") or im.mode == "F":  # 16/32-bit integer or float greyscale
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0  # 16-bit range -> 8-bit
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    ):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def clean_caption(
    raw: bytes | str | None, min_sentences: int, max_chars: int | None = None
) -> tuple[str, tuple[Sentence, ...]]:
    """Decode (UTF-8), normalise whitespace and split a caption into sentences (labels None).
    Refused: not Unicode (a lone surrogate from a JSON escape), more than ``max_chars``
    characters, or a special token such as ``<|im_end|>`` (mmrpt.safety.text_problem)."""
    if raw is None:
        raise BadInput("missing caption")
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("caption not UTF-8") from None
    if not isinstance(raw, str):
        raise BadInput(f"caption is not text: {type(raw).__name__}")
    text = " ".join(raw.lstrip("\ufeff").split())
    if not text:
        raise BadInput("empty caption")
    problem = text_problem(text, max_chars)
    if problem:
        raise BadInput(problem)
    sentences = split_sentences(text)
    if len(sentences) < min_sentences:
        raise BadInput(f"caption has {len(sentences)} sentence(s), need >= {min_sentences}")
    return text, sentences


@dataclass
class _Row:
    """One input row as a reader sees it, before validation."""

    where: dict[str, Any]  # {"input": file, "line" | "row" | "key": locator}
    id: Any = None
    image: Any = None  # bytes, or a path (already resolved against the input's folder)
    caption: Any = None
    error: str | None = None  # set when the row is unreadable as a whole


def resolve_inputs(inputs: str | os.PathLike | list[str]) -> list[Path]:
    """The files of one split's inputs (paths, globs); FileNotFoundError if one matches none."""
    items = [inputs] if isinstance(inputs, str | os.PathLike) else list(inputs)
    paths: list[Path] = []
    for item in map(os.fspath, items):
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches or not all(os.path.isfile(m) for m in matches):
            raise FileNotFoundError(f"no input file(s) for {item!r}")
        odd = [m for m in matches if not utf8_safe([m])]
        if odd:  # every record names its input file; the manifest is UTF-8
            raise Refused(f"input file name not UTF-8: {ascii(odd[0])}; rename it")
        paths += map(Path, matches)
    return paths


def _iter_jsonl(paths: list[Path]) -> Iterator[_Row]:
    for path in paths:
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue  # blank lines are not rows
                row = _Row({"input": str(path), "line": lineno})
                try:
                    d = json.loads(line)
                except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                    row.error = f"bad json line: {str(e)[:100]}"
                    yield row
                    continue
                if not isinstance(d, dict):
                    row.error = "bad json line: not an object"
                else:
                    row.id, row.caption = d.get("id"), d.get("caption")
                    image = d.get("image")
                    row.error = _missing(image, row.caption)
                    if isinstance(image, str):
                        row.image = path.parent / image  # no-op when image is absolute
                    elif row.error is None:
                        row.error = f"bad image field: {type(image).__name__}, expected a path"
                yield row


def _missing(image: Any, caption: Any) -> str | None:
    if image is None:
        return "missing field: image"
    return "missing field: caption" if caption is None else None


def _iter_parquet(paths: list[Path], batch_size: int = 64) -> Iterator[_Row]:
    import pyarrow.parquet as pq

    for path in paths:
        n = 0
        try:
            pf = pq.ParquetFile(path)
            cols = [c for c in ("id", "caption", "image") if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=batch_size, columns=cols or None):
                for d in batch.to_pylist():
                    row = _Row({"input": str(path), "row": n}, d.get("id"), None, d.get("caption"))
                    n += 1
                    image = d.get("image")
                    if isinstance(image, dict):  # Hugging Face datasets: {"bytes", "path"}
                        b = image.get("bytes")
                        image = image.get("path") if b is None else b
                    row.error = _missing(image, row.caption)
                    if isinstance(image, str):
                        row.image = path.parent / image
                    elif isinstance(image, bytes):
                        row.image = image
                    elif row.error is None:
                        row.error = f"bad image field: {type(image).__name__}"
                    yield row
        except Exception as e:  # unreadable file or row group: the rest of the file is lost
            err = f"corrupt parquet file: {type(e).__name__}: {str(e)[:200]}"
            yield _Row({"input": str(path), "row": n}, error=err)


def _iter_webdataset(paths: list[Path]) -> Iterator[_Row]:
    import webdataset as wds

    for path in paths:
        key = None
        try:
            for sample in wds.WebDataset([str(path)], shardshuffle=False, empty_check=False):
                key = sample["__key__"]
                row = _Row({"input": str(path), "key": key}, id=key)
                row.image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
                row.caption = sample.get("txt")
                if row.caption is None and "json" in sample:
                    try:
                        row.caption = json.loads(sample["json"]).get("caption")
                    except (ValueError, AttributeError):
                        row.error = "bad json in shard"
                if row.image is None:
                    row.error = "missing image in shard"
                elif row.caption is None and row.error is None:
                    row.error = "missing caption in shard"
                yield row
            error = _tar_end_error(path)
        except Exception as e:  # tarfile.ReadError etc.; webdataset appends " @ <stream>"
            msg = str(e.args[0]).split(" @ ")[0] if e.args else ""
            error = f"corrupt shard: {type(e).__name__}: {msg[:200]}"
        if error:
            yield _Row({"input": str(path), "key": f"after {key}" if key else None}, error=error)


def _tar_end_error(path: Path) -> str | None:
    """A tar cut at a member boundary reads without error; its end-of-archive marker is gone."""
    with tarfile.open(path, "r:*") as tf:
        for _ in tf:
            pass
        tf.fileobj.seek(tf.offset)
        block = tf.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
        return None
    return "corrupt shard: truncated (no end-of-archive marker)"


_READERS = {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "webdataset": _iter_webdataset}


def json_line(obj: Any) -> str:
    """One JSON line, UTF-8 where it can be, ASCII escapes where a string is not Unicode (a
    reject may quote the lone surrogate it was rejected for)."""
    line = json.dumps(obj, ensure_ascii=False)
    return line if utf8_safe([line]) else json.dumps(obj)


def _safe_id(raw: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)[:200]


def ingest(
    source: Source,
    inputs: str | list[str],
    out_dir: str | Path,
    split: str,
    *,
    min_sentences: int = 2,
    max_pixels: int = 4096 * 4096,
    min_side: int = 1,
    max_caption_chars: int | None = None,
    id_prefix: str = "",
    seen: dict[str, str] | None = None,
) -> IngestReport:
    """Validate every row of ``inputs`` and write ``out_dir/<split>.jsonl``, images, rejects.

    Ids are sanitised to ``[A-Za-z0-9._-]``; rows without one get ``<split>-<row:07d>`` (row
    counted over all inputs). An id already accepted in this call, or in ``seen`` ({id: split},
    shared by the calls that write one folder, updated here), rejects the row as a duplicate:
    ids name the image files, so a repeated id in another split would overwrite its image.
    ``rejects.jsonl`` is appended to, so several splits can share one folder. Ids and image
    paths must be Unicode (no lone surrogates), captions as ``clean_caption`` says.
    """
    if source not in _READERS:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(_READERS)}")
    paths = resolve_inputs(inputs)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    report, reasons = IngestReport(), Counter()
    seen = {} if seen is None else seen

    def accepted(rejects) -> Iterator[Record]:
        rows = bar(_READERS[source](paths), desc=f"ingest {split}", unit="row")
        for index, row in enumerate(rows):
            report.n_input += 1
            raw_id = "" if row.id is None else str(row.id).strip()
            rid = _safe_id(id_prefix + (raw_id or f"{split}-{index:07d}"))
            try:
                if row.error:
                    raise BadInput(row.error)
                if not utf8_safe([raw_id]):
                    raise BadInput("id not Unicode: lone surrogate")
                if isinstance(row.image, str | Path) and not utf8_safe([str(row.image)]):
                    raise BadInput("image path not Unicode: lone surrogate")
                if rid in seen:
                    raise BadInput(f"duplicate id: already accepted in split {seen[rid]}")
                caption, sentences = clean_caption(row.caption, min_sentences, max_caption_chars)
                img = load_image(row.image, max_pixels, min_side)
            except BadInput as e:
                reason = str(e)
                report.n_rejected += 1
                reasons[reason.split(":")[0]] += 1
                where = dict(row.where)
                rej = {"split": split, "source": source, "input": where.pop("input")}
                rej["row"] = next(iter(where.values()))  # line number, row index or key
                if raw_id or not row.error:
                    rej["id"] = rid
                rej["reason"] = reason
                rejects.write(json_line(rej) + "\n")
                continue
            seen[rid] = split
            image_rel = f"images/{rid}.png"
            tmp = out / (image_rel + ".tmp")
            img.save(tmp, format="PNG")
            os.replace(tmp, out / image_rel)
            report.n_accepted += 1
            meta = {"source": source, **row.where}
            if raw_id and raw_id != rid:
                meta["orig_id"] = raw_id
            yield Record(rid, image_rel, caption, sentences, meta)

    with open(out / "rejects.jsonl", "a", encoding="utf-8") as rejects:
        write_manifest(out / f"{split}.jsonl", accepted(rejects))
    report.reasons = dict(reasons.most_common())
    top = ", ".join(f"{r}: {n}" for r, n in list(report.reasons.items())[:5]) or "none"
    dest, counts = out / f"{split}.jsonl", (report.n_input, report.n_accepted, report.n_rejected)
    logger.info("%s -> %s: %d rows, %d accepted, %d rejected (%s)", source, dest, *counts, top)
    report.check()
    return report
