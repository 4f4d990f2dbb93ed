"""Argument checks for the ``lse`` command: each refuses a bad value in one line naming the range and the fix."""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import math
import os
import re
import socket
import stat
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

__all__ = [
    "MIN_COOKIE_SECRET",
    "HostAddress",
    "LineParser",
    "MriShapeAction",
    "allowed_origin",
    "cookie_secret",
    "dask_cluster",
    "existing_directory",
    "existing_file",
    "export_file",
    "fraction",
    "host_address",
    "integer",
    "oauth_encryption_key",
    "output_directory",
    "output_file",
    "password_file",
    "port",
    "redirect_uri",
]

MIN_COOKIE_SECRET = 32
"""Shortest cookie secret accepted, in characters: ``secrets.token_urlsafe(32)`` gives 43."""

SECRET_HINT = "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"

# RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, 63 characters each.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class LineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit status 2 as usual."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse quotes the user's words raw; control characters and line breaks would split the line.
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')} (see `{self.prog} --help`)\n")


def _error(value: str, problem: str, fix: str) -> argparse.ArgumentTypeError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return argparse.ArgumentTypeError(f"{shown!r} {problem}; {fix}.")


def integer(lo: int, hi: int, *, example: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` accepting whole numbers in ``[lo, hi]``.

    Parameters
    ----------
    lo, hi
        Inclusive bounds.
    example
        A value to suggest in the error (default: ``lo``).

    Returns
    -------
    callable
        ``str -> int``, raising ``argparse.ArgumentTypeError`` naming the range.
    """
    suggestion = lo if example is None else example

    def parse(text: str) -> int:
        fix = f"pass a whole number between {lo:,} and {hi:,} (e.g. {suggestion})"
        try:
            value = int(text.replace("_", ""), 10) if text.strip() else None
        except ValueError:
            value = None
        if value is None:
            raise _error(text, "is not a whole number", fix)
        if not lo <= value <= hi:
            raise _error(text, "is out of range", fix)
        return value

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a false discovery rate, a share)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails too
        raise _error(text, "is not a number strictly between 0 and 1", "pass one such as 0.05")
    return value


class MriShapeAction(argparse.Action):
    """``--mri-shape FRAMES HEIGHT WIDTH``: frames 1–100, height and width 8–256 pixels.

    The bounds keep one subject's cine (100 × 256 × 256 float32 = 26 MB) within what a batch of
    the embedding step can hold; the demo's is 16 × 48 × 48.
    """

    LIMITS = (("FRAMES", 1, 100), ("HEIGHT", 8, 256), ("WIDTH", 8, 256))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        shape = []
        for text, (name, lo, hi) in zip(values, self.LIMITS):
            try:
                shape.append(integer(lo, hi)(text))
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentError(self, f"{name} {exc}") from None
        setattr(namespace, self.dest, shape)


def port(text: str) -> int:
    """A TCP port to listen on, 1–65535."""
    return integer(1, 65_535, example=5006)(text)


class HostAddress(str):
    """A validated ``--address``: the text as given, plus what kind of address it is."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None

    @property
    def is_loopback(self) -> bool:
        """Reachable from this machine only (127.0.0.0/8, ::1, ``localhost``)."""
        return self.lower() == "localhost" or (self.ip is not None and self.ip.is_loopback)

    @property
    def is_all_interfaces(self) -> bool:
        """``0.0.0.0`` or ``::``: every network interface of this machine."""
        return self.ip is not None and self.ip.is_unspecified


def _is_host_name(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def host_address(text: str) -> HostAddress:
    """An address to bind: an IP literal, or a host name this machine resolves.

    ``0.0.0.0`` and ``::`` mean every interface. Anything else must resolve now, so a typo ends
    here in one line rather than in the server's ``ERROR: -2``.
    """
    fix = "pass an IP address (127.0.0.1 for this machine only, 0.0.0.0 for every interface) or a resolvable host name"
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = None
    if ip is None:
        if not _is_host_name(text):
            raise _error(text, "is not an IP address or a valid host name", fix)
        try:
            socket.getaddrinfo(text, None)
        except (socket.gaierror, UnicodeError) as exc:
            raise _error(text, f"does not resolve on this machine ({exc.strerror or exc})", fix) from None
    address = HostAddress(text if ip is None else str(ip))
    address.ip = ip
    return address


def allowed_origin(text: str) -> str:
    """``--allow-origin HOST[:PORT]``: a browser origin the websocket accepts, as Bokeh writes it.

    Bokeh compares the browser's ``Origin`` host and port with this; an origin without a port
    (https on 443, http on 80) is compared as ``HOST:80``, so give the host alone for a proxy on a
    default port. IPv6 literals and wildcards are refused: Bokeh cannot match the first, and the
    second would admit any site's page.
    """
    fix = "pass a host name or IPv4 address, optionally with :PORT (e.g. lse.example.org or lse.example.org:8443)"
    host, sep, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if "*" in text:
        raise _error(text, "is a wildcard, which would accept any site's page", fix)
    if host.count(":") or host.startswith("["):
        raise _error(text, "is an IPv6 literal, which Bokeh's origin check cannot match", "use a host name")
    try:
        ipaddress.IPv4Address(host)
        is_ip = True
    except ValueError:
        is_ip = False
    if not (is_ip or _is_host_name(host)):
        raise _error(text, "is not a host name or IPv4 address", fix)
    if sep:
        try:
            port(port_text)
        except argparse.ArgumentTypeError:
            raise _error(text, f"has port {port_text!r}, not one from 1 to 65535", fix) from None
    return text.lower()


def _path_kind(text: str) -> str | None:
    """``"directory"``, ``"file"``, ``"other"`` or ``None`` (nothing there); a path the system refuses is an error."""
    if not text.strip():
        raise _error(text, "is empty", "pass a path")
    try:
        mode = os.stat(text).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # too long, a NUL character, no permission
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _error(text, f"is not a usable path ({reason})", "pass a shorter path you may read") from None
    return "directory" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _existing(text: str, *, want: str) -> Path:
    kind = _path_kind(text)
    if kind != want:
        raise _error(text, "does not exist" if kind is None else f"is a {kind}, not a {want}", f"pass an existing {want}")
    return Path(text)


def existing_directory(text: str) -> Path:
    """A directory that exists."""
    return _existing(text, want="directory")


def existing_file(text: str) -> Path:
    """A regular file that exists."""
    return _existing(text, want="file")


def output_directory(text: str) -> Path:
    """A directory to write: it may exist; neither it nor a parent may be a file."""
    path = Path(text)
    for candidate in (path, *path.parents):
        kind = _path_kind(str(candidate))
        if kind is not None:
            if kind != "directory":
                raise _error(text, f"cannot be a directory: {str(candidate)[:80]!r} is a {kind}", "pick another path")
            break
    return path


def dask_cluster(text: str) -> str:
    """``--dask local|ADDRESS``: ``local``, or a scheduler address (``tcp://host:8786``, ``tls://...``, ``host:port``).

    Only the form is checked here; whether a scheduler answers is checked on connecting.
    """
    if text == "local":
        return text
    fix = "pass 'local' to start a cluster on this machine, or a scheduler address such as tcp://host:8786"
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        raise _error(text, f"has scheme {scheme[:20]!r}, which Dask does not speak", fix)
    host, _, port_text = rest.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _error(text, "is not HOST:PORT", fix)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_host_name(host):
            raise _error(text, f"has host {host[:40]!r}, not an IP address or host name", fix) from None
    return text if sep else f"tcp://{text}"


def redirect_uri(text: str) -> str:
    """An OAuth redirect URI: an absolute ``http(s)://host/...`` URL."""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise _error(text, "is not an absolute http(s) URL", "pass the app's public login URL, e.g. https://lse.example.org/login")
    return text


def output_file(*suffixes: str) -> Callable[[str], Path]:
    """An argparse ``type=`` for a file to write: one of ``suffixes``, in an existing directory."""
    names = " or ".join(suffixes)

    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise _error(text, f"has suffix {path.suffix[:20] or '(none)'!r}", f"name a {names} file")
        if _path_kind(str(path.parent)) != "directory":
            raise _error(text, f"is in {str(path.parent)[:80]!r}, which is not a directory", "create the directory first")
        if _path_kind(text) not in (None, "file"):
            raise _error(text, "is not a file", "name a file to write")
        return path

    parse.__name__ = "output_file"
    return parse


export_file = output_file(".csv", ".parquet")
"""A table to write: ``.csv`` or ``.parquet``, in an existing directory."""


def password_file(text: str) -> Path:
    """``--basic-auth FILE``: a JSON object of user name → password, readable by its owner only.

    Panel's basic auth reads this file at each login. Other users of the machine must not read
    it, so group- or world-readable files are refused (as ssh does with keys).
    """
    path = Path(text)
    fix = 'write a JSON object such as {"alice": "a long password"} and `chmod 600` it'
    _path_kind(text)  # refuses unusable paths in one line
    try:
        mode = path.stat().st_mode
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(text, "does not exist", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(text, f"cannot be read ({exc.__class__.__name__}: {exc})", fix) from None
    if not stat.S_ISREG(mode):
        raise _error(text, "is not a regular file", fix)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _error(text, f"is readable by other users (mode {stat.S_IMODE(mode):o})", f"run `chmod 600 {text}`")
    try:
        users = json.loads(content)
    except json.JSONDecodeError as exc:
        raise _error(text, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", fix) from None
    if not isinstance(users, dict) or not users:
        raise _error(text, "does not hold a non-empty JSON object of user name to password", fix)
    for user, password in users.items():
        if not user.strip() or not isinstance(password, str) or len(password) < 8:
            raise _error(text, f"has user {user[:40]!r} without a password of at least 8 characters", fix)
    return path


def cookie_secret(text: str) -> str:
    """A secret that signs login cookies: at least 32 printable ASCII characters."""
    if len(text) < MIN_COOKIE_SECRET or not text.isascii() or not text.isprintable() or " " in text:
        raise argparse.ArgumentTypeError(
            f"a cookie secret of {len(text)} characters is too weak: use at least {MIN_COOKIE_SECRET} printable "
            f"ASCII characters without spaces; {SECRET_HINT}."
        )
    return text


def oauth_encryption_key(text: str) -> str:
    """``--oauth-encryption-key``: 32 bytes, url-safe base64 (``panel oauth-secret`` makes one)."""
    try:
        key = base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError(
            "the OAuth encryption key must be 32 bytes in url-safe base64; make one with `panel oauth-secret`."
        )
    return text
