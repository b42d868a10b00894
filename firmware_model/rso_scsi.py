"""The RSO vendor-unique commands on LUN 0 (opcodes 0xC0-0xC5); the layouts are in rso_wire.

Each handler calls the same Rso model methods the management side uses; refusals become
CHECK CONDITION: wrong port -> ILLEGAL REQUEST 80/01 (vendor: RSO command not allowed through
this port) pointing at the opcode, wrong moment -> ILLEGAL REQUEST 2C/00 COMMAND SEQUENCE ERROR,
bad CDB/parameter fields -> 24/00 / 26/00 with a field pointer, short parameter list -> 1A/00.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .events import EventCode
from .rso import RECOVERY_PORT, Rso, RsoError
from .rso_wire import (
    CONFIGURE_LEN,
    MAX_HOST_EVENT,
    STATE_CODES,
    ConfigureParams,
    HostEvent,
    RsoOpcode,
    RsoStatus,
    StatusBlock,
    age_ms,
    cdb_length,
    cdb_usage,
)
from .scsi.commands import Access
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

# Vendor ASC/ASCQ: RSO command not allowed through this port.
WRONG_PORT = 0x8001

# The events a host agent may write into the controller's log (LOG HOST EVENT).
HOST_EVENTS = frozenset(c for c in EventCode if c.value.startswith("HOST_"))


def _block_fields(rso: Rso) -> dict[str, Any]:
    st = rso.status()
    return {
        "code": STATE_CODES[rso.state()],
        "enabled": bool(st["enabled"]),
        "act_alone": bool(st["act_alone"]),
        "ack_recent": bool(st["ack_recent"]),
        "take_over": bool(st["take_over"]),
        "failed_over": bool(st["failed_over"]),
        "secondary_joined": bool(st["secondary_joined"]),
        "awaiting_primary": bool(st["awaiting_primary"]),
        "active_port": st["active_port"],
        "fenced_port": st["fenced_port"] or 0,
        "heartbeat_age_ms": age_ms(st["heartbeat_age_s"]),
        "ack_age_ms": age_ms(st["ack_age_s"]),
        "timeout_ms": int(rso.timeout_s * 1000),
    }


def status_block(rso: Rso) -> bytes:
    """The 16-byte block HEARTBEAT and ACKNOWLEDGE return (and RSO STATUS starts with)."""
    return StatusBlock(**_block_fields(rso)).to_bytes()


def full_status(rso: Rso) -> bytes:
    """RSO STATUS data: the status block, counters, link flags and port-2 session count."""
    return RsoStatus(**_block_fields(rso), heartbeats=rso.heartbeats, acks=rso.acks, failovers=rso.failovers,
                     link1_up=bool(rso.links[1]), link2_up=bool(rso.links[2]),
                     port2_sessions=len(rso.sessions[RECOVERY_PORT])).to_bytes()


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
        return ScsiResult(Status.GOOD, data[: cdb_length(req.cdb)])

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
        length = cdb_length(req.cdb)
        req.spdtl = length
        if req.nexus.port != 1:
            raise illegal(WRONG_PORT, field_pointer=0, cd=True)
        if length < CONFIGURE_LEN or len(req.data_out) < CONFIGURE_LEN:
            raise parameter_list_length_error()
        data = bytes(req.data_out[:CONFIGURE_LEN])
        reserved = ConfigureParams.reserved_field(data)
        if reserved is not None:
            raise invalid_field_in_parameter_list(*reserved)
        params = ConfigureParams.from_bytes(data)
        try:
            rso.configure(params.enable, params.timeout_s, params.act_alone)
        except ValueError:
            raise invalid_field_in_parameter_list(4) from None
        except RsoError as err:
            raise _refused(err) from None
        done()
        return ScsiResult(Status.GOOD)

    def log_host_event(req: ScsiRequest) -> ScsiResult:
        length = cdb_length(req.cdb)
        req.spdtl = length
        if length > MAX_HOST_EVENT:
            raise invalid_field_in_cdb(7)
        data = bytes(req.data_out[:length])
        if len(data) < length or not data:
            raise parameter_list_length_error()
        try:
            event = HostEvent.from_bytes(data)
            code = EventCode(event.code)
        except ValueError:
            raise invalid_field_in_parameter_list(0) from None
        if code not in HOST_EVENTS:
            raise invalid_field_in_parameter_list(0)
        message = event.message or code.value
        who = req.nexus.initiator.split(",")[0]
        if host_event is not None:
            host_event(code, f"port {req.nexus.port} ({who}): {message}")
        return ScsiResult(Status.GOOD)

    handlers: dict[RsoOpcode, Callable[[ScsiRequest], ScsiResult]] = {
        RsoOpcode.HEARTBEAT: heartbeat,
        RsoOpcode.ACKNOWLEDGE: acknowledge,
        RsoOpcode.STATUS: status,
        RsoOpcode.FORCE_FAILOVER: force_failover,
        RsoOpcode.CONFIGURE: configure,
        RsoOpcode.LOG_HOST_EVENT: log_host_event,
    }
    for op, handler in handlers.items():
        # LUN 0 keeps no reservations; an RSO command passes any (the heartbeat must never stall)
        unit.register(op, handler, cdb_usage(op), timeout=5, access=Access.EXEMPT)


__all__ = ["RsoOpcode", "full_status", "register_rso_commands", "status_block"]
