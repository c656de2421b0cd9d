"""Bad data through the real `data` stage: every input row is accepted or rejected with its
reason, input = accepted + rejected per split (metrics file and MLflow), nothing overwritten.

Reader-level cases (WebDataset non-UTF-8 captions, corrupt and truncated shards, parquet
rows, each colour mode alone) are in tests/data/test_readers.py; here all kinds go through
one data stage run, as a user's messy folder would.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image, ImageFile

from mmrpt.cli import main
from mmrpt.data.readers import BadInput, load_image
from mmrpt.data.records import read_manifest

CAPTION = "A small square. It is on the left."
MAX_PIXELS = 500_000  # data.max_image_pixels in the stage run


def png(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def noise(mode: str, size: int = 24, seed: int = 0) -> Image.Image:
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(a, "RGB").convert(mode)


def png_header_only(width: int, height: int) -> bytes:
    """A ~70-byte PNG that claims width x height greyscale pixels (a decompression bomb's
    header: decoding it would need width*height bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


RED = png(Image.new("RGB", (24, 24), (200, 0, 0)))
BLUE = png(Image.new("RGB", (24, 24), (0, 0, 200)))
GOOD_PNG = png(noise("RGB"))
SIXTEEN_BIT = png(Image.fromarray(np.full((24, 24), 40000, dtype=np.uint16)))
# (id, image file name or None, image bytes (None: the file does not exist), caption or raw
#  JSONL line, expected: "ok" or a reason substring)
TRAIN = [
    ("rgb", "rgb.png", RED, CAPTION, "ok"),
    ("palette", "p.png", png(noise("RGB").quantize(colors=8)), CAPTION, "ok"),
    ("grey_alpha", "la.png", png(noise("LA")), CAPTION, "ok"),
    ("cmyk", "cmyk.jpg", png(noise("CMYK"), "JPEG"), CAPTION, "ok"),
    ("sixteen_bit", "i16.png", SIXTEEN_BIT, CAPTION, "ok"),
    ("zero", "zero.png", b"", CAPTION, "empty image file"),
    ("truncated", "trunc.png", GOOD_PNG[: len(GOOD_PNG) // 2], CAPTION, "corrupt image"),
    ("garbage", "garbage.png", bytes(range(256)) * 3, CAPTION, "corrupt image"),
    (
        "bomb_param",
        "bomb1.png",
        png(Image.new("L", (1000, 1000))),
        CAPTION,
        f"image too large: 1000x1000 > {MAX_PIXELS}",
    ),
    ("bomb_header", "bomb2.png", png_header_only(60_000, 60_000), CAPTION, "image too large"),
    ("missing", "nope.png", None, CAPTION, "missing image file"),
    (
        "latin1",
        "rgb.png",
        None,
        b'{"id": "latin1", "image": "rgb.png", "caption": "Caf\xe9 au lait. Tr\xe8s bon."}',
        "bad json line: 'utf-8' codec",
    ),
    ("empty", "rgb.png", None, "", "empty caption"),
    ("blank", "rgb.png", None, " \n\t ", "empty caption"),
    ("one", "rgb.png", None, "Only one sentence here.", "caption has 1 sentence(s), need >= 2"),
    ("rgb", "blue.png", BLUE, CAPTION, "duplicate id: already accepted in split train"),
    ("r_g_b", "rgb.png", None, CAPTION, "ok"),
    ("r g/b", "blue.png", None, CAPTION, "duplicate id"),  # ids are sanitised: r_g_b again
]
TEST = [  # another split of the same folder: ids are unique across splits (they name images)
    ("rgb", "blue.png", None, CAPTION, "duplicate id: already accepted in split train"),
    ("t1", "blue.png", None, CAPTION, "ok"),
]


def write_split(src: Path, name: str, rows) -> Path:
    lines = []
    for rid, image, data, caption, _ in rows:
        if data is not None:
            (src / image).write_bytes(data)
        if isinstance(caption, bytes):
            lines.append(caption)
        else:
            lines.append(json.dumps({"id": rid, "image": image, "caption": caption}).encode())
    path = src / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_bad_row_is_accepted_or_rejected_with_its_reason(tiny_project: Path):
    src = tiny_project / "raw"
    src.mkdir()
    (src / "blue.png").write_bytes(BLUE)
    inputs = {
        "train": str(write_split(src, "train", TRAIN)),
        "test_iid": str(write_split(src, "test", TEST)),
    }
    assert (
        main(
            [
                "data",
                "-S",
                "data.source=jsonl",
                "-S",
                f"data.inputs={json.dumps(inputs)}",
                "-S",
                f"data.max_image_pixels={MAX_PIXELS}",
            ]
        )
        == 0
    )

    out = tiny_project / "data/world"
    metrics = json.loads((tiny_project / "metrics/data.json").read_text())
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    for split, rows in (("train", TRAIN), ("test_iid", TEST)):
        want_ok = [r[0] for r in rows if r[4] == "ok"]
        want_bad = {line: r[4] for line, r in enumerate(rows, 1) if r[4] != "ok"}
        # input = accepted + rejected, in the metrics file
        assert metrics[f"{split}/n_input"] == len(rows)
        assert metrics[f"{split}/n_accepted"] == len(want_ok) == metrics[f"{split}/n_records"]
        assert metrics[f"{split}/n_rejected"] == len(want_bad)
        # every rejected row has one line in rejects.jsonl, with the expected reason
        got = {r["row"]: r["reason"] for r in rejects if r["split"] == split}
        assert set(got) == set(want_bad), (split, got)
        for line, reason in want_bad.items():
            assert reason in got[line], (split, line, got[line])
        categories = Counter(reason.split(":")[0] for reason in got.values())
        for category, n in categories.items():
            assert metrics[f"{split}/rejected/{category}"] == n
        # every accepted row is in the manifest, its image an RGB PNG of the input's size
        records = read_manifest(out / f"{split}.jsonl")
        assert [r.id for r in records] == want_ok
        for r in records:
            with Image.open(out / r.image) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (24, 24)
    # the cross-split duplicate did not overwrite train's image (red, not blue)
    with Image.open(out / "images/rgb.png") as im:
        assert im.getpixel((0, 0)) == (200, 0, 0)
    with Image.open(out / "images/sixteen_bit.png") as im:  # 16-bit range scaled, not clipped
        assert im.getpixel((0, 0)) == (round(40000 / 257),) * 3
    # the same counts reached MLflow
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlruns/mlflow.db'}")
    (run,) = [
        r
        for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
        if r.data.tags.get("kind") != "pipeline"
    ]
    for key in ("n_input", "n_accepted", "n_rejected"):
        for split in ("train", "test_iid"):
            assert run.data.metrics[f"{split}/{key}"] == metrics[f"{split}/{key}"]


def test_decompression_bomb_is_refused_from_its_header(monkeypatch):
    """A file that claims more pixels than data.max_image_pixels is refused before a single
    pixel is decoded (decoding it is what would exhaust memory)."""

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    for size, limit in ((5000, 4096 * 4096), (60_000, 4096 * 4096), (2000, 1_000_000)):
        with pytest.raises(BadInput, match="image too large"):
            load_image(png_header_only(size, size), max_pixels=limit)
    with pytest.raises(BadInput, match="corrupt image: AssertionError"):  # the trap works
        load_image(png_header_only(100, 100), max_pixels=1_000_000)
