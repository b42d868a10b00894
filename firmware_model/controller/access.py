"""Who may log in where, and who sees which unit: host connections and Selective Storage Presentation.

As on the MSA CLI: a *connection* names a host by its initiator IQN, on one port or on both.
A port with ACCESS=CONNECTIONS lets only the initiators of its connections log in (the iSCSI
side asks `may_login`); a port with ACCESS=ALL lets anyone in. A unit with ACL entries is seen
only by those connections (REPORT LUNS leaves it out and every command to it answers as for an
absent LUN); a unit without any is seen by every host. LUN 0 always answers. All of it is kept
in the controller's NVRAM; each change is logged and, for the ACL, establishes REPORTED LUNS DATA
HAS CHANGED for the nexuses whose view changed (ScsiTarget.set_visibility).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from ..events import EventCode
from ..operations import CONNECTION_NAME_MAX, IQN_MAX, LUNS, MAX_CONNECTIONS, PORT_ACCESS, PORT_COUNT, PORTS
from ..scsi.types import Nexus
from .errors import ControllerError, ShelfError

if TYPE_CHECKING:
    from .core import Controller
    from .spec import ConnectionSpec

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_IQN = re.compile(r"iqn\.\d{4}-\d{2}(\.[^\s,]+)?(:[^\s,]+)?"  # RFC 3720 3.2.6.3
                  r"|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?", re.IGNORECASE)


class ConnectionView(TypedDict):
    name: str
    iqn: str
    port: int | None  # None: either port
    units: list[int]  # the units whose ACL names it


class AclView(TypedDict):
    unit: int
    connections: list[str]


class PortAccessView(TypedDict):
    port: int
    access: str  # "all" | "connections"


@dataclass
class HostConnection:
    name: str
    iqn: str  # lower case: iSCSI names compare case-insensitively
    port: int | None

    def matches(self, iqn: str, port: int) -> bool:
        return self.iqn == iqn and (self.port is None or self.port == port)


def initiator_iqn(nexus: Nexus) -> str:
    """The initiator's name from its initiator port name ("iqn...,i,0x<ISID>")."""
    return nexus.initiator.rsplit(",i,", 1)[0].lower()


class Access:
    """The connections, each port's access mode and the units' ACLs."""

    def __init__(self, c: Controller) -> None:
        self.c = c
        self.conns: dict[str, HostConnection] = {}  # by lower-case name
        self.port_access: dict[int, str] = {p: "all" for p in range(1, PORT_COUNT + 1)}
        self.acl: dict[int, list[str]] = {}  # unit -> connection keys (lower-case names)

    # ------------------------------------------------------------ NVRAM
    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": [{"name": h.name, "iqn": h.iqn, "port": h.port} for h in self.conns.values()],
            "port_access": {str(p): a for p, a in self.port_access.items()},
            "acl": {str(lun): [self.conns[k].name for k in keys] for lun, keys in sorted(self.acl.items())},
        }

    def load(self, data: Any) -> None:
        if data is None:
            return
        try:
            for h in data.get("connections", []):
                port = h.get("port")
                if not _NAME.fullmatch(h["name"]) or not isinstance(h["iqn"], str) or port not in (None, 1, 2):
                    raise ValueError(h)
                self.conns[h["name"].lower()] = HostConnection(h["name"], h["iqn"].lower(), port)
            for p, a in data.get("port_access", {}).items():
                if int(p) not in self.port_access or a not in PORT_ACCESS:
                    raise ValueError(p)
                self.port_access[int(p)] = a
            for lun, names in data.get("acl", {}).items():
                keys = [n.lower() for n in names]
                if int(lun) not in LUNS or len(set(keys)) != len(keys) or any(k not in self.conns for k in keys):
                    raise ValueError(lun)
                if keys:
                    self.acl[int(lun)] = keys
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ShelfError(f"controller NVRAM: access settings unusable ({exc!r})") from None

    def apply(self, changed_lun: int = 0) -> None:
        """Give the target the visibility predicate (None while no unit has an ACL): over a snapshot
        of the ACLs, so the target can still ask the one it replaces what each nexus saw."""
        view = {lun: tuple(self.conns[k] for k in keys) for lun, keys in self.acl.items()}

        def visible(nexus: Nexus, lun: int) -> bool:
            hosts = view.get(lun)
            if not hosts:
                return True
            iqn = initiator_iqn(nexus)
            return any(h.matches(iqn, nexus.port) for h in hosts)

        self.c.target.set_visibility(visible if view else None, changed_lun)

    # ------------------------------------------------------------ what the iSCSI and SCSI sides ask
    def may_login(self, initiator_iqn: str, port: int) -> bool:
        if self.port_access.get(port, "all") == "all":
            return True
        iqn = initiator_iqn.lower()
        return any(h.matches(iqn, port) for h in self.conns.values())

    # ------------------------------------------------------------ operations
    def connections(self) -> list[ConnectionView]:
        return [ConnectionView(name=h.name, iqn=h.iqn, port=h.port,
                               units=sorted(lun for lun, keys in self.acl.items() if k in keys))
                for k, h in self.conns.items()]

    def ports(self) -> list[PortAccessView]:
        return [PortAccessView(port=p, access=a) for p, a in sorted(self.port_access.items())]

    def acl_entries(self) -> list[AclView]:
        return [AclView(unit=lun, connections=[self.conns[k].name for k in keys])
                for lun, keys in sorted(self.acl.items())]

    def build(self, specs: list[ConnectionSpec]) -> None:
        """A new shelf's connections, from its spec (ShelfSpec.validate checked them)."""
        for s in specs:
            self._add(s.name, s.iqn, s.port)

    def _add(self, name: str, iqn: str, port: int | None) -> HostConnection:
        problem = connection_problem(name, iqn, port)
        if problem:
            raise ControllerError(problem)
        if name.lower() in self.conns:
            raise ControllerError(f"connection {self.conns[name.lower()].name} already exists")
        if len(self.conns) >= MAX_CONNECTIONS:
            raise ControllerError(f"at most {MAX_CONNECTIONS} connections")
        h = HostConnection(name, iqn.lower(), port)
        self.conns[name.lower()] = h
        return h

    def add_connection(self, name: str, iqn: str, port: int | None = None) -> ConnectionView:
        h = self._add(name, iqn, port)
        self._changed(f"connection {name} added: {h.iqn} on {_port_text(port)}")
        return self.connections()[list(self.conns).index(name.lower())]

    def delete_connection(self, name: str) -> None:
        key = self._key(name)
        units = [lun for lun, keys in self.acl.items() if key in keys]
        if units:
            raise ControllerError(f"connection {self.conns[key].name} is in the ACL of unit "
                                  f"{', '.join(map(str, sorted(units)))}: delete those ACL entries first")
        h = self.conns.pop(key)
        self._changed(f"connection {h.name} deleted")

    def set_port_access(self, port: int, access: str) -> PortAccessView:
        self.port_access[port] = access
        self._changed(f"port {port} access: {access}")
        return PortAccessView(port=port, access=access)

    def add_acl(self, connection: str, lun: int) -> AclView:
        key = self._key(connection)
        if lun not in self.c.lds:
            raise ControllerError(f"no unit {lun}")
        keys = self.acl.setdefault(lun, [])
        if key in keys:
            raise ControllerError(f"unit {lun} already presented to connection {self.conns[key].name}")
        keys.append(key)
        self.apply(lun)
        self._changed(f"unit {lun} presented to connection {self.conns[key].name}")
        return AclView(unit=lun, connections=[self.conns[k].name for k in keys])

    def delete_acl(self, connection: str, lun: int) -> None:
        key = self._key(connection)
        keys = self.acl.get(lun, [])
        if key not in keys:
            raise ControllerError(f"unit {lun} has no ACL entry for connection {self.conns[key].name}")
        keys.remove(key)
        if not keys:
            del self.acl[lun]
        self.apply(lun)
        self._changed(f"unit {lun} no longer presented to connection {self.conns[key].name}"
                      + ("" if lun in self.acl else " (no ACL left: every host sees it)"))

    def unit_deleted(self, lun: int) -> None:
        """A deleted unit takes its ACL with it (a new unit at that LUN starts seen by all)."""
        if self.acl.pop(lun, None) is not None:
            self.apply(lun)
            self.c.nvram.save()

    def _key(self, name: str) -> str:
        key = name.lower()
        if key not in self.conns:
            raise ControllerError(f"no connection {name!r} (SHOW CONNECTIONS lists them)")
        return key

    def _changed(self, message: str) -> None:
        self.c.log.emit(EventCode.CONFIG_CHANGED, message)
        self.c.nvram.save()


def connection_problem(name: object, iqn: object, port: object) -> str | None:
    """What is wrong with a connection's name, IQN or port, in one line (None: nothing)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return f"connection name {name!r}: 1-{CONNECTION_NAME_MAX} letters, digits, '-', '_' or '.'"
    if not isinstance(iqn, str) or not _IQN.fullmatch(iqn) or len(iqn) > IQN_MAX:
        return f"IQN {iqn!r} is not an iSCSI name (iqn.yyyy-mm.reversed.domain[:id], eui., naa.)"
    if port is not None and (isinstance(port, bool) or port not in PORTS):
        return f"port {port!r} outside {PORTS} (leave it out for either port)"
    return None


def _port_text(port: int | None) -> str:
    return "either port" if port is None else f"port {port}"
