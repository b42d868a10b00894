"""GET /: the front panel, a live picture of the shelf in the browser (files in static/).

The page takes the API token once, as Jupyter does: `/?token=...` (the URL `serve` prints) sets
a cookie (HttpOnly, SameSite=Strict, Path=/) and redirects to `/`, so the token leaves the
address bar; without one the page shows a small form that does the same. From then on the
page's own requests (the views, the event stream, POST /api/command) carry the cookie, which
the API's gate (auth.py) takes as it takes the Bearer header. The script and the style sheet
are open: they hold nothing of the array's.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from aiohttp import web

from .auth import STATIC_PREFIX, ApiAuth, cookie_name

STATIC_DIR = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)$")
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY"}

_FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MSA500 front panel: token</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/panel.css"></head>
<body class="login"><form method="get" action="/" class="token-form">
<h1>MSA500 front panel</h1>
<p>{message}</p>
<label>API token <input type="password" name="token" autocomplete="off" autofocus required></label>
<button type="submit">Open</button>
<p class="hint">The token is in <code>api.token</code> in the state directory; <code>msa500-emu serve</code>
prints the panel's address with it.</p>
</form></body></html>
"""


def form_page(message: str, status: int) -> web.Response:
    """The token form, with one line saying why it is shown."""
    return web.Response(text=_FORM.format(message=html.escape(message)), status=status,
                        content_type="text/html", headers=NO_STORE)


def load_static() -> dict[str, tuple[bytes, str]]:
    """The page's files (a few KiB), read once: name -> (bytes, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    if STATIC_DIR.is_dir():
        for p in sorted(STATIC_DIR.iterdir()):
            if _NAME.match(p.name):
                files[p.name] = (p.read_bytes(), TYPES[p.suffix])
    return files


def add_routes(app: web.Application, auth: ApiAuth) -> None:
    """GET / (the page or the token form), GET /static/NAME (its files), GET /favicon.ico (none)."""
    files = load_static()

    def page() -> web.Response:
        body, ctype = files.get("index.html", (b"<!doctype html><p>the panel's files are not installed", "text/html"))
        return web.Response(body=body, content_type=ctype, charset="utf-8", headers=NO_STORE)

    async def get_page(request: web.Request) -> web.Response:
        if auth.token is None:
            return page()
        given = request.query.get("token")
        if given is not None:
            if not auth.matches(given):
                return form_page("That token is not this array's API token.", 403)
            resp = web.Response(status=302, headers={"Location": "/", **NO_STORE})
            resp.set_cookie(cookie_name(request), auth.token, httponly=True, samesite="Strict", path="/")
            return resp
        header = request.headers.get("Authorization", "")
        scheme, _, bearer = header.partition(" ")
        if scheme.lower() == "bearer" and bearer.strip() and auth.matches(bearer):
            return page()
        cookie = request.cookies.get(cookie_name(request))
        if cookie is None:
            return form_page("Enter the API token once; the browser keeps it for this array.", 200)
        if not auth.matches(cookie):
            return form_page("The saved token is not this array's (was its token file replaced?).", 403)
        return page()

    async def get_static(request: web.Request) -> web.Response:
        hit = files.get(request.match_info["name"])
        if hit is None:
            raise web.HTTPNotFound()
        body, ctype = hit
        return web.Response(body=body, content_type=ctype, charset="utf-8",
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def get_favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_get("/", get_page)
    app.router.add_get(STATIC_PREFIX + "{name}", get_static)
    app.router.add_get("/favicon.ico", get_favicon)
