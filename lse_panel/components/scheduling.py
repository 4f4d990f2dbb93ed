"""When a pane recomputes: at once in notebooks and tests; served, on the next tick, coalesced, and only while visible."""

from __future__ import annotations

from typing import Callable

import panel as pn

Work = Callable[[], None]


def served() -> bool:
    """Whether the code runs in a served Bokeh session (rather than a notebook or a test)."""
    doc = pn.state.curdoc
    return bool(doc is not None and doc.session_context is not None)


class Scheduler:
    """Runs one pane's recomputations.

    Served, ``schedule`` shows a spinner on ``area`` and runs the work on the next tick, so the
    spinner reaches the browser first; repeated triggers before it runs coalesce into one run on
    the latest state (the throttle of a dragged slider). While the pane is inactive (a hidden
    tab), work is only remembered and runs when it becomes active again: at 500k subjects every
    pane recomputing on every lasso would cost seconds, only the visible one needs to.
    """

    def __init__(self) -> None:
        self.active = True
        self._pending: set[str] = set()
        self._stale: dict[str, tuple[pn.viewable.Viewable | None, Work]] = {}

    def schedule(self, name: str, area: pn.viewable.Viewable | None, work: Work) -> None:
        if not self.active:
            self._stale[name] = (area, work)
            return
        if not served():
            work()
            return
        if name in self._pending:
            return
        self._pending.add(name)
        if area is not None:
            area.loading = True

        def run() -> None:
            try:
                self._pending.discard(name)
                work()
            finally:
                if area is not None:
                    area.loading = False

        pn.state.execute(run, schedule=True)

    def set_active(self, active: bool) -> None:
        """Show or hide the pane; becoming active runs whatever went stale meanwhile."""
        self.active = bool(active)
        if self.active and self._stale:
            stale, self._stale = self._stale, {}
            for name, (area, work) in stale.items():
                self.schedule(name, area, work)
