"""``lse serve``: the ``panel serve`` command, who may connect to it, and children that die with it."""

from __future__ import annotations

import argparse
import base64
import ctypes
import errno
import functools
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lse_panel.cli_validation import SECRET_HINT, HostAddress, cookie_secret
from lse_panel.analysis.privacy import PRIVACY_MODES, default_mode
from lse_panel.config import REPO_ROOT

__all__ = [
    "OAUTH_PROVIDERS",
    "PRIVACY_MODES",
    "die_with_parent",
    "finish_build_command",
    "privacy_mode",
    "run_serve",
    "serve_command",
    "serve_environment",
    "spawn_tied",
    "websocket_origins",
]

PRIVACY_ENV = "LSE_PRIVACY"
TIE_ENV = "LSE_DIE_WITH_PARENT"
"""Set for ``panel serve`` children so ``apps/setup.py`` ties each worker process to its parent too."""

OAUTH_PROVIDERS = (
    "auth0", "azure", "azurev2", "bitbucket", "generic", "google", "github", "gitlab", "okta", "password", "auth_code",
)
"""Panel 1.9.4's OAuth providers (``panel.auth.AUTH_PROVIDERS``) less ``pam``, which needs a package not installed."""

# Secrets reach `panel serve` through its environment, never its argv: any local user can read a
# process's command line (`ps`), not its environment.
_CHILD_AUTH_ENV = (
    "PANEL_BASIC_AUTH", "PANEL_COOKIE_SECRET", "BOKEH_COOKIE_SECRET", "PANEL_OAUTH_PROVIDER", "PANEL_OAUTH_KEY",
    "PANEL_OAUTH_SECRET", "PANEL_OAUTH_REDIRECT_URI", "PANEL_OAUTH_ENCRYPTION", "BOKEH_SECRET_KEY",
    "BOKEH_SIGN_SESSIONS", "BOKEH_ALLOW_WS_ORIGIN",  # Bokeh's env override would replace the allow-list
)


# ----------------------------------------------------------------------------- privacy


def privacy_mode(manifest: Mapping[str, Any], requested: str | None = None) -> str:
    """The privacy mode to serve a bundle in: ``requested``, else ``full`` for synthetic cohorts only.

    A bundle of real subjects defaults to ``aggregate``: serving individual-level views must be
    asked for (``lse serve --privacy full``).

    Parameters
    ----------
    manifest
        The bundle's manifest.
    requested
        ``"aggregate"``, ``"full"`` or ``None`` (decide by the bundle).

    Returns
    -------
    str
        One of :data:`PRIVACY_MODES`.
    """
    if requested is not None:
        if requested not in PRIVACY_MODES:
            raise ValueError(f"privacy mode {requested!r} is not one of {', '.join(PRIVACY_MODES)}.")
        return requested
    return default_mode(manifest)


def privacy_from_env(manifest: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """The mode ``lse serve --privacy`` passed down (``$LSE_PRIVACY``), else the bundle's default."""
    env = os.environ if env is None else env
    return privacy_mode(manifest, env.get(PRIVACY_ENV) or None)


# ----------------------------------------------------------------------------- who may connect


def websocket_origins(address: HostAddress, port: int, allow: Sequence[str] = ()) -> list[str]:
    """The browser origins (``HOST:PORT``) whose pages may open the app's websocket.

    Built from real names: the loopback names for a loopback address, the address itself for a
    specific one, and for ``0.0.0.0``/``::`` (every interface) the ``--allow-origin`` values or,
    without them, this machine's host name and fully qualified name. Never ``0.0.0.0:PORT``, which
    no browser sends.
    """
    origins: list[str] = []
    if address.is_loopback:
        origins += [f"localhost:{port}", f"127.0.0.1:{port}"]
    elif address.is_all_interfaces:
        if not allow:
            names = {socket.gethostname(), socket.getfqdn()}
            origins += [f"{name.lower()}:{port}" for name in sorted(names) if name and name != "localhost"]
    elif address.ip is None or address.ip.version == 4:
        origins.append(f"{address.lower()}:{port}")
    origins += list(allow)
    return list(dict.fromkeys(origins))


def auth_mode(args: argparse.Namespace) -> str | None:
    """``"basic"``, ``"oauth"`` or ``None``; both at once is refused."""
    if args.basic_auth and args.oauth_provider:
        raise ValueError("pass --basic-auth or --oauth-provider, not both.")
    return "basic" if args.basic_auth else "oauth" if args.oauth_provider else None


def check_access(args: argparse.Namespace) -> list[str]:
    """Refuse a network address without authentication; return the warnings to print.

    Raises
    ------
    ValueError
        Naming the address and the three ways out (authentication, ``--insecure-network``, loopback).
    """
    mode = auth_mode(args)
    warnings = []
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise ValueError("--ssl-certfile and --ssl-keyfile go together: pass the certificate and its private key.")
    if mode == "oauth":
        missing = [flag for flag, value in (("--oauth-key", args.oauth_key),
                                            ("--oauth-secret", args.oauth_secret or os.environ.get("PANEL_OAUTH_SECRET")))
                   if not value]
        if missing:
            raise ValueError(f"--oauth-provider {args.oauth_provider} needs {' and '.join(missing)} "
                             "(the client id and secret your identity provider issued for this app).")
    if args.address.is_loopback:
        if args.allow_origin and mode is None:
            warnings.append("note: --allow-origin on a loopback address means a proxy publishes the app; unless "
                            "the proxy asks for a login, add --basic-auth or --oauth-provider.")
        return warnings
    where = f"{args.address}:{args.port}"
    if mode is None and not args.insecure_network:
        raise ValueError(
            f"--address {args.address} serves to the network, and biobank data needs a login: pass "
            "--basic-auth FILE (a JSON file of user: password, chmod 600) or --oauth-provider with its options, "
            "or --insecure-network to serve without one (synthetic data only); see README.md, section Security."
        )
    if mode is None:
        warnings.append(
            f"WARNING: serving on {where} WITHOUT authentication (--insecure-network): anyone who can reach this "
            "port sees the cohort. Use --basic-auth or --oauth-provider for any real data."
        )
    elif not args.ssl_certfile:
        warnings.append(
            f"note: logins on {where} travel as plain HTTP unless a TLS reverse proxy stands in front "
            "(README.md, section Security) or you pass --ssl-certfile and --ssl-keyfile."
        )
    if args.address.is_all_interfaces and not args.allow_origin:
        warnings.append(
            "note: pages are accepted from " + ", ".join(websocket_origins(args.address, args.port))
            + " only; add --allow-origin HOST[:PORT] for the name your users type."
        )
    return warnings


def _secret(value: str | None, env_names: Sequence[str], make: Callable[[], str]) -> tuple[str, bool]:
    """``value``, else the first of ``env_names`` set, else a fresh one; and whether it was made here."""
    for candidate in (value, *(os.environ.get(name) for name in env_names)):
        if candidate:
            return candidate, False
    return make(), True


def serve_environment(args: argparse.Namespace, bundle: Path, privacy: str) -> tuple[dict[str, str], list[str]]:
    """The ``panel serve`` child's environment (bundle, privacy mode, secrets) and notes to print."""
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_AUTH_ENV}
    env.update({"LSE_BUNDLE": str(bundle.resolve()), PRIVACY_ENV: privacy, TIE_ENV: "1"})
    notes = []
    # Signed session ids: a client cannot pick the id of somebody else's session. One key per run,
    # shared by every `--num-procs` worker through the environment.
    env["BOKEH_SECRET_KEY"] = secrets.token_urlsafe(32)  # `--session-ids signed` (serve_command) signs with it
    mode = auth_mode(args)
    if mode is None:
        return env, notes
    secret, made = _secret(args.cookie_secret, ("LSE_COOKIE_SECRET", "PANEL_COOKIE_SECRET"),
                           lambda: secrets.token_urlsafe(32))
    try:
        cookie_secret(secret)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"cookie secret from the environment: {exc}") from None
    env["PANEL_COOKIE_SECRET"] = secret
    if made:
        notes.append("note: no --cookie-secret given, so logins last until the server restarts "
                     f"(pass one to keep them; {SECRET_HINT}).")
    if mode == "oauth":
        env["PANEL_OAUTH_PROVIDER"] = args.oauth_provider
        env["PANEL_OAUTH_KEY"] = args.oauth_key
        env["PANEL_OAUTH_SECRET"] = args.oauth_secret or os.environ["PANEL_OAUTH_SECRET"]
        if args.oauth_redirect_uri:
            env["PANEL_OAUTH_REDIRECT_URI"] = args.oauth_redirect_uri
        key, _ = _secret(args.oauth_encryption_key, ("PANEL_OAUTH_ENCRYPTION",),
                         lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii"))
        env["PANEL_OAUTH_ENCRYPTION"] = key  # without it Panel puts the user's tokens in cookies in clear
    return env, notes


def serve_command(args: argparse.Namespace) -> list[str]:
    """The ``panel serve`` command line that ``lse serve`` runs (no secrets: those go in the environment)."""
    app = REPO_ROOT / "apps" / "explorer.py"
    setup = REPO_ROOT / "apps" / "setup.py"
    command = [
        sys.executable, "-m", "panel", "serve", str(app),
        "--setup", str(setup),
        "--address", str(args.address),
        "--port", str(args.port),
        "--num-procs", str(args.num_procs),
        "--session-ids", "signed",
    ]
    for origin in websocket_origins(args.address, args.port, args.allow_origin or ()):
        command += ["--allow-websocket-origin", origin]
    if args.basic_auth:
        command += ["--basic-auth", str(Path(args.basic_auth).resolve())]
    if args.ssl_certfile:
        command += ["--ssl-certfile", str(Path(args.ssl_certfile).resolve()),
                    "--ssl-keyfile", str(Path(args.ssl_keyfile).resolve())]
    if args.show:
        command.append("--show")
    command += ["--args", str(Path(args.bundle).resolve())]
    return command


def check_port_free(address: HostAddress, port: int) -> None:
    """Refuse, in one line, a port another server already holds (Tornado would print a traceback)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(str(address), port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {address} is in use (another `lse serve`?); "
                             "stop it or pick another --port.") from None
        if exc.errno == errno.EACCES:
            raise ValueError(f"port {port} needs administrator rights; pick one from 1024 up.") from None
        raise ValueError(f"cannot listen on {address}:{port} ({exc.strerror or exc}); "
                         "pick another --address or --port.") from None


# ----------------------------------------------------------------------------- children that die with us

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or ``None`` off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # the running interpreter's own libc
    except (OSError, AttributeError):
        return None


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent ends (even by ``kill -9``).

    Parameters
    ----------
    parent_pid
        The parent expected; if it has already gone (so this process was re-parented before the
        request took effect), ``sig`` is sent at once.
    sig
        The signal to receive.

    Returns
    -------
    bool
        Whether the request was made (False off Linux).
    """
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


def spawn_tied(command: Sequence[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen`` of a child that receives SIGTERM when this process dies, however it dies.

    The parent-death signal is set between fork and exec with ``prctl`` (loaded here, before the
    fork, so the child only makes one libc call) and survives the exec. It follows the thread that
    forked, so call this from the thread that outlives the child (the main one).
    """
    prctl = _prctl()
    parent = os.getpid()

    def tie() -> None:  # runs in the child, before exec
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request: go now
            os._exit(1)

    return subprocess.Popen(list(command), preexec_fn=tie if prctl is not None else None, **popen)


def finish_build_command(bundle: Path) -> list[str]:
    """The ``lse build`` that finishes a servable bundle's projections, with the settings it was built with."""
    from lse_panel.build import recorded_build_settings

    settings = recorded_build_settings(bundle)
    if settings.get("producer") == "import":  # an imported bundle finishes from what it holds, no inputs
        return [sys.executable, "-m", "lse_panel.cli", "import", "--finish", "--out", str(bundle)]
    command = [sys.executable, "-m", "lse_panel.cli", "build", "--out", str(bundle)]
    for option, key in (("--subjects", "n_subjects"), ("--seed", "seed"), ("--model", "model")):
        if key in settings:
            command += [option, str(settings[key])]
    if settings.get("projections"):
        command += ["--projections", *map(str, settings["projections"])]
    return command


def _start_finisher(bundle: Path) -> subprocess.Popen | None:
    """Run the rest of a servable bundle's build in the background, its output in ``bundle/build.log``."""
    log = bundle / "build.log"
    try:
        with open(log, "ab") as fh:
            finisher = spawn_tied(finish_build_command(bundle), stdout=fh, stderr=subprocess.STDOUT)
    except OSError as exc:
        print(f"warning: could not start the background build ({exc}); run `lse build --out {bundle}` to finish it.",
              file=sys.stderr)
        return None
    print(f"finishing the remaining projections in the background (progress: {log})")
    return finisher


def _build_status(bundle: Path) -> str | None:
    """The bundle's ``build.status``, or None when there is no bundle."""
    from lse_panel.cohort.bundle import read_manifest

    if not (bundle / "manifest.json").exists():
        return None
    return str(read_manifest(bundle).get("build", {}).get("status", "complete"))


def run_serve(args: argparse.Namespace) -> int:
    """``lse serve``: check access, build the bundle if asked, run ``panel serve`` until it stops.

    With ``--dask`` one cluster serves every ``panel serve`` process (``$LSE_DASK``): started here
    for ``local`` (and closed with the server), joined for an address.
    """
    warnings = check_access(args)  # before any build: a refused address costs nothing
    check_port_free(args.address, args.port)
    bundle = Path(args.bundle)
    status = _build_status(bundle)
    client = _connect_cluster(args.dask) if getattr(args, "dask", None) else None
    try:
        return _serve(args, bundle, status, warnings, client)
    finally:
        if client is not None and args.dask == "local":
            client.cluster.close()
            client.close()


def _connect_cluster(dask: str) -> Any:
    """One cluster for every `panel serve` process: started here for 'local', joined otherwise."""
    from lse_panel.cohort.dask_backend import connect

    client = connect(dask)
    print(f"data on the Dask cluster at {client.scheduler.address} ({len(client.scheduler_info()['workers'])} workers)")
    return client


def _serve(args: argparse.Namespace, bundle: Path, status: str | None, warnings: list[str], client: Any) -> int:
    from lse_panel.cohort.bundle import read_manifest

    if status in (None, "in_progress"):
        if not args.build_if_missing:
            what = "is not a built bundle" if status is None else "is half-built"
            raise ValueError(f"{bundle} {what}. Build it with `lse build --out {bundle}`, or pass --build-if-missing.")
        print(f"{bundle} is {'missing' if status is None else 'half-built'}: building the cohort "
              f"({args.subjects:,} subjects) up to what the app needs first.")
        from lse_panel.build import build_cohort

        build_cohort(bundle, n_subjects=args.subjects, seed=args.seed, model=args.model, until="servable", progress=True,
                     dask=client)
        status = _build_status(bundle)
    privacy = privacy_mode(read_manifest(bundle), args.privacy)
    env, notes = serve_environment(args, bundle, privacy)
    if client is not None:
        env["LSE_DASK"] = client.scheduler.address  # every server process's backend joins this cluster
    # The remaining projections are computed while the app runs; it shows them when they land.
    finisher = _start_finisher(bundle) if status == "servable" and args.build_if_missing else None
    command = serve_command(args)
    print("serving:", shlex.join(command))
    for line in warnings + notes:
        print(line, file=sys.stderr)
    scheme = "https" if args.ssl_certfile else "http"
    origins = websocket_origins(args.address, args.port, args.allow_origin or ())
    print(f"privacy: {privacy} ({'individual-level views on' if privacy == 'full' else 'aggregates only'})")
    print(f"open {scheme}://{origins[0] if origins else f'{args.address}:{args.port}'}/explorer")
    # SIGTERM (e.g. `kill`, a container stop) unwinds like Ctrl-C, so no child is left running; after
    # `kill -9`, the children's parent-death signal stops them (spawn_tied).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    server = spawn_tied(command, env=env)
    try:
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        for child in (server, finisher):
            if child is not None and child.poll() is None:
                child.terminate()  # the build resumes where it stopped on the next `lse serve --build-if-missing`
