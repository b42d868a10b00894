"""Alerts: one record shape and pluggable sinks (stream, file, command, the array's own log).

The host agents raise theirs here (codes: the controller's HOST_* events) and the emulator feeds
every controller event through the same fan-out (`Emulator.alerts`). An alert has a stable code,
a severity, a source and a one-line message. Sinks receive every alert; a failing sink is
reported once and never stops its process. Standard library only (it runs inside the lab guest).
The array's own SNMP traps, syslog and webhooks are one more sink of the emulator's fan-out:
msa500_emu.alerting (its table maps each event code to each form; its sends never block the loop).
`CommandSink` runs a command per alert (e.g. `snmptrap` on a host agent; it blocks: agents only).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Protocol

log = logging.getLogger("msa500_emu.alerts")

INFO = "info"
WARNING = "warning"
CRITICAL = "critical"


@dataclass(frozen=True)
class Alert:
    code: str
    severity: str
    message: str
    source: str
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class AlertSink(Protocol):
    def send(self, alert: Alert) -> None: ...


class StreamSink:
    """One JSON object per line (stderr by default)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def send(self, alert: Alert) -> None:
        out = self.stream or sys.stderr
        out.write(alert.to_json() + "\n")
        out.flush()


class FileSink:
    """Appends JSON lines to a file (flushed and fsynced: an alarm must survive the host crashing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, alert: Alert) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(alert.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())


class CommandSink:
    """Runs a command per alert with MSA500_ALERT_{CODE,SEVERITY,MESSAGE,SOURCE,JSON} set
    (a site's pager hook, or `snmptrap` until a native trap sink exists)."""

    def __init__(self, argv: list[str], timeout: float = 10.0) -> None:
        self.argv = argv
        self.timeout = timeout

    def send(self, alert: Alert) -> None:
        env = {**os.environ, "MSA500_ALERT_CODE": alert.code, "MSA500_ALERT_SEVERITY": alert.severity,
               "MSA500_ALERT_MESSAGE": alert.message, "MSA500_ALERT_SOURCE": alert.source,
               "MSA500_ALERT_JSON": alert.to_json()}
        subprocess.run(self.argv, env=env, timeout=self.timeout, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


class Alerts:
    """Fan-out to every sink; remembers what was sent (tests and status read `sent`)."""

    def __init__(self, source: str, sinks: list[AlertSink] | None = None, *, echo: bool = True,
                 keep: int = 1000) -> None:
        self.source = source
        self.sinks: list[AlertSink] = list(sinks or [])
        self.echo = echo  # also log each alert (the agents); the array logs through its own sink
        self.sent: deque[Alert] = deque(maxlen=keep)
        self._broken: set[int] = set()

    def raise_(self, code: str, severity: str, message: str) -> Alert:
        alert = Alert(code, severity, message, self.source)
        self.sent.append(alert)
        if self.echo:
            level = {INFO: logging.INFO, WARNING: logging.WARNING}.get(severity, logging.ERROR)
            log.log(level, "%s: %s", code, message)
        for i, sink in enumerate(self.sinks):
            try:
                sink.send(alert)
            except Exception as exc:  # a broken sink must not stop the agent
                if i not in self._broken:
                    self._broken.add(i)
                    log.error("alert sink %s failed (reported once): %s", type(sink).__name__, exc)
            else:
                self._broken.discard(i)
        return alert


def default_source(role: str) -> str:
    return f"{role}@{socket.gethostname()}"
