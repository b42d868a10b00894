"""The management HTTP JSON API (aiohttp), served by the emulator process."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from .commands import Array, CommandError, run

log = logging.getLogger("msa500_emu.api")


def make_app(array: Array, health: Any) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)

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
            return web.json_response({"ok": False, "error": f"since={raw!r}: an event id (0 or more)"}, status=400)
        return web.json_response(array.events(int(raw)))

    async def post_command(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"ok": False, "error": "request body is not JSON"}, status=400)
        line = body.get("command") if isinstance(body, dict) else None
        if not isinstance(line, str):
            return web.json_response({"ok": False, "error": 'expected {"command": "..."}'}, status=400)
        try:
            reply = run(array, line)
        except CommandError as exc:
            log.info("command %r refused: %s", line, exc)
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
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
    return app
