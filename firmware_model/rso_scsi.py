"""The RSO vendor-unique commands on LUN 0 (opcodes 0xC0-0xC4); layouts in docs/rso-commands.md.

Each handler calls the same Rso model methods the management side uses; refusals become
CHECK CONDITION: wrong port -> ILLEGAL REQUEST 80/01 (vendor: RSO command not allowed through
this port) pointing at the opcode, wrong moment -> ILLEGAL REQUEST 2C/00 COMMAND SEQUENCE ERROR,
bad CDB/parameter fields -> 24/00 / 26/00 with a field pointer, short parameter list -> 1A/00.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import IntEnum

from .events import EventCode
from .rso import RECOVERY_PORT, STATE_CODES, Rso, RsoError
from .scsi.commands import usage
from .scsi.constants import Asc
from .scsi.errors import (
    ScsiError,
    illegal,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
    parameter_list_length_error,
)
from .scsi.types import ScsiRequest, ScsiResult, Status
from .scsi.units import ControllerUnit

UNKNOWN_AGE = 0xFFFFFFFF
CONFIGURE_LEN = 8
# Vendor ASC/ASCQ: RSO command not allowed through this port.
WRONG_PORT = 0x8001


class RsoOpcode(IntEnum):
    HEARTBEAT = 0xC0
    ACKNOWLEDGE = 0xC1
    STATUS = 0xC2
    FORCE_FAILOVER = 0xC3
    CONFIGURE = 0xC4
    LOG_HOST_EVENT = 0xC5


# The events a host agent may write into the controller's log (LOG HOST EVENT).
HOST_EVENTS = frozenset(c for c in EventCode if c.value.startswith("HOST_"))
MAX_HOST_EVENT = 512


def _ms(age: float | None) -> int:
    return UNKNOWN_AGE if age is None else min(int(age * 1000), UNKNOWN_AGE - 1)


def status_block(rso: Rso) -> bytes:
    """The 16-byte block HEARTBEAT and ACKNOWLEDGE return (and RSO STATUS starts with)."""
    st = rso.status()
    flags = (
        (0x01 if st["enabled"] else 0)
        | (0x02 if st["act_alone"] else 0)
        | (0x04 if st["ack_recent"] else 0)
        | (0x08 if st["take_over"] else 0)
        | (0x10 if st["failed_over"] else 0)
        | (0x20 if st["secondary_joined"] else 0)
        | (0x40 if st["awaiting_primary"] else 0)
    )
    return struct.pack(
        ">BBBBIII",
        STATE_CODES[rso.state()],
        flags,
        st["active_port"],
        st["fenced_port"] or 0,
        _ms(st["heartbeat_age_s"]),
        _ms(st["ack_age_s"]),
        int(rso.timeout_s * 1000),
    )


def full_status(rso: Rso) -> bytes:
    """RSO STATUS data: the status block, counters, link flags and port-2 session count."""
    links = (0x01 if rso.links[1] else 0) | (0x02 if rso.links[2] else 0)
    sessions = min(len(rso.sessions[RECOVERY_PORT]), 255)
    return status_block(rso) + struct.pack(
        ">IIIBBH", rso.heartbeats, rso.acks, rso.failovers, links, sessions, 0
    )


def _refused(err: RsoError) -> ScsiError:
    if err.kind == "port":
        return illegal(WRONG_PORT, field_pointer=0, cd=True)
    return illegal(Asc.COMMAND_SEQUENCE_ERROR)


def register_rso_commands(unit: ControllerUnit, rso: Rso, after: Callable[[], None] | None = None,
                          host_event: Callable[[EventCode, str], None] | None = None) -> None:
    """Add the RSO commands to LUN 0; `after` runs once a command changed the model,
    `host_event` records what an agent reports with LOG HOST EVENT."""

    def done() -> None:
        if after is not None:
            after()

    def data_in(req: ScsiRequest, data: bytes) -> ScsiResult:
        alloc = struct.unpack_from(">H", req.cdb, 7)[0]
        return ScsiResult(Status.GOOD, data[:alloc])

    def port_command(action: Callable[[int], object], answer: bool) -> Callable[[ScsiRequest], ScsiResult]:
        """A model call made by the port the command came through; refusals become sense."""

        def handler(req: ScsiRequest) -> ScsiResult:
            try:
                action(req.nexus.port)
            except RsoError as err:
                raise _refused(err) from None
            done()
            return data_in(req, status_block(rso)) if answer else ScsiResult(Status.GOOD)

        return handler

    heartbeat = port_command(rso.heartbeat, answer=True)
    acknowledge = port_command(rso.acknowledge, answer=True)
    force_failover = port_command(rso.failover, answer=False)

    def status(req: ScsiRequest) -> ScsiResult:
        return data_in(req, full_status(rso))

    def configure(req: ScsiRequest) -> ScsiResult:
        length = struct.unpack_from(">H", req.cdb, 7)[0]
        req.spdtl = length
        if req.nexus.port != 1:
            raise illegal(WRONG_PORT, field_pointer=0, cd=True)
        if length < CONFIGURE_LEN or len(req.data_out) < CONFIGURE_LEN:
            raise parameter_list_length_error()
        data = bytes(req.data_out[:CONFIGURE_LEN])
        if data[0] & ~0x03:
            raise invalid_field_in_parameter_list(0, (data[0] & ~0x03 & 0xFF).bit_length() - 1)
        for i in (1, 2, 3):
            if data[i]:
                raise invalid_field_in_parameter_list(i)
        timeout_ms = struct.unpack_from(">I", data, 4)[0]
        try:
            rso.configure(bool(data[0] & 0x01), timeout_ms / 1000 if timeout_ms else None,
                          bool(data[0] & 0x02))
        except ValueError:
            raise invalid_field_in_parameter_list(4) from None
        except RsoError as err:
            raise _refused(err) from None
        done()
        return ScsiResult(Status.GOOD)

    def log_host_event(req: ScsiRequest) -> ScsiResult:
        length = struct.unpack_from(">H", req.cdb, 7)[0]
        req.spdtl = length
        if length > MAX_HOST_EVENT:
            raise invalid_field_in_cdb(7)
        data = bytes(req.data_out[:length])
        if len(data) < length or not data:
            raise parameter_list_length_error()
        code_raw, _, text = data.partition(b"\0")
        try:
            code = EventCode(code_raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise invalid_field_in_parameter_list(0) from None
        if code not in HOST_EVENTS:
            raise invalid_field_in_parameter_list(0)
        message = text.decode("utf-8", "replace").strip() or code.value
        who = req.nexus.initiator.split(",")[0]
        if host_event is not None:
            host_event(code, f"port {req.nexus.port} ({who}): {message}")
        return ScsiResult(Status.GOOD)

    alloc_usage = usage(0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0)
    for op, handler in (
        (RsoOpcode.HEARTBEAT, heartbeat),
        (RsoOpcode.ACKNOWLEDGE, acknowledge),
        (RsoOpcode.STATUS, status),
        (RsoOpcode.CONFIGURE, configure),
    ):
        unit.register(op, handler, bytes((op,)) + alloc_usage[1:], timeout=5)
    unit.register(RsoOpcode.LOG_HOST_EVENT, log_host_event,
                  bytes((RsoOpcode.LOG_HOST_EVENT,)) + alloc_usage[1:], timeout=5)
    unit.register(RsoOpcode.FORCE_FAILOVER, force_failover, usage(RsoOpcode.FORCE_FAILOVER, *bytes(9)),
                  timeout=5)


__all__ = ["RsoOpcode", "full_status", "register_rso_commands", "status_block"]
