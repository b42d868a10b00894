"""Logical units: the SPC commands every unit answers, and the LUN 0 controller device.

A unit binds the rows of the command table (catalog.py) it implements into its own table
(opcode -> Entry); the same table dispatches, checks CDB bits and feeds REPORT SUPPORTED
OPERATION CODES. Vendor commands are added with `register`.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from typing import Protocol

from firmware_model.lun_address import encode_lun
from firmware_model.scsi.alua import rtpg_data
from firmware_model.scsi.catalog import (
    COMMANDS,
    Inquiry,
    ModeSelect6,
    ModeSelect10,
    ModeSense6,
    ModeSense10,
    ReportLuns,
    ReportSupportedOpcodes,
    ReportTargetPortGroups,
    RequestSense,
    ServiceAction,
)
from firmware_model.scsi.commands import (
    Access,
    AccessRule,
    Command,
    CommandSet,
    CommandSpec,
    Entry,
    Handler,
    bind,
    vendor_row,
)
from firmware_model.scsi.constants import (
    Asc,
    Opcode,
    PeripheralType,
    SenseKey,
    VersionDescriptor,
    VpdPage,
)
from firmware_model.scsi.errors import (
    ScsiError,
    illegal,
    invalid_field_in_cdb,
    invalid_opcode,
    not_ready,
    parameter_list_length_error,
)
from firmware_model.scsi.identity import TargetIdentity, naa5
from firmware_model.scsi.inquiry import (
    lu_designators,
    port_designators,
    standard_inquiry,
    vpd_page,
)
from firmware_model.scsi.mode import ModePages, control_page, informational_exceptions_page
from firmware_model.scsi.sense import build_sense, sense_for
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status

__all__ = ["ControllerUnit", "LogicalUnit", "NoUnit", "ReservationsLike", "TargetLike", "not_ready"]

GOOD = Status.GOOD
_unpack_be16 = struct.Struct(">H").unpack_from
# The most data-out one command may carry to a unit without blocks: its longest parameter
# list (MODE SELECT(10) takes up to 65535 bytes; the vendor commands far less).
MAX_PARAMETER_DATA = 0x10000


class TargetLike(Protocol):
    """What a logical unit asks of the target device it is attached to (ScsiTarget)."""

    identity: TargetIdentity

    def lun_list(self, nexus: Nexus | None = None) -> list[int]: ...
    def port_states(self) -> dict[int, int]: ...
    def alua_changed(self, port: int) -> bool: ...
    def implicit_transition_time(self) -> int: ...
    def gate_error(self, port: int) -> ScsiError | None: ...
    def pop_unit_attention(self, nexus: Nexus, lun: int) -> int | None: ...
    def clear_unit_attention(self, nexus: Nexus, lun: int, code: int) -> None: ...
    def establish_unit_attention(
        self, lun: int, code: int, *, exclude: Nexus | None = None, nexus: Nexus | None = None
    ) -> None: ...


class ReservationsLike(Protocol):
    """What a unit asks of its reservations object (firmware_model.scsi.reservations)."""

    def conflict(self, nexus: Nexus, cdb: bytes, access: Access | AccessRule | None = None) -> bool: ...
    def reserve(self, nexus: Nexus, cdb: bytes) -> None: ...
    def release(self, nexus: Nexus, cdb: bytes) -> None: ...
    def persistent_reserve_in(self, nexus: Nexus, cdb: bytes, alloc_len: int) -> bytes: ...
    def persistent_reserve_out(self, nexus: Nexus, cdb: bytes, data: bytes) -> None: ...
    def nexus_loss(self, nexus: Nexus) -> None: ...
    def reset(self) -> None: ...


class LogicalUnit:
    """Base of every unit: SPC commands, mode pages, per-unit state."""

    peripheral_type: int = PeripheralType.DIRECT_ACCESS
    present = True
    has_medium = True  # False: no command waits for a medium (the controller device)
    command_sets: frozenset[CommandSet] = frozenset((CommandSet.SPC,))
    versions: list[int] = [VersionDescriptor.SAM_5, VersionDescriptor.ISCSI, VersionDescriptor.SPC_4]

    def __init__(self, serial: str, product: str, wwn: int | None = None) -> None:
        self.serial = serial
        self.product = product
        self.wwn = wwn or naa5("lu:" + serial)
        self.target: TargetLike | None = None
        self.lun = -1
        self.reservations: ReservationsLike | None = None
        self.ready = True  # False after START STOP UNIT with START=0
        # Set by the owner while the medium is unusable (e.g. a failed logical drive): media
        # access commands, TEST UNIT READY included, answer with this sense instead.
        self.not_ready_reason: ScsiError | None = None
        self.mode = ModePages(self.mode_page_defaults())
        # opcode -> Entry, or opcode -> service action -> Entry. The target reads it directly
        # for the common case (one dict lookup per command); everything else goes via `lookup`.
        self.table: dict[int, Entry | dict[int, Entry]] = {}
        for row in COMMANDS:
            if self.implements(row):
                self._add(row)

    # ----------------------------------------------------------------- table
    @property
    def features(self) -> Collection[str]:
        """Optional parts of the command set this unit has (catalog rows and fields tagged so)."""
        return ()

    def implements(self, row: Command) -> bool:
        """Whether this unit runs the command of `row`."""
        return row.on in self.command_sets and (row.feature is None or row.feature in self.features)

    def mode_page_defaults(self) -> list[tuple[bytes, bytes]]:
        return [control_page(), informational_exceptions_page()]

    def _add(self, row: Command, handler: Handler | None = None) -> None:
        if handler is None:
            assert row.handler is not None
            handler = getattr(self, row.handler)
        for entry in bind(row, handler, self.features, self.has_medium):
            spec = entry.spec
            if spec.sa is None:
                self.table[spec.opcode] = entry
            else:
                slot = self.table.setdefault(spec.opcode, {})
                if not isinstance(slot, dict):
                    raise ValueError(f"opcode {spec.opcode:#x} has no service actions")
                slot[spec.sa] = entry

    def register(
        self,
        opcode: int,
        handler: Handler,
        cdb_usage: bytes | None = None,
        *,
        sa: int | None = None,
        media: bool = False,
        timeout: int = 30,
        access: Access = Access.WRITE,
    ) -> None:
        """Add (or replace) a command, e.g. a vendor opcode 0xC0-0xFF.

        `cdb_usage` defaults to a 10/12/16-byte CDB by opcode group with every bit but
        the control byte usable; give the exact mask to get strict checking. `access` is
        its reservation class: by default it conflicts like a write.
        """
        if cdb_usage is None:
            length = {0: 6, 1: 10, 2: 10, 4: 16, 5: 12}.get(opcode >> 5, 16)
            cdb_usage = bytes((opcode,)) + b"\xff" * (length - 2) + b"\x00"
        if cdb_usage[0] != opcode:
            raise ValueError("cdb_usage[0] must be the opcode")
        self._add(vendor_row(opcode, cdb_usage, sa, media, timeout, access), handler)

    def specs(self) -> list[CommandSpec]:
        """All supported commands in opcode/service action order."""
        out: list[CommandSpec] = []
        for op in sorted(self.table):
            slot = self.table[op]
            if isinstance(slot, dict):
                out.extend(slot[sa].spec for sa in sorted(slot))
            else:
                out.append(slot.spec)
        return out

    # -------------------------------------------------------------- dispatch
    def lookup(self, cdb: bytes) -> Entry | None:
        """The entry that runs `cdb` (non-empty), or None when this unit has none."""
        slot = self.table.get(cdb[0])
        if slot is None or type(slot) is Entry:
            return slot
        assert isinstance(slot, dict)
        return slot.get(ServiceAction.sa(cdb)) if len(cdb) > 1 else None

    def execute(self, req: ScsiRequest) -> ScsiResult:
        """Look the command up and run it (the target does the two steps itself)."""
        if not req.cdb:
            raise invalid_opcode()
        return self.dispatch(req, self.lookup(req.cdb))

    def dispatch(self, req: ScsiRequest, entry: Entry | None) -> ScsiResult:
        """Run `req` by `entry` (what `lookup` gave for its CDB): reservations, CDB bits, medium."""
        cdb = req.cdb
        if entry is None:
            raise self._no_entry(cdb)
        spec = entry.spec
        res = self.reservations
        if res is not None and res.conflict(req.nexus, cdb, entry.access):
            return ScsiResult(Status.RESERVATION_CONFLICT)
        if len(cdb) < spec.length or int.from_bytes(cdb[: spec.length], "big") & spec.reject:
            spec.check(cdb)
        if spec.media and (not self.ready or self.not_ready_reason is not None):
            raise self.not_ready_reason or not_ready()
        return entry.handler(req)

    def _no_entry(self, cdb: bytes) -> ScsiError:
        """The answer to a CDB without an entry: unknown opcode, or unknown service action."""
        if isinstance(self.table.get(cdb[0]), dict):
            return ServiceAction.sa.invalid() if len(cdb) > 1 else invalid_field_in_cdb()
        return invalid_opcode()

    # ---------------------------------------------------------- state events
    def attach(self, target: TargetLike, lun: int) -> None:
        self.target = target
        self.lun = lun

    def nexus_loss(self, nexus: Nexus) -> None:
        if self.reservations is not None:
            self.reservations.nexus_loss(nexus)

    def reset(self) -> None:
        """LOGICAL UNIT RESET: SPC-2 reservations go, persistent ones and saved mode stay."""
        if self.reservations is not None:
            self.reservations.reset()

    def power_on(self) -> None:
        self.mode.restore_saved()
        self.ready = True
        self.reset()

    @property
    def d_sense(self) -> bool:
        return self.mode.d_sense

    @property
    def max_data_out(self) -> int:
        """Bytes of data-out one command may carry; the transport refuses more before gathering it."""
        return MAX_PARAMETER_DATA if self.present else 0

    # ------------------------------------------------------------- INQUIRY
    def standard_inquiry(self) -> bytes:
        ident = self.target.identity if self.target else None
        return standard_inquiry(
            self.peripheral_type,
            ident.vendor if ident else "COMPAQ",
            self.product,
            ident.revision if ident else "2.10",
            self.versions,
            tpgs=1,
            serial=self.serial,
        )

    def vpd_pages(self) -> dict[int, object]:
        """Page code -> builder taking the request (so 0x83 can name the port used)."""
        return {
            VpdPage.SUPPORTED_PAGES: self._vpd_supported,
            VpdPage.UNIT_SERIAL_NUMBER: self._vpd_serial,
            VpdPage.DEVICE_IDENTIFICATION: self._vpd_device_id,
        }

    def _vpd_supported(self, req: ScsiRequest) -> bytes:
        return bytes(sorted(self.vpd_pages()))

    def _vpd_serial(self, req: ScsiRequest) -> bytes:
        return self.serial.encode("ascii", "replace")

    def _vpd_device_id(self, req: ScsiRequest) -> bytes:
        ident = self.target.identity if self.target else None
        vendor = ident.vendor if ident else "COMPAQ"
        body = lu_designators(self.wwn, vendor, self.product, self.serial)
        if ident is not None:
            port = req.nexus.port
            body += port_designators(ident.target_name, ident.port_name(port), port)
        return body

    def inquiry(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        alloc = Inquiry.alloc(cdb)
        page = Inquiry.page_code(cdb)
        if Inquiry.evpd(cdb):
            builder = self.vpd_pages().get(page)
            if builder is None:
                raise Inquiry.page_code.invalid()
            data = vpd_page(self.peripheral_byte(), page, builder(req))  # type: ignore[operator]
        else:
            if page:
                raise Inquiry.page_code.invalid()
            data = self.standard_inquiry()
        return ScsiResult(GOOD, data[:alloc])

    def peripheral_byte(self) -> int:
        return self.peripheral_type

    # ------------------------------------------------- TUR / REQUEST SENSE
    def test_unit_ready(self, req: ScsiRequest) -> ScsiResult:
        return ScsiResult(GOOD)

    def request_sense(self, req: ScsiRequest) -> ScsiResult:
        """Report (and clear) a pending unit attention, else the unit's state."""
        desc = bool(RequestSense.desc(req.cdb))
        ua = self.target.pop_unit_attention(req.nexus, self.lun) if self.target else None
        if ua is not None:
            data = sense_for(SenseKey.UNIT_ATTENTION, ua, desc)
        elif not self.present:
            data = sense_for(SenseKey.ILLEGAL_REQUEST, Asc.LOGICAL_UNIT_NOT_SUPPORTED, desc)
        elif self.lun and self.target and (gate := self.target.gate_error(req.nexus.port)):
            data = build_sense(gate, desc)
        elif self.not_ready_reason is not None:
            data = build_sense(self.not_ready_reason, desc)
        elif not self.ready:
            data = sense_for(SenseKey.NOT_READY, Asc.NOT_READY_INITIALIZING_COMMAND_REQUIRED, desc)
        else:
            data = sense_for(SenseKey.NO_SENSE, Asc.NO_ADDITIONAL_SENSE, desc)
        return ScsiResult(GOOD, data[: RequestSense.alloc(req.cdb)])

    # ---------------------------------------------------------- REPORT LUNS
    def report_luns(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        select = ReportLuns.select(cdb)
        if select not in (0x00, 0x01, 0x02):
            raise ReportLuns.select.invalid()
        alloc = ReportLuns.alloc(cdb)
        luns = self.target.lun_list(req.nexus) if self.target and select != 0x01 else []
        body = bytearray()
        for lun in luns:
            body += encode_lun(lun)
        if self.target:
            self.target.clear_unit_attention(req.nexus, self.lun, Asc.REPORTED_LUNS_DATA_HAS_CHANGED)
        data = len(body).to_bytes(4, "big") + bytes(4) + bytes(body)
        return ScsiResult(GOOD, data[:alloc])

    # ------------------------------------------------ REPORT TARGET PORT GROUPS
    def report_target_port_groups(self, req: ScsiRequest) -> ScsiResult:
        """One group per controller port (group id = port number), implicit ALUA only."""
        cdb = req.cdb
        fmt = ReportTargetPortGroups.format(cdb)
        if fmt not in (0, 1):
            raise ReportTargetPortGroups.format.invalid()
        alloc = ReportTargetPortGroups.alloc(cdb)
        target = self.target
        states = target.port_states() if target else {1: 0, 2: 0}
        implicit = {p for p in states if target and target.alua_changed(p)}
        data = rtpg_data(states, implicit, fmt == 1, target.implicit_transition_time() if target else 0)
        return ScsiResult(GOOD, data[:alloc])

    # ------------------------------------------ REPORT SUPPORTED OPERATION CODES
    def report_supported_opcodes(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        layout = ReportSupportedOpcodes
        rctd = bool(layout.rctd(cdb))
        option = layout.option(cdb)
        op = layout.opcode(cdb)
        sa = layout.service_action(cdb)
        alloc = layout.alloc(cdb)
        if option == 0:
            body = bytearray()
            for spec in self.specs():
                flags = (0x02 if rctd else 0) | (0x01 if spec.sa is not None else 0)
                body += bytes((spec.opcode, 0)) + (spec.sa or 0).to_bytes(2, "big")
                body += bytes((0, flags)) + spec.length.to_bytes(2, "big")
                if rctd:
                    body += _timeouts(spec)
            data = len(body).to_bytes(4, "big") + bytes(body)
            return ScsiResult(GOOD, data[:alloc])
        slot = self.table.get(op)
        found: CommandSpec | None = None
        if option == 1:
            if isinstance(slot, dict):
                raise layout.opcode.invalid()
            found = slot.spec if slot is not None else None
        elif option == 2:
            if slot is not None and not isinstance(slot, dict):
                raise layout.opcode.invalid()
            found = slot[sa].spec if isinstance(slot, dict) and sa in slot else None
        elif option == 3:
            if isinstance(slot, dict):
                found = slot[sa].spec if sa in slot else None
            elif slot is not None:
                found = slot.spec if sa == 0 else None
        else:
            raise layout.option.invalid()
        if found is None:
            data = bytes((0, 0x01, 0, 0))  # SUPPORT 001b: not supported
        else:
            data = bytes((0, (0x80 if rctd else 0) | 0x03)) + found.length.to_bytes(2, "big")
            data += found.usage
            if rctd:
                data += _timeouts(found)
        return ScsiResult(GOOD, data[:alloc])

    # ------------------------------------------------------ MODE SENSE/SELECT
    def device_specific_parameter(self) -> int:
        return 0

    def block_descriptor(self, long_lba: bool) -> bytes:
        return b""

    def mode_sense(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        ten = cdb[0] == Opcode.MODE_SENSE_10
        layout = ModeSense10 if ten else ModeSense6
        dbd = bool(layout.dbd(cdb))
        llbaa = ten and bool(ModeSense10.llbaa(cdb))
        pages = self.mode.sense(layout.page_code(cdb), layout.subpage(cdb), layout.pc(cdb))
        bd = b"" if dbd else self.block_descriptor(llbaa)
        dsp = self.device_specific_parameter()
        if ten:
            total = 8 + len(bd) + len(pages)
            hdr = struct.pack(">HBBBBH", total - 2, 0, dsp, 1 if len(bd) == 16 else 0, 0, len(bd))
        else:
            total = 4 + len(bd) + len(pages)
            if total > 256:
                raise invalid_field_in_cdb(ModeSense6.page_code.byte)
            hdr = bytes((total - 1, 0, dsp, len(bd)))
        alloc = layout.alloc(cdb)
        data = hdr + bd + pages
        return ScsiResult(GOOD, data[:alloc])

    def mode_select(self, req: ScsiRequest) -> ScsiResult:
        cdb = req.cdb
        ten = cdb[0] == Opcode.MODE_SELECT_10
        layout = ModeSelect10 if ten else ModeSelect6
        save = bool(layout.sp(cdb))
        length = layout.length(cdb)
        if length == 0:
            return ScsiResult(GOOD)
        if not layout.pf(cdb):
            raise layout.pf.invalid()
        data = bytes(req.data_out[:length])
        hlen = 8 if ten else 4
        if len(data) < hlen:
            raise parameter_list_length_error()
        if ten:
            bdl = _unpack_be16(data, 6)[0]
            long_lba = bool(data[4] & 0x01)
        else:
            bdl = data[3]
            long_lba = False
        if data[1]:
            raise illegal(Asc.INVALID_FIELD_IN_PARAMETER_LIST, field_pointer=1, cd=False)
        if hlen + bdl > len(data):
            raise parameter_list_length_error()
        self.check_block_descriptors(data[hlen : hlen + bdl], hlen, long_lba)
        if self.mode.select(data, hlen + bdl, save) and self.target:
            self.target.establish_unit_attention(
                self.lun, Asc.MODE_PARAMETERS_CHANGED, exclude=req.nexus
            )
        return ScsiResult(GOOD)

    def check_block_descriptors(self, bds: bytes, offset: int, long_lba: bool) -> None:
        """Units without blocks accept no block descriptors."""
        if bds:
            raise illegal(Asc.INVALID_FIELD_IN_PARAMETER_LIST, field_pointer=offset - 1, cd=False)


def _timeouts(spec: CommandSpec) -> bytes:
    """Command timeouts descriptor (SPC-4 6.35.4): length 0x0A, nominal and recommended."""
    return struct.pack(">HBBII", 0x0A, 0, 0, spec.timeout, spec.timeout * 2)


class ControllerUnit(LogicalUnit):
    """LUN 0: the array controller device (SCC-2 peripheral type 0x0C)."""

    peripheral_type = PeripheralType.STORAGE_ARRAY_CONTROLLER
    has_medium = False  # TEST UNIT READY on the controller device never depends on a medium
    versions = [
        VersionDescriptor.SAM_5,
        VersionDescriptor.ISCSI,
        VersionDescriptor.SPC_4,
        VersionDescriptor.SCC_2,
    ]

    def __init__(self, serial: str, product: str = "MSA500", wwn: int | None = None) -> None:
        super().__init__(serial, product, wwn)

    def attach(self, target: TargetLike, lun: int) -> None:
        super().attach(target, lun)
        if self.wwn == naa5("lu:" + self.serial):
            self.wwn = target.identity.wwn


class NoUnit(LogicalUnit):
    """A LUN with nothing behind it: qualifier 011b for INQUIRY, 25/00 for the rest."""

    peripheral_type = PeripheralType.UNKNOWN
    present = False
    versions: list[int] = [VersionDescriptor.SAM_5, VersionDescriptor.ISCSI, VersionDescriptor.SPC_4]

    def __init__(self) -> None:
        super().__init__("", "")

    def peripheral_byte(self) -> int:
        return 0x7F

    def standard_inquiry(self) -> bytes:
        data = bytearray(super().standard_inquiry())
        data[0] = 0x7F
        return bytes(data)

    def vpd_pages(self) -> dict[int, object]:
        return {VpdPage.SUPPORTED_PAGES: self._vpd_supported}

    def implements(self, row: Command) -> bool:
        return row.any_lun and super().implements(row)

    def dispatch(self, req: ScsiRequest, entry: Entry | None) -> ScsiResult:
        if entry is None:
            raise illegal(Asc.LOGICAL_UNIT_NOT_SUPPORTED)
        return super().dispatch(req, entry)
