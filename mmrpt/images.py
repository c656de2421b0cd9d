"""Image files: the one way the pipeline opens an image."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def open_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` decoded to RGB (the file is closed afterwards)."""
    with Image.open(path) as im:
        return im.convert("RGB")
