"""An HTML gallery of masked samples: image beside the caption, hidden parts highlighted with
their scores and ground-truth labels. One self-contained file (images inlined as base64)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mmrpt.masking.samples import MaskedSample


def _img_tag(path: Path, size: int = 168) -> str:
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def masked_gallery(
    samples: Sequence[MaskedSample], root: str | Path, path: str | Path, title: str
) -> Path:
    """An HTML page of masked samples: image, caption with the hidden parts highlighted."""
    root = Path(root)
    rows = []
    for s in samples:
        caption, parts, pos = s.caption, [], 0
        for (a, b), score, label in zip(s.spans, s.scores, s.labels, strict=True):
            tag = {1: "dependent", 0: "independent"}.get(label, "unlabelled")
            parts.append(html.escape(caption[pos:a]))
            parts.append(
                f'<mark class="{tag}" title="score {score:.3f}, label {tag}">'
                f"{html.escape(caption[a:b])}<sub>{score:.2f}</sub></mark>"
            )
            pos = b
        parts.append(html.escape(caption[pos:]))
        rows.append(
            f"<tr><td>{_img_tag(root / s.image)}</td><td><b>{html.escape(s.id)}"
            f"</b><br>{''.join(parts)}<br><small>{html.escape(s.masked_caption)}"
            "</small></td></tr>"
        )
    page = f"""<!doctype html><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}} td{{vertical-align:top;padding:6px}}
mark.dependent{{background:#f7b6b6}} mark.independent{{background:#b6cdf7}}
mark.unlabelled{{background:#eee}}</style>
<h2>{html.escape(title)}</h2><p>Highlighted: hidden parts with their score; red = truly
vision-dependent, blue = truly vision-independent (ground truth).</p>
<table>{"".join(rows)}</table>"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
