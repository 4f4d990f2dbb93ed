"""Screenshots of the served explorer after a mouse lasso: ``python -m lse_panel.figures.app --bundle DIR --out DIR``."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lse_panel.testing import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]


def serve_app(bundle: str | os.PathLike[str], port: int, *, timeout: float = 90.0) -> subprocess.Popen:
    """Start ``panel serve apps/explorer.py`` on ``bundle`` (127.0.0.1:port) and wait until it answers.

    The server's output goes to a temporary file (``proc.log_path``), never to an unread pipe:
    a full pipe buffer (64 kB of log lines) would block the server mid-session.
    """
    import tempfile
    import urllib.request

    cmd = [
        sys.executable, "-m", "panel", "serve", str(REPO / "apps" / "explorer.py"),
        "--setup", str(REPO / "apps" / "setup.py"), "--port", str(port), "--address", "127.0.0.1",
        "--allow-websocket-origin", f"127.0.0.1:{port}", "--args", str(bundle),
    ]
    log = tempfile.NamedTemporaryFile("w+", prefix="lse-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log_path = Path(log.name)  # type: ignore[attr-defined]
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited early:\n{proc.log_path.read_text()}")  # type: ignore[attr-defined]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/explorer", timeout=5)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise TimeoutError(f"panel serve did not answer on port {port} within {timeout:.0f} s")


FRAME_JS = """(title) => {
  if (!window.Bokeh || !Bokeh.index) return null;
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const r of Bokeh.index.roots) walk(r);
  const fv = views.find(v => v.model.title && typeof v.model.title.text === 'string'
                          && v.model.title.text.startsWith(title) && v.frame);
  if (!fv) return null;
  const f = fv.frame.bbox, r = fv.canvas_view.el.getBoundingClientRect();
  if (!(f.width > 0 && f.height > 0)) return null;
  return {x: r.x + f.left, y: r.y + f.top, width: f.width, height: f.height,
          x_range: [fv.model.x_range.start, fv.model.x_range.end],
          y_range: [fv.model.y_range.start, fv.model.y_range.end]};
}"""
"""Finds the Bokeh plot whose title starts with the argument; returns its frame (the data area) on the
page and its axis ranges, or null until it is drawn."""


def frame_box(page: Any, title: str, timeout_ms: int = 60_000) -> dict[str, Any]:
    """Wait for the plot titled ``title...`` to be drawn; its data frame on the page and axis ranges."""
    page.wait_for_function(FRAME_JS, arg=title, timeout=timeout_ms)
    # Layout settles after the first draw (fonts, colour bar, template); measure once it has.
    page.wait_for_timeout(1000)
    return page.wait_for_function(FRAME_JS, arg=title, timeout=timeout_ms).json_value()


def to_screen(box: dict[str, Any], x: float, y: float) -> tuple[float, float]:
    """Page coordinates of data point ``(x, y)`` in the plot frame ``box`` (from :func:`frame_box`)."""
    (x0, x1), (y0, y1) = box["x_range"], box["y_range"]
    sx = box["x"] + (x - x0) / (x1 - x0) * box["width"]
    sy = box["y"] + (1 - (y - y0) / (y1 - y0)) * box["height"]
    return float(sx), float(sy)


def to_data(box: dict[str, Any], sx: float, sy: float) -> tuple[float, float]:
    """Data coordinates of page point ``(sx, sy)`` in the plot frame ``box``."""
    (x0, x1), (y0, y1) = box["x_range"], box["y_range"]
    x = x0 + (sx - box["x"]) / box["width"] * (x1 - x0)
    y = y0 + (1 - (sy - box["y"]) / box["height"]) * (y1 - y0)
    return float(x), float(y)


def lasso_path(
    box: dict[str, Any], *, centre: tuple[float, float] = (0.5, 0.5), radius: float = 0.3, n: int = 32
) -> list[tuple[float, float]]:
    """Page points of a closed loop in the frame ``box``; centre and radius are fractions of the frame."""
    cx = box["x"] + centre[0] * box["width"]
    cy = box["y"] + centre[1] * box["height"]
    r = radius * min(box["width"], box["height"])
    return [(float(cx + r * np.cos(t)), float(cy + r * np.sin(t))) for t in np.linspace(0, 2 * np.pi, n)]


def select_tool(page: Any, plot_index: int, tool: str = "lasso-select") -> None:
    """Activate ``tool`` (a ``bk-tool-icon-*`` suffix) in the toolbar of the ``plot_index``-th plot."""
    page.locator(f".bk-tool-icon-{tool}").nth(plot_index).click()
    page.wait_for_timeout(300)


def lasso(page: Any, points: list[tuple[float, float]]) -> None:
    """Draw a lasso through page ``points`` with the mouse (the lasso tool must be active).

    The first point must lie inside the plot frame: a drag that starts outside draws nothing.
    """
    page.mouse.move(*points[0])
    page.mouse.down()
    # Bokeh reads a drag as a gesture only at human speed: too fast and no lasso is drawn.
    for x, y in points[1:]:
        page.mouse.move(x, y, steps=2)
        page.wait_for_timeout(20)
    page.mouse.up()


def drag_box(page: Any, start: tuple[float, float], end: tuple[float, float], steps: int = 10) -> None:
    """Drag from page point ``start`` to ``end`` with the mouse (the box-select tool must be active)."""
    page.mouse.move(*start)
    page.mouse.down()
    for k in range(1, steps + 1):  # at human speed, or Bokeh reads no gesture
        page.mouse.move(start[0] + k * (end[0] - start[0]) / steps, start[1] + k * (end[1] - start[1]) / steps)
        page.wait_for_timeout(20)
    page.mouse.up()


def densest_point(coords: np.ndarray, bins: int = 24) -> tuple[float, float]:
    """Centre of the 2-D histogram's fullest bin: a place where a lasso is sure to catch subjects."""
    counts, xe, ye = np.histogram2d(coords[:, 0], coords[:, 1], bins=bins)
    i, j = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return float((xe[i] + xe[i + 1]) / 2), float((ye[j] + ye[j + 1]) / 2)


def selection_count(page: Any) -> int:
    """The selection size the page shows (the bold number of the always-visible summary)."""
    import re

    text = page.get_by_text(re.compile(r"subjects selected")).first.inner_text(timeout=5_000)
    return int(text.split(" of ")[0].replace(",", "").replace("*", "").strip())


def wait_for_count(page: Any, predicate: Any, timeout_s: float = 60.0) -> int:
    """Poll the shown selection size until ``predicate(size)`` holds; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            n = selection_count(page)
            if predicate(n):
                return n
        except (ValueError, IndexError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the shown selection size never reached the expected value")
        page.wait_for_timeout(200)


PANE_TABS = ("Decode", "Accuracy", "Compare")
"""Tabs photographed after the lasso, each in its own screenshot."""


def take_screenshots(
    bundle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    port: int | None = None,
    tabs: tuple[str, ...] = PANE_TABS,
    window: tuple[int, int] = (1600, 1000),
) -> list[Path]:
    """Serve ``bundle``, lasso the densest region of the first latent view, save screenshots under ``out``.

    Saves the page before and after the lasso (whole page), then for each tab in ``tabs`` the
    window as a person sees it once the tab's header is scrolled to the top (``<tab>_window.png``:
    what is below the fold is cut off) and the whole page (``<tab>.png``).

    Parameters
    ----------
    bundle
        The cohort bundle served (read only: nothing is saved into it).
    out
        Directory for the PNGs.
    port
        Port for ``panel serve`` (default: a free one).
    tabs
        Tab titles to photograph.
    window
        Browser window (viewport) size in pixels.
    """
    from playwright.sync_api import sync_playwright

    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.components.latent_view import default_pair

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cohort = open_bundle(bundle)
    kinds = default_pair(cohort)
    coords = np.asarray(cohort.projection(f"{kinds[0]}/umap" if f"{kinds[0]}/umap" in cohort.projections
                                          else next(k for k in cohort.projections if k.startswith(kinds[0]))))
    port = port or free_port()
    proc = serve_app(bundle, port)
    saved: list[Path] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": window[0], "height": window[1]})
            page.set_default_timeout(180_000)  # screenshots wait for fonts; the machine may be loaded
            page.goto(f"http://127.0.0.1:{port}/explorer", timeout=120_000)
            boxes = [frame_box(page, f"{kind} latent space", timeout_ms=120_000) for kind in kinds]
            page.wait_for_timeout(1500)
            saved.append(out / "explorer_initial.png")
            page.screenshot(path=saved[-1], full_page=True)
            select_tool(page, 0)
            cx, cy = to_screen(boxes[0], *densest_point(coords))
            r = 0.12 * min(boxes[0]["width"], boxes[0]["height"])
            lasso(page, [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 40)])
            wait_for_count(page, lambda n: n > 0, timeout_s=240)  # the 2-core machine may be loaded
            page.mouse.move(5, 5)  # away from the plot, so no hover tooltip hides the highlight
            page.wait_for_timeout(4000)
            saved.append(out / "explorer_lasso.png")
            page.screenshot(path=saved[-1], full_page=True)
            for tab in tabs:
                header = page.locator(".bk-tab", has_text=tab).first
                header.click()
                page.wait_for_timeout(6000)
                stem = tab.lower()
                saved.append(out / f"{stem}.png")
                page.screenshot(path=saved[-1], full_page=True)
                header.evaluate("el => el.scrollIntoView({block: 'start'})")
                page.wait_for_timeout(3000)  # Bokeh redraws the canvases that scrolled into view
                saved.append(out / f"{stem}_window.png")
                page.screenshot(path=saved[-1])
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.move(proc.log_path, out / "server.log")  # type: ignore[attr-defined]
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bundle", required=True, help="cohort bundle directory to serve")
    parser.add_argument("--out", required=True, help="directory for the PNG screenshots")
    parser.add_argument("--port", type=int, default=None, help="port for panel serve (default: a free one)")
    args = parser.parse_args(argv)
    for path in take_screenshots(args.bundle, args.out, port=args.port):
        print(path)


if __name__ == "__main__":
    main()
