"""Real-browser fixtures: Debian's headless Chromium through Playwright, and an explorer served in-process."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import panel as pn
import pytest

from lse_panel.components.explorer import Explorer
from lse_panel.figures.app import CHROMIUM, CHROMIUM_ARGS, drag_box, frame_box, select_tool, to_screen, wait_for_count
from lse_panel.testing import free_port, tiny_cohort, tiny_decoder, wait_until_listening

playwright_api = pytest.importorskip("playwright.sync_api")


def stop_server(server: Any) -> None:
    """Stop a threaded ``pn.serve`` and wait for its thread to end.

    Without the join, a loaded machine could still be rendering the last test's session while
    the next test's server rendered its own: two threads building Bokeh plots at once (Bokeh's
    property validation switch is process-wide) once left a plot title as a bare string and the
    page never loaded.
    """
    server.stop()
    server.join(timeout=30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def ui_cohort():
    return tiny_cohort(20_000)


@pytest.fixture
def served_explorer(ui_cohort) -> Iterator[tuple[str, list[Explorer]]]:
    """The explorer served by ``pn.serve`` in a thread: (url, the sessions' Explorer objects)."""
    sessions: list[Explorer] = []

    def app() -> pn.template.BaseTemplate:
        explorer = Explorer(ui_cohort, tiny_decoder(8))
        sessions.append(explorer)
        return explorer.servable_template()

    port = free_port()
    server = pn.serve({"explorer": app}, port=port, address="127.0.0.1", threaded=True, show=False,
                      websocket_origin=f"127.0.0.1:{port}")
    try:
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}/explorer", sessions
    finally:
        stop_server(server)


@contextmanager
def serving_bundle(bundle: Path, *, own_decoder: bool = False) -> Iterator[tuple[str, list[Explorer]]]:
    """An explorer on a bundle on disk, served by ``pn.serve`` in a thread: (url, the sessions' Explorer objects).

    With ``own_decoder`` the bundle's own decoder is loaded, as ``lse serve`` does; otherwise a tiny one.
    """
    sessions: list[Explorer] = []

    def app() -> pn.template.BaseTemplate:
        explorer = Explorer.from_bundle(bundle, **({} if own_decoder else {"decode": tiny_decoder(8)}))
        sessions.append(explorer)
        return explorer.servable_template()

    port = free_port()
    server = pn.serve({"explorer": app}, port=port, address="127.0.0.1", threaded=True, show=False,
                      websocket_origin=f"127.0.0.1:{port}")  # fmt: skip
    try:
        wait_until_listening(port)
        yield f"http://127.0.0.1:{port}/explorer", sessions
    finally:
        stop_server(server)


@pytest.fixture
def serve_bundle():
    """:func:`serving_bundle`, for tests and fixtures that serve a bundle they wrote."""
    return serving_bundle


def box_select_upper_right(page: Any) -> dict[str, Any]:
    """Once both latent views are drawn, box-select the upper-right quarter of the ecg view; its frame box.

    Waits for the selection to reach the page (a non-zero shown count).
    """
    box = frame_box(page, "ecg latent space")
    frame_box(page, "mri latent space")
    select_tool(page, 0, "box-select")
    (x0, x1), (y0, y1) = box["x_range"], box["y_range"]
    start = to_screen(box, x0 + 0.5 * (x1 - x0), y0 + 0.5 * (y1 - y0))
    end = to_screen(box, x1 - 0.01 * (x1 - x0), y1 - 0.01 * (y1 - y0))
    drag_box(page, start, end)
    wait_for_count(page, lambda n: n > 0)
    return box


@pytest.fixture
def box_select():
    """:func:`box_select_upper_right`, for tests that need a selection drawn with the mouse."""
    return box_select_upper_right
