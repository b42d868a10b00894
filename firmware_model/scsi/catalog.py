"""The command table: one row per SCSI command, and the CDB layout of each (SPC-4, SBC-3).

A row says which unit method runs the command, its CDB fields (from which decoding, the
CDB check and the REPORT SUPPORTED OPERATION CODES usage mask all come), its reservation
class, whether unit attentions pass it by, and in which ALUA states a logical drive runs
it. Rows without a handler are commands the standards name that no unit here runs: they
are answered INVALID OPERATION CODE, and are listed for their reservation class.

To add a command: declare its layout here, add its row, write the handler on the unit.
"""

from __future__ import annotations

from firmware_model.scsi.cdb import Cdb, Field
from firmware_model.scsi.commands import (
    EVERY_STATE,
    Access,
    Command,
    CommandSet,
)
from firmware_model.scsi.constants import (
    MaintenanceIn,
    MaintenanceOut,
    Opcode,
    PrInAction,
    PrOutAction,
    ServiceActionIn12,
    ServiceActionIn16,
    VariableLength,
)

SPC, SBC, NONE = CommandSet.SPC, CommandSet.SBC, CommandSet.NONE
EXEMPT, PR_EXEMPT, READ, WRITE = Access.EXEMPT, Access.PR_EXEMPT, Access.READ, Access.WRITE
THIN = "thin"  # the unit's volume can deallocate blocks (UNMAP, WRITE SAME with UNMAP=1)
OBSOLETE = "obsolete"  # no unit has it: fields declared for their place only, always refused

# ------------------------------------------------------------------ SPC layouts


class Cdb6(Cdb, size=6):
    """TEST UNIT READY, RESERVE(6), RELEASE(6): nothing but the opcode."""


class NotRun(Cdb):
    """The layout of a command no unit runs: never checked, never reported."""


class RequestSense(Cdb, size=6):
    desc = Field(1, 0x01)
    alloc = Field(4)


class Inquiry(Cdb, size=6):
    evpd = Field(1, 0x01)
    page_code = Field(2)
    alloc = Field(3, 0xFFFF)


class ModeSelect6(Cdb, size=6):
    pf = Field(1, 0x10)
    sp = Field(1, 0x01)
    length = Field(4)


class ModeSelect10(Cdb, size=10):
    pf = Field(1, 0x10)
    sp = Field(1, 0x01)
    length = Field(7, 0xFFFF)


class ModeSense6(Cdb, size=6):
    dbd = Field(1, 0x08)
    pc = Field(2, 0xC0)
    page_code = Field(2, 0x3F)
    subpage = Field(3)
    alloc = Field(4)


class ModeSense10(Cdb, size=10):
    llbaa = Field(1, 0x10)
    dbd = Field(1, 0x08)
    pc = Field(2, 0xC0)
    page_code = Field(2, 0x3F)
    subpage = Field(3)
    alloc = Field(7, 0xFFFF)


class ReportLuns(Cdb, size=12):
    select = Field(2)
    alloc = Field(6, 0xFFFFFFFF)


class ServiceAction(Cdb):
    """The SERVICE ACTION field shared opcodes carry in byte 1."""

    sa = Field(1, 0x1F)


class ReportTargetPortGroups(ServiceAction, size=12):
    format = Field(1, 0xE0)
    alloc = Field(6, 0xFFFFFFFF)


class ReportSupportedOpcodes(ServiceAction, size=12):
    rctd = Field(2, 0x80)
    option = Field(2, 0x07)
    opcode = Field(3)
    service_action = Field(4, 0xFFFF)
    alloc = Field(6, 0xFFFFFFFF)


class PersistentReserveIn(ServiceAction, size=10):
    alloc = Field(7, 0xFFFF)


class PersistentReserveOut(ServiceAction, size=10):
    scope = Field(2, 0xF0)
    type = Field(2, 0x0F)
    length = Field(5, 0xFFFFFFFF)


class Reserve10(Cdb, size=10):
    """RESERVE(10)/RELEASE(10); third-party and long-id reservations are refused by the handler.
    RESERVE(6)/RELEASE(6) carry 3RDPTY and EXTENT at the same places of byte 1 (SPC-2)."""

    third_party = Field(1, 0x10)
    long_id = Field(1, 0x02)
    extent = Field(1, 0x01, feature=OBSOLETE)
    third_party_id = Field(3)
    length = Field(7, 0xFFFF)


# ------------------------------------------------------------------ SBC layouts


class Rw6(Cdb, size=6):
    lba = Field(1, 0x1FFFFF)
    length = Field(4)  # 0 means 256 blocks


class StartStopUnit(Cdb, size=6):
    immed = Field(1, 0x01)
    power_modifier = Field(3, 0x0F)
    power = Field(4, 0xF0)
    no_flush = Field(4, 0x04)
    loej = Field(4, 0x02)
    start = Field(4, 0x01)


class PreventAllow(Cdb, size=6):
    prevent = Field(4, 0x03)


class ReadCapacity10(Cdb, size=10):
    lba = Field(2, 0xFFFFFFFF)
    pmi = Field(8, 0x01)


class RwFlags(Cdb):
    """Byte 1 of the READ/WRITE family; RD/WRPROTECT are left out: no protection information."""

    dpo = Field(1, 0x10)
    fua = Field(1, 0x08)
    fua_nv = Field(1, 0x02)


class Block10(Cdb, size=10):
    lba = Field(2, 0xFFFFFFFF)
    group = Field(6, 0x1F)
    length = Field(7, 0xFFFF)


class Block12(Cdb, size=12):
    lba = Field(2, 0xFFFFFFFF)
    length = Field(6, 0xFFFFFFFF)
    group = Field(10, 0x1F)


class Block16(Cdb, size=16):
    lba = Field(2, 0xFFFFFFFFFFFFFFFF)
    length = Field(10, 0xFFFFFFFF)
    group = Field(14, 0x1F)


class WriteVerifyFlags(Cdb):
    dpo = Field(1, 0x10)
    bytchk = Field(1, 0x02)


class VerifyFlags(Cdb):
    dpo = Field(1, 0x10)
    bytchk = Field(1, 0x06)


class CacheFlags(Cdb):
    """PRE-FETCH and SYNCHRONIZE CACHE: IMMED only."""

    immed = Field(1, 0x02)


class WriteSameFlags(Cdb):
    unmap = Field(1, 0x08, feature=THIN)


class Rw10(RwFlags, Block10): ...


class Rw12(RwFlags, Block12): ...


class Rw16(RwFlags, Block16): ...


class WriteVerify10(WriteVerifyFlags, Block10): ...


class WriteVerify12(WriteVerifyFlags, Block12): ...


class WriteVerify16(WriteVerifyFlags, Block16): ...


class Verify10(VerifyFlags, Block10): ...


class Verify12(VerifyFlags, Block12): ...


class Verify16(VerifyFlags, Block16): ...


class Cache10(CacheFlags, Block10): ...


class Cache16(CacheFlags, Block16): ...


class WriteSame10(WriteSameFlags, Block10): ...


class WriteSame16(WriteSameFlags, Block16):
    ndob = Field(1, 0x01)


class CompareAndWrite(RwFlags, size=16):
    lba = Field(2, 0xFFFFFFFFFFFFFFFF)
    length = Field(13)
    group = Field(14, 0x1F)


class WriteAtomic16(Cdb, size=16):
    dpo = Field(1, 0x10)
    fua = Field(1, 0x08)
    lba = Field(2, 0xFFFFFFFFFFFFFFFF)
    length = Field(12, 0xFFFF)
    group = Field(14, 0x1F)


class ServiceActionIn16Cdb(ServiceAction, size=16):
    lba = Field(2, 0xFFFFFFFFFFFFFFFF)
    alloc = Field(10, 0xFFFFFFFF)


class ReadCapacity16(ServiceActionIn16Cdb):
    pmi = Field(14, 0x01)


class ReadDefectData10(Cdb, size=10):
    plist = Field(2, 0x10)
    glist = Field(2, 0x08)
    format = Field(2, 0x07)
    alloc = Field(7, 0xFFFF)


class ReadDefectData12(Cdb, size=12):
    plist = Field(1, 0x10)
    glist = Field(1, 0x08)
    format = Field(1, 0x07)
    alloc = Field(6, 0xFFFFFFFF)


class Unmap(Cdb, size=10):
    group = Field(6, 0x1F)
    length = Field(7, 0xFFFF)


# ------------------------------------------------------ reservation class rules


def prevent_allow_access(cdb: bytes) -> Access:
    """Allowing medium removal is harmless under any reservation; preventing it is a write."""
    at = PreventAllow.prevent.byte
    prevent = cdb[at] & PreventAllow.prevent.mask if len(cdb) > at else 0
    return EXEMPT if prevent == 0 else WRITE


def start_stop_access(cdb: bytes) -> Access:
    """SBC-3 4.17: START=1 with POWER CONDITION 0h is allowed; stopping the unit is a write."""
    at = StartStopUnit.start.byte  # START and POWER CONDITION share byte 4
    b4 = cdb[at] if len(cdb) > at else 0
    started = b4 & StartStopUnit.start.mask and not b4 & StartStopUnit.power.mask
    return PR_EXEMPT if started else WRITE


def _not_run(name: str, opcode: int, access: Access, sa: int | None = None) -> Command:
    return Command(name, opcode, NotRun, None, access, NONE, sa=sa)


# ------------------------------------------------------------------ the rows

Op = Opcode
MI = MaintenanceIn
SAI16 = ServiceActionIn16

COMMANDS: tuple[Command, ...] = (
    # SPC-4: every logical unit
    Command("TEST UNIT READY", Op.TEST_UNIT_READY, Cdb6, "test_unit_ready", PR_EXEMPT, SPC, media=True, timeout=5),
    Command("REQUEST SENSE", Op.REQUEST_SENSE, RequestSense, "request_sense", EXEMPT, SPC,
            ua_exempt=True, any_lun=True, alua=EVERY_STATE, timeout=5),
    Command("INQUIRY", Op.INQUIRY, Inquiry, "inquiry", EXEMPT, SPC,
            ua_exempt=True, any_lun=True, alua=EVERY_STATE, timeout=5),
    Command("MODE SELECT(6)", Op.MODE_SELECT_6, ModeSelect6, "mode_select", WRITE, SPC),
    Command("MODE SENSE(6)", Op.MODE_SENSE_6, ModeSense6, "mode_sense", READ, SPC, timeout=5),
    Command("MODE SELECT(10)", Op.MODE_SELECT_10, ModeSelect10, "mode_select", WRITE, SPC),
    Command("MODE SENSE(10)", Op.MODE_SENSE_10, ModeSense10, "mode_sense", READ, SPC, timeout=5),
    Command("REPORT LUNS", Op.REPORT_LUNS, ReportLuns, "report_luns", EXEMPT, SPC,
            ua_exempt=True, any_lun=True, alua=EVERY_STATE, timeout=5),
    Command("REPORT TARGET PORT GROUPS", Op.MAINTENANCE_IN, ReportTargetPortGroups, "report_target_port_groups",
            EXEMPT, SPC, sa=MI.REPORT_TARGET_PORT_GROUPS, alua=EVERY_STATE, timeout=5),
    Command("REPORT SUPPORTED OPERATION CODES", Op.MAINTENANCE_IN, ReportSupportedOpcodes, "report_supported_opcodes",
            READ, SPC, sa=MI.REPORT_SUPPORTED_OPERATION_CODES, alua=EVERY_STATE, timeout=5),
    # SBC-3: logical drives
    Command("READ(6)", Op.READ_6, Rw6, "read6", READ, SBC, media=True),
    Command("WRITE(6)", Op.WRITE_6, Rw6, "write6", WRITE, SBC, media=True),
    Command("READ(10)", Op.READ_10, Rw10, "read10", READ, SBC, media=True),
    Command("WRITE(10)", Op.WRITE_10, Rw10, "write10", WRITE, SBC, media=True),
    Command("READ(12)", Op.READ_12, Rw12, "read12", READ, SBC, media=True),
    Command("WRITE(12)", Op.WRITE_12, Rw12, "write12", WRITE, SBC, media=True),
    Command("READ(16)", Op.READ_16, Rw16, "read16", READ, SBC, media=True),
    Command("WRITE(16)", Op.WRITE_16, Rw16, "write16", WRITE, SBC, media=True),
    Command("WRITE AND VERIFY(10)", Op.WRITE_AND_VERIFY_10, WriteVerify10, "write_and_verify", WRITE, SBC, media=True),
    Command("WRITE AND VERIFY(12)", Op.WRITE_AND_VERIFY_12, WriteVerify12, "write_and_verify", WRITE, SBC, media=True),
    Command("WRITE AND VERIFY(16)", Op.WRITE_AND_VERIFY_16, WriteVerify16, "write_and_verify", WRITE, SBC, media=True),
    Command("VERIFY(10)", Op.VERIFY_10, Verify10, "verify", READ, SBC, media=True),
    Command("VERIFY(12)", Op.VERIFY_12, Verify12, "verify", READ, SBC, media=True),
    Command("VERIFY(16)", Op.VERIFY_16, Verify16, "verify", READ, SBC, media=True),
    Command("PRE-FETCH(10)", Op.PRE_FETCH_10, Cache10, "prefetch", READ, SBC, media=True),
    Command("PRE-FETCH(16)", Op.PRE_FETCH_16, Cache16, "prefetch", READ, SBC, media=True),
    Command("SYNCHRONIZE CACHE(10)", Op.SYNCHRONIZE_CACHE_10, Cache10, "synchronize_cache", WRITE, SBC, media=True),
    Command("SYNCHRONIZE CACHE(16)", Op.SYNCHRONIZE_CACHE_16, Cache16, "synchronize_cache", WRITE, SBC, media=True),
    Command("COMPARE AND WRITE", Op.COMPARE_AND_WRITE, CompareAndWrite, "compare_and_write", WRITE, SBC, media=True),
    Command("ORWRITE(16)", Op.ORWRITE_16, Rw16, "orwrite", WRITE, SBC, media=True),
    Command("WRITE ATOMIC(16)", Op.WRITE_ATOMIC_16, WriteAtomic16, "write_atomic16", WRITE, SBC, media=True),
    Command("WRITE SAME(10)", Op.WRITE_SAME_10, WriteSame10, "write_same", WRITE, SBC, media=True),
    Command("WRITE SAME(16)", Op.WRITE_SAME_16, WriteSame16, "write_same", WRITE, SBC, media=True),
    Command("UNMAP", Op.UNMAP, Unmap, "unmap", WRITE, SBC, media=True, feature=THIN),
    Command("READ CAPACITY(10)", Op.READ_CAPACITY_10, ReadCapacity10, "read_capacity10", PR_EXEMPT, SBC),
    Command("READ CAPACITY(16)", Op.SERVICE_ACTION_IN_16, ReadCapacity16, "read_capacity16", PR_EXEMPT, SBC,
            sa=SAI16.READ_CAPACITY_16),
    Command("GET LBA STATUS", Op.SERVICE_ACTION_IN_16, ServiceActionIn16Cdb, "get_lba_status", READ, SBC,
            sa=SAI16.GET_LBA_STATUS, media=True),
    Command("READ DEFECT DATA(10)", Op.READ_DEFECT_DATA_10, ReadDefectData10, "read_defect_data", READ, SBC),
    Command("READ DEFECT DATA(12)", Op.READ_DEFECT_DATA_12, ReadDefectData12, "read_defect_data", READ, SBC),
    Command("START STOP UNIT", Op.START_STOP_UNIT, StartStopUnit, "start_stop_unit", start_stop_access, SBC,
            timeout=60),
    Command("PREVENT ALLOW MEDIUM REMOVAL", Op.PREVENT_ALLOW_MEDIUM_REMOVAL, PreventAllow, "prevent_allow",
            prevent_allow_access, SBC),
    Command("RESERVE(6)", Op.RESERVE_6, Cdb6, "reserve", Access.RESERVE_RELEASE, SBC),
    Command("RELEASE(6)", Op.RELEASE_6, Cdb6, "release", Access.RESERVE_RELEASE, SBC),
    Command("RESERVE(10)", Op.RESERVE_10, Reserve10, "reserve", Access.RESERVE_RELEASE, SBC),
    Command("RELEASE(10)", Op.RELEASE_10, Reserve10, "release", Access.RESERVE_RELEASE, SBC),
    # Their service actions check registrations and keys themselves (SPC-4 table 64).
    Command("PERSISTENT RESERVE IN", Op.PERSISTENT_RESERVE_IN, PersistentReserveIn, "persistent_reserve_in",
            PR_EXEMPT, SBC, service_actions=tuple(PrInAction)),
    Command("PERSISTENT RESERVE OUT", Op.PERSISTENT_RESERVE_OUT, PersistentReserveOut, "persistent_reserve_out",
            PR_EXEMPT, SBC, service_actions=tuple(PrOutAction)),
    # Named for their reservation class only (SPC-4 table 63); no unit runs them.
    _not_run("FORMAT UNIT", Op.FORMAT_UNIT, WRITE),
    _not_run("RECEIVE DIAGNOSTIC RESULTS", Op.RECEIVE_DIAGNOSTIC_RESULTS, READ),
    _not_run("SEND DIAGNOSTIC", Op.SEND_DIAGNOSTIC, WRITE),
    _not_run("WRITE BUFFER", Op.WRITE_BUFFER, WRITE),
    _not_run("READ BUFFER(10)", Op.READ_BUFFER_10, READ),
    _not_run("READ BUFFER(16)", Op.READ_BUFFER_16, READ),
    _not_run("READ LONG(10)", Op.READ_LONG_10, READ),
    _not_run("LOG SELECT", Op.LOG_SELECT, WRITE),
    _not_run("LOG SENSE", Op.LOG_SENSE, EXEMPT),
    _not_run("ACCESS CONTROL IN", Op.ACCESS_CONTROL_IN, PR_EXEMPT),
    _not_run("ACCESS CONTROL OUT", Op.ACCESS_CONTROL_OUT, PR_EXEMPT),
    _not_run("READ ATTRIBUTE", Op.READ_ATTRIBUTE, READ),
    _not_run("SECURITY PROTOCOL IN", Op.SECURITY_PROTOCOL_IN, READ),
    _not_run("READ(32)", Op.VARIABLE_LENGTH, READ, VariableLength.READ_32),
    _not_run("VERIFY(32)", Op.VARIABLE_LENGTH, READ, VariableLength.VERIFY_32),
    _not_run("READ LONG(16)", Op.SERVICE_ACTION_IN_16, READ, SAI16.READ_LONG_16),
    _not_run("REPORT REFERRALS", Op.SERVICE_ACTION_IN_16, READ, SAI16.REPORT_REFERRALS),
    _not_run("READ MEDIA SERIAL NUMBER", Op.SERVICE_ACTION_IN_12, PR_EXEMPT,
             ServiceActionIn12.READ_MEDIA_SERIAL_NUMBER),
    _not_run("REPORT IDENTIFYING INFORMATION", Op.MAINTENANCE_IN, PR_EXEMPT, MI.REPORT_IDENTIFYING_INFORMATION),
    _not_run("REPORT ALIASES", Op.MAINTENANCE_IN, PR_EXEMPT, MI.REPORT_ALIASES),
    _not_run("REPORT PRIORITY", Op.MAINTENANCE_IN, PR_EXEMPT, MI.REPORT_PRIORITY),
    _not_run("REPORT TIMESTAMP", Op.MAINTENANCE_IN, PR_EXEMPT, MI.REPORT_TIMESTAMP),
    _not_run("REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", Op.MAINTENANCE_IN, READ,
             MI.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS),
    _not_run("MANAGEMENT PROTOCOL IN", Op.MAINTENANCE_IN, READ, MI.MANAGEMENT_PROTOCOL_IN),
    _not_run("SET TARGET PORT GROUPS", Op.MAINTENANCE_OUT, WRITE, MaintenanceOut.SET_TARGET_PORT_GROUPS),
)


def _index() -> tuple[dict[int, Command], dict[int, dict[int, Command]]]:
    by_opcode: dict[int, Command] = {}
    by_sa: dict[int, dict[int, Command]] = {}
    for row in COMMANDS:
        if row.sa is None:
            if row.opcode in by_opcode or row.opcode in by_sa:
                raise ValueError(f"two rows for opcode {row.opcode:#04x}")
            by_opcode[row.opcode] = row
        else:
            slot = by_sa.setdefault(row.opcode, {})
            if row.opcode in by_opcode or row.sa in slot:
                raise ValueError(f"two rows for opcode {row.opcode:#04x} service action {row.sa:#x}")
            slot[row.sa] = row
    return by_opcode, by_sa


_BY_OPCODE, _BY_SERVICE_ACTION = _index()


def row_for(cdb: bytes) -> Command | None:
    """The row of the command `cdb` carries, or None when the table has none."""
    op = cdb[0]
    row = _BY_OPCODE.get(op)
    if row is not None:
        return row
    slot = _BY_SERVICE_ACTION.get(op)
    if slot is None:
        return None
    if op == Opcode.VARIABLE_LENGTH:  # SPC-4 4.2.3: the service action is in bytes 8-9
        return slot.get(int.from_bytes(cdb[8:10], "big")) if len(cdb) >= 10 else None
    return slot.get(ServiceAction.sa(cdb) if len(cdb) > 1 else 0)
