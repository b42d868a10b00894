"""The RSO wire format, defined once: the vendor opcodes, their 10-byte CDB, the status block,
the RSO STATUS data and the CONFIGURE and LOG HOST EVENT parameter lists (docs/rso-commands.md).

The firmware (`rso_scsi`) encodes what the host agents and the pytest plugin decode, and the
other way round, so all three use this module. It imports only the standard library, nothing of
its own package: the lab copies it into the guests along with the agents.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from enum import IntEnum, IntFlag
from typing import Any, ClassVar

CDB_LEN = 10
LENGTH_OFFSET = 7  # ALLOCATION LENGTH / PARAMETER LIST LENGTH: CDB bytes 7-8, big-endian
STATUS_BLOCK_LEN = 16
RSO_STATUS_LEN = 32
CONFIGURE_LEN = 8
MAX_HOST_EVENT = 512  # the longest LOG HOST EVENT parameter list
UNKNOWN_AGE = 0xFFFFFFFF  # an age field's "none yet"
MAX_SESSIONS = 255  # the port-2 session count saturates here


class RsoOpcode(IntEnum):
    HEARTBEAT = 0xC0
    ACKNOWLEDGE = 0xC1
    STATUS = 0xC2
    FORCE_FAILOVER = 0xC3
    CONFIGURE = 0xC4
    LOG_HOST_EVENT = 0xC5


#: Wire code -> the product's SNMP RSO status value (the STATE byte of the status block).
STATES: dict[int, str] = {1: "ok", 2: "notConfigured", 3: "disabled", 4: "noSecondary", 5: "linkDown",
                          6: "secondaryRunningAuto", 7: "secondaryRunningUser", 8: "timeoutError", 9: "daemonDown"}
#: The other way: state name -> wire code.
STATE_CODES: dict[str, int] = {name: code for code, name in STATES.items()}


class StatusFlag(IntFlag):
    """Byte 1 of the status block; bit 7 is reserved."""

    ENABLED = 0x01
    ACT_ALONE = 0x02
    ACK_RECENT = 0x04  # the recovery acknowledged within the timeout (0: the lost-acknowledgment alarm)
    TAKE_OVER = 0x08  # the heartbeat timed out, nobody fenced yet: the recovery should FORCE FAILOVER
    FAILED_OVER = 0x10
    SECONDARY_JOINED = 0x20
    AWAITING_PRIMARY = 0x40  # no deadline runs until the primary's first heartbeat


# ------------------------------------------------------------------------------------ CDB
def cdb(opcode: int, length: int = 0) -> bytes:
    """A 10-byte RSO CDB: opcode, reserved bytes 1-6, ALLOCATION / PARAMETER LIST LENGTH in 7-8,
    control byte 0."""
    return struct.pack(">B6xHx", opcode, length)


def cdb_length(data: bytes | bytearray) -> int:
    """The ALLOCATION / PARAMETER LIST LENGTH field of an RSO CDB."""
    return int(struct.unpack_from(">H", data, LENGTH_OFFSET)[0])


def cdb_usage(opcode: int) -> bytes:
    """The bits an RSO CDB may set (REPORT SUPPORTED OPERATION CODES usage data); every other bit
    is reserved. FORCE FAILOVER moves no data and has no length field."""
    return cdb(opcode, 0 if opcode == RsoOpcode.FORCE_FAILOVER else 0xFFFF)


# ----------------------------------------------------------------------------- the answers
def age_ms(seconds: float | None) -> int | None:
    """An age in seconds as the status block carries it: whole ms, saturating below "none yet"."""
    return None if seconds is None else max(0, min(int(seconds * 1000), UNKNOWN_AGE - 1))


def _age_field(ms: int | None, name: str) -> int:
    if ms is None:
        return UNKNOWN_AGE
    if not 0 <= ms < UNKNOWN_AGE:
        raise ValueError(f"{name} {ms} ms does not fit the status block (0 .. {UNKNOWN_AGE - 1}, or None)")
    return ms


def _age_value(raw: int) -> int | None:
    return None if raw == UNKNOWN_AGE else raw


def _pack(fmt: str, *values: Any) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error as exc:
        raise ValueError(f"RSO field out of range: {exc}") from None


def _need(data: bytes | bytearray, length: int, what: str) -> None:
    if len(data) < length:
        raise ValueError(f"{what} of {len(data)} bytes ({length} expected)")


@dataclass(frozen=True, kw_only=True)
class StatusBlock:
    """The 16-byte status block HEARTBEAT and ACKNOWLEDGE answer with; ages in ms, None = none yet."""

    FORMAT: ClassVar[str] = ">BBBBIII"
    LENGTH: ClassVar[int] = STATUS_BLOCK_LEN

    code: int
    enabled: bool = False
    act_alone: bool = False
    ack_recent: bool = False
    take_over: bool = False
    failed_over: bool = False
    secondary_joined: bool = False
    awaiting_primary: bool = False
    active_port: int = 1
    fenced_port: int = 0  # 0: none
    heartbeat_age_ms: int | None = None
    ack_age_ms: int | None = None
    timeout_ms: int = 0

    @property
    def state(self) -> str:
        return STATES.get(self.code, f"unknown({self.code})")

    @property
    def fenced_primary(self) -> bool:
        return self.failed_over and self.fenced_port == 1

    @property
    def flags(self) -> StatusFlag:
        f = StatusFlag(0)
        for flag in StatusFlag:
            if getattr(self, str(flag.name).lower()):
                f |= flag
        return f

    def as_dict(self) -> dict[str, Any]:
        """The fields and the state name (JSON-able)."""
        return {**asdict(self), "state": self.state}

    def to_bytes(self) -> bytes:
        return _pack(self.FORMAT, self.code, self.flags, self.active_port, self.fenced_port,
                     _age_field(self.heartbeat_age_ms, "heartbeat age"), _age_field(self.ack_age_ms, "ack age"),
                     self.timeout_ms)

    @staticmethod
    def _fields(data: bytes | bytearray) -> dict[str, Any]:
        _need(data, STATUS_BLOCK_LEN, "RSO status block")
        code, flags, active, fenced, hb, ack, timeout = struct.unpack_from(StatusBlock.FORMAT, data)
        f = StatusFlag(flags & 0x7F)
        return {"code": code, **{str(flag.name).lower(): flag in f for flag in StatusFlag},
                "active_port": active, "fenced_port": fenced, "heartbeat_age_ms": _age_value(hb),
                "ack_age_ms": _age_value(ack), "timeout_ms": timeout}

    @classmethod
    def from_bytes(cls, data: bytes | bytearray) -> StatusBlock:
        """The block in the first 16 bytes of `data` (reserved bits ignored); ValueError if shorter."""
        return StatusBlock(**StatusBlock._fields(data))

    @classmethod
    def decode(cls, data: bytes | bytearray) -> StatusBlock:
        """Either answer: `RsoStatus` when `data` holds the 32-byte RSO STATUS data, else the block."""
        return RsoStatus.from_bytes(data) if len(data) >= RSO_STATUS_LEN else StatusBlock.from_bytes(data)

    parse = decode


@dataclass(frozen=True, kw_only=True)
class RsoStatus(StatusBlock):
    """RSO STATUS data (32 bytes): the status block, counters, link flags and port-2 sessions."""

    TAIL: ClassVar[str] = ">IIIBBH"
    LENGTH: ClassVar[int] = RSO_STATUS_LEN

    heartbeats: int = 0
    acks: int = 0
    failovers: int = 0  # persistent
    link1_up: bool = True
    link2_up: bool = True
    port2_sessions: int = 0  # saturates at 255

    def to_bytes(self) -> bytes:
        links = (0x01 if self.link1_up else 0) | (0x02 if self.link2_up else 0)
        sessions = min(self.port2_sessions, MAX_SESSIONS)
        return super().to_bytes() + _pack(self.TAIL, self.heartbeats, self.acks, self.failovers, links, sessions, 0)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray) -> RsoStatus:
        _need(data, RSO_STATUS_LEN, "RSO STATUS data")
        heartbeats, acks, failovers, links, sessions, _ = struct.unpack_from(cls.TAIL, data, STATUS_BLOCK_LEN)
        return RsoStatus(**StatusBlock._fields(data), heartbeats=heartbeats, acks=acks, failovers=failovers,
                         link1_up=bool(links & 0x01), link2_up=bool(links & 0x02), port2_sessions=sessions)


# ------------------------------------------------------------------------- parameter lists
@dataclass(frozen=True, kw_only=True)
class ConfigureParams:
    """The CONFIGURE parameter list (8 bytes): ENABLE, ACT_ALONE, HEARTBEAT TIMEOUT (0 = keep it)."""

    ENABLE: ClassVar[int] = 0x01
    ACT_ALONE: ClassVar[int] = 0x02
    FORMAT: ClassVar[str] = ">BxxxI"

    enable: bool
    act_alone: bool = False
    timeout_ms: int = 0

    @classmethod
    def of(cls, enable: bool, timeout_s: float | None = None, act_alone: bool = False) -> ConfigureParams:
        """From a timeout in seconds (None or 0: keep the current one)."""
        return cls(enable=enable, act_alone=act_alone, timeout_ms=0 if timeout_s is None else round(timeout_s * 1000))

    @property
    def timeout_s(self) -> float | None:
        return self.timeout_ms / 1000 if self.timeout_ms else None

    def to_bytes(self) -> bytes:
        flags = (self.ENABLE if self.enable else 0) | (self.ACT_ALONE if self.act_alone else 0)
        return _pack(self.FORMAT, flags, self.timeout_ms)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray) -> ConfigureParams:
        """The first 8 bytes of `data` (reserved bits ignored: see `reserved_field`)."""
        _need(data, CONFIGURE_LEN, "CONFIGURE parameter list")
        flags, timeout_ms = struct.unpack_from(cls.FORMAT, data)
        return cls(enable=bool(flags & cls.ENABLE), act_alone=bool(flags & cls.ACT_ALONE), timeout_ms=timeout_ms)

    @classmethod
    def reserved_field(cls, data: bytes | bytearray) -> tuple[int, int | None] | None:
        """Where the first reserved field is set: (byte, highest bit) in byte 0, (byte, None) in
        bytes 1-3; None when all are zero."""
        bad = data[0] & ~(cls.ENABLE | cls.ACT_ALONE) & 0xFF
        if bad:
            return 0, bad.bit_length() - 1
        for i in (1, 2, 3):
            if data[i]:
                return i, None
        return None


@dataclass(frozen=True)
class HostEvent:
    """The LOG HOST EVENT parameter list: ASCII event code, NUL, UTF-8 message (512 bytes at most)."""

    code: str
    message: str

    def to_bytes(self) -> bytes:
        """The list, the message cut (at a character) so that the whole fits in MAX_HOST_EVENT."""
        head = self.code.encode("ascii") + b"\0"
        if b"\0" in head[:-1] or len(head) >= MAX_HOST_EVENT:
            raise ValueError(f"host event code {self.code!r}: ASCII, no NUL, under {MAX_HOST_EVENT} bytes")
        text = self.message.encode("utf-8")[: MAX_HOST_EVENT - len(head)]
        return head + text.decode("utf-8", "ignore").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray) -> HostEvent:
        """Code up to the first NUL (ValueError if not ASCII), message stripped (bad UTF-8 replaced)."""
        raw_code, _, text = bytes(data).partition(b"\0")
        return cls(raw_code.decode("ascii"), text.decode("utf-8", "replace").strip())


__all__ = [
    "CDB_LEN",
    "CONFIGURE_LEN",
    "LENGTH_OFFSET",
    "MAX_HOST_EVENT",
    "MAX_SESSIONS",
    "RSO_STATUS_LEN",
    "STATES",
    "STATE_CODES",
    "STATUS_BLOCK_LEN",
    "UNKNOWN_AGE",
    "ConfigureParams",
    "HostEvent",
    "RsoOpcode",
    "RsoStatus",
    "StatusBlock",
    "StatusFlag",
    "age_ms",
    "cdb",
    "cdb_length",
    "cdb_usage",
]
