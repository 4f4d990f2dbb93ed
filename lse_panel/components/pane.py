"""What every pane of the Explorer shares: the session state it renders, its scheduler, its read-only results."""

from __future__ import annotations

from typing import Any, Callable

import panel as pn
import param

from lse_panel.components.scheduling import Scheduler
from lse_panel.components.state import ExplorerState


class Pane(pn.viewable.Viewer):
    """Base of the Explorer's panes: the state, a :class:`Scheduler` for recomputes, results set read-only.

    A pane builds its layout in ``self._layout``, watches ``state`` (its groups) and recomputes
    through :meth:`_schedule`, so served it runs on the next tick and only while visible; its
    results are constant params set with :meth:`_set`.
    """

    state = param.ClassSelector(class_=ExplorerState, constant=True, doc="The session state this pane renders.")
    message = param.String(default="", constant=True, doc="What the pane tells the user instead of (or above) its results.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.scheduler = Scheduler()

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def _schedule(self, name: str, area: pn.viewable.Viewable | None, work: Callable[[], None]) -> None:
        """Recompute through the pane's :class:`~lse_panel.components.scheduling.Scheduler`."""
        self.scheduler.schedule(name, area, work)

    def _set(self, **values: Any) -> None:
        """Set result params (constant to users of the pane) in one batch."""
        with param.edit_constant(self):
            self.param.update(**values)
