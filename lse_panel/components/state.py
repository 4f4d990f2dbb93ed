"""Per-session explorer state: the selection, what it is compared with, and the groups they imply (no UI)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import param

from lse_panel.analysis.groups import BUILTIN_COMPARISONS, COMPARISON, GroupSet
from lse_panel.analysis.privacy import PrivacyPolicy
from lse_panel.analysis.selection import MODES, sorted_unique
from lse_panel.cohort.backend import DataBackend, in_process
from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.rules import IdsStep, UnknownSubgroupError
from lse_panel.cohort.subgroups import SubgroupStore

EMPTY = np.empty(0, dtype=np.int64)
EMPTY.flags.writeable = False


class ExplorerState(param.Parameterized):
    """What one user has selected, and the groups it implies; every pane watches this and nothing else.

    The cohort itself is process-wide and read-only; this object is per session and small
    (a sorted index array, or on a cluster a handle to masks kept on the workers), so many
    sessions cost little memory. Every selection, filter and statistic goes through
    :attr:`backend`.

    :attr:`groups` is derived by one watcher whenever the selection, the comparison or the
    compared subgroup changes: panes read the selection's and comparison's rows, sizes, privacy
    verdicts and latent sums from it, and never derive them again.

    Parameters
    ----------
    cohort
        The cohort (shared, read-only).
    store
        The cohort's saved subgroups, which the comparison may name; default: a new
        :class:`SubgroupStore` on ``cohort``. Every pane reaches the store through the state.
    policy
        The privacy policy (:attr:`policy`) whose verdicts :attr:`groups` carries.
    backend
        Where the data lives (:mod:`lse_panel.cohort.backend`); default: the cohort's in-process backend.
    """

    selection = param.Parameter(
        default=EMPTY,
        doc="The selected subjects as the backend holds them: sorted, unique int64 row indices in "
        "process, a handle to masks on the workers on a cluster (its size: n_selected).",
    )
    comparison = param.Selector(
        default="rest",
        objects=["rest", "all"],
        doc="What the selection is compared with: the rest of the cohort, the whole cohort, "
        "or a saved subgroup's name.",
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
    region = param.Parameter(
        default=None,
        doc="The subjects chosen by geometry or by id, before phenotype filters (as the backend holds "
        "them, like the selection); None when nothing has been drawn (then the filters alone define the selection).",
    )
    filters = param.Dict(
        default={},
        doc="Phenotype filters: name → (lo, hi) for continuous, name → category codes to keep "
        "otherwise. The selection is the region restricted to subjects passing all of them.",
    )
    groups = param.ClassSelector(
        class_=GroupSet, constant=True,
        doc="The groups the selection and comparison imply (rows, sizes, privacy verdicts, latent sums); "
        "replaced, never edited, on every change. Panes watch this.",
    )

    def __init__(
        self,
        cohort: Cohort,
        *,
        store: SubgroupStore | None = None,
        policy: PrivacyPolicy | None = None,
        backend: DataBackend | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.cohort = cohort
        self.backend = backend if backend is not None else in_process(cohort)
        self._store_version: Any = None
        self.store = store if store is not None else SubgroupStore(cohort)
        self.policy = policy if policy is not None else PrivacyPolicy()
        # How the region was made, step by step (a box, a lasso, ids), so a saved subgroup keeps its rule.
        self._region_steps: list[tuple[Any, np.ndarray, str]] = []
        self.set_decode_kinds(list(cohort.latents) or ["fused"])
        self.refresh_subgroups()
        self._sync_groups()
        self.param.watch(self._sync_selection, ["region", "filters"])
        # After the selection's other watchers (precedence 1 > 0): the latent views' highlight, the
        # first thing a lasso should change, is drawn before the panes recompute from the groups.
        self.param.watch(self._sync_groups, ["selection", "comparison"], precedence=1)

    @property
    def n_selected(self) -> int:
        return self.backend.size(self.selection)

    def comparison_indices(self) -> np.ndarray:
        """Row indices of the comparison group (sorted int64): ``groups.rows("comparison")``."""
        return self.groups.rows(COMPARISON)

    def set_decode_kinds(self, kinds: Sequence[str]) -> None:
        """Offer ``kinds`` as :attr:`decode_from` (the latent kinds the session's decoder decodes)."""
        kinds = list(kinds) or ["fused"]
        self.param.decode_from.objects = kinds
        if self.decode_from not in kinds:
            self.decode_from = "fused" if "fused" in kinds else kinds[0]

    def refresh_subgroups(self) -> list[str]:
        """Offer the saved subgroups as comparison groups, and follow a change to the compared one.

        Reads the store only when it changed (one ``stat`` otherwise). A comparison with a subgroup
        that has gone falls back to ``"rest"``.

        Returns
        -------
        list of str
            The saved subgroups' names.
        """
        names = self.store.names()
        objects = [*BUILTIN_COMPARISONS, *(n for n in names if n.casefold() not in BUILTIN_COMPARISONS)]
        if list(self.param.comparison.objects) != objects:
            self.param.comparison.objects = objects
        if self.comparison not in objects:
            self.comparison = "rest"  # the watcher re-derives the groups
        elif self.groups is not None and self.groups.comparison_kind == "subgroup":
            if self.store.version() != self._store_version:
                self._sync_groups()  # the compared subgroup may have been saved again
        return names

    def select(self, indices: np.ndarray, mode: str = "new", *, step: Any = None) -> None:
        """Set the region to ``indices`` (combined with the current one by ``mode``); filters then apply.

        Without active filters the selection becomes exactly the sorted unique ``indices``.
        ``step`` is the geometry that produced them (a ``BoxStep`` or ``LassoStep`` from
        :mod:`lse_panel.cohort.subgroups`); without one, the rule records the subjects' ids.
        """
        if mode not in MODES:
            raise ValueError(f"unknown selection mode {mode!r}; use one of {MODES}")
        if isinstance(indices, np.ndarray) or not hasattr(indices, "complement"):  # rows, not a backend's handle
            indices = sorted_unique(np.asarray(indices, dtype=np.int64), "selection")
            if indices.size and (indices[0] < 0 or indices[-1] >= self.cohort.n_subjects):
                raise IndexError(
                    f"selection indices must lie in 0..{self.cohort.n_subjects - 1}; "
                    f"got {indices[0]}..{indices[-1]}"
                )
            indices = self.backend.from_rows(indices)
        if mode == "new":
            self._region_steps = []
        self._region_steps.append((step, indices, mode))
        self.region = self.backend.combine(self.region, indices, mode)

    def select_drawn(self, indices: np.ndarray, *, step: Any = None) -> None:
        """Combine a box or lasso result with the region using the current :attr:`mode`."""
        self.select(indices, self.mode, step=step)

    def region_rule(self) -> list[Any]:
        """The steps that rebuild the region: recorded geometry where drawn, subject ids otherwise."""
        ids = self.cohort.ids
        return [
            step if step is not None else IdsStep(np.asarray(ids[self.backend.rows(indices)]), mode=mode)
            for step, indices, mode in self._region_steps
        ]

    def clear(self) -> None:
        """Forget the region and every filter: nothing is selected."""
        self._region_steps = []
        self.param.update(region=None, filters={})
        self.selection = EMPTY

    def _sync_groups(self, *_: Any) -> None:
        rows = None
        self._store_version = self.store.version()
        if self.comparison not in BUILTIN_COMPARISONS:
            try:
                rows = self.backend.subgroup(self.store, self.comparison)
            except UnknownSubgroupError:  # deleted in another session: compare with the rest instead
                self.comparison = "rest"
                return
        groups = GroupSet(
            self.cohort.n_subjects, self.selection, self.comparison, rows,
            policy=self.policy, sums=self.backend.latent_sums(), metric_sums=self.backend.metric_sums(),
        )  # fmt: skip
        with param.edit_constant(self):
            self.groups = groups

    def _sync_selection(self, *_: Any) -> None:
        self.selection = self.backend.restrict(self.region, self.filters)
