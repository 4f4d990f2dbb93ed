"""Sizes of the session's example cohort and a digest helper, shared by the import tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

N_SUBJECTS = 600
N_RECORDS = 12


def digests(folder: Path) -> dict[str, str]:
    """Content digest of every file under ``folder``: proves an import wrote nothing there."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def wfdb_samples() -> Path | None:
    """PhysioNet records from MIT-LCP/wfdb-python's ``sample-data``: $LSE_WFDB_SAMPLES, or extracted from a local mirror.

    The records (MIT-BIH 100, PTB s0010_re) are PhysioNet's, not ours to commit; tests that need
    them skip when neither is there.
    """
    if os.environ.get("LSE_WFDB_SAMPLES"):
        return Path(os.environ["LSE_WFDB_SAMPLES"])
    mirror = Path("/work/.mirror/MIT-LCP+wfdb-python/repo")
    if not mirror.exists():
        return None
    target = Path("/tmp/lse-wfdb-samples")
    if not (target / "sample-data" / "s0010_re.xyz").exists():
        target.mkdir(parents=True, exist_ok=True)
        names = [f"sample-data/{n}" for n in ("100.hea", "100.dat", "s0010_re.hea", "s0010_re.dat", "s0010_re.xyz")]
        archive = subprocess.run(["git", "--git-dir", str(mirror), "archive", "HEAD", *names], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "sample-data"


def pydicom_file(name: str) -> Path:
    """A file of pydicom's own test data (shipped with the package)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def nibabel_file(name: str) -> Path:
    """A file of nibabel's own test data (shipped with the package)."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / name
