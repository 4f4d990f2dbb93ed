"""Sizes of the session's example cohort and a digest helper, shared by the import tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

N_SUBJECTS = 600
N_RECORDS = 12


def digests(folder: Path) -> dict[str, str]:
    """Content digest of every file under ``folder``: proves an import wrote nothing there."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
