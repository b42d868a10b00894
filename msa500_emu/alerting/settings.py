"""Alert settings: the TOML's [alerts] table, SET ALERTS values, and their file in the state directory.

Addresses are the user's choice (any host); each mistake is one line naming the key. What SET
ALERTS changes at run time (managers, community, syslog receivers, webhooks) is kept in
`<state_dir>/alerts.json` (mode 0600: it holds the community) and wins over [alerts] at the next
start; the SNMPv3 user is read from the TOML only, so its keys are never typed into a command.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import ConfigError, Endpoint, parse_endpoint
from .snmp import V3User

ALERTS_FILE = "alerts.json"
DEFAULT_COMMUNITY = "public"
MAX_TARGETS = 8  # per kind
MIN_KEY = 8  # SNMPv3 pass phrases: at least 8 characters (RFC 3414 11.2)
HIDDEN = "(hidden)"


class AlertSettingsError(ValueError):
    """A bad value: the message is the one line the user sees."""


@dataclass(frozen=True)
class AlertSettings:
    snmp: tuple[Endpoint, ...] = ()
    community: str = DEFAULT_COMMUNITY
    v3: V3User | None = None
    syslog: tuple[Endpoint, ...] = ()
    webhook: tuple[str, ...] = ()
    source: str = "defaults"  # where they came from: defaults, the config file, SET ALERTS

    def runtime(self) -> dict[str, Any]:
        """What SET ALERTS sets, as the state file keeps it."""
        return {"snmp": [str(e) for e in self.snmp], "community": self.community,
                "syslog": [str(e) for e in self.syslog], "webhook": list(self.webhook)}


def addresses(value: Any, what: str) -> tuple[Endpoint, ...]:
    """HOST:PORT entries: a list (TOML) or one comma-separated text (SET ALERTS); "" is none."""
    items = _items(value, what)
    out = []
    for item in items:
        try:
            ep = parse_endpoint(item, what)
        except ConfigError as exc:  # already one line naming `what`
            raise AlertSettingsError(str(exc)) from None
        if ep.port == 0:
            raise AlertSettingsError(f"{what}: {item!r}: port 0 is not a receiver's port")
        out.append(ep)
    return tuple(out)


def urls(value: Any, what: str) -> tuple[str, ...]:
    out = []
    for item in _items(value, what):
        try:
            parts = urllib.parse.urlsplit(item)
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError as exc:
            raise AlertSettingsError(f"{what}: {item!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AlertSettingsError(f"{what}: {item!r} is not an http:// or https:// URL")
        out.append(item)
    return tuple(out)


def _items(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()] if value.strip() else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value]
    else:
        raise AlertSettingsError(f"{what}: expected a list of strings, got {value!r}")
    if len(items) > MAX_TARGETS:
        raise AlertSettingsError(f"{what}: at most {MAX_TARGETS} entries")
    if any(not s or any(c.isspace() or not c.isprintable() for c in s) for s in items):
        raise AlertSettingsError(f"{what}: entries must be non-empty, without spaces")
    return items


def community(value: Any, what: str = "alerts.community") -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[!-~]{1,64}", value):
        raise AlertSettingsError(f"{what}: 1-64 printable characters without spaces")
    return value


def from_table(table: Any) -> AlertSettings:
    """[alerts] of the shelf TOML."""
    if not isinstance(table, dict):
        raise AlertSettingsError(f"alerts: expected a table, got {table!r}")
    known = {"snmp", "community", "snmpv3", "syslog", "webhook"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise AlertSettingsError(f"alerts: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    s = AlertSettings(source="config file")
    if "snmp" in table:
        s = replace(s, snmp=addresses(table["snmp"], "alerts.snmp"))
    if "community" in table:
        s = replace(s, community=community(table["community"]))
    if "syslog" in table:
        s = replace(s, syslog=addresses(table["syslog"], "alerts.syslog"))
    if "webhook" in table:
        s = replace(s, webhook=urls(table["webhook"], "alerts.webhook"))
    if "snmpv3" in table:
        s = replace(s, v3=_v3(table["snmpv3"]))
    return s


def _v3(table: Any) -> V3User:
    where = "alerts.snmpv3"
    if not isinstance(table, dict):
        raise AlertSettingsError(f"{where}: expected a table with user, auth_key and priv_key")
    known = {"user", "auth_key", "priv_key", "engine_id"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise AlertSettingsError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    for key in ("user", "auth_key", "priv_key"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise AlertSettingsError(f"{where}.{key}: missing (a non-empty string)")
    if not re.fullmatch(r"[!-~]{1,32}", table["user"]):
        raise AlertSettingsError(f"{where}.user: 1-32 printable characters without spaces")
    for key in ("auth_key", "priv_key"):  # never echo the value
        if not MIN_KEY <= len(table[key]) <= 255 or not table[key].isprintable():
            raise AlertSettingsError(f"{where}.{key}: {MIN_KEY}-255 printable characters")
    engine = table.get("engine_id", "")
    if not isinstance(engine, str):
        raise AlertSettingsError(f"{where}.engine_id: a hex string such as 0x800000e804...")
    engine = engine.lower().removeprefix("0x")
    if engine and not re.fullmatch(r"(?:[0-9a-f]{2}){5,32}", engine):
        raise AlertSettingsError(f"{where}.engine_id: 5-32 bytes in hex (0x800000e804...)")
    return V3User(table["user"], table["auth_key"], table["priv_key"], engine)


def apply_runtime(base: AlertSettings, values: dict[str, Any], source: str) -> AlertSettings:
    """`base` with what SET ALERTS (or the state file) gives: keys snmp, community, syslog, webhook."""
    s = base
    if values.get("snmp") is not None:
        s = replace(s, snmp=addresses(values["snmp"], "SNMP"))
    if values.get("community") is not None:
        s = replace(s, community=community(values["community"], "COMMUNITY"))
    if values.get("syslog") is not None:
        s = replace(s, syslog=addresses(values["syslog"], "SYSLOG"))
    if values.get("webhook") is not None:
        s = replace(s, webhook=urls(values["webhook"], "WEBHOOK"))
    return replace(s, source=source)


@dataclass
class StateFile:
    """<state_dir>/alerts.json: what SET ALERTS set, written atomically, 0600."""

    path: Path
    error: str = field(default="")

    def load(self) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.error = f"{self.path}: unreadable ({exc}); the config file's [alerts] is used"
            return None
        return raw if isinstance(raw, dict) else None

    def save(self, values: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(values, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)
