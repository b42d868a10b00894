"""The management HTTP JSON API (aiohttp), served by the emulator process.

Every answer is JSON. A request that fails answers `{"ok": false, "error": "<one line>"}`:
400 for bad input (a malformed body, a command the language or the array refuses), 404 / 405 /
413 for an unknown path, a wrong method, a body over 64 KiB, 401 / 403 without / with a wrong
token (auth.py), 403 for a foreign `Origin`, 415 for a POST that is not application/json, and
503 for a failure inside the emulator (a bug): its traceback goes to the server log, once, never
to the client. No request answers 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import metrics, panel, stream
from .auth import ApiAuth, make_gate
from .commands import Array, CommandError, run
from .grammar import redact

log = logging.getLogger("msa500_emu.api")

COMMAND = web.RequestKey("command", str)  # the command line a POST carries, for the error log
INTERNAL_STATUS = 503  # the emulator could not serve this request; it keeps serving the others
GET_PATHS = ("/api/health", "/api/globals", "/api/disks", "/api/units", "/api/spares", "/api/events",
             "/api/events/stream", "/metrics")


def error(status: int, message: str) -> web.Response:
    """The one-line error answer."""
    line = " ".join(str(message).split()) or "request failed"
    return web.json_response({"ok": False, "error": line}, status=status)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        return error(404, f"no API path {request.path} (GET {', '.join(GET_PATHS)}; POST /api/command)")
    if exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ())) or "-"
        return error(405, f"{request.method} {request.path}: method not allowed (use {allowed})")
    if exc.status == 413:
        return error(413, "request body too large (at most 64 KiB)")
    status = INTERNAL_STATUS if exc.status >= 500 else exc.status
    return error(status, f"{request.method} {request.path}: {exc.reason}")


@web.middleware
async def one_line_errors(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Turn whatever a handler raises into the one-line JSON error; log a bug once, with its traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception as exc:
        command = request.get(COMMAND)
        what = f"command {redact(command)!r}" if command is not None else f"{request.method} {request.path}"
        log.exception("internal error answering %s", what)
        return error(INTERNAL_STATUS, f"internal error in the emulator answering {what}: "
                                      f"{type(exc).__name__}: {exc} (a bug; the server log has the traceback)")


def make_app(array: Array, health: Any, auth: ApiAuth | None = None) -> web.Application:
    """The API; `auth` (the token) gates every path but GET /api/health (None: no token, as --no-api-auth)."""
    gate = make_gate(auth if auth is not None else ApiAuth.disabled())
    app = web.Application(client_max_size=64 * 1024, middlewares=[one_line_errors, gate])

    async def get_health(request: web.Request) -> web.Response:
        return web.json_response(health())

    async def get_globals(request: web.Request) -> web.Response:
        return web.json_response(array.describe())

    def view(name: str) -> Any:
        async def get_view(request: web.Request) -> web.Response:
            return web.json_response(getattr(array, name)())

        return get_view

    async def get_events(request: web.Request) -> web.Response:
        raw = request.query.get("since", "0")
        if not raw.isdigit():
            return error(400, f"since={raw!r}: an event id (0 or more)")
        return web.json_response(array.events(int(raw)))

    async def post_command(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, "request body is not JSON")
        line = body.get("command") if isinstance(body, dict) else None
        if not isinstance(line, str):
            return error(400, 'expected {"command": "..."}')
        request[COMMAND] = line
        try:
            reply = run(array, line)
        except CommandError as exc:
            log.info("command %r refused: %s", redact(line), exc)
            return error(400, str(exc))
        settle = getattr(array, "settle", None)
        if settle is not None:
            await settle()
        return web.json_response({"ok": True, "result": reply.result, "text": reply.text})

    app.router.add_get("/api/health", get_health)
    app.router.add_get("/api/globals", get_globals)
    for name in ("disks", "units", "spares"):
        app.router.add_get(f"/api/{name}", view(name))
    app.router.add_get("/api/events", get_events)
    app.router.add_post("/api/command", post_command)
    stream.add_routes(app, array)  # GET /api/events/stream (server-sent events)
    panel.add_routes(app, auth if auth is not None else ApiAuth.disabled())  # GET /: the front panel
    metrics.add_routes(app, array)  # GET /metrics (Prometheus text format)
    return app
