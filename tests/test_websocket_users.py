"""The load generator's websocket users drive the real served explorer: each selection is answered with the backend's count."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from bokeh.core.serialization import Deserializer, Serializer
from bokeh.events import Event, SelectionGeometry
from bokeh.plotting import figure

from lse_panel.cohort.backend import in_process
from lse_panel.cohort.bundle import open_bundle
from lse_panel.figures.app import densest_point
from lse_panel.testing import tiny_cohort, write_cohort_bundle

BENCHMARKS = Path(__file__).parent / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, ModuleType]:
    """``bench_sessions`` (the server) and ``_websocket_users`` (the users), imported as the script imports them."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    for name in ("bench_sessions", "_websocket_users"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import _websocket_users
    import bench_sessions

    return bench_sessions, _websocket_users


def test_sent_selection_geometry_reaches_the_server_whole(bench: tuple[ModuleType, ModuleType]) -> None:
    _, users = bench
    plot = figure()
    geometry = {"type": "poly", "x": [0.0, 1.0, 0.5], "y": [0.0, 0.0, 1.0]}
    # As in a PATCH-DOC message: models the document already synced travel as references.
    sent = Serializer(references=plot.references()).encode(
        users.SentEvent("selectiongeometry", model=plot, geometry=geometry, final=True)
    )
    event = Event.from_serializable(sent, Deserializer(references=plot.references()))
    assert isinstance(event, SelectionGeometry)
    assert (event.model, event.geometry, event.final) == (plot, geometry, True)


@pytest.mark.slow
def test_websocket_users_select_through_the_served_explorer(
    bench: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    bench_sessions, users = bench
    bundle = write_cohort_bundle(tiny_cohort(3_000), tmp_path / "tiny")
    backend = in_process(open_bundle(bundle))
    key = "ecg/umap"  # the plot titled "ecg latent space · umap", which users draw on
    centre = densest_point(np.asarray(backend.cohort.projection(key)))
    extent = backend.extent(key)
    expected = []
    for i in range(2):  # a box, then a lasso
        g = users.selection_geometry(i, 2, centre, extent)
        if g["type"] == "rect":
            rows = backend.select_box(key, (g["x0"], g["y0"], g["x1"], g["y1"]))
        else:
            rows = backend.select_lasso(key, np.asarray(g["x"]), np.asarray(g["y"]))
        expected.append(backend.size(rows))
    assert 0 < expected[0] != expected[1] > 0, "each selection must change the shown count to be seen"

    server = bench_sessions.Server(bundle, tmp_path)
    client = users.WebsocketClient(centre, extent, timeout=90)
    try:
        sessions = [client.open(server.url) for _ in range(2)]
        client.wait_painted(sessions[0])
        client.drive(sessions, 2, think=0.0)
        for session in sessions:
            client.close(session)
        deadline = time.monotonic() + 30  # closed sessions are dropped about 2 s after their websocket closes
        while server.sessions()[1] < server.sessions()[0] and time.monotonic() < deadline:
            time.sleep(0.2)
        launched, destroyed = server.sessions()
    finally:
        client.shutdown()
        server.close()

    for session in sessions:
        assert session.errors == []
        assert [r.get("n") for r in session.results] == [f"{n:,}" for n in expected]
        assert all(0 < r["count_ms"] <= r["pane_ms"] for r in session.results)
    assert client.errors == []
    assert server.errors() == ([], 0)
    assert launched >= 2 and destroyed == launched, "every closed session is destroyed on the server"
