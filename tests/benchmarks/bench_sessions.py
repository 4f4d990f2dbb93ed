"""Many users on one ``panel serve``: concurrent sessions making selections, and memory over open/close cycles.

Run: ``.venv/bin/python tests/benchmarks/bench_sessions.py [--bundle data/demo] [--sessions 20]
[--selections 20] [--cycles 200] [--phase load|cycles|all] [--client websocket|browser]``. Targets
(issue "Beyond one machine", DESIGN.md): at 500k, 20 concurrent sessions × 20 selections with no
error and the 95th-percentile selection → visible-pane latency reported; ≤ 50 MB RSS per extra
session; after 200 open/close cycles the server RSS within 5 % of its level after the first 10.

The server is ``panel serve apps/explorer.py --setup apps/setup.py --args BUNDLE``, closed sessions
dropped after about a second (as in ``bench_serve.py``). Users are one of:

* ``websocket`` (default): Bokeh websocket clients, one thread and IO loop each, no browser
  (``_websocket_users.py``). The server does what it does for a page (builds the document and the
  explorer, runs the box/lasso streams on BokehJS's ``selectiongeometry`` event, recomputes the
  visible pane, sends the patches); the client only applies them, so 20 users leave the cores to
  the server. Selections are exact data-space geometry, so each shown count is checked against the
  in-process backend's box/lasso on the same bundle. All sessions select at once, each pausing
  ``--think`` s after each answer.
* ``browser``: real Playwright pages in one headless Debian Chromium, each in its own browser
  context, driven by one thread that draws on each page in turn (a box ≈ 0.3 s, a lasso ≈ 0.8 s of
  mouse moves). On 2 cores 20 renderers redrawing Bokeh canvases compete with the server (measured:
  240 of 400 selections answered in 1,524 s), so use it for few pages, or with more cores.

**Load.** A baseline first: one session makes the same selections alone. Then ``--sessions``
sessions, all open at once, each makes ``--selections`` selections (the first half boxes, the rest
lassos, around the projection's densest region, sizes alternating so each changes the count).
Latency is timed on the client (in the page, on its own clock, in browser mode): from sending the
selection to (a) the selection count's text changing and (b) the visible pane done: the Decode tab
(shown first) saying the new count with no loading spinner left. Errors: page or client errors, a
selection not answered in time, selecting nobody or (websocket) a count other than the backend's,
and tracebacks in the server log (a write to a page already closed, tornado's
``WebSocketClosedError``, is counted apart: it is the server finishing an update nobody waits
for). RSS with 1 and with all sessions open gives the cost per extra session.

**Cycles.** A fresh server; ``--cycles`` times: open a session, wait for the latent raster, make one
box selection (unless ``--no-select``), close it, wait ``--settle`` s; the server's RSS after each
cycle. Passes when the last RSS is within 5 % of the RSS after cycle 10. RSS counts the bundle's
memory-mapped pages the server has touched; "anon" (RSS less file-backed pages) is what sessions
allocate.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import (  # noqa: E402  (a sibling benchmark script, not a package)
    CHROMIUM,
    CHROMIUM_ARGS,
    MB,
    PAINTED_JS,
    REPO,
    cpu_s,
    free_port,
    serve,
    server_processes,
    stop,
)

from _websocket_users import TITLE, Tally, WebsocketClient, backend_count, progress, selection_shape  # noqa: E402

from lse_panel.figures.app import densest_point, drag_box, frame_box, lasso, select_tool, to_screen  # noqa: E402
from lse_panel.testing import tiny_cohort, write_cohort_bundle  # noqa: E402

# Many pages in one browser: none of them may be throttled as a background tab.
BROWSER_ARGS = [
    *CHROMIUM_ARGS, "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]

PROBE_JS = """(timeoutMs) => {
  if (window.__lse) return true;
  if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return false;
  const doc = Bokeh.documents[Bokeh.documents.length - 1];
  const models = () => doc._all_models ? [...doc._all_models.values()] : [...doc.all_models];
  const hasClass = (m, c) => Array.isArray(m.css_classes) && m.css_classes.includes(c);
  const summary = models().find(m => hasClass(m, 'lse-selection-size'));
  if (!summary) return false;
  // The Decode tab's header says "Selection: N subjects" once its recomputation for N has begun.
  const decodeShows = (all, n) => all.some(m => typeof m.text === 'string' && m !== summary
      && m.text.includes('Selection') && m.text.includes(': ' + n + ' subjects'));
  const hasDecode = () => models().some(m => typeof m.text === 'string' && m.text.includes('decoded from the'));
  const probe = {armed: false, results: [], summary, geometry: null};
  probe.arm = () => { probe.armed = true; probe.before = summary.text; probe.geometry = null; };
  // Bokeh's final selection-geometry event: the drag was read as a box or lasso and sent.
  doc.on_event('selectiongeometry', (_model, event) => { if (event && event.final) probe.geometry = performance.now(); });
  window.addEventListener('pointerup', () => {
    if (!probe.armed) return;
    probe.armed = false;
    const t0 = performance.now(), before = probe.before, decode = hasDecode();
    let counted = null, n = null;
    const tick = () => {
      const now = performance.now();
      if (counted === null && summary.text !== before) {
        counted = now;
        const found = summary.text.match(/([0-9][0-9,]*)/);
        n = found ? found[1] : '?';
      }
      // One pass over the document's models per tick, and only once the count has changed.
      const all = counted !== null && decode ? models() : null;
      if (counted !== null && (!decode || (decodeShows(all, n) && !all.some(m => hasClass(m, 'pn-loading'))))) {
        probe.results.push({count_ms: counted - t0, pane_ms: now - t0, n: n, decode: decode});
        return;
      }
      if (counted === null && probe.geometry === null && now - t0 > 5000) {
        probe.results.push({lost: true}); return;  // a starved page read the drag as no gesture
      }
      if (now - t0 > timeoutMs) { probe.results.push({timeout: true, counted: counted !== null, n: n}); return; }
      setTimeout(tick, 10);
    };
    tick();
  }, true);
  window.__lse = probe;
  return true;
}"""
"""Installs ``window.__lse`` once the explorer's selection summary exists: ``arm()`` before a drag;
the next mouse-up starts a 10 ms poll (page clock) that records when the count text changed, and
when the Decode tab (shown first) says the new count and no model carries Panel's ``pn-loading``
class any more: its recomputation for this selection is done and drawn. The count and the
spinner arrive in separate messages (measured: the spinner about 1 s after the count on the loaded
machine), so the spinner alone cannot tell "not started" from "done"."""


# -- the server ---------------------------------------------------------------------------------
class Server:
    """``panel serve`` on the explorer with its log drained in a thread (a full pipe would block it)."""

    def __init__(self, bundle: Path, cwd: Path) -> None:
        self.port = free_port()
        self.proc, self.started = serve(
            REPO / "apps" / "explorer.py", self.port,
            ["--setup", str(REPO / "apps" / "setup.py"), "--args", str(bundle)], cwd,
            env={"PANEL_LOG_LEVEL": "info"},  # "Session N launching/destroyed": what sessions() counts
        )
        self.url = f"http://127.0.0.1:{self.port}/explorer"
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def errors(self) -> tuple[list[str], int]:
        """Each traceback or error the server logged (with up to 12 lines after it), and how many were
        only writes to a page already closed."""
        found, closed, end = [], 0, 0
        for i, line in enumerate(self.lines):
            if i < end or not ("Traceback" in line or " ERROR " in line):
                continue  # inside the block already taken (a chained traceback's second half)
            block, end = self.lines[i : i + 12], i + 12
            if any("WebSocketClosedError" in b or "StreamClosedError" in b for b in block):
                closed += 1
            else:
                found.append("\n      ".join(block))
        return found, closed

    def sessions(self) -> tuple[int, int]:
        """How many sessions the server has made, and how many it has destroyed (after their websocket
        closed and the unused-session lifetime passed): a closed session not destroyed is leaked."""
        launched = sum(" - Session " in line and line.endswith(" launching") for line in self.lines)
        destroyed = sum(" - Session " in line and line.endswith(" destroyed") for line in self.lines)
        return launched, destroyed

    def memory(self) -> tuple[float, float]:
        """(RSS, anonymous RSS) of the server and its children, MB."""
        rss = anon = 0
        for p in server_processes(self.proc):
            try:
                info = p.memory_info()
            except psutil.NoSuchProcess:
                continue
            rss += info.rss
            anon += info.rss - info.shared  # shared: file-backed pages (the bundle's mapped columns)
        return rss / MB, anon / MB

    def cpu(self) -> float:
        return cpu_s(self.proc)

    def close(self) -> None:
        self.proc.stdout = None  # the reader thread owns it
        stop(self.proc)


# -- pages (browser mode) ---------------------------------------------------------------------
@dataclass(kw_only=True)
class Session(Tally):
    """One user: a page in its own browser context, and what its selections measured."""

    context: Any
    page: Any
    box: dict[str, Any] = field(default_factory=dict)
    tool: str = ""
    answered: int = 0  # of the page's recorded answers, how many were collected
    pending: bool = False
    next_at: float = 0.0


def open_session(browser: Any, url: str, timeout_ms: int = 300_000) -> Session:
    context = browser.new_context(viewport={"width": 1600, "height": 1200})
    page = context.new_page()
    session = Session(context=context, page=page)
    page.on("pageerror", lambda exc: session.errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: session.errors.append(f"console: {msg.text}") if msg.type == "error"
            # The template's web fonts: this machine has no network; nothing the server sent.
            and "ERR_NAME_NOT_RESOLVED" not in msg.text else None)
    page.goto(url, timeout=timeout_ms)
    session.box = frame_box(page, TITLE, timeout_ms=timeout_ms)
    page.wait_for_function(PROBE_JS, arg=timeout_ms, timeout=timeout_ms, polling=100)
    return session


def selection_drag(session: Session, index: int, total: int, centre: tuple[float, float]) -> None:
    """Draw selection ``index`` of ``total`` (:func:`selection_shape`) around ``centre``."""
    shape, fraction = selection_shape(index, total)
    tool = f"{shape}-select"
    if session.tool != tool:
        select_tool(session.page, 0, tool)
        session.tool = tool
    box = session.box
    cx, cy = to_screen(box, *centre)
    r = min(box["width"], box["height"]) * fraction
    session.page.evaluate("() => window.__lse.arm()")
    if tool == "box-select":
        drag_box(session.page, (cx - r, cy - r), (cx + r, cy + r))
    else:
        lasso(session.page, [(cx + r * math.cos(t), cy + r * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 24)])


def collect(session: Session) -> str | None:
    """The page's answer to the pending selection: ``"done"``, ``"lost"`` (no gesture was read: draw
    it again), or ``None`` while it is still coming."""
    found = session.page.evaluate("() => window.__lse.results.length")
    if found <= session.answered:
        return None
    result = session.page.evaluate("(i) => window.__lse.results[i]", session.answered)
    session.answered += 1
    if result.get("lost"):
        session.lost += 1
        if session.lost > 10:
            session.errors.append("more than 10 drags were not read as a selection")
            return "done"
        return "lost"
    session.results.append(result)
    if result.get("timeout"):
        session.errors.append(f"selection {len(session.results)} not answered in time ({result})")
    elif result["n"] == "0":
        session.errors.append(f"selection {len(session.results)} selected nobody")
    return "done"


class BrowserClient:
    """Users as Playwright pages in one headless Chromium, drawn on by this thread in turn."""

    name = "browser"

    def __init__(self, centre: tuple[float, float], timeout: float = 300.0) -> None:
        from playwright.sync_api import sync_playwright

        self.centre, self.timeout_ms = centre, int(timeout * 1000)
        self.errors: list[str] = []
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)

    def open(self, url: str) -> Session:
        return open_session(self.browser, url, self.timeout_ms)

    def wait_painted(self, session: Session) -> None:
        session.page.wait_for_function(PAINTED_JS, arg=TITLE, timeout=self.timeout_ms, polling=100)

    def close(self, session: Session) -> None:
        session.context.close()

    def shutdown(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def drive(self, sessions: list[Session], selections: int, think: float) -> float:
        """Every session makes ``selections`` selections, the pages taken in turn; returns the wall time."""
        start, reported = time.perf_counter(), 0
        while any(s.made < selections or s.pending for s in sessions):
            reported = progress(sessions, selections * len(sessions), start, reported)
            if stopping.is_set():
                raise KeyboardInterrupt
            issued = False
            for s in sessions:
                if s.pending:
                    answer = collect(s)
                    if answer is not None:
                        s.pending = False
                        s.next_at = time.perf_counter() + (think if answer == "done" else 0.5)
                        if answer == "lost":
                            s.made -= 1  # draw that one again
                elif s.made < selections and time.perf_counter() >= s.next_at:
                    selection_drag(s, s.made, selections, self.centre)
                    s.made += 1
                    s.pending = True
                    issued = True
            if not issued:
                time.sleep(0.02)
        return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def latency_line(label: str, sessions: list[Tally]) -> tuple[str, float]:
    done = [r for s in sessions for r in s.results if not r.get("timeout")]
    count = [r["count_ms"] for r in done]
    pane = [r["pane_ms"] for r in done]
    decoded = sum(bool(r["decode"]) for r in done)
    line = (f"  {label:<22} n={len(done):4d}  count shown p50 {percentile(count, 50):6.0f} ms  "
            f"p95 {percentile(count, 95):6.0f} ms   visible pane p50 {percentile(pane, 50):6.0f} ms  "
            f"p95 {percentile(pane, 95):6.0f} ms  max {max(pane, default=float('nan')):6.0f} ms  "
            f"(Decode tab timed in {decoded}/{len(done)}; drags drawn again {sum(s.lost for s in sessions)})")
    return line, percentile(pane, 95)


# -- the two phases -----------------------------------------------------------------------------
def load_phase(client: Any, bundle: Path, cwd: Path, args: argparse.Namespace) -> bool:
    """The baseline and the load with ``client``'s users (a :class:`BrowserClient` or a ``WebsocketClient``)."""
    server, logged = Server(bundle, cwd), len(client.errors)
    try:
        rss_idle, anon_idle = server.memory()
        print(f"server up in {server.started:.1f} s; RSS idle {rss_idle:.0f} MB (anon {anon_idle:.0f})", flush=True)

        # Baseline: the first session alone (it also fills the process-wide caches).
        first = client.open(server.url)
        c0 = server.cpu()
        solo_wall = client.drive([first], args.selections, args.think)
        solo_cpu = server.cpu() - c0
        solo = Tally(results=first.results, errors=list(first.errors), lost=first.lost)
        rss_one, anon_one = server.memory()
        print(f"baseline: 1 session × {args.selections} selections in {solo_wall:.1f} s (server cpu {solo_cpu:.1f} s); "
              f"RSS {rss_one:.0f} MB (anon {anon_one:.0f})", flush=True)

        # The load: the others join it, then every session makes its selections at once.
        t0 = time.perf_counter()
        sessions = [first] + [client.open(server.url) for _ in range(args.sessions - 1)]
        time.sleep(2)  # the last session's remaining panes
        rss_all, anon_all = server.memory()
        print(f"{args.sessions} sessions open ({time.perf_counter() - t0:.1f} s to open the others); "
              f"RSS {rss_all:.0f} MB (anon {anon_all:.0f})", flush=True)
        first.results, first.errors, first.made, first.lost = [], [], 0, 0
        c0, k0 = server.cpu(), time.process_time()
        wall = client.drive(sessions, args.selections, args.think)
        load_cpu, users_cpu = server.cpu() - c0, time.process_time() - k0
        rss_sel, anon_sel = server.memory()
        for s in sessions:
            client.close(s)
        time.sleep(args.settle + 6)  # expiry, then Panel's garbage collection (5 s after the last session ends)
        rss_after, anon_after = server.memory()
        launched, destroyed = server.sessions()
    finally:
        server.close()

    n = args.sessions * args.selections
    server_errors, closed_writes = server.errors()
    errors = [e for s in [solo, *sessions] for e in s.errors] + client.errors[logged:] + [f"server: {e}" for e in server_errors]
    if destroyed < launched:
        errors.append(f"server: {launched - destroyed} of {launched} sessions not destroyed {args.settle + 6:.0f} s after closing")
    solo_line, solo_p95 = latency_line("1 session (baseline)", [solo])
    load_line, load_p95 = latency_line(f"{args.sessions} sessions", sessions)
    extra = args.sessions - 1
    print(f"\n== load ({client.name} users): {args.sessions} sessions × {args.selections} selections ({n} in all) in {wall:.1f} s, "
          f"{n / wall:.2f} selections/s; server cpu {load_cpu:.1f} s ({load_cpu / n * 1000:.0f} ms per selection; "
          f"baseline {solo_cpu / args.selections * 1000:.0f} ms); this process (the users; not Chromium's "
          f"renderers) cpu {users_cpu:.1f} s")
    print(solo_line)
    print(load_line)
    print(f"  p95 visible pane, {args.sessions} sessions / 1 session: {load_p95 / solo_p95:5.1f}×")
    print(f"  errors: {len(errors)}; writes to closed pages: {closed_writes}; sessions made {launched}, "
          f"destroyed {destroyed}" + "".join(f"\n    {e}" for e in errors[:20]))
    print(f"  RSS idle {rss_idle:.0f} MB; 1 session (with its selection) {rss_one:.0f}; {args.sessions} open "
          f"{rss_all:.0f}; after all their selections {rss_sel:.0f}; all closed {rss_after:.0f} MB "
          f"(anon {anon_idle:.0f}, {anon_one:.0f}, {anon_all:.0f}, {anon_sel:.0f}, {anon_after:.0f})")
    print(f"  per extra open session: {(rss_all - rss_one) / extra:5.1f} MB RSS ({(anon_all - anon_one) / extra:5.1f} anon); "
          f"each with a selection {(rss_sel - rss_one) / extra:5.1f} MB ({(anon_sel - anon_one) / extra:5.1f} anon)"
          f"   target ≤ 50 MB")
    return not errors


def cycles_phase(client: Any, bundle: Path, cwd: Path, args: argparse.Namespace) -> bool:
    server, logged = Server(bundle, cwd), len(client.errors)
    curve: list[tuple[int, float, float]] = []
    errors: list[str] = []
    c0, t0 = server.cpu(), time.perf_counter()
    used_cpu = float("nan")
    try:
        print(f"\n== {args.cycles} open/close cycles of {client.name} users (server up in {server.started:.1f} s; RSS "
              f"{server.memory()[0]:.0f} MB)", flush=True)
        for cycle in range(1, args.cycles + 1):
            if stopping.is_set():
                print(f"  stopped after {cycle - 1} cycles", flush=True)
                break
            session = client.open(server.url)
            client.wait_painted(session)
            if args.select:
                client.drive([session], 1, 0.0)
            client.close(session)
            errors += [f"cycle {cycle}: {e}" for e in session.errors]
            time.sleep(args.settle)
            rss, anon = server.memory()
            curve.append((cycle, rss, anon))
            if cycle % 10 == 0 or cycle == 1:
                ref = curve[9][1] if len(curve) >= 10 else curve[0][1]
                print(f"  cycle {cycle:4d}: RSS {rss:7.0f} MB  anon {anon:7.0f} MB  ({100 * (rss / ref - 1):+5.1f} % "
                      f"vs cycle {10 if len(curve) >= 10 else 1})", flush=True)
        time.sleep(8)  # Panel's garbage collection after the last session
        final, final_anon = server.memory()
        used_cpu = server.cpu() - c0
        launched, destroyed = server.sessions()
    finally:
        server.close()
    server_errors, closed_writes = server.errors()
    errors += client.errors[logged:] + [f"server: {e}" for e in server_errors]
    if destroyed < launched:
        errors.append(f"server: {launched - destroyed} of {launched} sessions not destroyed 8 s after the last cycle")
    ref_cycle = min(10, len(curve))
    ref = curve[ref_cycle - 1][1]
    ok = final <= 1.05 * ref and not errors
    per_cycle = (curve[-1][1] - ref) / max(len(curve) - ref_cycle, 1)
    print(f"  after the last, settled: RSS {final:.0f} MB (anon {final_anon:.0f}); vs cycle {ref_cycle} "
          f"{100 * (final / ref - 1):+.1f} % (pass ≤ +5 %): {'PASS' if ok else 'FAIL'}; "
          f"slope {per_cycle * 1024:+.0f} KB per cycle after cycle {ref_cycle}")
    print(f"  {len(curve)} cycles in {time.perf_counter() - t0:.0f} s; server cpu {used_cpu:.0f} s; "
          f"errors: {len(errors)}; writes to closed pages: {closed_writes}; sessions made {launched}, "
          f"destroyed {destroyed}" + "".join(f"\n    {e}" for e in errors[:20]))
    return ok


stopping = threading.Event()
"""Set by SIGTERM/SIGINT: the cycles phase stops after the current cycle and still reports."""


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None,
                        help="the bundle to serve (default: data/demo if built, else a tiny_cohort bundle of --n)")
    parser.add_argument("--n", type=int, default=500_000, help="subjects in the generated bundle")
    parser.add_argument("--phase", choices=["load", "cycles", "all"], default="all")
    parser.add_argument("--client", choices=["websocket", "browser"], default="websocket",
                        help="users as Bokeh websocket clients (no browser) or as Chromium pages")
    parser.add_argument("--sessions", type=int, default=20, help="sessions open at once in the load phase")
    parser.add_argument("--selections", type=int, default=20, help="selections each session makes")
    parser.add_argument("--think", type=float, default=1.0, help="seconds a user waits after each answer")
    parser.add_argument("--cycles", type=int, default=200, help="open/close cycles in the memory phase")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after closing a session (closed sessions are dropped after about 2 s)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to open a session or answer a selection")
    parser.add_argument("--no-select", dest="select", action="store_false", help="cycles only open and close")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lse-bench-sessions-") as tmp:
        if args.bundle is None:
            demo = REPO / "data" / "demo"
            # A generated bundle has no decoder: the visible pane is then timed by the count alone.
            args.bundle = demo if (demo / "manifest.json").exists() else write_cohort_bundle(tiny_cohort(args.n), Path(tmp) / f"tiny_{args.n}")
        elif not (args.bundle / "manifest.json").exists():
            sys.exit(f"no bundle at {args.bundle}: build one with `lse build --out {args.bundle}` or leave out --bundle")
        args.bundle = Path(args.bundle).resolve()  # the server runs in another folder
        ok = run(args)
    sys.exit(0 if ok else 1)


def run(args: argparse.Namespace) -> bool:
    """Both phases (or the one asked for) on ``args.bundle``; whether every check passed."""
    from lse_panel.cohort.backend import in_process
    from lse_panel.cohort.bundle import open_bundle
    from lse_panel.components.latent_view import default_pair

    cohort = open_bundle(args.bundle)
    kind = default_pair(cohort)[0]
    key = f"{kind}/umap" if f"{kind}/umap" in cohort.projections else next(k for k in cohort.projections if k.startswith(kind))
    centre = densest_point(np.asarray(cohort.projection(key)))
    print(f"bundle {args.bundle} ({cohort.n_subjects:,} subjects); selections around {centre} on {key}")
    print(f"machine: {os.cpu_count()} cores; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(other work on the machine slows every figure)")
    cwd = Path("/tmp") if Path("/tmp").is_dir() else REPO
    if args.client == "websocket":
        backend = in_process(cohort)  # the counts each selection must show
        client: Any = WebsocketClient(centre, backend.extent(key), count=backend_count(backend, key),
                                      timeout=args.timeout, stopping=stopping)
    else:
        client = BrowserClient(centre, args.timeout)
    ok = True
    try:
        if args.phase in ("load", "all"):
            ok &= load_phase(client, args.bundle, cwd, args)
        if args.phase in ("cycles", "all"):
            ok &= cycles_phase(client, args.bundle, cwd, args)
    finally:
        client.shutdown()
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return ok


if __name__ == "__main__":
    main()
