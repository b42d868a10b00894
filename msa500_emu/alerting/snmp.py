"""SNMP trap sink (pysnmp 7, asyncio): SNMPv2c with a community, or SNMPv3 authPriv (SHA, AES-128).

The trap is the table's (table.varbinds): sysUpTime.0 (the emulator's uptime), snmpTrapOID.0,
the MIB's VARIABLES, snmpTrapEnterprise.0. For v3 the emulator is the authoritative engine: its
engine id is the configured one or, by default, RFC 3411's enterprise form under 232 with the
shelf's serial as text (0x800000E804 + serial), so a manager can be set up with
`createUser -e ENGINEID`. pysnmp is imported only when an SNMP sink is built.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..config import Endpoint
from .table import ENTERPRISE, SNMP_TRAP_ENTERPRISE, SNMP_TRAP_OID, SYS_UPTIME, Notice, Syntax, trap_oid, varbinds

TIMEOUT_S = 5.0
_CONFIG_MIBS = ("SNMP-COMMUNITY-MIB", "SNMP-VIEW-BASED-ACM-MIB", "SNMP-TARGET-MIB", "SNMP-NOTIFICATION-MIB",
                "SNMP-USER-BASED-SM-MIB", "SNMPv2-MIB")


@dataclass(frozen=True)
class V3User:
    """An SNMPv3 user for authPriv: HMAC-SHA-96 authentication, AES-128 privacy."""

    user: str
    auth_key: str
    priv_key: str
    engine_id: str = ""  # hex; "" = derived from the shelf's serial

    def __repr__(self) -> str:  # keys never reach a log line
        return f"V3User(user={self.user!r}, engine_id={self.engine_id!r})"


def default_engine_id(serial: str) -> str:
    """RFC 3411 snmpEngineID, enterprise 232, format 4 (text): the shelf's serial."""
    text = (serial or "MSA500").encode()[:27]
    return "800000e804" + text.hex()


class SnmpSink:
    """Sends traps to one manager."""

    kind = "snmp"

    def __init__(self, target: Endpoint, community: str = "public", v3: V3User | None = None,
                 shelf_serial: str = "", started: float | None = None) -> None:
        self.target = target
        self.community = community
        self.v3 = v3
        self.engine_id = (v3.engine_id or default_engine_id(shelf_serial)) if v3 else ""
        self.started = time.monotonic() if started is None else started
        self._engine: Any = None
        self._transport: Any = None

    @property
    def name(self) -> str:
        return f"snmp {'v3' if self.v3 else 'v2c'} udp:{self.target}"

    def _make_engine(self) -> Any:
        """Importing pysnmp and building an engine take most of a second: done on a worker thread."""
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine
        from pysnmp.proto import rfc1902

        engine = SnmpEngine(rfc1902.OctetString(hexValue=self.engine_id)) if self.v3 is not None else SnmpEngine()
        engine.get_mib_builder().load_modules(*_CONFIG_MIBS)  # else the first trap loads them on the loop
        return engine

    async def _setup(self) -> None:
        self._engine = await asyncio.to_thread(self._make_engine)
        from pysnmp.hlapi.v3arch.asyncio import UdpTransportTarget

        self._transport = await UdpTransportTarget.create((self.target.host, self.target.port),
                                                          timeout=TIMEOUT_S, retries=0)

    def _auth(self) -> Any:
        from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData, usmAesCfb128Protocol, usmHMACSHAAuthProtocol

        if self.v3 is None:
            return CommunityData(self.community, mpModel=1)
        return UsmUserData(self.v3.user, self.v3.auth_key, self.v3.priv_key,
                           authProtocol=usmHMACSHAAuthProtocol, privProtocol=usmAesCfb128Protocol)

    def pdu_varbinds(self, notice: Notice) -> list[tuple[Any, Any]]:
        from pysnmp.proto import rfc1902

        oid = trap_oid(notice)
        assert oid is not None
        ticks = int((time.monotonic() - self.started) * 100) & 0xFFFFFFFF
        out: list[tuple[Any, Any]] = [(rfc1902.ObjectName(SYS_UPTIME), rfc1902.TimeTicks(ticks)),
                                      (rfc1902.ObjectName(SNMP_TRAP_OID), rfc1902.ObjectIdentifier(oid))]
        for name, syntax, value in varbinds(notice):
            typed = rfc1902.Integer32(int(value)) if syntax is Syntax.INTEGER else rfc1902.OctetString(str(value))
            out.append((rfc1902.ObjectName(name), typed))
        out.append((rfc1902.ObjectName(SNMP_TRAP_ENTERPRISE), rfc1902.ObjectIdentifier(ENTERPRISE)))
        return out

    async def send(self, notice: Notice) -> None:
        if trap_oid(notice) is None:
            return
        from pysnmp.hlapi.v3arch.asyncio import ContextData, send_notification

        if self._engine is None:
            await self._setup()
        error, _status, _index, _vbs = await send_notification(
            self._engine, self._auth(), self._transport, ContextData(), "trap", *self.pdu_varbinds(notice))
        if error:
            raise ConnectionError(str(error))

    async def close(self) -> None:
        if self._engine is not None:
            try:
                self._engine.close_dispatcher()
            finally:
                self._engine = None
