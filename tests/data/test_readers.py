"""Tests for mmrpt.data.readers: every input row is either accepted intact or rejected with a reason."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmrpt.data.readers import BadInput, IngestReport, clean_caption, ingest, load_image
from mmrpt.data.records import read_manifest

CAPTION = "A small square. It is red!"
SENTENCES = ["A small square.", "It is red!"]


# ---------------------------------------------------------------------------- input builders


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def noise(size: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size, size, len(mode)) if len(mode) > 1 else (size, size)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def rgba_image() -> Image.Image:
    im = noise(16, "RGBA", seed=1)
    im.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent -> white
    im.putpixel((1, 0), (10, 20, 30, 255))  # opaque -> unchanged
    return im


def p_image() -> Image.Image:
    return noise(16, seed=2).quantize(colors=8)


def rgb_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


GOOD = {  # id -> PNG bytes whose RGB pixels must survive ingest exactly
    "rgb": png_bytes(noise(16)),
    "rgba": png_bytes(rgba_image()),
    "pal": png_bytes(p_image()),
}


def expected_rgb(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, im).convert("RGB"))
    return np.asarray(im.convert("RGB"))


BAD_BYTES = {  # name -> (image bytes, expected reason substring); max_pixels=1000 in the tests
    "corrupt": (random.Random(0).randbytes(300), "corrupt image"),
    "truncated": (png_bytes(noise(30))[: len(png_bytes(noise(30))) // 2], "corrupt image"),
    "zero": (b"", "empty image file"),
    "huge": (png_bytes(noise(64)), "image too large: 64x64 > 1000"),
}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tf.addfile(info, io.BytesIO(data))
    return path


def read_rejects(out: Path) -> list[dict]:
    path = out / "rejects.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_accepted(out: Path, split: str, report: IngestReport, expected: dict[str, bytes]):
    """Accepted records read back equal the inputs; rejects.jsonl matches the report."""
    report.check()
    assert report.n_input == report.n_accepted + report.n_rejected
    assert len(read_rejects(out)) == report.n_rejected
    recs = {r.id: r for r in read_manifest(out / f"{split}.jsonl")}
    assert set(recs) == set(expected)
    for rid, data in expected.items():
        r = recs[rid]
        assert r.caption == CAPTION
        assert [r.sentence_text(i) for i in range(len(r.sentences))] == SENTENCES
        assert all(s.label is None for s in r.sentences)
        assert r.image == f"images/{rid}.png"
        with Image.open(out / r.image) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            got = np.asarray(im)
        if data.startswith(b"\x89PNG"):
            np.testing.assert_array_equal(got, expected_rgb(data))
        else:  # JPEG: same decoder, same pixels
            np.testing.assert_array_equal(got, rgb_of(data))
    return recs


def reasons_by_row(out: Path, key: str = "id") -> dict:
    return {r.get(key): r["reason"] for r in read_rejects(out)}


# ---------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize(
    "raw, min_sentences, text, n",
    [
        ("  A dog.  It   runs. ", 2, "A dog. It runs.", 2),
        ("A\n\tdog.\r\nIt runs.", 2, "A dog. It runs.", 2),
        (b"A dog. It runs!", 2, "A dog. It runs!", 2),
        ("\ufeffOne sentence only.", 1, "One sentence only.", 1),
        ("Caf\u00e9 au lait. Tr\u00e8s bon?", 2, "Caf\u00e9 au lait. Tr\u00e8s bon?", 2),
    ],
)
def test_clean_caption_ok(raw, min_sentences, text, n):
    got, sentences = clean_caption(raw, min_sentences)
    assert got == text and len(sentences) == n
    assert all(s.label is None for s in sentences)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\xff\xfe not utf8. Two.", "caption not UTF-8"),
        ("", "empty caption"),
        (" \n\t ", "empty caption"),
        (None, "missing caption"),
        (42, "caption is not text"),
        ("Just one sentence.", "caption has 1 sentence(s), need >= 2"),
    ],
)
def test_clean_caption_bad(raw, reason):
    with pytest.raises(BadInput, match=reason.replace("(", r"\(").replace(")", r"\)")):
        clean_caption(raw, 2)


def _mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))  # a 16-bit PNG
    if mode == "F":
        return Image.fromarray(np.full((8, 8), 255.0, dtype=np.float32))
    if mode == "P+transparency":
        im = p_image()
        im.info["transparency"] = 0
        return im
    return noise(8).convert(mode)


@pytest.mark.parametrize(
    "mode", ["RGB", "RGBA", "LA", "L", "1", "P", "P+transparency", "CMYK", "I", "I;16", "F"]
)
def test_load_image_converts_to_rgb(tmp_path, mode):
    im = _mode_image(mode)
    fmt = {"CMYK": "TIFF", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, format=fmt)
    for src in (path, str(path), path.read_bytes()):
        out = load_image(src, max_pixels=1000)
        assert out.mode == "RGB" and out.size == im.size
    if mode in ("I;16", "F"):  # full-scale 16-bit / float -> white
        assert out.getpixel((0, 0)) == (255, 255, 255)
    if mode == "P+transparency":  # palette index 0 is transparent -> white
        idx = np.asarray(im)
        assert idx.min() == 0
        y, x = np.argwhere(idx == 0)[0]
        assert out.getpixel((int(x), int(y))) == (255, 255, 255)


def test_load_image_alpha_on_white():
    out = load_image(GOOD["rgba"], max_pixels=1000)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (10, 20, 30)


@pytest.mark.parametrize("name", sorted(BAD_BYTES))
def test_load_image_bad(tmp_path, name):
    data, reason = BAD_BYTES[name]
    path = tmp_path / "bad.png"
    path.write_bytes(data)
    for src in (path, data):
        with pytest.raises(BadInput, match=reason):
            load_image(src, max_pixels=1000)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(BadInput, match="missing image file"):
        load_image(tmp_path / "nope.png", max_pixels=1000)


def test_report_check():
    IngestReport(3, 2, 1, {"x": 1}).check()
    with pytest.raises(RuntimeError, match="rows lost"):
        IngestReport(3, 1, 1, {}).check()


# ---------------------------------------------------------------------------- jsonl


def test_jsonl_roundtrip_and_rejects(tmp_path):
    src = tmp_path / "src"
    write_files(src / "img", {f"{k}.png": v for k, v in GOOD.items()})
    write_files(src / "img", {"j.jpg": jpeg_bytes(noise(16, seed=5))})
    write_files(src / "img", {f"{k}.png": v for k, (v, _) in BAD_BYTES.items()})
    rows = [{"id": k, "image": f"img/{k}.png", "caption": CAPTION} for k in GOOD]
    rows += [
        {"id": "we/ird id", "image": "img/j.jpg", "caption": f"  {CAPTION}\n"},
        {"image": str(src / "img/rgb.png"), "caption": CAPTION},  # no id, absolute path
        {"id": "rgb", "image": "img/rgb.png", "caption": CAPTION},  # duplicate
        {"id": "missing", "image": "img/nope.png", "caption": CAPTION},
        {"id": "empty-cap", "image": "img/rgb.png", "caption": "   "},
        {"id": "one", "image": "img/rgb.png", "caption": "Only one sentence."},
        {"id": "nocap", "image": "img/rgb.png"},
    ]
    rows += [{"id": k, "image": f"img/{k}.png", "caption": CAPTION} for k in BAD_BYTES]
    lines = [json.dumps(r) for r in rows] + ["{not json", "", "[1, 2]"]
    (src / "data.jsonl").write_text("\n".join(lines) + "\n")

    out = tmp_path / "out"
    report = ingest("jsonl", str(src / "data.jsonl"), out, "train", max_pixels=1000)
    expected = dict(GOOD, **{"we_ird_id": (src / "img/j.jpg").read_bytes()})
    expected["train-0000004"] = GOOD["rgb"]
    recs = check_accepted(out, "train", report, expected)
    assert recs["we_ird_id"].meta == {
        "source": "jsonl",
        "input": str(src / "data.jsonl"),
        "line": 4,
        "orig_id": "we/ird id",
    }
    assert report.n_input == len(rows) + 2  # the blank line is not a row
    got = reasons_by_row(out, "row")
    want = {
        6: "duplicate id", 7: "missing image file", 8: "empty caption",
        9: "caption has 1 sentence(s), need >= 2", 10: "missing field: caption",
        11: "corrupt image", 12: "corrupt image", 13: "empty image file",
        14: "image too large: 64x64 > 1000", 15: "bad json line", 17: "bad json line",
    }  # fmt: skip
    assert set(got) == set(want)
    for row, reason in want.items():
        assert reason in got[row], (row, got[row])
    assert report.reasons["corrupt image"] == 2 and report.reasons["bad json line"] == 2
    assert all(r["split"] == "train" and r["source"] == "jsonl" for r in read_rejects(out))


def test_inputs_glob_and_list_and_prefix(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a.png": GOOD["rgb"]})
    for i in range(2):
        (src / f"part{i}.jsonl").write_text(json.dumps({"image": "a.png", "caption": CAPTION}))
    out = tmp_path / "out"
    report = ingest("jsonl", str(src / "part*.jsonl"), out, "val", id_prefix="x/")
    check_accepted(out, "val", report, {"x_val-0000000": GOOD["rgb"], "x_val-0000001": GOOD["rgb"]})
    paths = [str(src / "part0.jsonl"), str(src / "part1.jsonl")]
    assert ingest("jsonl", paths, tmp_path / "out2", "val").n_accepted == 2
    with pytest.raises(FileNotFoundError):
        ingest("jsonl", str(src / "nothing*.jsonl"), out, "val")


# ---------------------------------------------------------------------------- parquet


@pytest.mark.parametrize("kind", ["path", "bytes", "dict"])
def test_parquet_roundtrip(tmp_path, kind):
    src = tmp_path / "src"
    write_files(src / "img", {f"{k}.png": v for k, v in GOOD.items()})

    images = {
        "path": {k: f"img/{k}.png" for k in GOOD},
        "bytes": GOOD,
        "dict": {k: {"bytes": v, "path": f"{k}.png"} for k, v in GOOD.items()},  # HF datasets
    }[kind]
    table = pa.Table.from_pylist([{"id": k, "caption": CAPTION, "image": images[k]} for k in GOOD])
    pq.write_table(table, src / "data.parquet", row_group_size=2)
    out = tmp_path / "out"
    report = ingest("parquet", str(src / "data.parquet"), out, "train")
    assert report.n_rejected == 0
    recs = check_accepted(out, "train", report, GOOD)
    assert recs["pal"].meta == {"source": "parquet", "input": str(src / "data.parquet"), "row": 2}


def test_parquet_rejects(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a.png": GOOD["rgb"]})
    rows = [
        {"id": "ok", "caption": CAPTION, "image": {"bytes": None, "path": "a.png"}},
        {"id": "nullcap", "caption": None, "image": {"bytes": GOOD["rgb"], "path": None}},
        {"id": "noimg", "caption": CAPTION, "image": {"bytes": None, "path": None}},
        {"id": "corrupt", "caption": CAPTION, "image": {"bytes": BAD_BYTES["corrupt"][0]}},
        {"id": "trunc", "caption": CAPTION, "image": {"bytes": BAD_BYTES["truncated"][0]}},
        {"id": "ok", "caption": CAPTION, "image": {"bytes": GOOD["rgb"]}},
    ]
    pq.write_table(pa.Table.from_pylist(rows), src / "d.parquet")
    (src / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "out"
    report = ingest("parquet", [str(src / "d.parquet"), str(src / "broken.parquet")], out, "test")
    check_accepted(out, "test", report, {"ok": GOOD["rgb"]})
    assert report.n_input == 7 and report.n_rejected == 6
    got = [r["reason"] for r in read_rejects(out)]
    for want, reason in zip(
        ["missing field: caption", "missing field: image", "corrupt image", "corrupt image",
         "duplicate id", "corrupt parquet file"], got, strict=True
    ):  # fmt: skip
        assert want in reason


# ---------------------------------------------------------------------------- webdataset


def good_members() -> list[tuple[str, bytes]]:
    return [
        ("rgb.png", GOOD["rgb"]),
        ("rgb.txt", CAPTION.encode()),
        ("rgba.png", GOOD["rgba"]),
        ("rgba.json", json.dumps({"caption": CAPTION, "other": 1}).encode()),
        ("pal.png", GOOD["pal"]),
        ("pal.txt", f"\n{CAPTION}  ".encode()),
        ("jay.jpg", jpeg_bytes(noise(16, seed=7))),
        ("jay.txt", CAPTION.encode()),
    ]


def test_webdataset_roundtrip_and_rejects(tmp_path):
    shard = write_tar(tmp_path / "shard-000.tar", good_members())
    bad = [
        ("rgb.png", GOOD["rgb"]), ("rgb.txt", CAPTION.encode()),  # duplicate key
        ("latin.png", GOOD["rgb"]), ("latin.txt", b"\xff\xfeCaf\xe9. Bad."),
        ("noimg.txt", CAPTION.encode()), ("nocap.png", GOOD["rgb"]),
        ("emptycap.png", GOOD["rgb"]), ("emptycap.txt", b""),
        ("jsonnocap.png", GOOD["rgb"]), ("jsonnocap.json", b'{"text": "x"}'),
        ("corrupt.png", BAD_BYTES["corrupt"][0]), ("corrupt.txt", CAPTION.encode()),
        ("trunc.png", BAD_BYTES["truncated"][0]), ("trunc.txt", CAPTION.encode()),
        ("zero.png", b""), ("zero.txt", CAPTION.encode()),
        ("huge.png", BAD_BYTES["huge"][0]), ("huge.txt", CAPTION.encode()),
        ("one.png", GOOD["rgb"]), ("one.txt", b"One sentence."),
    ]  # fmt: skip
    write_tar(tmp_path / "shard-001.tar", bad)
    out = tmp_path / "out"
    report = ingest("webdataset", str(tmp_path / "shard-*.tar"), out, "train", max_pixels=1000)
    expected = dict(GOOD, jay=dict(good_members())["jay.jpg"])
    recs = check_accepted(out, "train", report, expected)
    assert recs["jay"].meta == {"source": "webdataset", "input": str(shard), "key": "jay"}
    want = {
        "rgb": "duplicate id", "latin": "caption not UTF-8", "noimg": "missing image in shard",
        "nocap": "missing caption in shard", "emptycap": "empty caption",
        "jsonnocap": "missing caption in shard", "corrupt": "corrupt image",
        "trunc": "corrupt image", "zero": "empty image file", "huge": "image too large",
        "one": "caption has 1 sentence(s)",
    }  # fmt: skip
    got = reasons_by_row(out, "row")
    assert set(got) == set(want)
    for key, reason in want.items():
        assert reason in got[key], (key, got[key])
    assert report.n_input == 4 + len(want)


def _shard_bytes(tmp_path: Path) -> bytes:
    return write_tar(tmp_path / "tmp.tar", good_members()).read_bytes()


def test_webdataset_corrupt_shard_mid_member(tmp_path):
    data = _shard_bytes(tmp_path)
    # Cut inside the data of the 4th member (rgba.json): rgb and the rgba image were read.
    offsets = [m.offset_data for m in tarfile.open(tmp_path / "tmp.tar").getmembers()]
    (tmp_path / "a.tar").write_bytes(data[: offsets[3] + 5])
    shard_b = write_tar(tmp_path / "b.tar", [("z.png", GOOD["pal"]), ("z.txt", CAPTION.encode())])
    out = tmp_path / "out"
    report = ingest("webdataset", [str(tmp_path / "a.tar"), str(shard_b)], out, "train")
    check_accepted(out, "train", report, {"rgb": GOOD["rgb"], "z": GOOD["pal"]})
    assert report.n_input == 3 and report.n_rejected == 1
    (rej,) = read_rejects(out)
    assert rej["reason"].startswith("corrupt shard: ReadError") and rej["row"] == "after rgb"
    assert report.reasons == {"corrupt shard": 1}


def test_webdataset_shard_cut_at_member_boundary(tmp_path):
    data = _shard_bytes(tmp_path)
    members = tarfile.open(tmp_path / "tmp.tar").getmembers()
    cut = members[4].offset  # a clean member boundary: tarfile reads this without any error
    (tmp_path / "a.tar").write_bytes(data[:cut])
    out = tmp_path / "out"
    report = ingest("webdataset", str(tmp_path / "a.tar"), out, "train")
    check_accepted(out, "train", report, {"rgb": GOOD["rgb"], "rgba": GOOD["rgba"]})
    (rej,) = read_rejects(out)
    assert "no end-of-archive marker" in rej["reason"]
