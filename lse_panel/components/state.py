"""Per-session explorer state: the selection and what it is compared with (params only, no UI)."""

from __future__ import annotations

from typing import Any

import numpy as np
import param

from lse_panel.analysis.phenotype_filters import filter_mask
from lse_panel.analysis.selection import MODES, combine, sorted_unique
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import IdsStep

EMPTY = np.empty(0, dtype=np.int64)
EMPTY.flags.writeable = False



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
    mode = param.Selector(
        default="new",
        objects=list(MODES),
        doc="How a new box or lasso combines with the current region: replace it, add to it, "
        "intersect with it or subtract from it.",
    )
    region = param.Array(
        default=None,
        allow_None=True,
        doc="Sorted int64 indices chosen by geometry or by id, before phenotype filters; "
        "None when nothing has been drawn (then the filters alone define the selection).",
    )
    filters = param.Dict(
        default={},
        doc="Phenotype filters: name → (lo, hi) for continuous, name → category codes to keep "
        "otherwise. The selection is the region restricted to subjects passing all of them.",
    )

    def __init__(self, cohort: Cohort, **params) -> None:
        super().__init__(**params)
        self.cohort = cohort
        self.store: Any = None  # a SubgroupStore whose names the comparison may take (set by SubgroupManager)
        # How the region was made, step by step (a box, a lasso, ids), so a saved subgroup keeps its rule.
        self._region_steps: list[tuple[Any, np.ndarray, str]] = []
        self.param.watch(self._sync_selection, ["region", "filters"])
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
        # A saved subgroup's name (offered by the subgroup manager, which sets ``store``).
        store = getattr(self, "store", None)
        if store is not None and self.comparison in store:
            return store.members(self.comparison)
        raise ValueError(f"unknown comparison group {self.comparison!r}")

    def select(self, indices: np.ndarray, mode: str = "new", *, step: Any = None) -> None:
        """Set the region to ``indices`` (combined with the current one by ``mode``); filters then apply.

        Without active filters the selection becomes exactly the sorted unique ``indices``.
        ``step`` is the geometry that produced them (a ``BoxStep`` or ``LassoStep`` from
        :mod:`lse_panel.cohort.subgroups`); without one, the rule records the subjects' ids.
        """
        indices = sorted_unique(np.asarray(indices, dtype=np.int64), "selection")
        if indices.size and (indices[0] < 0 or indices[-1] >= self.cohort.n_subjects):
            raise IndexError(
                f"selection indices must lie in 0..{self.cohort.n_subjects - 1}; "
                f"got {indices[0]}..{indices[-1]}"
            )
        if mode not in MODES:
            raise ValueError(f"unknown selection mode {mode!r}; use one of {MODES}")
        current = self.region if self.region is not None else EMPTY
        if mode == "new":
            self._region_steps = []
        self._region_steps.append((step, indices, mode))
        self.region = combine(current, indices, mode)

    def select_drawn(self, indices: np.ndarray, *, step: Any = None) -> None:
        """Combine a box or lasso result with the region using the current :attr:`mode`."""
        self.select(indices, self.mode, step=step)

    def region_rule(self) -> list[Any]:
        """The steps that rebuild the region: recorded geometry where drawn, subject ids otherwise."""
        ids = np.asarray(self.cohort.ids)
        return [
            step if step is not None else IdsStep(ids[indices], mode=mode)
            for step, indices, mode in self._region_steps
        ]

    def clear(self) -> None:
        """Forget the region and every filter: nothing is selected."""
        self._region_steps = []
        self.param.update(region=None, filters={})
        self.selection = EMPTY

    def _sync_selection(self, *_: Any) -> None:
        mask = filter_mask(self.cohort.phenotype_columns, self.cohort.phenotype_specs, self.filters)
        if mask is None:
            selection = EMPTY if self.region is None else self.region
        elif self.region is None:
            selection = np.flatnonzero(mask).astype(np.int64)
        else:
            selection = self.region[mask[self.region]]
        self.selection = selection
