"""Per-session explorer state: the selection and what it is compared with (params only, no UI)."""

from __future__ import annotations

import numpy as np
import param

from lse_panel.cohort.bundle import Cohort

EMPTY = np.empty(0, dtype=np.int64)


class ExplorerState(param.Parameterized):
    """What one user has selected; every pane watches this and nothing else.

    The cohort itself is process-wide and read-only; this object is per session and small
    (a sorted index array), so many sessions cost little memory.
    """

    selection = param.Array(default=EMPTY, doc="Sorted, unique int64 row indices of the selected subjects.")
    comparison = param.Selector(
        default="rest",
        objects=["rest", "all"],
        doc="What the selection is compared with: the rest of the cohort, the whole cohort, "
        "or (later) a saved subgroup's name.",
    )
    decode_from = param.Selector(
        default="fused",
        objects=["fused", "ecg", "mri"],
        doc="Which latent kind the decode pane decodes (an ECG latent decoded into an MRI is cross-modal).",
    )
    focus_phenotype = param.String(default="", doc="Phenotype shown as predicted-vs-true in the accuracy pane.")
    inspected = param.Integer(default=None, allow_None=True, doc="Row index of the subject opened by a click.")

    def __init__(self, cohort: Cohort, **params) -> None:
        super().__init__(**params)
        self.cohort = cohort
        kinds = list(cohort.latents) or ["fused"]
        self.param.decode_from.objects = kinds
        if self.decode_from not in kinds:
            self.decode_from = "fused" if "fused" in kinds else kinds[0]

    @property
    def n_selected(self) -> int:
        return int(len(self.selection))

    def comparison_indices(self) -> np.ndarray:
        """Row indices of the comparison group (sorted int64)."""
        n = self.cohort.n_subjects
        if self.comparison == "all":
            return np.arange(n, dtype=np.int64)
        if self.comparison == "rest":
            keep = np.ones(n, dtype=bool)
            keep[self.selection] = False
            return np.flatnonzero(keep).astype(np.int64)
        raise ValueError(f"unknown comparison group {self.comparison!r}")

    def select(self, indices: np.ndarray) -> None:
        """Replace the selection, normalising to sorted unique int64 indices."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if indices.size and (indices[0] < 0 or indices[-1] >= self.cohort.n_subjects):
            raise IndexError(
                f"selection indices must lie in 0..{self.cohort.n_subjects - 1}; "
                f"got {indices[0]}..{indices[-1]}"
            )
        self.selection = indices

    def clear(self) -> None:
        self.selection = EMPTY
