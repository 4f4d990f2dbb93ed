"""`lse serve` access and process rules: logins off loopback, origins by real names, children that die with it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from lse_panel.build import build_cohort
from lse_panel.cli import build_parser, main
from lse_panel.cli_validation import host_address
from lse_panel.config import REPO_ROOT, SETTINGS
from lse_panel.serve import privacy_mode, serve_command, serve_environment, websocket_origins
from lse_panel.testing import free_port

PASSWORD = "correct horse battery staple"
COOKIE_SECRET = "k" * 40


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A servable 300-subject bundle: the single-modality UMAPs are still to come (``lse serve`` finishes them)."""
    out = tmp_path_factory.mktemp("serve") / "cohort"
    build_cohort(out, n_subjects=300, seed=1, model=SETTINGS.demo_model, until="servable", progress=False)
    return out


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"alice": PASSWORD}))
    path.chmod(0o600)
    return path


class FakeServer:
    """Stands in for ``subprocess.Popen`` so a command is checked without serving anything."""

    started: list[FakeServer] = []

    def __init__(self, command, **kwargs) -> None:
        self.command, self.env = list(command), kwargs.get("env")
        FakeServer.started.append(self)

    def wait(self) -> int:
        return 0

    def poll(self) -> int:
        return 0


@pytest.fixture
def fake_popen(monkeypatch) -> list[FakeServer]:
    FakeServer.started = []
    monkeypatch.setattr(subprocess, "Popen", FakeServer)
    return FakeServer.started


# ----------------------------------------------------------------------------- without a server


@pytest.mark.parametrize("address", ["0.0.0.0", "::", socket.gethostname()])
def test_network_address_without_login_is_refused(bundle: Path, address: str, fake_popen, capsys) -> None:
    if address == socket.gethostname() and host_address(address).is_loopback:
        pytest.skip("this machine's host name is a loopback address")
    assert main(["serve", str(bundle), "--address", address, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "--basic-auth" in err and "--insecure-network" in err
    assert not fake_popen  # nothing was started


def test_insecure_network_serves_with_a_warning(bundle: Path, fake_popen, capsys) -> None:
    port = free_port()
    assert main(["serve", str(bundle), "--address", "0.0.0.0", "--port", str(port), "--insecure-network"]) == 0
    assert "WITHOUT authentication" in capsys.readouterr().err
    (server,) = fake_popen
    origins = [server.command[i + 1] for i, a in enumerate(server.command) if a == "--allow-websocket-origin"]
    assert origins and f"0.0.0.0:{port}" not in origins


def test_origins_are_real_names() -> None:
    everywhere = host_address("0.0.0.0")
    assert websocket_origins(everywhere, 80, ["lse.example.org"]) == ["lse.example.org"]
    fallback = websocket_origins(everywhere, 5006)
    assert fallback and all(not o.startswith(("0.0.0.0", "[")) and o.endswith(":5006") for o in fallback)
    assert websocket_origins(host_address("127.0.0.1"), 5006) == ["localhost:5006", "127.0.0.1:5006"]
    assert websocket_origins(host_address("10.1.2.3"), 5006) == ["10.1.2.3:5006"]
    assert websocket_origins(host_address("::"), 5006, ["a.example"]) == ["a.example"]


def test_secrets_go_through_the_environment_not_the_command_line(bundle: Path, users: Path, fake_popen) -> None:
    argv = ["serve", str(bundle), "--address", "0.0.0.0", "--port", str(free_port()), "--basic-auth", str(users),
            "--cookie-secret", COOKIE_SECRET, "--allow-origin", "lse.example.org"]
    assert main(argv) == 0
    (server,) = fake_popen
    assert COOKIE_SECRET not in " ".join(server.command)
    assert server.env["PANEL_COOKIE_SECRET"] == COOKIE_SECRET
    assert server.command[server.command.index("--basic-auth") + 1] == str(users.resolve())
    assert server.command[server.command.index("--session-ids") + 1] == "signed"
    assert len(server.env["BOKEH_SECRET_KEY"]) >= 32


def test_oauth_options_pass_through(bundle: Path, fake_popen) -> None:
    argv = ["serve", str(bundle), "--address", "0.0.0.0", "--port", str(free_port()),
            "--oauth-provider", "github", "--oauth-key", "client-id", "--oauth-secret", "client-secret",
            "--oauth-redirect-uri", "https://lse.example.org/login", "--allow-origin", "lse.example.org"]
    assert main(argv) == 0
    env = fake_popen[0].env
    assert (env["PANEL_OAUTH_PROVIDER"], env["PANEL_OAUTH_KEY"], env["PANEL_OAUTH_SECRET"]) == (
        "github", "client-id", "client-secret")
    assert env["PANEL_OAUTH_REDIRECT_URI"] == "https://lse.example.org/login"
    assert len(env["PANEL_OAUTH_ENCRYPTION"]) == 44 and len(env["PANEL_COOKIE_SECRET"]) >= 32
    assert "client-secret" not in " ".join(fake_popen[0].command)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--oauth-provider", "github"], "--oauth-key and --oauth-secret"),
        (["--basic-auth", "USERS", "--oauth-provider", "github", "--oauth-key", "k", "--oauth-secret", "s"], "not both"),
        (["--ssl-certfile", "USERS"], "go together"),
    ],
)
def test_incomplete_login_options_are_refused(bundle: Path, users: Path, extra, message, fake_popen, capsys) -> None:
    extra = [str(users) if a == "USERS" else a for a in extra]
    assert main(["serve", str(bundle), "--port", str(free_port()), *extra]) == 2
    assert message in capsys.readouterr().err and not fake_popen


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ('{"alice": "correct horse battery"}', 0o644, "chmod 600"),
        ("not json", 0o600, "not valid JSON"),
        ("{}", 0o600, "non-empty JSON object"),
        ('{"alice": "short"}', 0o600, "at least 8 characters"),
        ('["alice"]', 0o600, "non-empty JSON object"),
    ],
)
def test_password_file_is_checked(tmp_path: Path, content: str, mode: int, message: str, capsys) -> None:
    path = tmp_path / "users.json"
    path.write_text(content)
    path.chmod(mode)
    assert main(["serve", str(tmp_path), "--basic-auth", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "--basic-auth" in err and len(err.splitlines()) == 1


def test_privacy_mode_is_passed_to_the_app(bundle: Path, fake_popen) -> None:
    assert main(["serve", str(bundle), "--port", str(free_port()), "--privacy", "aggregate"]) == 0
    assert fake_popen[0].env["LSE_PRIVACY"] == "aggregate"
    assert privacy_mode({"raw": {"source": "synthetic"}}) == "full"
    assert privacy_mode({"raw": {}}) == "aggregate"  # real cohorts: aggregates unless asked otherwise
    assert privacy_mode({"raw": {"source": "synthetic"}}, "aggregate") == "aggregate"


@pytest.mark.parametrize(("mode", "has_subject_tab"), [("aggregate", False), ("full", True)])
def test_served_app_reads_the_privacy_mode(bundle: Path, mode: str, has_subject_tab: bool, monkeypatch) -> None:
    import runpy

    import panel as pn

    monkeypatch.setenv("LSE_BUNDLE", str(bundle))
    monkeypatch.setenv("LSE_PRIVACY", mode)
    monkeypatch.setattr(sys, "argv", ["explorer.py"])
    namespace = runpy.run_path(str(REPO_ROOT / "apps" / "explorer.py"))
    tabs = [obj for obj in namespace["main"].objects if isinstance(obj, pn.Tabs)]
    assert tabs and ("Subject" in tabs[0]._names) == has_subject_tab


def test_port_in_use_is_one_clear_line(bundle: Path, capsys) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", str(bundle), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_serve_command_binds_loopback_by_default(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", str(tmp_path), "--port", "5099"])
    command = serve_command(args)
    env, _ = serve_environment(args, tmp_path, "full")
    assert command[command.index("--address") + 1] == "127.0.0.1"
    assert "--basic-auth" not in command and "PANEL_COOKIE_SECRET" not in env


# ----------------------------------------------------------------------------- real servers


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _start_serve(argv: list[str], log: Path, *, until: str = "ready in", count: int = 1,
                 timeout_s: float = 180) -> subprocess.Popen:
    """Run ``lse serve`` for real; return once its log shows ``until`` ``count`` times."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "lse_panel.cli", "serve", *argv],
                                stdout=fh, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    deadline = time.monotonic() + timeout_s
    while log.read_text(errors="replace").count(until) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"lse serve did not come up:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    return proc


def _stop(proc: subprocess.Popen, tree: list[psutil.Process]) -> None:
    for p in [proc, *tree]:
        try:
            p.kill()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    proc.wait(10)


class _Client:
    """A cookie-keeping HTTP client that shows redirects instead of following them."""

    def __init__(self, port: int) -> None:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.port, self.jar = port, CookieJar()
        self.opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path: str, form: dict | None = None) -> tuple[int, str, str | None]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(f"http://127.0.0.1:{self.port}{path}", data=data, timeout=60) as response:
                return response.status, response.read().decode(), response.headers.get("Location")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace"), exc.headers.get("Location")

    @property
    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def websocket(self, token: str, origin: str | None, with_cookie: bool = True) -> str:
        """``"accepted"`` or the refusal of a websocket upgrade to the explorer."""
        from tornado import httpclient, ioloop, websocket

        headers = {}
        if origin is not None:
            headers["Origin"] = origin
        if with_cookie:
            headers["Cookie"] = self.cookie

        async def connect() -> str:
            request = httpclient.HTTPRequest(f"ws://127.0.0.1:{self.port}/explorer/ws", headers=headers)
            try:
                connection = await websocket.websocket_connect(request, subprotocols=["bokeh", token])
            except Exception as exc:  # tornado raises HTTPClientError (403) or WebSocketError
                return f"refused ({exc})"
            connection.close()
            return "accepted"

        # In a thread of its own: a session-scoped Playwright page keeps an event loop running in
        # this one, and asyncio refuses to start a second loop inside it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: ioloop.IOLoop().run_sync(connect)).result()


@pytest.mark.slow
def test_network_server_requires_login_and_refuses_foreign_origins(bundle: Path, users: Path, tmp_path: Path) -> None:
    port = free_port()
    name = "lse-test.invalid"  # the public name browsers use; it need not resolve here
    proc = _start_serve([str(bundle), "--address", "0.0.0.0", "--port", str(port), "--basic-auth", str(users),
                         "--cookie-secret", COOKIE_SECRET, "--allow-origin", f"{name}:{port}"], tmp_path / "serve.log")
    tree = psutil.Process(proc.pid).children(recursive=True)
    try:
        client = _Client(port)
        status, _, location = client.request("/explorer")
        assert status == 302 and "login" in location  # no page, no session token, before a login
        client.request("/login", {"username": "alice", "password": "wrong password"})
        assert "user" not in client.cookie
        client.request("/login", {"username": "alice", "password": PASSWORD})
        status, page, _ = client.request("/explorer")
        assert status == 200
        token = re.search(r'"token":"([^"]+)"', page).group(1)
        assert client.websocket(token, f"http://{name}:{port}") == "accepted"
        # A page from another site (DNS rebinding, a hostile tab) is refused even with the user's cookie.
        assert client.websocket(token, f"http://evil.example:{port}").startswith("refused (HTTP 403")
        assert client.websocket(token, f"http://0.0.0.0:{port}").startswith("refused (HTTP 403")
        # Without the login cookie, a stolen token opens nothing, with or without an Origin header.
        assert client.websocket(token, f"http://{name}:{port}", with_cookie=False).startswith("refused")
        assert client.websocket(token, None, with_cookie=False).startswith("refused")
        # Tornado skips the origin check when no Origin is sent (only non-browser clients do that):
        # such a client still needs the login cookie, as above.
        assert client.websocket(token, None) == "accepted"
        assert all(COOKIE_SECRET not in " ".join(p.cmdline()) for p in tree)
    finally:
        _stop(proc, tree)


@pytest.mark.slow
def test_kill_9_of_lse_serve_ends_the_server_and_the_background_build(bundle: Path, tmp_path: Path) -> None:
    servable = tmp_path / "cohort"  # a copy: `--build-if-missing` starts a build that finishes it
    shutil.copytree(bundle, servable)
    port = free_port()
    proc = _start_serve([str(servable), "--port", str(port), "--num-procs", "2", "--build-if-missing"],
                        tmp_path / "serve.log", until="ends with its parent", count=2)
    tree = psutil.Process(proc.pid).children(recursive=True)
    try:
        commands = [" ".join(p.cmdline()) for p in tree]
        assert sum("panel serve" in c for c in commands) == 3, commands  # the server and its two workers
        assert any("lse_panel.cli build" in c for c in commands), commands  # the background build
        assert _listening(port)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        gone, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert not _listening(port)
    finally:
        _stop(proc, tree)


def test_spawned_child_dies_with_its_parent(tmp_path: Path) -> None:
    """The mechanism alone: a parent killed with SIGKILL takes its tied child with it."""
    code = (
        "import subprocess, sys, time\n"
        "from lse_panel.serve import spawn_tied\n"
        "child = spawn_tied([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        child.wait(10)
    finally:
        if child.is_running():
            child.kill()
    assert not child.is_running()


def test_loopback_behind_a_proxy_without_login_gets_a_note(bundle: Path, fake_popen, capsys) -> None:
    assert main(["serve", str(bundle), "--port", str(free_port()), "--allow-origin", "lse.example.org"]) == 0
    out, err = capsys.readouterr()
    assert "a proxy publishes the app" in err
    assert "open http://localhost:" in out
