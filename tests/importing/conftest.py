"""A user-style example cohort written once per session (every embedding and raw format, TorchScript models)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from lse_panel.importing.example import write_example_cohort
from lse_panel.importing.spec import ImportSpec, read_spec

from import_fixtures import N_RECORDS, N_SUBJECTS, digests


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example cohort's folder: read-only for tests (copy it before changing anything)."""
    folder = tmp_path_factory.mktemp("example") / "cohort"
    write_example_cohort(folder, n_subjects=N_SUBJECTS, n_records=N_RECORDS, latent_dim=8)
    return folder


@pytest.fixture
def example_spec(example_dir: Path) -> ImportSpec:
    """The example's spec with PCA maps only (the UMAPs cost a minute; one test covers them)."""
    return replace(read_spec(example_dir / "cohort.toml"), projections=("pca",))



@pytest.fixture(scope="session")
def imported(example_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example imported once (PCA maps only); read-only for tests."""
    from lse_panel.importing import import_cohort

    before = digests(example_dir)
    spec = replace(read_spec(example_dir / "cohort.toml"), projections=("pca",))
    out = tmp_path_factory.mktemp("imported") / "bundle"
    import_cohort(spec, out, progress=False, log=lambda _: None)
    assert digests(example_dir) == before  # nothing the user gave was written to
    return out
