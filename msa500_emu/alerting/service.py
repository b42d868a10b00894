"""What the emulator process holds for alerts: the settings in force, the sinks, SET/SHOW ALERTS.

The Emulator hands each controller event to `notify` (synchronous, on the event loop): it reads
what the event's trap needs from the shelf at that moment (the unit's or RSO's state, the drive's
serial) and queues a Notice for the dispatcher. The settings come from the TOML's [alerts], or
from `<state_dir>/alerts.json` when SET ALERTS changed them (settings.py says why).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..alerts import Alert
from ..config import Settings
from .dispatch import Dispatcher, Sink
from .settings import ALERTS_FILE, HIDDEN, AlertSettings, AlertSettingsError, StateFile, apply_runtime
from .snmp import SnmpSink
from .syslog import SyslogSink
from .table import UNIT_STATES, From, Notice, route_of, rso_status
from .webhook import WebhookSink

log = logging.getLogger("msa500_emu.alerting")


class AlertService:
    def __init__(self, settings: Settings, shelf: Callable[[], Any], started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started
        self._shelf = shelf
        self.state = StateFile(settings.state_dir / ALERTS_FILE)
        self.config = settings.alerts or AlertSettings()
        self.current = self.config
        saved = self.state.load() if settings.state_dir.exists() else None
        if saved is not None:
            try:
                self.current = apply_runtime(self.config, saved, f"SET ALERTS ({self.state.path})")
            except AlertSettingsError as exc:
                self.state.error = f"{self.state.path}: {exc}; the config file's [alerts] is used"
        self.dispatcher = Dispatcher()
        self._unmapped: set[str] = set()
        self._sinks: dict[tuple[str, str], Sink] = {}
        self.dispatcher.replace(self._build(self.current))

    # -- sinks --------------------------------------------------------------------------
    def _serial(self) -> str:
        shelf = self._shelf()
        return str(getattr(getattr(shelf, "identity", None), "serial", "") or "")

    def _build(self, s: AlertSettings) -> list[Sink]:
        """The sinks of `s`; one already serving the same target with the same credentials goes on."""
        wanted: dict[tuple[str, str], Callable[[], Sink]] = {}
        cred = f"v3:{s.v3.user}:{s.v3.engine_id}" if s.v3 else f"v2c:{hash(s.community)}"
        for ep in s.snmp:
            wanted[("snmp", f"{ep}|{cred}")] = functools.partial(SnmpSink, ep, s.community, s.v3, self._serial(),
                                                                 self.started)
        for ep in s.syslog:
            wanted[("syslog", str(ep))] = functools.partial(SyslogSink, ep)
        for url in s.webhook:
            wanted[("webhook", url)] = functools.partial(WebhookSink, url)
        sinks = {key: self._sinks.get(key) or make() for key, make in wanted.items()}
        self._sinks = sinks
        return list(sinks.values())

    async def start(self) -> None:
        if self.state.error:
            log.warning("alerts: %s", self.state.error)
        elif self.current is not self.config:
            log.info("alerts: the settings SET ALERTS made (%s) are used instead of the config file's [alerts]",
                     self.state.path)
        await self.dispatcher.start()
        if self.dispatcher.sinks:
            log.info("alerts to %s", ", ".join(s.name for s, _ in self.dispatcher.sinks))

    async def stop(self) -> None:
        await self.dispatcher.close()

    # -- events -------------------------------------------------------------------------
    def notify(self, event: Any) -> None:
        """Queue one controller event for the sinks (never raises: an alert must not break the firmware)."""
        try:
            notice = self.notice(event)
        except Exception:  # a code the table does not know, or a shelf half built: log, never stop the event
            log.exception("alerts: event %s not sent", getattr(event, "code", "?"))
            return
        self.dispatcher.send(notice)

    def notice(self, event: Any) -> Notice:
        sev = getattr(event, "severity", "info")
        alert = Alert(str(event.code), str(getattr(sev, "value", sev)), str(event.message), "array",
                      float(getattr(event, "time", 0) or time.time()))
        route = route_of(str(event.code))
        if route.code.value != str(event.code) and str(event.code) not in self._unmapped:
            self._unmapped.add(str(event.code))
            log.warning("alerts: event code %s is not in the alert table: no trap (syslog, webhooks only)",
                        event.code)
        shelf = self._shelf()
        bay, lun = getattr(event, "bay", None), getattr(event, "lun", None)
        facts: dict[str, Any] = {}
        if shelf is not None:
            ident = getattr(shelf, "identity", None)
            facts["shelf_serial"] = str(getattr(ident, "serial", "") or "")
            facts["firmware"] = str(getattr(ident, "revision", "") or "")
            facts["cache_mb"] = int(getattr(getattr(shelf, "cache_cfg", None), "size_mb", 0) or 0)
            if bay is not None and route.trap is not None:
                drive = shelf.enclosure.drive(bay) if hasattr(shelf, "enclosure") else None
                facts["drive_serial"] = str(getattr(drive, "serial", "") or "")
            if route.source is From.UNIT and lun is not None:
                ld = getattr(shelf, "lds", {}).get(lun)
                state = getattr(getattr(ld, "state", None), "value", None)
                facts["status"] = UNIT_STATES.get(str(state)) if state is not None else None
            elif route.source is From.RSO:
                facts["status"] = rso_status(shelf.rso_status())
        return Notice(alert, getattr(event, "id", None), bay, lun, getattr(event, "array", None),
                      uptime_s=time.monotonic() - self.started, **facts)

    # -- SHOW ALERTS / SET ALERTS -----------------------------------------------------------
    def show(self) -> dict[str, Any]:
        """The settings and each sink's counts; the community and the SNMPv3 keys never appear."""
        s = self.current
        sinks = []
        for sink, counts in self.dispatcher.sinks:
            sinks.append({"sink": sink.kind, "target": sink.name.split(" ")[-1], "version": _version(sink),
                          "sent": counts.sent,
                          "failed": counts.failed, "dropped": counts.dropped, "last_error": counts.last_error or None})
        v3 = None
        if s.v3 is not None:
            engine = next((getattr(x, "engine_id", "") for x, _ in self.dispatcher.sinks if x.kind == "snmp"), "")
            v3 = {"user": s.v3.user, "auth": "SHA", "priv": "AES", "engine_id": engine or None}
        return {"snmp": [str(e) for e in s.snmp], "community": HIDDEN, "snmpv3": v3,
                "syslog": [str(e) for e in s.syslog], "webhook": list(s.webhook), "source": s.source,
                "state_file": str(self.state.path), "sinks": sinks}

    def set(self, snmp: str | None = None, community: str | None = None, syslog: str | None = None,
            webhook: str | None = None) -> dict[str, Any]:
        """Change the sinks now and keep the change in the state file (AlertSettingsError: one line)."""
        values = {"snmp": snmp, "community": community, "syslog": syslog, "webhook": webhook}
        if all(v is None for v in values.values()):
            raise AlertSettingsError("nothing to set: give SNMP=, COMMUNITY=, SYSLOG= or WEBHOOK=")
        new = apply_runtime(self.current, values, f"SET ALERTS ({self.state.path})")
        try:
            self.state.save(new.runtime())
        except OSError as exc:
            raise AlertSettingsError(f"cannot keep the settings in {self.state.path}: {exc.strerror or exc}") from None
        self.current = replace(new)
        self.dispatcher.replace(self._build(new))
        log.info("alerts set: %s", ", ".join(s.name for s, _ in self.dispatcher.sinks) or "no sinks")
        return self.show()


def _version(sink: Sink) -> str:
    if sink.kind != "snmp":
        return "-"
    return "v3 authPriv" if getattr(sink, "v3", None) else "v2c"
