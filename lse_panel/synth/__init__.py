"""Synthetic UK Biobank-like cohort: phenotypes, 12-lead ECG median beats and 4-chamber cine MRI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lse_panel.cohort.schema import Modality
from lse_panel.synth.ecg import ECG_LEADS, ecg_modality, generate_ecg
from lse_panel.synth.mri import DEFAULT_MRI_SHAPE, generate_mri, mri_modality
from lse_panel.synth.phenotypes import DOWNSTREAM_TASKS, PHENOTYPES, generate_phenotypes, hidden_factors

__all__ = [
    "DEFAULT_MRI_SHAPE",
    "DOWNSTREAM_TASKS",
    "ECG_LEADS",
    "GENERATOR_VERSION",
    "PHENOTYPES",
    "SyntheticCohort",
    "generate_ecg",
    "generate_mri",
    "generate_phenotypes",
    "hidden_factors",
]

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output changes, so a build never mixes a bundle's stored
phenotypes with raw data from another generator. 2: ECG and MRI coupled through heart
orientation, systolic timing, conduction block and body size."""


class SyntheticCohort:
    """A reproducible synthetic cohort: any subject's data regenerate from (seed, id) alone.

    Parameters
    ----------
    seed
        The cohort's seed.
    mri_shape
        (frames, height, width) of the cine.
    """

    def __init__(self, seed: int = 0, mri_shape: tuple[int, int, int] = DEFAULT_MRI_SHAPE) -> None:
        self.seed = int(seed)
        self.mri_shape = tuple(int(s) for s in mri_shape)
        if len(self.mri_shape) != 3:
            raise ValueError(f"mri_shape must be (frames, height, width), got {mri_shape!r}")

    def __repr__(self) -> str:
        return f"SyntheticCohort(seed={self.seed}, mri_shape={self.mri_shape})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyntheticCohort) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.seed, self.mri_shape))

    @property
    def modalities(self) -> dict[str, Modality]:
        """The raw modalities, in order: ``{"ecg": SignalModality, "mri": ImageSequenceModality}``."""
        return {"ecg": ecg_modality(), "mri": mri_modality(self.mri_shape)}

    def phenotypes(self, ids: np.ndarray) -> pd.DataFrame:
        """Phenotype table for ``ids`` (see :func:`generate_phenotypes`).

        Parameters
        ----------
        ids
            Non-negative integer subject ids.

        Returns
        -------
        pandas.DataFrame
            Columns in :data:`PHENOTYPES` order, one row per id.
        """
        return generate_phenotypes(ids, self.seed)

    def raw(self, ids: np.ndarray, phenotypes: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """Raw data of every modality for ``ids``.

        Parameters
        ----------
        ids
            Non-negative integer subject ids.
        phenotypes
            Their rows of the phenotype table, aligned with ``ids``; regenerated when omitted.

        Returns
        -------
        dict of str to numpy.ndarray
            ``{"ecg": (n, 12, 600), "mri": (n, frames, height, width)}``, float32.
        """
        ids = np.asarray(ids)
        if phenotypes is None:
            phenotypes = self.phenotypes(ids)
        return {
            "ecg": generate_ecg(phenotypes, ids, self.seed),
            "mri": generate_mri(phenotypes, ids, self.seed, shape=self.mri_shape),
        }

    def to_json(self) -> dict[str, Any]:
        """How to regenerate this cohort's raw data, for a bundle's manifest."""
        return {"source": "synthetic", "seed": self.seed, "mri_shape": list(self.mri_shape), "version": GENERATOR_VERSION}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyntheticCohort:
        """Rebuild a cohort from :meth:`to_json`'s output.

        Parameters
        ----------
        data
            A mapping with ``source == "synthetic"``, ``seed`` and optionally ``mri_shape``.

        Returns
        -------
        SyntheticCohort
        """
        if data.get("source") != "synthetic":
            raise ValueError(
                f"expected a synthetic source description, got source={data.get('source')!r}; "
                "only manifests written from SyntheticCohort.to_json() can regenerate raw data"
            )
        return cls(seed=int(data["seed"]), mri_shape=tuple(data.get("mri_shape", DEFAULT_MRI_SHAPE)))
