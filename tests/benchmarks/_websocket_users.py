"""Simulated explorer users with no browser: Bokeh websocket clients that select the way BokehJS does.

Each user is a ``bokeh.client.ClientSession`` on its own thread and IO loop. The server does all it
does for a real page: it builds the session's document and explorer (on the ``document_ready``
event BokehJS sends once a page is drawn), runs HoloViews' ``BoundsXY``/``Lasso`` streams on the
``selectiongeometry`` events a box or lasso drag sends, recomputes the visible pane and sends the
patches; the client only applies them to its copy of the document (no layout, no canvas), so many
users cost the machine little besides the server's work.

Shared with the browser mode of ``bench_sessions.py``: the plot users draw on (:data:`TITLE`),
what each user records (:class:`Tally`), the selections they make (:func:`selection_shape`) and the
progress line (:func:`progress`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib
import logging
import math
import pkgutil
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np
from bokeh.core.has_props import HasProps
from bokeh.core.serialization import Serializable, Serializer

TITLE = "ecg latent space"
"""The plot every user draws on (the first latent view)."""

NUMBER = re.compile(r"([0-9][0-9,]*)")
"""The first number in the selection summary's text: the selected count as shown (``1,234``)."""


# -- what every user records, in either mode ---------------------------------------------------
@dataclass(kw_only=True)
class Tally:
    """One user's answers: per selection ``{count_ms, pane_ms, n, decode}`` or ``{timeout, ...}``."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    made: int = 0
    lost: int = 0  # drags the page did not read as a gesture (browser mode only)


def selection_shape(index: int, total: int) -> tuple[str, float]:
    """Selection ``index`` of ``total``: ``"box"`` for the first half, then ``"lasso"``, and its radius
    as a fraction of the plot frame, small and large alternating with a drift, so consecutive
    selections differ in size (and in count)."""
    tool = "box" if index < math.ceil(total / 2) else "lasso"
    return tool, (0.05 if index % 2 == 0 else 0.11) + 0.004 * (index % 5)


def selection_geometry(
    index: int, total: int, centre: tuple[float, float], extent: tuple[tuple[float, float], tuple[float, float]],
    scale: float = 1.0,
) -> dict[str, Any]:
    """The ``selectiongeometry`` BokehJS sends for selection ``index`` of ``total``, in data coordinates:
    ``{"type": "rect", x0, x1, y0, y1}`` or ``{"type": "poly", x, y}`` (24 points on an ellipse)
    around ``centre``, sized against ``extent`` (the plot's ``((x0, x1), (y0, y1))``), ``scale``
    times the :func:`selection_shape` radius."""
    tool, fraction = selection_shape(index, total)
    fraction *= scale
    (xa, xb), (ya, yb) = extent
    cx, cy = centre
    rx, ry = fraction * (xb - xa), fraction * (yb - ya)
    if tool == "box":
        return {"type": "rect", "x0": cx - rx, "x1": cx + rx, "y0": cy - ry, "y1": cy + ry}
    angles = np.linspace(0, 2 * math.pi, 24)
    return {"type": "poly", "x": (cx + rx * np.cos(angles)).tolist(), "y": (cy + ry * np.sin(angles)).tolist()}


def backend_count(backend: Any, key: str) -> Callable[[dict[str, Any]], int]:
    """``geometry → count``: how many subjects ``backend``'s box or lasso on projection ``key`` selects
    for a :func:`selection_geometry` (what the served explorer must show for it)."""

    def count(geometry: dict[str, Any]) -> int:
        if geometry["type"] == "rect":
            bounds = (geometry["x0"], geometry["y0"], geometry["x1"], geometry["y1"])
            return backend.size(backend.select_box(key, bounds))
        return backend.size(backend.select_lasso(key, np.asarray(geometry["x"]), np.asarray(geometry["y"])))

    return count


def progress(sessions: list[Tally], total: int, start: float, reported: int) -> int:
    """Print ``answered/total`` each time another tenth is answered; returns the count last printed."""
    answered = sum(len(s.results) for s in sessions)
    step = max(1, total // 10)
    if len(sessions) > 1 and answered >= reported + step:
        reported = answered - answered % step
        print(f"    {answered}/{total} answered after {time.perf_counter() - start:.0f} s", flush=True)
    return reported


# -- the websocket client ----------------------------------------------------------------------
CLIENT_STACK_BYTES = 256 * 2**20
CLIENT_RECURSION_LIMIT = 200_000


def allow_deep_message_loops() -> None:
    """Let a user's thread receive many thousand messages.

    ``bokeh.client`` awaits each next message from inside the handler of the one before
    (``ClientConnection._next`` → ``_handle_messages`` → ``_next``), so its await chain grows by two
    frames per message received: the 500k load run's longest-lived user (the baseline's session,
    then 9 of its 20 load selections, about 1,000 patches) hit Python's recursion limit of 1,000,
    its message loop died and its selections went unanswered. Users' threads get a larger stack
    (made after this call) and the interpreter a higher limit; the server is not affected.
    """
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), CLIENT_RECURSION_LIMIT))
    threading.stack_size(CLIENT_STACK_BYTES)


def load_client_models() -> None:
    """Import every Bokeh model the explorer's documents hold, so the client can decode them
    (Panel's models load lazily on the server as extensions ask; the client asks for none)."""
    import holoviews.plotting.bokeh  # noqa: F401  (HoloViews' own models)
    import panel.models

    for module in pkgutil.iter_modules(panel.models.__path__):
        importlib.import_module(f"panel.models.{module.name}")


class SentEvent(Serializable):
    """A UI event as BokehJS sends it: its name and all its values.

    Python's ``bokeh.events`` classes only receive events: ``SelectionGeometry.event_values()``
    leaves out ``geometry`` and ``final``, so sending one from Python would reach the server
    without them (HoloViews' callbacks then fail on ``event.geometry["type"]``).
    """

    def __init__(self, name: str, **values: Any) -> None:
        self.name, self.values = name, values

    def to_serializable(self, serializer: Serializer) -> Any:
        return {"type": "event", "name": self.name, "values": serializer.encode(self.values)}


@functools.cache
def properties(cls: type) -> frozenset[str]:
    return frozenset(cls.properties())


def prop(model: Any, name: str) -> Any:
    """``model.name``, or ``None`` where its class has no such property.

    Not ``getattr(model, name, None)``: a Bokeh model's missing attribute raises an error it
    first fills with spelling suggestions, which made one pass over a 755-model document 15 ms.
    """
    return getattr(model, name) if isinstance(model, HasProps) and name in properties(type(model)) else None


def has_class(model: Any, css: str) -> bool:
    return css in (prop(model, "css_classes") or ())


@dataclass(kw_only=True)
class WsSession(Tally):
    """One user: a Bokeh client session on its own thread, its document kept in sync by its IO loop."""

    url: str
    name: str
    client: Any = None
    loop: Any = None  # the session's asyncio loop; everything touching the document runs on it
    thread: threading.Thread | None = None
    summary: Any = None  # the selection summary model (css class ``lse-selection-size``)
    figure: Any = None  # the latent plot titled TITLE
    changed: asyncio.Event | None = None

    # -- on the session's own thread -------------------------------------------------------
    def run(self, connected: threading.Event) -> None:
        from bokeh.client import ClientSession
        from bokeh.util.token import generate_session_id

        try:
            ws_url = self.url.replace("http://", "ws://", 1) + "/ws"
            self.client = ClientSession(session_id=generate_session_id(), websocket_url=ws_url)
            self.client.pull()  # the document as the server made it: the template, the explorer still to come
            self.loop = self.client._connection.io_loop.asyncio_loop
        except Exception as exc:  # noqa: BLE001  (reported as the user's error)
            self.errors.append(f"could not open a session: {exc!r}")
            return
        finally:
            connected.set()
        try:
            self.client._connection.loop_until_closed()
            # Work still waiting on a connection the server ended: cancelled, not left to be collected.
            left = [task for task in asyncio.all_tasks(self.loop) if not task.done()]
            for task in left:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        finally:
            self.client._connection.io_loop.close(all_fds=True)

    def on_change(self, _event: Any) -> None:
        assert self.changed is not None
        self.changed.set()

    async def until(self, predicate: Callable[[], Any], deadline: float) -> float | None:
        """The time ``predicate()`` first held, checked after each patch the server sent, or ``None`` at ``deadline``."""
        assert self.changed is not None
        while True:
            now = time.perf_counter()
            if predicate():
                return now
            if now >= deadline:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - now)
            except asyncio.TimeoutError:
                pass

    def models(self) -> list[Any]:
        return list(self.client.document.models)

    def find_plot(self) -> bool:
        """Whether the explorer is built: the selection summary and the latent plot exist."""
        for model in self.models():
            if self.summary is None and has_class(model, "lse-selection-size"):
                self.summary = model
            heading = prop(model, "title")
            title = prop(heading, "text") if isinstance(heading, HasProps) else heading
            if self.figure is None and isinstance(title, str) and title.startswith(TITLE):
                self.figure = model
        return self.summary is not None and self.figure is not None

    def painted(self) -> bool:
        """Whether the latent raster has arrived: an image glyph on the plot holding pixels."""
        for renderer in self.figure.renderers:
            glyph = prop(renderer, "glyph")
            if type(glyph).__name__ == "Image":
                image = renderer.data_source.data.get("image")
                if image is not None and len(image) and np.size(image[0]) > 0:
                    return True
        return False

    async def open(self, timeout: float) -> None:
        """Say the page is drawn (Panel builds the explorer on it), then wait for the explorer."""
        from bokeh.events import DocumentReady

        self.changed = asyncio.Event()
        self.client.document.on_change(self.on_change)
        self.client.document.callbacks.send_event(DocumentReady())
        if await self.until(self.find_plot, time.perf_counter() + timeout) is None:
            raise TimeoutError(f"the explorer did not appear within {timeout:.0f} s")
        tools = {type(tool).__name__ for tool in self.figure.toolbar.tools}
        if not {"BoxSelectTool", "LassoSelectTool"} <= tools:
            raise RuntimeError(f"the plot {TITLE!r} has no box and lasso tools to select with (tools: {sorted(tools)})")

    async def wait_painted(self, timeout: float) -> None:
        if await self.until(self.painted, time.perf_counter() + timeout) is None:
            raise TimeoutError(f"the latent raster did not arrive within {timeout:.0f} s")

    def decode_shows(self, n: str) -> bool:
        """The Decode tab's header says ``Selection…: n subjects`` (its recomputation for n has begun)."""
        return any(
            model is not self.summary and isinstance(text := prop(model, "text"), str)
            and "Selection" in text and f": {n} subjects" in text
            for model in self.models()
        )

    def loading(self) -> bool:
        return any(has_class(model, "pn-loading") for model in self.models())

    def has_decode(self) -> bool:
        return any(isinstance(t := prop(m, "text"), str) and "decoded from the" in t for m in self.models())

    async def select(self, geometry: dict[str, Any], expected: int | None, timeout: float) -> None:
        """Send one final ``selectiongeometry`` on the plot and time (a) the count's text changing and
        (b) the visible pane done: the Decode tab saying the new count and no ``pn-loading`` left
        (as ``PROBE_JS`` times it in a page; with no decoder, the count alone). A count other than
        ``expected`` is an error."""
        before, decode = self.summary.text, self.has_decode()
        t0 = time.perf_counter()
        deadline = t0 + timeout
        self.client.document.callbacks.send_event(
            SentEvent("selectiongeometry", model=self.figure, geometry=geometry, final=True)
        )
        counted = await self.until(lambda: self.summary.text != before, deadline)
        if counted is None:
            self.results.append({"timeout": True, "counted": False, "n": None})
            self.errors.append(f"selection {len(self.results)} not answered in {timeout:.0f} s (count unchanged)")
            return
        found = NUMBER.search(self.summary.text)
        n = found.group(1) if found else "?"
        done = await self.until(lambda: not decode or (self.decode_shows(n) and not self.loading()), deadline)
        if done is None:
            self.results.append({"timeout": True, "counted": True, "n": n})
            self.errors.append(f"selection {len(self.results)} not answered in {timeout:.0f} s (pane for {n})")
            return
        self.results.append({"count_ms": (counted - t0) * 1e3, "pane_ms": (done - t0) * 1e3, "n": n, "decode": decode})
        if n == "0":
            self.errors.append(f"selection {len(self.results)} selected nobody")
        elif expected is not None and n.replace(",", "") != str(expected):
            self.errors.append(f"selection {len(self.results)} ({geometry['type']}) shows {n} subjects; "
                               f"the in-process backend selects {expected:,}")

    async def selections(self, plan: list[tuple[dict[str, Any], int | None]], think: float, timeout: float) -> None:
        for i, (geometry, expected) in enumerate(plan):
            self.made += 1
            await self.select(geometry, expected, timeout)
            if self.results[-1].get("timeout"):  # its document no longer follows: the rest would time out too
                self.errors.append(f"stopped after selection {i + 1} of {len(plan)}: it was not answered")
                return
            await asyncio.sleep(think)

    # -- from the driver's thread --------------------------------------------------------------
    def submit(self, work: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future:
        """Run ``work()`` on the session's loop; a future the driver can wait on."""

        async def guarded() -> Any:
            try:
                return await work()
            except Exception as exc:  # noqa: BLE001  (a client error is the user's, counted as such)
                self.errors.append(f"client: {exc!r}")
                raise

        return asyncio.run_coroutine_threadsafe(guarded(), self.loop)


def closed_by_server(session: WsSession) -> str:
    detail = session.client.error_detail if session.client is not None else ""
    return f"the connection ended before the answer ({detail or 'closed by the server'})"


class ClientErrors(logging.Handler):
    """Errors the client logs (a patch it could not apply, a callback that raised), each counted for
    the user whose thread logged it."""

    def __init__(self, client: WebsocketClient) -> None:
        super().__init__(logging.ERROR)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        user = self.client.users.get(record.threadName)
        (user.errors if user is not None else self.client.errors).append(f"client log: {self.format(record)[:2000]}")


class WebsocketClient:
    """Users as Bokeh websocket clients (the default of ``bench_sessions.py``); see the module docstring.

    ``centre`` and ``extent`` place the selections in data coordinates (:func:`selection_geometry`);
    ``count`` (e.g. :func:`backend_count`) gives the count each must show; ``timeout`` bounds
    opening a session and each selection; ``stopping`` (set by a signal) ends a drive.
    """

    name = "websocket"

    def __init__(
        self, centre: tuple[float, float], extent: tuple[tuple[float, float], tuple[float, float]],
        *, count: Callable[[dict[str, Any]], int] | None = None, timeout: float = 300.0,
        stopping: threading.Event | None = None,
    ) -> None:
        load_client_models()
        allow_deep_message_loops()
        self.centre, self.extent, self.count, self.timeout = centre, extent, count, timeout
        self._plans: dict[int, list[tuple[dict[str, Any], int | None]]] = {}
        self.stopping = stopping or threading.Event()
        self.users: dict[str, WsSession] = {}
        self.errors: list[str] = []
        self.opened = 0
        self._log = ClientErrors(self)
        logging.getLogger().addHandler(self._log)

    def open(self, url: str) -> WsSession:
        """A new session on ``url`` with its explorer built (blocks until then)."""
        self.opened += 1
        session = WsSession(url=url, name=f"ws-user-{self.opened}")
        connected = threading.Event()
        session.thread = threading.Thread(target=session.run, args=(connected,), name=session.name, daemon=True)
        self.users[session.name] = session
        session.thread.start()
        if not connected.wait(self.timeout) or session.loop is None:
            raise RuntimeError(f"{session.name}: {session.errors or 'no connection'}")
        self.wait(session, session.submit(lambda: session.open(self.timeout)))
        return session

    def wait_painted(self, session: WsSession) -> None:
        self.wait(session, session.submit(lambda: session.wait_painted(self.timeout)))

    def wait(self, session: WsSession, future: concurrent.futures.Future) -> Any:
        """``future``'s result; an error if the session's connection ends first (the coroutine would
        never finish: its loop stops when the websocket closes)."""
        while not concurrent.futures.wait([future], timeout=0.2).done:
            if session.thread is not None and not session.thread.is_alive():
                raise RuntimeError(f"{session.name}: {closed_by_server(session)}")
        if future.cancelled():  # by the session's thread, as its connection ended
            raise RuntimeError(f"{session.name}: {closed_by_server(session)}")
        return future.result()

    def plan(self, selections: int) -> list[tuple[dict[str, Any], int | None]]:
        """Each selection's geometry and the count it must show (computed once per plan length).

        An answer is seen as the count changing, so where a selection would select nobody or as
        many as the one before it (or, for the last, as the first: a session that made the plan
        starts it again from there), it grows by half until its count differs: a densest region
        that is one tight cluster (as in a 2,000-subject ``lse build``) holds the same subjects
        in every small selection.
        """
        if selections in self._plans:
            return self._plans[selections]
        plan: list[tuple[dict[str, Any], int | None]] = []
        for i in range(selections):
            geometry = selection_geometry(i, selections, self.centre, self.extent)
            if self.count is None:
                plan.append((geometry, None))
                continue
            unseen = {0, plan[-1][1] if plan else 0, plan[0][1] if plan and i == selections - 1 else 0}
            scale, n = 1.0, self.count(geometry)
            while n in unseen and scale < 50:
                scale *= 1.5
                geometry = selection_geometry(i, selections, self.centre, self.extent, scale)
                n = self.count(geometry)
            if n in unseen:
                print(f"  warning: no size of selection {i + 1} changes the count ({n:,}): it will time out", flush=True)
            plan.append((geometry, n))
        self._plans[selections] = plan
        return plan

    def drive(self, sessions: list[WsSession], selections: int, think: float) -> float:
        """Every session makes ``selections`` selections, all at once (each on its own loop); returns the wall time."""
        start, reported, total = time.perf_counter(), 0, selections * len(sessions)
        plan = self.plan(selections)
        pending = {s.name: (s, s.submit(lambda s=s: s.selections(plan, think, self.timeout))) for s in sessions}
        while pending:
            if self.stopping.is_set():
                raise KeyboardInterrupt
            reported = progress(sessions, total, start, reported)
            concurrent.futures.wait([f for _, f in pending.values()], timeout=0.2)
            for name, (s, future) in list(pending.items()):
                if future.done() and not future.cancelled():  # an exception in it is already in the session's errors
                    del pending[name]
                elif future.cancelled() or (s.thread is not None and not s.thread.is_alive()):
                    s.errors.append(f"after {len(s.results)} selections: {closed_by_server(s)}")
                    del pending[name]
        return time.perf_counter() - start

    def close(self, session: WsSession) -> None:
        """Close the websocket (as a closed tab does) and wait for the session's thread to end."""
        try:
            if session.loop is not None:
                session.loop.call_soon_threadsafe(session.client.close)
        except RuntimeError:  # its loop has closed: the connection ended already
            pass
        if session.thread is not None:
            session.thread.join(timeout=30)
            if session.thread.is_alive():
                session.errors.append("the session's thread did not end within 30 s of closing")
                return
        self.users.pop(session.name, None)  # its thread logs nothing more; 200 cycles keep no 200 documents

    def shutdown(self) -> None:
        for session in list(self.users.values()):
            if session.thread is not None and session.thread.is_alive():
                self.close(session)
        logging.getLogger().removeHandler(self._log)
