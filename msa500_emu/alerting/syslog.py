"""Syslog sink: RFC 5424 messages over UDP (RFC 5426), one datagram per alert.

`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`: facility local0, the severity of the
event (table.syslog_severity), MSGID the event code, structured data under the Compaq enterprise
number (232, the MIBs' tree) carrying the shelf, bay, LUN and event id, and the message as UTF-8.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket

from ..config import Endpoint
from .table import Notice, syslog_severity

FACILITY = 16  # local0
APP_NAME = "msa500-emu"
SD_ID = "msa500@232"
MAX_DATAGRAM = 2048
ICMP_WAIT_S = 0.05  # RFC 5426: receivers must take 480 bytes (IPv4), should take 2048


def _sd_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE."""
    out = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return out or "-"


def format_message(notice: Notice, hostname: str | None = None, procid: int | None = None) -> bytes:
    """One RFC 5424 message."""
    a = notice.alert
    pri = FACILITY * 8 + syslog_severity(notice)
    stamp = dt.datetime.fromtimestamp(a.time, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    params = {"shelf": notice.shelf_serial, "severity": a.severity, "event": notice.event_id, "bay": notice.bay,
              "lun": notice.lun, "array": notice.array}
    sd = " ".join(f'{k}="{_sd_value(v)}"' for k, v in params.items() if v not in (None, ""))
    header = (f"<{pri}>1 {stamp} {_token(hostname or socket.gethostname(), 255)} {APP_NAME} "
              f"{procid if procid is not None else os.getpid()} {_token(a.code, 32)}")
    data = f"[{SD_ID} {sd}]" if sd else "-"
    raw = f"{header} {data} ".encode() + b"\xef\xbb\xbf" + a.message.encode()
    return raw[:MAX_DATAGRAM]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:  # an ICMP port unreachable from an earlier datagram
        self.error = exc


class SyslogSink:
    """Sends each notice to one syslog receiver (UDP: a lost datagram is not known to be lost)."""

    kind = "syslog"

    def __init__(self, target: Endpoint) -> None:
        self.target = target
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None

    @property
    def name(self) -> str:
        return f"syslog udp:{self.target}"

    async def send(self, notice: Notice) -> None:
        if self._transport is None or self._transport.is_closing():
            loop = asyncio.get_running_loop()
            self._transport, self._protocol = await loop.create_datagram_endpoint(
                _Protocol, remote_addr=(self.target.host, self.target.port))
        assert self._protocol is not None
        self._transport.sendto(format_message(notice))
        await asyncio.sleep(ICMP_WAIT_S)  # a closed port answers at once on loopback: tell it for this message
        if self._protocol.error is not None:  # the port is closed: say so (this one is likely lost too)
            exc, self._protocol.error = self._protocol.error, None
            raise ConnectionError(f"the receiver refused a message ({getattr(exc, 'strerror', '') or exc})")

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
