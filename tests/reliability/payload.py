"""A pickle that runs code when it is loaded: unpickling it creates a file (builtins.open in
write mode), so a test can see whether anything unpickled it."""

from __future__ import annotations

import pickle
from pathlib import Path


class _CreatesFile:
    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def payload(target: Path) -> bytes:
    """Pickle bytes whose loading creates ``target``."""
    return pickle.dumps(_CreatesFile(target))
