"""Projections a background ``lse build`` is still computing: a notice while they run, shown as they land."""

from __future__ import annotations

from typing import Any, Callable

import panel as pn

from lse_panel.cohort.bundle import Cohort
from lse_panel.cohort.schema import BundleError
from lse_panel.components.scheduling import served
from lse_panel.components.text import markdown

CHECK_EVERY_MS = 5_000
"""How often a served session looks for new projections (a manifest read: well under a millisecond)."""


class BuildProgress(pn.viewable.Viewer):
    """Watches a servable bundle for the projections its build adds, and offers them to the views.

    ``lse serve --build-if-missing`` starts serving once every PCA and the fused UMAP exist; the
    single-modality UMAPs follow from a background ``lse build``. While any is pending this shows
    a spinner and their names; served, it re-reads the manifest every :data:`CHECK_EVERY_MS`
    and calls ``on_new`` when projections arrive (the views then list them).

    Parameters
    ----------
    cohort
        The cohort the views show (shared by every session of a server process).
    on_new
        Called with the new projection keys, so the views can offer them.
    """

    def __init__(self, cohort: Cohort, on_new: Callable[[list[str]], None]) -> None:
        super().__init__()
        self.cohort = cohort
        self.on_new = on_new
        self._shown = set(cohort.projections)
        self._spinner = pn.indicators.LoadingSpinner(value=True, size=18, color="secondary", align="center")
        self._text = markdown("", margin=(0, 8), align="center")
        self._notice = pn.Row(self._spinner, self._text, visible=False)
        self._callback: Any = None
        self._update_notice()
        if self.cohort.pending_projections and served():
            self._callback = pn.state.add_periodic_callback(self.check, period=CHECK_EVERY_MS)

    def check(self) -> list[str]:
        """Pick up projections added since the last check; returns the ones new to this session."""
        try:
            self.cohort.refresh_projections()
        except (BundleError, OSError) as exc:
            self._stop()
            self._spinner.value = False
            self._text.object = f"Could not load the newly built projections: {exc}"
            self._notice.visible = True
            return []
        new = [key for key in self.cohort.projections if key not in self._shown]
        if new:
            self._shown.update(new)
            self.on_new(new)
            if served() and pn.state.notifications is not None:
                pn.state.notifications.info(f"New projection{'s' if len(new) > 1 else ''} ready: {', '.join(new)}", duration=6000)
        self._update_notice()
        if not self.cohort.pending_projections:
            self._stop()
        return new

    def _update_notice(self) -> None:
        pending = self.cohort.pending_projections
        self._notice.visible = bool(pending)
        if pending:
            self._text.object = (
                f"Still computing {', '.join(pending)}: they appear in the projection menu when ready. "
                f"(A background `lse build` is adding them; if none runs, `lse build --out {self.cohort.path}` finishes them.)"
            )

    def _stop(self) -> None:
        if self._callback is not None:
            self._callback.stop()
            self._callback = None

    def __panel__(self) -> pn.viewable.Viewable:
        return self._notice
