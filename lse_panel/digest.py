"""Content digests that tie derived data to the exact file it came from (a checkpoint, a model)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_digest(path: str | os.PathLike[str]) -> str:
    """The first 16 hex digits of the file's SHA-256: enough to tell two checkpoints apart."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def checkpoint_digest(model_dir: str | os.PathLike[str]) -> str:
    """Digest of a model directory's ``model.pt`` (or of the file itself when given one)."""
    path = Path(model_dir)
    return file_digest(path / "model.pt" if path.is_dir() else path)
