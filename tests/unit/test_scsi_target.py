"""SCSI target: INQUIRY/VPD, REPORT LUNS, unit attentions, resets, sense formats, robustness."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model.clock import VirtualClock
from firmware_model.scsi.sbc import BlockUnit
from firmware_model.scsi.target import ScsiTarget, TargetIdentity
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from firmware_model.scsi.units import ControllerUnit
from firmware_model.volume import ExtentVolume

A = Nexus("iqn.1994-05.com.redhat:a,i,0x400001370000", 1)
B = Nexus("iqn.1994-05.com.redhat:b,i,0x400001370000", 2)
BLOCKS = 4096


class MemVolume:
    """A fully provisioned in-memory BlockVolume (no unmap/mapping)."""

    def __init__(self, num_blocks: int, block_size: int = 512) -> None:
        self.block_size = block_size
        self._n = num_blocks
        self.buf = bytearray(num_blocks * block_size)
        self.flushes = 0

    @property
    def num_blocks(self) -> int:
        return self._n

    def read(self, lba: int, count: int) -> bytes:
        bs = self.block_size
        return bytes(self.buf[lba * bs : (lba + count) * bs])

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        bs = self.block_size
        self.buf[lba * bs : lba * bs + len(data)] = data

    def flush(self) -> None:
        self.flushes += 1


def make_target(volume: object | None = None, power_on: bool = False) -> ScsiTarget:
    ident = TargetIdentity("iqn.2003-04.com.hp:msa500.p56350d9ip3012", "P56350D9IP3012")
    target = ScsiTarget(ident, VirtualClock())
    target.add_lun(0, ControllerUnit(ident.serial))
    target.add_lun(1, BlockUnit(volume or MemVolume(BLOCKS), "LD1", "P56350D9IP3012-01"))  # type: ignore[arg-type]
    if power_on:
        target.power_on()
    return target


@pytest.fixture
def target() -> ScsiTarget:
    return make_target()


@pytest.fixture
def thin_target(tmp_path: Path) -> ScsiTarget:
    fd = os.open(tmp_path / "bay1.img", os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, BLOCKS * 512)
    return make_target(ExtentVolume(fd, 0, BLOCKS))


def run(
    t: ScsiTarget, cdb: list[int] | bytes, data: bytes = b"", lun: int = 1, nexus: Nexus = A
) -> ScsiResult:
    return t.execute(ScsiRequest(nexus, lun, bytes(cdb), data, len(data)))


def sense_of(res: ScsiResult) -> tuple[int, int, int]:
    """(key, asc, ascq) from fixed or descriptor sense."""
    s = res.sense
    if s[0] & 0x7F == 0x72:
        return s[1] & 0xF, s[2], s[3]
    return s[2] & 0xF, s[12], s[13]


def field_pointer(res: ScsiResult) -> tuple[int, int | None]:
    s = res.sense
    assert s[0] & 0x7F == 0x70 and s[15] & 0x80
    return struct.unpack(">H", s[16:18])[0], (s[15] & 7) if s[15] & 0x08 else None


def inquiry(t: ScsiTarget, evpd: int = 0, page: int = 0, alloc: int = 255, lun: int = 1) -> ScsiResult:
    return run(t, [0x12, evpd, page, alloc >> 8, alloc & 0xFF, 0], lun=lun)


# ------------------------------------------------------------------ INQUIRY
def test_standard_inquiry_fields(target: ScsiTarget) -> None:
    res = inquiry(target)
    d = bytes(res.data)
    assert res.status == Status.GOOD
    assert d[0] == 0x00 and d[1] == 0x00 and d[2] == 0x06  # direct access, not removable, SPC-4
    assert d[3] == 0x12  # HiSup, format 2
    assert d[4] == len(d) - 5
    assert (d[5] >> 4) & 3 == 1  # TPGS implicit ALUA
    assert d[7] & 0x02  # CmdQue
    assert d[8:16] == b"COMPAQ  " and d[16:29] == b"MSA500 VOLUME"
    versions = {int.from_bytes(d[58 + 2 * i : 60 + 2 * i], "big") for i in range(8)}
    assert {0x0460, 0x04C0} <= versions


def test_inquiry_allocation_length_truncates(target: ScsiTarget) -> None:
    full = bytes(inquiry(target, alloc=512).data)
    for n in (0, 5, 36, 100):
        assert bytes(inquiry(target, alloc=n).data) == full[:n]


def test_inquiry_page_code_without_evpd_is_invalid(target: ScsiTarget) -> None:
    res = inquiry(target, evpd=0, page=0x80)
    assert sense_of(res) == (5, 0x24, 0)
    assert field_pointer(res) == (2, None)


def test_lun0_is_storage_array_controller(target: ScsiTarget) -> None:
    d = bytes(inquiry(target, lun=0).data)
    assert d[0] == 0x0C and d[16:22] == b"MSA500"


def test_missing_lun_inquiry_and_other_commands(target: ScsiTarget) -> None:
    assert bytes(inquiry(target, lun=9).data)[0] == 0x7F
    res = run(target, [0, 0, 0, 0, 0, 0], lun=9)
    assert sense_of(res) == (5, 0x25, 0)
    sense = run(target, [0x03, 0, 0, 0, 252, 0], lun=9)
    assert sense.status == Status.GOOD and bytes(sense.data)[12] == 0x25


def test_vpd_supported_pages_all_answer(target: ScsiTarget) -> None:
    d = bytes(inquiry(target, 1, 0x00).data)
    pages = list(d[4 : 4 + d[3]])
    assert pages == sorted(pages) and {0x00, 0x80, 0x83, 0x86, 0xB0, 0xB1} <= set(pages)
    assert 0xB2 not in pages  # fully provisioned volume
    for p in pages:
        r = inquiry(target, 1, p)
        assert r.status == Status.GOOD and bytes(r.data)[1] == p
    assert sense_of(inquiry(target, 1, 0xC7)) == (5, 0x24, 0)


def test_vpd_serial(target: ScsiTarget) -> None:
    d = bytes(inquiry(target, 1, 0x80).data)
    assert d[4:] == b"P56350D9IP3012-01"


def _designators(page: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    pos = 4
    while pos < len(page):
        length = page[pos + 3]
        out.append(((page[pos + 1] >> 4) & 3, page[pos + 1] & 0xF, page[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    return out


def test_vpd_device_identification_names_the_port_used(target: ScsiTarget) -> None:
    for nexus in (A, B):
        page = bytes(run(target, [0x12, 1, 0x83, 1, 0, 0], nexus=nexus).data)
        ds = _designators(page)
        assert (0, 3) in {(a, t) for a, t, _ in ds}  # NAA of the LU
        naa = next(v for a, t, v in ds if (a, t) == (0, 3))
        assert naa[0] >> 4 == 5
        assert (1, 4, nexus.port.to_bytes(4, "big")) in ds  # relative target port
        assert (1, 5, nexus.port.to_bytes(4, "big")) in ds  # target port group
        names = {(a, v.rstrip(b"\0")) for a, t, v in ds if t == 8}
        target_name = b"iqn.2003-04.com.hp:msa500.p56350d9ip3012"
        assert (1, target_name + b",t,0x%04x" % nexus.port) in names
        assert (2, target_name) in names


def test_block_limits_page(target: ScsiTarget) -> None:
    d = bytes(inquiry(target, 1, 0xB0).data)
    assert d[3] == 0x3C and len(d) == 64
    assert d[5] == 255  # maximum COMPARE AND WRITE length
    assert struct.unpack(">I", d[20:24])[0] == 0  # no UNMAP without thin provisioning


def test_thin_volume_reports_provisioning(thin_target: ScsiTarget) -> None:
    d = bytes(inquiry(thin_target, 1, 0xB2).data)
    assert d[5] & 0xE4 == 0xE4  # LBPU, LBPWS, LBPWS10, LBPRZ
    rc16 = bytes(run(thin_target, [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).data)
    assert rc16[14] & 0xC0 == 0xC0  # LBPME, LBPRZ


# -------------------------------------------------------------- REPORT LUNS
def test_report_luns_lists_all_luns_even_from_missing_lun(target: ScsiTarget) -> None:
    target.add_lun(300, BlockUnit(MemVolume(16), "big", "S300"))  # type: ignore[arg-type]
    for lun in (0, 1, 77):
        d = bytes(run(target, [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], lun=lun).data)
        assert struct.unpack(">I", d[:4])[0] == 24
        assert d[8:16] == bytes(8)
        assert d[16:18] == b"\x00\x01"
        assert d[24:26] == bytes((0x40 | 1, 300 & 0xFF))  # flat addressing


def test_report_luns_bad_select_report(target: ScsiTarget) -> None:
    res = run(target, [0xA0, 0, 0x05, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    assert sense_of(res) == (5, 0x24, 0) and field_pointer(res)[0] == 2


# ----------------------------------------------------------- unit attentions
TUR = [0, 0, 0, 0, 0, 0]


def test_power_on_unit_attention_once_per_lun(target: ScsiTarget) -> None:
    target.power_on()
    assert inquiry(target).status == Status.GOOD  # INQUIRY neither reports nor clears
    res = run(target, TUR)
    assert res.status == Status.CHECK_CONDITION and sense_of(res) == (6, 0x29, 0x00)
    assert run(target, TUR).status == Status.GOOD
    assert sense_of(run(target, TUR, lun=0)) == (6, 0x29, 0x00)  # LUN 0 has its own
    assert run(target, TUR, lun=0).status == Status.GOOD


def test_no_unit_attention_before_power_on(target: ScsiTarget) -> None:
    assert run(target, TUR).status == Status.GOOD


def test_request_sense_returns_and_clears_ua(target: ScsiTarget) -> None:
    target.power_on()
    res = run(target, [0x03, 0, 0, 0, 252, 0])
    d = bytes(res.data)
    assert res.status == Status.GOOD and d[2] == 6 and d[12:14] == b"\x29\x00"
    d = bytes(run(target, [0x03, 0, 0, 0, 252, 0]).data)
    assert d[2] == 0 and d[12] == 0
    desc = bytes(run(target, [0x03, 1, 0, 0, 252, 0]).data)
    assert desc[0] == 0x72


def test_add_lun_raises_reported_luns_changed_on_other_luns(target: ScsiTarget) -> None:
    run(target, TUR)
    run(target, TUR, nexus=B)
    target.add_lun(2, BlockUnit(MemVolume(16), "LD2", "S2"))  # type: ignore[arg-type]
    for nexus in (A, B):
        assert sense_of(run(target, TUR, lun=1, nexus=nexus)) == (6, 0x3F, 0x0E)
        assert sense_of(run(target, TUR, lun=0, nexus=nexus)) == (6, 0x3F, 0x0E)
    assert run(target, TUR, lun=2).status == Status.GOOD
    target.remove_lun(2)
    # REPORT LUNS clears the REPORTED LUNS DATA HAS CHANGED condition.
    run(target, [0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])
    assert run(target, TUR).status == Status.GOOD


def test_lun_reset_and_target_resets(target: ScsiTarget) -> None:
    run(target, TUR)
    run(target, TUR, nexus=B)
    target.lun_reset(1, A)
    for nexus in (A, B):
        assert sense_of(run(target, TUR, nexus=nexus)) == (6, 0x29, 0x03)
    assert run(target, TUR, lun=0).status == Status.GOOD
    target.target_reset(False, A)
    assert sense_of(run(target, TUR, lun=0)) == (6, 0x29, 0x03)
    target.target_reset(True, A)
    assert sense_of(run(target, TUR, lun=1, nexus=B)) == (6, 0x29, 0x01)


def test_reset_ua_reported_before_others(target: ScsiTarget) -> None:
    run(target, TUR)
    target.add_lun(2, BlockUnit(MemVolume(16), "LD2", "S2"))  # type: ignore[arg-type]
    target.lun_reset(1, A)
    assert sense_of(run(target, TUR)) == (6, 0x29, 0x03)
    assert sense_of(run(target, TUR)) == (6, 0x3F, 0x0E)
    assert run(target, TUR).status == Status.GOOD


def test_nexus_loss_reports_it_on_return(target: ScsiTarget) -> None:
    run(target, TUR)
    target.nexus_loss(A)
    assert sense_of(run(target, TUR)) == (6, 0x29, 0x07)


# ------------------------------------------------------------- sense format
def test_d_sense_switches_to_descriptor_format(target: ScsiTarget) -> None:
    bad_read = [0x88, 0, *b"\xff" * 8, 0, 0, 0, 1, 0, 0]
    fixed = run(target, bad_read)
    assert fixed.sense[0] == 0x70 and sense_of(fixed) == (5, 0x21, 0)
    page = bytes(run(target, [0x1A, 0x08, 0x0A, 0, 255, 0]).data)[4:]
    page = bytes([page[0] & 0x3F]) + page[1:2] + bytes([page[2] | 0x04]) + page[3:]
    assert run(target, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes(4) + page).status == Status.GOOD
    desc = run(target, bad_read)
    assert desc.sense[0] == 0x72 and sense_of(desc) == (5, 0x21, 0)
    # information descriptor carries the LBA
    assert desc.sense[8:12] == b"\x00\x0a\x80\x00" and desc.sense[12:20] == b"\xff" * 8


def test_unknown_opcode_and_service_action(target: ScsiTarget) -> None:
    assert sense_of(run(target, [0xC5, 0, 0, 0, 0, 0, 0, 0, 0, 0])) == (5, 0x20, 0)
    res = run(target, [0x9E, 0x1D, *bytes(14)])
    assert sense_of(res) == (5, 0x24, 0) and field_pointer(res) == (1, 4)


def test_vendor_opcode_registration(target: ScsiTarget) -> None:
    unit = target.luns[0]
    mask = bytes([0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0])
    unit.register(0xC0, lambda req: ScsiResult(Status.GOOD, b"hello"), mask)
    assert bytes(run(target, [0xC0, 1, 2, 3, 4, 0], lun=0).data) == b"hello"
    assert sense_of(run(target, [0xC0, 1, 2, 3, 4, 0x80], lun=0)) == (5, 0x24, 0)


def test_internal_error_becomes_hardware_error(target: ScsiTarget) -> None:
    def boom(req: ScsiRequest) -> ScsiResult:
        raise RuntimeError("bug")

    target.luns[0].register(0xC1, boom, bytes([0xC1, 0, 0, 0, 0, 0]))
    res = run(target, [0xC1, 0, 0, 0, 0, 0], lun=0)
    assert sense_of(res) == (4, 0x44, 0)


# --------------------------------------------------------------- robustness
_fuzz_target = make_target(power_on=True)


@settings(max_examples=3000, deadline=None)
@given(
    cdb=st.one_of(
        st.binary(min_size=0, max_size=32),
        st.tuples(st.integers(0, 255), st.binary(max_size=31)).map(lambda t: bytes([t[0]]) + t[1]),
    ),
    data=st.binary(max_size=2048),
    lun=st.sampled_from([0, 1, 5]),
    port=st.sampled_from([1, 2]),
)
def test_random_cdbs_never_raise(cdb: bytes, data: bytes, lun: int, port: int) -> None:
    res = _fuzz_target.execute(ScsiRequest(Nexus("iqn.fuzz", port), lun, cdb, data, len(data)))
    assert res.status in set(Status)
    if res.status == Status.CHECK_CONDITION:
        assert res.sense[0] & 0x7F in (0x70, 0x72)
        assert sense_of(res)[0] != 4, res.sense.hex()  # never an internal failure
