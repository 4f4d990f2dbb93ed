"""Served sessions free their explorer when they end: nothing process-wide keeps a closed page's objects."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Iterator

import panel as pn
import pytest
from panel.links import Callback

from lse_panel.components.explorer import Explorer
from lse_panel.components.sessions import on_session_end, release_js_links
from lse_panel.testing import free_port, tiny_cohort, tiny_decoder, wait_until_listening

SESSIONS = 3


def _inner_widgets(widget: pn.widgets.Widget) -> list[pn.viewable.Viewable]:
    return [obj for obj in widget.select() if obj in Callback.registry]


def test_release_js_links_drops_an_editable_sliders_entries_and_frees_it() -> None:
    slider = pn.widgets.EditableRangeSlider(start=0.0, end=1.0, value=(0.2, 0.8))
    registered = _inner_widgets(slider)
    assert registered, "EditableRangeSlider registers JS callbacks on its inputs"
    alive = weakref.ref(slider)
    del registered
    assert release_js_links([slider]) >= 1
    assert _inner_widgets(slider) == []
    del slider
    gc.collect()
    assert alive() is None


def test_on_session_end_does_nothing_outside_a_server() -> None:
    calls: list[int] = []
    on_session_end(lambda: calls.append(1))
    assert calls == []


@pytest.fixture
def explorer_server() -> Iterator[tuple[str, tuple[list[weakref.ref], list[weakref.ref]], list[int]]]:
    """An explorer served in a thread whose closed sessions expire at once: (url, weakrefs to each
    session's Explorer and ExplorerState, one entry per destroyed session)."""
    cohort = tiny_cohort(3_000)
    decoder = tiny_decoder(8)
    explorers: list[weakref.ref] = []
    states: list[weakref.ref] = []
    destroyed: list[int] = []
    lock = threading.Lock()

    def app() -> pn.template.BaseTemplate:
        explorer = Explorer(cohort, decoder)
        explorers.append(weakref.ref(explorer))
        states.append(weakref.ref(explorer.state))  # the session's arrays: selection, region, cached sums

        def on_destroyed(_context: object) -> None:
            with lock:
                destroyed.append(1)

        pn.state.on_session_destroyed(on_destroyed)
        return explorer.servable_template()

    port = free_port()
    server = pn.serve(
        {"explorer": app}, port=port, address="127.0.0.1", threaded=True, show=False,
        websocket_origin=f"127.0.0.1:{port}",
        # Bokeh drops a closed session only after it has been unused this long (default 15 s).
        check_unused_sessions_milliseconds=100, unused_session_lifetime_milliseconds=100,
    )
    try:
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}/explorer", (explorers, states), destroyed
    finally:
        server.stop()
        server.join(timeout=30)


@pytest.mark.slow
def test_closed_sessions_free_their_explorer(explorer_server) -> None:
    from bokeh.client import pull_session

    url, (explorers, states), destroyed = explorer_server
    for _ in range(SESSIONS):
        session = pull_session(url=url)  # the server builds and renders a whole explorer
        session.close()
    assert len(explorers) == SESSIONS
    deadline = time.monotonic() + 60
    while len(destroyed) < SESSIONS:
        assert time.monotonic() < deadline, f"only {len(destroyed)} of {SESSIONS} sessions were destroyed"
        time.sleep(0.1)
    time.sleep(0.5)  # let the destroy callbacks return on the server thread
    gc.collect()
    alive = sum(ref() is not None for ref in explorers)
    assert alive == 0, f"{alive} of {SESSIONS} closed sessions' explorers are still alive"
    assert sum(ref() is not None for ref in states) == 0, "a closed session's state (its arrays) is still alive"


@pytest.mark.slow
def test_a_served_explorer_recomputes_only_the_visible_tab(explorer_server) -> None:
    from bokeh.client import pull_session

    url, (explorers, _), _ = explorer_server
    session = pull_session(url=url)
    try:
        explorer = explorers[-1]()
        assert explorer is not None
        panes = [explorer.decode_pane, explorer.accuracy_pane, explorer.compare_pane,
                 explorer.perturb_pane, explorer.interpolate_pane]
        # The Decode tab is shown first; the others wait until their tab is opened.
        assert [pane.scheduler.active for pane in panes] == [True, False, False, False, False]
    finally:
        session.close()
