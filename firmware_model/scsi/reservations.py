"""SCSI reservations of one logical unit: SPC-4 persistent reservations and SPC-2 RESERVE/RELEASE.

Cluster managers and fencing agents (fence_scsi, sg_persist, Windows failover clustering)
decide who may write a shared disk from these answers, so every rule follows the standard:

- which commands a non-holder may run under each persistent reservation type
  (SPC-4 5.13.1 table "SPC commands that are allowed in the presence of various
  reservations", SBC-3 4.17 for block commands);
- the PERSISTENT RESERVE OUT service actions (SPC-4 5.13.7 to 5.13.12) with their
  PRgeneration updates and unit attentions;
- SPC-2 RESERVE/RELEASE (SPC-2 7.21/7.18) and the exceptions when persistent
  reservations are in use (SPC-4 5.13.3, CRH=1).

Registrations belong to I_T nexuses (initiator port + relative target port).  Pure and
synchronous: the dispatcher calls `conflict()` before each command and the PR/RESERVE
handlers for those opcodes; the owner persists `to_dict()` when `on_change` fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from firmware_model.scsi.errors import ScsiError
from firmware_model.scsi.types import Nexus

ILLEGAL_REQUEST = 0x05
UNIT_ATTENTION = 0x06

# Additional sense codes this module raises or queues.
ASC_PARAMETER_LIST_LENGTH_ERROR = (0x1A, 0x00)
ASC_INVALID_FIELD_IN_CDB = (0x24, 0x00)
ASC_INVALID_FIELD_IN_PARAMETER_LIST = (0x26, 0x00)
ASC_INVALID_RELEASE_OF_PR = (0x26, 0x04)
ASC_RESERVATIONS_PREEMPTED = (0x2A, 0x03)
ASC_RESERVATIONS_RELEASED = (0x2A, 0x04)
ASC_REGISTRATIONS_PREEMPTED = (0x2A, 0x05)

ISCSI_PROTOCOL_ID = 0x5
_ISID_SEPARATOR = ",i,0x"
_BASIC_PARAM_LEN = 24
_MASK64 = (1 << 64) - 1


class ReservationConflict(Exception):
    """The command must end with status RESERVATION CONFLICT (0x18), no sense data."""


class PrType(IntEnum):
    """PERSISTENT RESERVE OUT TYPE field (SPC-4 table 216)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8

    @property
    def all_registrants(self) -> bool:
        return self in (PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS)

    @property
    def registrants_only(self) -> bool:
        return self in (
            PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
        )

    @property
    def exclusive_access(self) -> bool:
        """Reads are reserved too (EA, EA-RO, EA-AR), not only writes."""
        return self in (
            PrType.EXCLUSIVE_ACCESS,
            PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        )


class PrInAction(IntEnum):
    READ_KEYS = 0x00
    READ_RESERVATION = 0x01
    REPORT_CAPABILITIES = 0x02
    READ_FULL_STATUS = 0x03


class PrOutAction(IntEnum):
    REGISTER = 0x00
    RESERVE = 0x01
    RELEASE = 0x02
    CLEAR = 0x03
    PREEMPT = 0x04
    PREEMPT_AND_ABORT = 0x05
    REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
    REGISTER_AND_MOVE = 0x07


LU_SCOPE = 0x0
_PR_TYPES = frozenset(int(t) for t in PrType)
_PROUT_ACTIONS = frozenset(int(a) for a in PrOutAction)

# Operation codes the reservation rules look at.
OP_TEST_UNIT_READY = 0x00
OP_REQUEST_SENSE = 0x03
OP_READ6 = 0x08
OP_INQUIRY = 0x12
OP_RESERVE6 = 0x16
OP_RELEASE6 = 0x17
OP_MODE_SENSE6 = 0x1A
OP_START_STOP_UNIT = 0x1B
OP_RECEIVE_DIAGNOSTIC = 0x1C
OP_PREVENT_ALLOW = 0x1E
OP_READ_CAPACITY10 = 0x25
OP_READ10 = 0x28
OP_VERIFY10 = 0x2F
OP_PRE_FETCH10 = 0x34
OP_READ_DEFECT_DATA10 = 0x37
OP_READ_BUFFER10 = 0x3C
OP_READ_LONG10 = 0x3E
OP_LOG_SENSE = 0x4D
OP_RESERVE10 = 0x56
OP_RELEASE10 = 0x57
OP_MODE_SENSE10 = 0x5A
OP_PERSISTENT_RESERVE_IN = 0x5E
OP_PERSISTENT_RESERVE_OUT = 0x5F
OP_VARIABLE_LENGTH = 0x7F
OP_ACCESS_CONTROL_IN = 0x86
OP_ACCESS_CONTROL_OUT = 0x87
OP_READ16 = 0x88
OP_READ_ATTRIBUTE = 0x8C
OP_VERIFY16 = 0x8F
OP_PRE_FETCH16 = 0x90
OP_READ_BUFFER16 = 0x9B
OP_SERVICE_ACTION_IN16 = 0x9E
OP_REPORT_LUNS = 0xA0
OP_SECURITY_PROTOCOL_IN = 0xA2
OP_MAINTENANCE_IN = 0xA3
OP_READ12 = 0xA8
OP_SERVICE_ACTION_IN12 = 0xAB
OP_VERIFY12 = 0xAF
OP_READ_DEFECT_DATA12 = 0xB7

_RESERVE_RELEASE_OPS = frozenset({OP_RESERVE6, OP_RELEASE6, OP_RESERVE10, OP_RELEASE10})


class _Access(IntEnum):
    """How a command fares under a persistent reservation held by someone else."""

    ALLOWED = 0  # allowed for everyone under every type
    READ = 1  # allowed through Write Exclusive types, conflicts under Exclusive Access types
    WRITE = 2  # conflicts unless the I_T nexus is registered under an RO/AR type


# Always allowed (SPC-4 table 63 rows "Allowed" in every column; SBC-3 READ CAPACITY).
_ALWAYS_ALLOWED_OPS = frozenset(
    {
        OP_TEST_UNIT_READY,
        OP_REQUEST_SENSE,
        OP_INQUIRY,
        OP_LOG_SENSE,
        OP_PERSISTENT_RESERVE_IN,
        # PERSISTENT RESERVE OUT: its service action table (SPC-4 table 64) is a matter of
        # registration and key, which persistent_reserve_out() enforces itself.
        OP_PERSISTENT_RESERVE_OUT,
        OP_REPORT_LUNS,
        OP_ACCESS_CONTROL_IN,
        OP_ACCESS_CONTROL_OUT,
        OP_READ_CAPACITY10,
    }
)
# MAINTENANCE IN service actions allowed everywhere: REPORT IDENTIFYING INFORMATION,
# REPORT TARGET PORT GROUPS, REPORT ALIASES, REPORT PRIORITY, REPORT TIMESTAMP.
_MI_ALWAYS = frozenset({0x05, 0x0A, 0x0B, 0x0E, 0x0F})
# MAINTENANCE IN read-like: REPORT SUPPORTED OPERATION CODES, REPORT SUPPORTED TMFs,
# MANAGEMENT PROTOCOL IN.
_MI_READ = frozenset({0x0C, 0x0D, 0x10})
# Read-like commands: allowed through Write Exclusive reservations (ALLOW COMMANDS = 011b).
_READ_OPS = frozenset(
    {
        OP_MODE_SENSE6,
        OP_MODE_SENSE10,
        OP_READ_ATTRIBUTE,
        OP_READ_BUFFER10,
        OP_READ_BUFFER16,
        OP_RECEIVE_DIAGNOSTIC,
        OP_SECURITY_PROTOCOL_IN,
        OP_READ6,
        OP_READ10,
        OP_READ12,
        OP_READ16,
        OP_VERIFY10,
        OP_VERIFY12,
        OP_VERIFY16,
        OP_PRE_FETCH10,
        OP_PRE_FETCH16,
        OP_READ_DEFECT_DATA10,
        OP_READ_DEFECT_DATA12,
        OP_READ_LONG10,
    }
)
_SAI16_ALWAYS = frozenset({0x10})  # READ CAPACITY(16)
_SAI16_READ = frozenset({0x11, 0x12, 0x13})  # READ LONG(16), GET LBA STATUS, REPORT REFERRALS
_VARLEN_READ = frozenset({0x0009, 0x000A})  # READ(32), VERIFY(32)


def _classify(cdb: bytes) -> _Access:
    """The access class of a command (everything not listed is write-like, i.e. conflicts)."""
    op = cdb[0]
    sa = cdb[1] & 0x1F if len(cdb) > 1 else 0
    if op in _ALWAYS_ALLOWED_OPS:
        return _Access.ALLOWED
    if op in _READ_OPS:
        return _Access.READ
    if op == OP_MAINTENANCE_IN:
        if sa in _MI_ALWAYS:
            return _Access.ALLOWED
        if sa in _MI_READ:
            return _Access.READ
        return _Access.WRITE
    if op == OP_SERVICE_ACTION_IN16:
        if sa in _SAI16_ALWAYS:
            return _Access.ALLOWED
        if sa in _SAI16_READ:
            return _Access.READ
        return _Access.WRITE
    if op == OP_SERVICE_ACTION_IN12 and sa == 0x01:  # READ MEDIA SERIAL NUMBER
        return _Access.ALLOWED
    if op == OP_PREVENT_ALLOW:
        prevent = cdb[4] & 0x03 if len(cdb) > 4 else 0
        return _Access.ALLOWED if prevent == 0 else _Access.WRITE
    if op == OP_START_STOP_UNIT:
        # SBC-3: START=1 with POWER CONDITION 0h is allowed; stopping the unit is not.
        b4 = cdb[4] if len(cdb) > 4 else 0
        return _Access.ALLOWED if (b4 & 0x01) and not (b4 & 0xF0) else _Access.WRITE
    if op == OP_VARIABLE_LENGTH and len(cdb) >= 10:
        if int.from_bytes(cdb[8:10], "big") in _VARLEN_READ:
            return _Access.READ
        return _Access.WRITE
    return _Access.WRITE


def _spc2_allowed(cdb: bytes) -> bool:
    """Commands another I_T nexus may still run while an SPC-2 reservation is held (SPC-2 5.5.1)."""
    op = cdb[0]
    if op in (OP_INQUIRY, OP_REQUEST_SENSE, OP_REPORT_LUNS, OP_LOG_SENSE, OP_RELEASE6, OP_RELEASE10):
        return True
    if op == OP_PREVENT_ALLOW:
        return len(cdb) > 4 and (cdb[4] & 0x03) == 0
    # REPORT TARGET PORT GROUPS, so multipath can still find its paths.
    return op == OP_MAINTENANCE_IN and len(cdb) > 1 and (cdb[1] & 0x1F) == 0x0A


# ---------------------------------------------------------------------------------------
# TransportIDs (SPC-4 7.6.4.6, iSCSI)


def split_port_name(initiator: str) -> tuple[str, str | None]:
    """Split an iSCSI initiator port name "name,i,0xISID" into (name, ISID hex or None)."""
    idx = initiator.lower().find(_ISID_SEPARATOR)
    if idx < 0:
        return initiator, None
    return initiator[:idx], initiator[idx + len(_ISID_SEPARATOR) :]


def _norm_port_name(initiator: str) -> str:
    """Case-fold for comparisons: iSCSI names are lowercase after normalisation, ISIDs are hex."""
    name, isid = split_port_name(initiator)
    if isid is None:
        return name.lower()
    return f"{name.lower()}{_ISID_SEPARATOR}{isid.lower()}"


def encode_transport_id(initiator: str) -> bytes:
    """iSCSI TransportID: format 01b (name + ",i,0x" + ISID) if the port name has an ISID,
    otherwise format 00b (name only); null terminated, padded to a multiple of 4, >= 24 bytes."""
    name, isid = split_port_name(initiator)
    fmt = 0x00 if isid is None else 0x01
    text = name if isid is None else f"{name}{_ISID_SEPARATOR}{isid}"
    body = text.encode("utf-8") + b"\x00"
    body += b"\x00" * (-len(body) % 4)
    if len(body) < 20:
        body += b"\x00" * (20 - len(body))
    return bytes([(fmt << 6) | ISCSI_PROTOCOL_ID, 0]) + len(body).to_bytes(2, "big") + body


def decode_transport_id(data: bytes) -> tuple[str, int]:
    """Parse an iSCSI TransportID; returns (initiator port or device name, bytes consumed).

    Raises ValueError for anything but a well-formed iSCSI TransportID.
    """
    if len(data) < 4:
        raise ValueError("short TransportID")
    fmt = data[0] >> 6
    if data[0] & 0x0F != ISCSI_PROTOCOL_ID or fmt not in (0, 1):
        raise ValueError("not an iSCSI TransportID")
    length = int.from_bytes(data[2:4], "big")
    if length < 4 or length % 4 or 4 + length > len(data):
        raise ValueError("bad TransportID length")
    raw = data[4 : 4 + length]
    end = raw.find(b"\x00")
    if end <= 0:
        raise ValueError("TransportID name not null terminated")
    try:
        text = raw[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("TransportID name not UTF-8") from exc
    name, isid = split_port_name(text)
    if fmt == 1 and (isid is None or not name):
        raise ValueError("format 01b TransportID without ISID")
    if fmt == 0 and isid is not None:
        raise ValueError("format 00b TransportID with ISID")
    return text, 4 + length


# ---------------------------------------------------------------------------------------
# State


@dataclass
class Registration:
    key: int
    all_tg_pt: bool = False  # created by a REGISTER with ALL_TG_PT=1 (one of a group)


@dataclass
class PersistentReservation:
    type: PrType
    holder: Nexus | None  # None for the all-registrants types: every registrant holds it
    scope: int = LU_SCOPE


def _invalid_cdb(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_CDB, field_pointer=byte, bit_pointer=bit)


def _invalid_param(byte: int, bit: int | None = None) -> ScsiError:
    return ScsiError(
        ILLEGAL_REQUEST, *ASC_INVALID_FIELD_IN_PARAMETER_LIST, field_pointer=byte, bit_pointer=bit, cd=False
    )


def _param_length_error() -> ScsiError:
    return ScsiError(ILLEGAL_REQUEST, *ASC_PARAMETER_LIST_LENGTH_ERROR)


class Reservations:
    """SPC-2 and SPC-4 persistent reservation state of one logical unit.

    Features: all six PR types at LU scope; REGISTER, REGISTER AND IGNORE EXISTING KEY,
    RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND MOVE; ALL_TG_PT;
    APTPL (via to_dict/from_dict); READ KEYS, READ RESERVATION, REPORT CAPABILITIES,
    READ FULL STATUS.  SPEC_I_PT is not supported (SIP_C=0): a REGISTER with it set gets
    INVALID FIELD IN PARAMETER LIST.  Element scope and SPC-2 third-party/extent
    reservations are not supported (INVALID FIELD IN CDB).
    """

    def __init__(self, port_names: dict[int, str], on_change: Callable[[], None] | None = None) -> None:
        self.port_names = dict(port_names)
        self.on_change = on_change
        self.generation = 0
        self.aptpl = False
        self.registrations: dict[Nexus, Registration] = {}
        self.reservation: PersistentReservation | None = None
        self.spc2_holder: Nexus | None = None
        # Nexuses whose registrations the last PREEMPT / PREEMPT AND ABORT removed...
        self.last_preempted: list[Nexus] = []
        # ...and, for PREEMPT AND ABORT only, those whose tasks the transport must abort.
        self.last_abort: list[Nexus] = []
        self._uas: list[tuple[Nexus, int, int]] = []

    # ----------------------------------------------------------------- queries

    def is_registered(self, nexus: Nexus) -> bool:
        return nexus in self.registrations

    def is_holder(self, nexus: Nexus) -> bool:
        """Whether the I_T nexus holds the persistent reservation (SPC-4 5.13.10)."""
        res = self.reservation
        if res is None:
            return False
        if res.type.all_registrants:
            return nexus in self.registrations
        return res.holder == nexus

    def reservation_key(self) -> int:
        """The key READ RESERVATION reports: the holder's, or 0 for all-registrants types."""
        res = self.reservation
        if res is None or res.holder is None:
            return 0
        return self.registrations[res.holder].key

    # ----------------------------------------------------------------- conflicts

    def conflict(self, nexus: Nexus, cdb: bytes) -> bool:
        """True if the command must end with RESERVATION CONFLICT before it runs."""
        if not cdb:
            return False
        op = cdb[0]
        if op in _RESERVE_RELEASE_OPS:
            return self._reserve_release_conflict(nexus, op)
        if self.spc2_holder is not None and self.spc2_holder != nexus and not _spc2_allowed(cdb):
            return True
        return self._pr_conflict(nexus, cdb)

    def _pr_conflict(self, nexus: Nexus, cdb: bytes) -> bool:
        res = self.reservation
        if res is None or self.is_holder(nexus):
            return False
        access = _classify(cdb)
        if access is _Access.ALLOWED:
            return False
        if not (res.type.registrants_only or res.type.all_registrants):
            # WE / EA: every non-holder is treated alike, registered or not.
            return access is _Access.WRITE or res.type.exclusive_access
        if nexus in self.registrations:
            return False
        return access is _Access.WRITE or res.type.exclusive_access

    def _reserve_release_conflict(self, nexus: Nexus, op: int) -> bool:
        if self.registrations:
            # SPC-4 5.13.3: GOOD without effect for the PR holder and for registrants under
            # an RO/AR reservation; otherwise SPC-2 applies, and SPC-2 says any registration
            # makes every RESERVE and RELEASE conflict.
            return not self._spc2_noop_under_pr(nexus)
        if op in (OP_RESERVE6, OP_RESERVE10):
            return self.spc2_holder is not None and self.spc2_holder != nexus
        return False  # RELEASE from a non-holder is GOOD and does nothing

    def _spc2_noop_under_pr(self, nexus: Nexus) -> bool:
        if self.is_holder(nexus):
            return True
        res = self.reservation
        return (
            res is not None
            and (res.type.registrants_only or res.type.all_registrants)
            and nexus in self.registrations
        )

    # ----------------------------------------------------------------- SPC-2

    def reserve(self, nexus: Nexus, cdb: bytes) -> None:
        """RESERVE(6) / RESERVE(10): reserve the whole logical unit for this I_T nexus."""
        self._check_spc2_cdb(cdb)
        if self._reserve_release_conflict(nexus, cdb[0]):
            raise ReservationConflict()
        if self.registrations:
            return  # 5.13.3: GOOD, no reservation established, PR unchanged
        self.spc2_holder = nexus

    def release(self, nexus: Nexus, cdb: bytes) -> None:
        """RELEASE(6) / RELEASE(10): GOOD; releases only if this I_T nexus holds the reservation."""
        self._check_spc2_cdb(cdb)
        if self._reserve_release_conflict(nexus, cdb[0]):
            raise ReservationConflict()
        if self.registrations:
            return
        if self.spc2_holder == nexus:
            self.spc2_holder = None

    @staticmethod
    def _check_spc2_cdb(cdb: bytes) -> None:
        if not cdb or cdb[0] not in _RESERVE_RELEASE_OPS:
            raise _invalid_cdb(0, 7)
        b1 = cdb[1] if len(cdb) > 1 else 0
        if b1 & 0x10:  # 3RDPTY
            raise _invalid_cdb(1, 4)
        if cdb[0] in (OP_RESERVE10, OP_RELEASE10) and b1 & 0x02:  # LONGID
            raise _invalid_cdb(1, 1)
        if b1 & 0x01:  # EXTENT (obsolete)
            raise _invalid_cdb(1, 0)

    def nexus_loss(self, nexus: Nexus) -> None:
        """I_T nexus loss: drops that nexus's SPC-2 reservation; PR registrations persist."""
        if self.spc2_holder == nexus:
            self.spc2_holder = None

    def reset(self) -> None:
        """Logical unit reset (and target/warm/cold reset): drops the SPC-2 reservation, keeps PRs."""
        self.spc2_holder = None

    def _check_spc2_holder(self, nexus: Nexus) -> None:
        """PERSISTENT RESERVE IN/OUT conflict with another nexus's SPC-2 reservation."""
        if self.spc2_holder is not None and self.spc2_holder != nexus:
            raise ReservationConflict()

    # ----------------------------------------------------------------- unit attentions

    def pending_unit_attentions(self) -> list[tuple[Nexus, int, int]]:
        """UAs to establish, as (nexus, asc, ascq); the list is emptied by the call."""
        uas, self._uas = self._uas, []
        return uas

    def _ua(self, nexuses: Iterable[Nexus], asc_ascq: tuple[int, int]) -> None:
        for n in nexuses:
            self._uas.append((n, *asc_ascq))

    # ----------------------------------------------------------------- PR IN

    def persistent_reserve_in(self, nexus: Nexus, cdb: bytes, alloc_len: int) -> bytes:
        """PERSISTENT RESERVE IN (0x5E); the answer is cut to alloc_len."""
        sa = cdb[1] & 0x1F if len(cdb) > 1 else 0
        self._check_spc2_holder(nexus)
        if sa == PrInAction.READ_KEYS:
            data = self._read_keys()
        elif sa == PrInAction.READ_RESERVATION:
            data = self._read_reservation()
        elif sa == PrInAction.REPORT_CAPABILITIES:
            data = self._report_capabilities()
        elif sa == PrInAction.READ_FULL_STATUS:
            data = self._read_full_status()
        else:
            raise _invalid_cdb(1, 4)
        return data[: max(alloc_len, 0)]

    def _header(self, additional: int) -> bytes:
        return self.generation.to_bytes(4, "big") + additional.to_bytes(4, "big")

    def _read_keys(self) -> bytes:
        keys = b"".join(reg.key.to_bytes(8, "big") for reg in self.registrations.values())
        return self._header(len(keys)) + keys

    def _read_reservation(self) -> bytes:
        res = self.reservation
        if res is None:
            return self._header(0)
        body = bytearray(16)
        body[0:8] = self.reservation_key().to_bytes(8, "big")
        body[13] = (res.scope << 4) | int(res.type)
        return self._header(len(body)) + bytes(body)

    def _report_capabilities(self) -> bytes:
        data = bytearray(8)
        data[0:2] = (8).to_bytes(2, "big")
        # CRH=1 (5.13.3 handling), SIP_C=0, ATP_C=1, PTPL_C=1.
        data[2] = 0x10 | 0x04 | 0x01
        # TMV=1, ALLOW COMMANDS=011b (TUR through WE/EA; read-like commands through WE).
        data[3] = 0x80 | (0b011 << 4) | (0x01 if self.aptpl else 0x00)
        mask = 0
        for t in PrType:
            mask |= _TYPE_MASK_BITS[t]
        data[4:6] = mask.to_bytes(2, "big")
        return bytes(data)

    def _read_full_status(self) -> bytes:
        res = self.reservation
        body = bytearray()
        for n, reg in self.registrations.items():
            tid = encode_transport_id(n.initiator)
            desc = bytearray(24)
            desc[0:8] = reg.key.to_bytes(8, "big")
            if res is not None and self.is_holder(n):
                desc[12] = 0x01  # R_HOLDER
                desc[13] = (res.scope << 4) | int(res.type)
            # One descriptor per I_T nexus, so ALL_TG_PT stays 0 and the port is exact.
            desc[18:20] = (n.port & 0xFFFF).to_bytes(2, "big")
            desc[20:24] = len(tid).to_bytes(4, "big")
            body += desc + tid
        return self._header(len(body)) + bytes(body)

    # ----------------------------------------------------------------- PR OUT

    def persistent_reserve_out(self, nexus: Nexus, cdb: bytes, data: bytes) -> None:
        """PERSISTENT RESERVE OUT (0x5F). Raises ScsiError or ReservationConflict on failure."""
        self.last_preempted = []
        self.last_abort = []
        if len(cdb) < 10:
            raise _invalid_cdb(0, 7)
        sa = cdb[1] & 0x1F
        if sa not in _PROUT_ACTIONS:
            raise _invalid_cdb(1, 4)
        action = PrOutAction(sa)
        scope = cdb[2] >> 4
        raw_type = cdb[2] & 0x0F
        plen = int.from_bytes(cdb[5:9], "big")
        self._check_spc2_holder(nexus)
        data = bytes(data[:plen])
        if plen < _BASIC_PARAM_LEN or len(data) < plen:
            raise _param_length_error()

        if action is PrOutAction.REGISTER_AND_MOVE:
            self._register_and_move(nexus, data)
            return

        spec_i_pt = bool(data[20] & 0x08)
        all_tg_pt = bool(data[20] & 0x04)
        aptpl = bool(data[20] & 0x01)
        registering = action in (PrOutAction.REGISTER, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY)
        if registering and spec_i_pt:
            raise _invalid_param(20, 3)  # SIP_C=0
        if plen != _BASIC_PARAM_LEN:
            raise _param_length_error()

        pr_type: PrType | None = None
        if action in (
            PrOutAction.RESERVE,
            PrOutAction.RELEASE,
            PrOutAction.PREEMPT,
            PrOutAction.PREEMPT_AND_ABORT,
        ):
            if scope != LU_SCOPE:
                raise _invalid_cdb(2, 7)
            if raw_type not in _PR_TYPES:
                raise _invalid_cdb(2, 3)
            pr_type = PrType(raw_type)

        key = int.from_bytes(data[0:8], "big")
        sa_key = int.from_bytes(data[8:16], "big")

        if registering:
            self._register(nexus, key, sa_key, all_tg_pt, aptpl, ignore=action is not PrOutAction.REGISTER)
            return

        reg = self.registrations.get(nexus)
        if reg is None or reg.key != key:
            raise ReservationConflict()
        if action is PrOutAction.RESERVE:
            assert pr_type is not None
            self._reserve(nexus, pr_type)
        elif action is PrOutAction.RELEASE:
            assert pr_type is not None
            self._release(nexus, pr_type)
        elif action is PrOutAction.CLEAR:
            self._clear(nexus)
        else:
            assert pr_type is not None
            self._preempt(nexus, sa_key, pr_type, abort=action is PrOutAction.PREEMPT_AND_ABORT)

    # REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.13.7)
    def _register(
        self, nexus: Nexus, key: int, sa_key: int, all_tg_pt: bool, aptpl: bool, ignore: bool
    ) -> None:
        reg = self.registrations.get(nexus)
        if reg is None:
            if not ignore and key != 0:
                raise ReservationConflict()
            if sa_key == 0:
                return  # nothing to unregister: GOOD, no change
            ports = [nexus.port]
            if all_tg_pt:
                ports += [p for p in sorted(self.port_names) if p != nexus.port]
            for port in ports:
                n = Nexus(nexus.initiator, port)
                if n not in self.registrations:
                    self.registrations[n] = Registration(sa_key, all_tg_pt)
        else:
            if not ignore and key != reg.key:
                raise ReservationConflict()
            group = self._registration_group(nexus)
            if sa_key == 0:
                self._unregister(group, initiated_by=nexus)
            else:
                for n in group:
                    self.registrations[n].key = sa_key
        self.aptpl = aptpl
        self._bump()

    def _registration_group(self, nexus: Nexus) -> list[Nexus]:
        """The I_T nexuses one registration covers: all ports of an ALL_TG_PT registration."""
        reg = self.registrations[nexus]
        if not reg.all_tg_pt:
            return [nexus]
        return [
            n
            for n, r in self.registrations.items()
            if n.initiator == nexus.initiator and r.all_tg_pt and r.key == reg.key
        ]

    def _unregister(self, group: list[Nexus], initiated_by: Nexus) -> None:
        res = self.reservation
        held = res is not None and not res.type.all_registrants and res.holder in group
        for n in group:
            del self.registrations[n]
        if res is None:
            return
        if held:
            # SPC-4 5.13.11.2.3: unregistering the holder releases the reservation; other
            # registrants of a registrants-only reservation learn it by unit attention.
            self.reservation = None
            if res.type.registrants_only:
                self._ua((n for n in self.registrations if n != initiated_by), ASC_RESERVATIONS_RELEASED)
        elif res.type.all_registrants and not self.registrations:
            self.reservation = None  # the last holder of an all-registrants reservation left

    # RESERVE (SPC-4 5.13.9)
    def _reserve(self, nexus: Nexus, pr_type: PrType) -> None:
        res = self.reservation
        if res is not None:
            if not self.is_holder(nexus) or res.type != pr_type or res.scope != LU_SCOPE:
                raise ReservationConflict()
            return  # the holder asked again for what it has: GOOD, nothing changes
        self.reservation = PersistentReservation(pr_type, None if pr_type.all_registrants else nexus)
        self._changed()  # PRgeneration is not incremented by RESERVE

    # RELEASE (SPC-4 5.13.11.2)
    def _release(self, nexus: Nexus, pr_type: PrType) -> None:
        res = self.reservation
        if res is None or not self.is_holder(nexus):
            return  # GOOD, nothing to release
        if res.type != pr_type or res.scope != LU_SCOPE:
            raise ScsiError(ILLEGAL_REQUEST, *ASC_INVALID_RELEASE_OF_PR)
        self.reservation = None
        if res.type.registrants_only or res.type.all_registrants:
            self._ua((n for n in self.registrations if n != nexus), ASC_RESERVATIONS_RELEASED)
        self._changed()

    # CLEAR (SPC-4 5.13.11.3)
    def _clear(self, nexus: Nexus) -> None:
        others = [n for n in self.registrations if n != nexus]
        self.registrations.clear()
        self.reservation = None
        self._ua(others, ASC_RESERVATIONS_PREEMPTED)
        self._bump()

    # PREEMPT / PREEMPT AND ABORT (SPC-4 5.13.11.4)
    def _preempt(self, nexus: Nexus, sa_key: int, pr_type: PrType, abort: bool) -> None:
        res = self.reservation
        if res is not None and res.type.all_registrants and sa_key == 0:
            # Preempt an all-registrants reservation: every other registration goes, and the
            # preempting nexus gets a new reservation of the requested type.
            removed = [n for n in self.registrations if n != nexus]
            self._remove_preempted(removed)
            self.reservation = PersistentReservation(pr_type, None if pr_type.all_registrants else nexus)
        elif sa_key == 0:
            raise _invalid_param(8)
        elif res is not None and not res.type.all_registrants and sa_key == self.reservation_key():
            # Preempt the reservation: remove the holders of that key (but not ourselves),
            # take the reservation with the requested type.
            removed = [n for n, r in self.registrations.items() if r.key == sa_key and n != nexus]
            self._remove_preempted(removed)
            self.reservation = PersistentReservation(pr_type, None if pr_type.all_registrants else nexus)
            if res.type != pr_type:
                self._ua((n for n in self.registrations if n != nexus), ASC_RESERVATIONS_RELEASED)
        else:
            # Only registrations go; the reservation (if any) is untouched.
            matching = [n for n, r in self.registrations.items() if r.key == sa_key]
            if not matching:
                raise ReservationConflict()
            removed = [n for n in matching if n != nexus]
            self._remove_preempted(removed)
        self.last_preempted = removed
        self.last_abort = list(removed) if abort else []
        self._bump()

    def _remove_preempted(self, removed: list[Nexus]) -> None:
        for n in removed:
            del self.registrations[n]
        self._ua(removed, ASC_REGISTRATIONS_PREEMPTED)

    # REGISTER AND MOVE (SPC-4 5.13.8)
    def _register_and_move(self, nexus: Nexus, data: bytes) -> None:
        key = int.from_bytes(data[0:8], "big")
        sa_key = int.from_bytes(data[8:16], "big")
        unreg = bool(data[17] & 0x02)
        aptpl = bool(data[17] & 0x01)
        rel_port = int.from_bytes(data[18:20], "big")
        tid_len = int.from_bytes(data[20:24], "big")
        if _BASIC_PARAM_LEN + tid_len > len(data):
            raise _param_length_error()

        reg = self.registrations.get(nexus)
        if reg is None or reg.key != key:
            raise ReservationConflict()
        res = self.reservation
        if res is None or res.type.all_registrants or res.holder != nexus:
            raise ReservationConflict()
        if sa_key == 0:
            raise _invalid_param(8)
        if rel_port not in self.port_names:
            raise _invalid_param(18)
        try:
            initiator, used = decode_transport_id(data[24 : 24 + tid_len])
        except ValueError:
            raise _invalid_param(24) from None
        if used > tid_len:
            raise _invalid_param(20)
        dest = self._resolve_nexus(initiator, rel_port)
        if dest == nexus:
            raise _invalid_param(24)

        dest_reg = self.registrations.get(dest)
        if dest_reg is None:
            self.registrations[dest] = Registration(sa_key)
        else:
            dest_reg.key = sa_key
        self.reservation = PersistentReservation(res.type, dest, res.scope)
        if unreg:
            del self.registrations[nexus]
        self.aptpl = aptpl
        self._bump()

    def _resolve_nexus(self, initiator: str, port: int) -> Nexus:
        """The I_T nexus a TransportID names, reusing the spelling of a known registrant."""
        norm = _norm_port_name(initiator)
        _, isid = split_port_name(initiator)
        known = [n for n in self.registrations if n.port == port]
        exact = [n for n in known if _norm_port_name(n.initiator) == norm]
        if exact:
            return exact[0]
        if isid is None:  # format 00b names a device; accept it if one of its ports is registered
            by_name = [n for n in known if split_port_name(n.initiator)[0].lower() == norm]
            if len(by_name) == 1:
                return by_name[0]
        return Nexus(initiator, port)

    # ----------------------------------------------------------------- bookkeeping

    def _bump(self) -> None:
        self.generation = (self.generation + 1) & 0xFFFFFFFF
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """The persistent reservation state (never the SPC-2 reservation) as plain JSON data."""
        res = self.reservation
        return {
            "version": 1,
            "generation": self.generation,
            "aptpl": self.aptpl,
            "registrations": [
                {"initiator": n.initiator, "port": n.port, "key": f"{r.key:#018x}", "all_tg_pt": r.all_tg_pt}
                for n, r in self.registrations.items()
            ],
            "reservation": None
            if res is None
            else {
                "type": int(res.type),
                "scope": res.scope,
                "holder": None
                if res.holder is None
                else {"initiator": res.holder.initiator, "port": res.holder.port},
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        port_names: dict[int, str],
        on_change: Callable[[], None] | None = None,
        *,
        power_cycle: bool = True,
    ) -> Reservations:
        """Rebuild from to_dict() output.

        With power_cycle (the default: the controller is coming back from power loss),
        registrations and the reservation survive only if APTPL was active, and PRgeneration
        restarts at 0 (SPC-4 6.16.2).  power_cycle=False restores the state exactly.
        """
        self = cls(port_names, on_change)
        aptpl = bool(data.get("aptpl", False))
        self.aptpl = aptpl
        if power_cycle:
            self.generation = 0
            if not aptpl:
                return self
        else:
            self.generation = int(data.get("generation", 0)) & 0xFFFFFFFF
        for item in data.get("registrations", []):
            key = item["key"]
            key = int(key, 0) if isinstance(key, str) else int(key)
            n = Nexus(str(item["initiator"]), int(item["port"]))
            self.registrations[n] = Registration(key & _MASK64, bool(item.get("all_tg_pt", False)))
        res = data.get("reservation")
        if res is not None:
            holder_d = res.get("holder")
            holder = None if holder_d is None else Nexus(str(holder_d["initiator"]), int(holder_d["port"]))
            pr_type = PrType(int(res["type"]))
            if holder is None:
                consistent = pr_type.all_registrants and bool(self.registrations)
            else:
                consistent = not pr_type.all_registrants and holder in self.registrations
            if consistent:
                self.reservation = PersistentReservation(pr_type, holder, int(res.get("scope", LU_SCOPE)))
        return self


_TYPE_MASK_BITS: dict[PrType, int] = {
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: 1 << 15,
    PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 1 << 14,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 1 << 13,
    PrType.EXCLUSIVE_ACCESS: 1 << 11,
    PrType.WRITE_EXCLUSIVE: 1 << 9,
    PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 1 << 0,
}
