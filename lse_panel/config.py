"""Every default of lse-panel in one place; the CLI reads these so ``--help`` shows real values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent


@dataclass(frozen=True)
class Settings:
    """Defaults for building, serving and analysing a cohort."""

    seed: int = 0
    demo_subjects: int = 500_000
    max_subjects: int = 50_000_000
    demo_bundle: Path = REPO_ROOT / "data" / "demo"
    demo_model: Path = REPO_ROOT / "models" / "demo"
    mri_shape: tuple[int, int, int] = (16, 48, 48)
    embed_batch_size: int = 2048
    crossfit_splits: int = 5
    crossfit_max_train: int = 50_000
    projection_methods: tuple[str, ...] = ("pca", "umap")
    address: str = "127.0.0.1"
    port: int = 5006
    num_procs: int = 1
    min_group_size: int = 10
    max_selection_sample: int = 4
    """Most subjects of a selection shown one by one (original vs reconstruction) in the decode pane."""
    slice_fdr: float = 0.05
    slice_top: int = 20
    slice_max_conditions: int = 2


SETTINGS = Settings()
