"""The management API's bearer token: where it lives, how `ctl` finds it, and the gate in front of the API.

The token is made once (32 CSPRNG bytes, URL-safe) into `api.token` in the state directory (or
`--api-token-file` / `[api] token_file`), mode 0600, and reused on later starts. The running server
also records it, mode 0600, in the user's own state directory, keyed by the API's host and port
(`$XDG_STATE_HOME/msa500-emu/tokens/<host>_<port>`), so `msa500-emu ctl` run by the same user needs
no flag. Every request but `GET /api/health` carries `Authorization: Bearer <token>`, or the front
panel's cookie (HttpOnly, SameSite=Strict; set by `GET /?token=...`, panel.py).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("msa500_emu.api")

TOKEN_FILE = "api.token"
TOKEN_ENV = "MSA500_API_TOKEN"
OPEN_PATHS = frozenset({"/api/health"})
PAGE_PATHS = frozenset({"/", "/favicon.ico"})  # the front panel asks for the token itself (panel.py)
STATIC_PREFIX = "/static/"  # the panel's script and style sheet: open, they hold nothing of the array's
COOKIE_PREFIX = "msa500_token_"  # + the API's port: cookies are per host, not per port
LOG_EVERY_S = 60.0  # a refused client address is logged at most once a minute
_MAX_REMEMBERED = 1024
WILDCARDS = {"0.0.0.0": ("127.0.0.1", "localhost"), "::": ("::1", "127.0.0.1", "localhost"),
             "": ("127.0.0.1", "localhost"), "127.0.0.1": ("localhost",), "localhost": ("127.0.0.1",)}


class TokenError(Exception):
    """No usable token: the message is the one line the user sees."""


def user_tokens_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "msa500-emu" / "tokens"


def record_name(host: str, port: int) -> str:
    """`<host>_<port>`, the host lower-cased, without brackets, anything odd as '-'."""
    h = host.strip("[]").lower() or "127.0.0.1"
    return re.sub(r"[^a-z0-9.-]", "-", h) + f"_{port}"


def _write_private(path: Path, text: str) -> None:
    """Write text to path with mode 0600 from its first byte (atomic: a temp file renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise TokenError(f"API token file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"API token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not token or any(c.isspace() for c in token):
        raise TokenError(f"API token file {path} holds no token (one line of URL-safe characters)")
    return token


def load_or_create(path: Path) -> str:
    """The token in path; on first start, a new random one written there with mode 0600."""
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_private(path, secrets.token_urlsafe(32) + "\n")
        except OSError as exc:
            raise TokenError(f"cannot write the API token file {path}: {exc.strerror or exc}") from None
        log.info("API token created in %s (mode 0600)", path)
    else:
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0
        if mode & 0o077:
            log.warning("API token file %s is readable by others (mode %o): chmod 600 it", path, mode)
    return read_token(path)


class ApiAuth:
    """The token, its file, the records ctl reads, and the once-per-address log of refusals."""

    def __init__(self, token: str | None, path: Path | None) -> None:
        self.token = token  # None: auth off (--no-api-auth)
        self.path = path
        self.records: list[Path] = []
        self._logged: dict[str, float] = {}

    @classmethod
    def disabled(cls) -> ApiAuth:
        return cls(None, None)

    @classmethod
    def from_file(cls, path: Path) -> ApiAuth:
        return cls(load_or_create(path), path)

    def record(self, host: str, port: int) -> None:
        """Leave the token where `ctl --api http://host:port` looks (also loopback names for a wildcard)."""
        if self.token is None:
            return
        hosts = [host.strip("[]"), *WILDCARDS.get(host.strip("[]"), ())]
        d = user_tokens_dir()
        try:
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            for h in dict.fromkeys(hosts):
                p = d / record_name(h, port)
                _write_private(p, self.token + "\n")
                self.records.append(p)
        except OSError as exc:  # ctl can still be told with --token-file or MSA500_API_TOKEN
            log.warning("could not record the API token for ctl in %s: %s", d, exc.strerror or exc)

    def forget(self) -> None:
        """Remove the records this server left (when they still hold its token)."""
        for p in self.records:
            try:
                if p.read_text().strip() == self.token:
                    p.unlink()
            except OSError:
                pass
        self.records.clear()

    def _refuse(self, request: web.Request, status: int, message: str) -> web.Response:
        from .api import error

        addr = request.remote or "?"
        now = time.monotonic()
        if now - self._logged.get(addr, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(self._logged) >= _MAX_REMEMBERED:
                self._logged.clear()
            self._logged[addr] = now
            log.warning("API request from %s refused (%d): %s", addr, status, message)
        resp = error(status, message)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="msa500-emu"'
        return resp

    def matches(self, given: str) -> bool:
        """Whether `given` is the token (constant time); always True with auth off."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.strip().encode(errors="replace"), self.token.encode())

    def check(self, request: web.Request) -> web.Response | None:
        """None when the request may pass; else the 401 / 403 answer (Bearer header, else the page's cookie)."""
        if self.token is None or request.path in OPEN_PATHS:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        cookie = request.cookies.get(cookie_name(request))
        if not header and cookie is not None:
            return None if self.matches(cookie) else self._refuse(request, 403, "wrong API token (in the cookie)")
        if not header:
            return self._refuse(request, 401, "API token required: send 'Authorization: Bearer <token>' "
                                              "(msa500-emu ctl finds it; see the serve banner)")
        if scheme.lower() != "bearer" or not given.strip():
            return self._refuse(request, 401, "Authorization header is not 'Bearer <token>'")
        if not self.matches(given):
            return self._refuse(request, 403, "wrong API token")
        return None


def cookie_name(request: web.Request) -> str:
    """The front panel's token cookie for this API (its port in the name: two arrays on one host)."""
    return f"{COOKIE_PREFIX}{request.url.port or 80}"


def _own_origins(request: web.Request) -> set[str]:
    return {f"{request.scheme}://{request.host}".lower()}


def make_gate(auth: ApiAuth) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: same-origin only, the token, and JSON bodies for POST (no cross-site form posts)."""
    from .api import error

    @web.middleware
    async def gate(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and (request.path in OPEN_PATHS or request.path in PAGE_PATHS
                                                  or request.path.startswith(STATIC_PREFIX)):
            return await handler(request)  # the page itself shows the token form (panel.py)
        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/").lower() not in _own_origins(request):
            return error(403, f"cross-origin request from {origin!r} refused")
        refused = auth.check(request)
        if refused is not None:
            return refused
        routed = request.match_info.http_exception is None
        if request.method == "POST" and routed and request.content_type != "application/json":
            return error(415, f"POST needs 'Content-Type: application/json' (got {request.content_type!r})")
        return await handler(request)

    return gate


# ------------------------------------------------------------------ the client side (ctl, scripts)
def find_token(api: str, token_file: str | os.PathLike[str] | None = None) -> str:
    """The token for the API at URL `api`: --token-file, else $MSA500_API_TOKEN, else the server's record."""
    if token_file is not None:
        return read_token(Path(token_file).expanduser())
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return env
    parts = urlsplit(api if "://" in api else f"http://{api}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TokenError(f"{api!r} is not an API URL") from None
    path = user_tokens_dir() / record_name(parts.hostname or "127.0.0.1", port)
    if not path.exists():
        raise TokenError(f"no API token for {parts.netloc}: no {path} (is the array running as this user?); "
                         f"give --token-file FILE (the api.token in its state directory) or set {TOKEN_ENV}")
    return read_token(path)
