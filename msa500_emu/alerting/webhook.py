"""Webhook sink: an HTTP POST of the notice's JSON (Notice.to_dict) to a URL, with a timeout.

A 2xx answer is delivered; anything else (another status, a refused connection, the timeout) is
a failure the dispatcher counts and reports. One aiohttp session per sink, closed on shutdown.
"""

from __future__ import annotations

import os

import aiohttp

from .table import Notice

TIMEOUT_S = 5.0


class WebhookSink:
    kind = "webhook"

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        self.url = url
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return f"webhook {self.url}"

    async def send(self, notice: Notice) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.url, data=notice.to_json(),
                                          headers={"Content-Type": "application/json"}) as resp:
                if not 200 <= resp.status < 300:
                    raise ConnectionError(f"HTTP {resp.status} {resp.reason or ''}".strip())
        except aiohttp.ClientConnectorError as exc:  # its text holds a Python tuple: say it in words
            err = exc.os_error
            why = os.strerror(err.errno) if err.errno else type(err).__name__
            raise ConnectionError(f"cannot connect to {exc.host}:{exc.port} ({why})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
