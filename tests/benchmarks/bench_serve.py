"""``panel serve`` figures on a 500k bundle: warm start to first paint, server memory per session.

Run: ``.venv/bin/python tests/benchmarks/bench_serve.py [--n 500000] [--bundle DIR] [--visits 3]``.

1. Builds a bundle from ``tiny_cohort(n)`` in a temporary directory (or uses ``--bundle``).
2. Starts ``panel serve apps/explorer.py --setup apps/setup.py --args BUNDLE`` as a subprocess
   (the setup step memory-maps the bundle and compiles the kernels before the port opens).
3. In headless Debian Chromium (Playwright): one warm-up visit, then ``--visits`` timed visits, each
   from ``page.goto`` until the first latent plot's canvas is drawn with its raster (its title
   shown, its frame laid out, its image glyph holding pixels). Wall time, and the server's CPU time
   (user + system, process and children) spent over the same visit.
4. Server RSS (process and children, psutil) with 1 open session and with 4, and the difference per
   extra session.

The yardstick, measured in the same run and the same way: a one-figure Panel app served by
``panel serve`` (Bokeh's JS, one websocket, one plot), so a slower machine or a busier browser
shows up in both figures. Targets (DESIGN.md): first paint ≤ 5 s, ≤ 1.5 GB RSS, ≤ 50 MB per extra
session.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from lse_panel.figures.app import CHROMIUM, CHROMIUM_ARGS
from lse_panel.testing import free_port, tiny_cohort, write_cohort_bundle

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024

PAINTED_JS = """(title) => {
  if (!window.Bokeh || !Bokeh.index) return false;
  const views = [];
  const walk = (v) => { views.push(v); for (const c of (v.child_views ?? [])) walk(c); };
  for (const r of Bokeh.index.roots) walk(r);
  const fv = views.find(v => v.model.title && typeof v.model.title.text === 'string'
                          && v.model.title.text.startsWith(title) && v.frame);
  if (!fv || !(fv.frame.bbox.width > 0 && fv.frame.bbox.height > 0)) return false;
  const el = fv.canvas_view && fv.canvas_view.el;
  const canvas = el && (el.shadowRoot ?? el).querySelector('canvas');
  if (!canvas || !(canvas.getBoundingClientRect().width > 0)) return false;
  const image = fv.model.renderers.find(r => r.glyph && r.glyph.type === 'Image');
  if (!image) return false;
  const data = image.data_source.data.image;
  return !!(data && data.length && data[0] && data[0].length > 0);
}"""
"""True once the figure whose title starts with the argument is on the page, laid out, with a
canvas and an image glyph holding pixels (the raster, not just the axes)."""

BASELINE_APP = textwrap.dedent('''
    import numpy as np
    import panel as pn
    from bokeh.plotting import figure

    fig = figure(title="baseline plot", width=460, height=420)
    fig.image(image=[np.random.default_rng(0).random((420, 460))], x=0, y=0, dw=1, dh=1)
    pn.Column(pn.pane.Markdown("baseline"), pn.pane.Bokeh(fig)).servable()
''')


def serve(
    app: Path, port: int, extra: list[str], cwd: Path, timeout: float = 180.0, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, float]:
    """``panel serve app`` on 127.0.0.1:port; returns the process and seconds until it answered.

    Closed sessions are dropped after about a second (instead of Bokeh's 15 s) so the memory
    figures count open sessions only. Run from ``cwd`` (not the checkout, which ``-m`` would put
    first on ``sys.path``), so ``PYTHONPATH`` can point the server at another copy of the package
    to compare before/after. ``env`` adds to this process's environment.
    """
    cmd = [
        sys.executable, "-m", "panel", "serve", str(app), "--port", str(port), "--address", "127.0.0.1",
        "--allow-websocket-origin", f"127.0.0.1:{port}",
        "--check-unused-sessions", "1000", "--unused-session-lifetime", "1000", *extra,
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}/{app.stem}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=10)
            return proc, time.perf_counter() - start
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise TimeoutError(f"panel serve did not answer on {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def server_processes(proc: subprocess.Popen) -> list[psutil.Process]:
    root = psutil.Process(proc.pid)
    return [root, *root.children(recursive=True)]


def rss_mb(proc: subprocess.Popen) -> float:
    """Resident set size of the server and its children, MB."""
    total = 0
    for p in server_processes(proc):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / MB


def cpu_s(proc: subprocess.Popen) -> float:
    """CPU seconds (user + system) used so far by the server and its children."""
    total = 0.0
    for p in server_processes(proc):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def open_painted(context: Any, url: str, title: str, proc: subprocess.Popen) -> tuple[Any, float, float]:
    """A new page at ``url``, waited on until ``title``'s plot is painted: (page, wall s, server cpu s)."""
    page = context.new_page()
    c0, t0 = cpu_s(proc), time.perf_counter()
    page.goto(url, timeout=180_000)
    page.wait_for_function(PAINTED_JS, arg=title, timeout=180_000, polling="raf")
    wall = time.perf_counter() - t0
    return page, wall, cpu_s(proc) - c0


def first_paint(context: Any, url: str, title: str, proc: subprocess.Popen, visits: int) -> list[tuple[float, float]]:
    """One warm-up visit, then ``visits`` timed ones (each page closed after); [(wall s, server cpu s)]."""
    page, *_ = open_painted(context, url, title, proc)
    page.close()
    times = []
    for _ in range(visits):
        page, wall, cpu = open_painted(context, url, title, proc)
        times.append((wall, cpu))
        page.close()
    return times


def wait_for_sessions_dropped(seconds: float = 4.0) -> None:
    time.sleep(seconds)


def package_path() -> str:
    """Where ``lse_panel`` is imported from here; the server, started from a neutral directory with
    this environment, imports the same one (for before/after runs with ``PYTHONPATH``)."""
    import importlib.util

    spec = importlib.util.find_spec("lse_panel")
    return str(Path(spec.origin).parent) if spec and spec.origin else "?"


def summary(times: list[tuple[float, float]]) -> str:
    walls = [w for w, _ in times]
    cpus = [c for _, c in times]
    each = ", ".join(f"{w:.2f}" for w in walls)
    return (f"median {statistics.median(walls):5.2f} s (server cpu {statistics.median(cpus):5.2f} s)  "
            f"[visits: {each} s]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500_000, help="subjects in the generated bundle")
    parser.add_argument("--bundle", type=Path, default=None, help="serve this bundle instead of generating one")
    parser.add_argument("--visits", type=int, default=3, help="timed first-paint visits after the warm-up")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="lse-bench-serve-") as tmp:
        tmp_path = Path(tmp)
        if args.bundle is None:
            t0, c0 = time.perf_counter(), time.process_time()
            bundle = write_cohort_bundle(tiny_cohort(args.n), tmp_path / f"tiny_{args.n}")
            print(f"bundle: {args.n:,} subjects built in {time.perf_counter() - t0:.1f} s "
                  f"(cpu {time.process_time() - c0:.1f} s) at {bundle}")
        else:
            bundle = args.bundle
            print(f"bundle: {bundle}")
        baseline_app = tmp_path / "baseline.py"
        baseline_app.write_text(BASELINE_APP)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # -- the yardstick ----------------------------------------------------------------
                port = free_port()
                proc, started = serve(baseline_app, port, [], tmp_path)
                try:
                    context = browser.new_context(viewport={"width": 1600, "height": 1200})
                    base_times = first_paint(context, f"http://127.0.0.1:{port}/baseline", "baseline plot",
                                             proc, args.visits)
                    context.close()
                    base_rss = rss_mb(proc)
                finally:
                    stop(proc)
                print(f"baseline (one-figure Panel app): serve up in {started:.1f} s; first paint {summary(base_times)}; "
                      f"RSS {base_rss:.0f} MB")

                # -- the explorer -------------------------------------------------------------------
                port = free_port()
                app = REPO / "apps" / "explorer.py"
                proc, started = serve(app, port, ["--setup", str(REPO / "apps" / "setup.py"), "--args", str(bundle)], tmp_path)
                log = ""
                try:
                    url = f"http://127.0.0.1:{port}/explorer"
                    rss_idle = rss_mb(proc)
                    context = browser.new_context(viewport={"width": 1600, "height": 1200})
                    times = first_paint(context, url, "ecg latent space", proc, args.visits)
                    wait_for_sessions_dropped()
                    rss_after_visits = rss_mb(proc)
                    pages = []
                    rss_open = []
                    for _ in range(4):
                        page, *_ = open_painted(context, url, "ecg latent space", proc)
                        pages.append(page)
                        page.wait_for_timeout(1500)  # let the session finish its remaining panes
                        rss_open.append(rss_mb(proc))
                    for page in pages:
                        page.close()
                    context.close()
                finally:
                    log = stop(proc)
            finally:
                browser.close()

    ready = [line for line in log.splitlines() if "ready in" in line]
    print(f"lse_panel served from: {package_path()}")
    med = statistics.median(w for w, _ in times)
    base_med = statistics.median(w for w, _ in base_times)
    per_extra = (rss_open[3] - rss_open[0]) / 3
    print(f"explorer: serve up (incl. --setup warm-up) in {started:.1f} s" + (f"; {ready[-1].split('lse-panel: ')[-1]}" if ready else ""))
    print(f"  warm first paint (goto → latent raster drawn): {summary(times)}   "
          f"{med / base_med:4.1f}× baseline; target ≤ 5 s")
    print(f"  RSS idle (bundle mapped, kernels warm)   {rss_idle:7.0f} MB")
    print(f"  RSS after the visits, their sessions closed {rss_after_visits:7.0f} MB")
    print(f"  RSS with 1 open session                  {rss_open[0]:7.0f} MB   target ≤ 1,536 MB")
    print(f"  RSS with 4 open sessions                 {rss_open[3]:7.0f} MB   (1→4: {', '.join(f'{r:.0f}' for r in rss_open)})")
    print(f"  per extra session                        {per_extra:7.1f} MB   target ≤ 50 MB")


if __name__ == "__main__":
    main()
