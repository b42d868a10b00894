"""Block commands of a logical drive: data path, errors, thin provisioning, mode pages, RSOC."""

from __future__ import annotations

import struct

import pytest

from firmware_model.scsi.sbc import BlockUnit
from firmware_model.scsi.target import ScsiTarget
from firmware_model.scsi.types import Status
from tests.unit.test_scsi_target import (
    BLOCKS,
    A,
    B,
    MemVolume,
    field_pointer,
    make_target,
    run,
    sense_of,
    target,  # noqa: F401  (fixture)
    thin_target,  # noqa: F401  (fixture)
)

BS = 512


def rw10(op: int, lba: int, n: int, flags: int = 0) -> list[int]:
    return [op, flags, *lba.to_bytes(4, "big"), 0, *n.to_bytes(2, "big"), 0]


def rw16(op: int, lba: int, n: int, flags: int = 0) -> list[int]:
    return [op, flags, *lba.to_bytes(8, "big"), *n.to_bytes(4, "big"), 0, 0]


def unit(t: ScsiTarget) -> BlockUnit:
    u = t.luns[1]
    assert isinstance(u, BlockUnit)
    return u


# ------------------------------------------------------------- READ / WRITE
@pytest.mark.parametrize("op_w,op_r,cdb", [(0x2A, 0x28, rw10), (0x8A, 0x88, rw16)])
def test_write_then_read_round_trip(target: ScsiTarget, op_w: int, op_r: int, cdb) -> None:  # noqa: F811
    data = bytes(range(256)) * 2 * 3
    assert run(target, cdb(op_w, 10, 3), data).status == Status.GOOD
    assert bytes(run(target, cdb(op_r, 10, 3)).data) == data


def test_read6_and_12(target: ScsiTarget) -> None:  # noqa: F811
    run(target, rw10(0x2A, 5, 1), b"\x5a" * BS)
    assert bytes(run(target, [0x08, 0, 0, 5, 1, 0]).data) == b"\x5a" * BS
    r12 = [0xA8, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0]
    assert bytes(run(target, r12).data) == b"\x5a" * BS


def test_out_of_range_and_zero_length(target: ScsiTarget) -> None:  # noqa: F811
    res = run(target, rw10(0x28, BLOCKS - 1, 2))
    assert sense_of(res) == (5, 0x21, 0)
    assert res.sense[0] == 0xF0 and struct.unpack(">I", res.sense[3:7])[0] == BLOCKS - 1
    assert run(target, rw10(0x28, 0, 0)).status == Status.GOOD
    assert sense_of(run(target, rw10(0x28, BLOCKS + 1, 0))) == (5, 0x21, 0)
    assert sense_of(run(target, rw16(0x88, 2**64 - 1, 1))) == (5, 0x21, 0)


def test_protect_fields_rejected_with_pointer(target: ScsiTarget) -> None:  # noqa: F811
    for prot in range(1, 8):
        res = run(target, rw10(0x28, 0, 1, prot << 5))
        assert sense_of(res) == (5, 0x24, 0)
        assert field_pointer(res) == (1, prot.bit_length() + 4)


def test_fua_flushes_and_dpo_fua_accepted(target: ScsiTarget) -> None:  # noqa: F811
    vol = unit(target).volume
    assert isinstance(vol, MemVolume)
    before = vol.flushes
    for flags in (0x10, 0x08, 0x18, 0x02, 0x1A):
        assert run(target, rw10(0x2A, 0, 1, flags), bytes(BS)).status == Status.GOOD
    assert vol.flushes > before


def test_short_data_out_writes_only_what_arrived(target: ScsiTarget) -> None:  # noqa: F811
    run(target, rw10(0x2A, 0, 3), b"\xff" * 3 * BS)
    assert run(target, rw10(0x2A, 0, 3), b"\x01" * (BS + 200)).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 0, 3)).data) == b"\x01" * (BS + 200) + b"\xff" * (2 * BS - 200)


def test_short_data_out_for_compare_and_write_is_refused(target: ScsiTarget) -> None:  # noqa: F811
    cdb = bytes([0x89, 0]) + (0).to_bytes(8, "big") + bytes([0, 0, 0, 1, 0, 0])
    res = run(target, cdb, bytes(BS))
    assert res.status == Status.CHECK_CONDITION
    assert res.sense[2] & 0x0F == 0x05 and res.sense[12:14] == b"\x0e\x03"


def test_long_data_out_writes_only_what_the_cdb_asks(target: ScsiTarget) -> None:  # noqa: F811
    run(target, rw10(0x2A, 0, 2), b"\xff" * 2 * BS)
    assert run(target, rw10(0x2A, 0, 1), b"\x02" * 2 * BS).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 0, 2)).data) == b"\x02" * BS + b"\xff" * BS


# ------------------------------------------------------ VERIFY / COMPARE AND WRITE
def test_verify_bytchk_and_miscompare_offset(target: ScsiTarget) -> None:  # noqa: F811
    data = b"A" * (4 * BS)
    run(target, rw10(0x2A, 0, 4), data)
    assert run(target, rw10(0x2F, 0, 4, 0x02), data).status == Status.GOOD
    bad = bytearray(data)
    bad[1000] ^= 0xFF
    res = run(target, rw10(0x2F, 0, 4, 0x02), bytes(bad))
    assert sense_of(res) == (0xE, 0x1D, 0) and struct.unpack(">I", res.sense[3:7])[0] == 1000
    assert run(target, rw10(0x2F, 0, 4, 0x00), bytes(bad)).status == Status.GOOD  # BYTCHK 0
    assert sense_of(run(target, rw10(0x2F, 0, 4, 0x04))) == (5, 0x24, 0)  # BYTCHK 10b


def test_write_and_verify(target: ScsiTarget) -> None:  # noqa: F811
    assert run(target, rw10(0x2E, 7, 1, 0x02), b"z" * BS).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 7, 1)).data) == b"z" * BS


def caw(lba: int, n: int, flags: int = 0) -> list[int]:
    return [0x89, flags, *lba.to_bytes(8, "big"), 0, 0, 0, n, 0, 0]


def test_compare_and_write(target: ScsiTarget) -> None:  # noqa: F811
    run(target, rw10(0x2A, 0, 2), b"A" * (2 * BS))
    assert run(target, caw(0, 2, 0x18), b"A" * (2 * BS) + b"B" * (2 * BS)).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 0, 2)).data) == b"B" * (2 * BS)
    verify = bytearray(b"B" * (2 * BS))
    verify[2 * BS - 27] = ord("C")
    res = run(target, caw(0, 2), bytes(verify) + b"D" * (2 * BS))
    assert sense_of(res) == (0xE, 0x1D, 0)
    assert struct.unpack(">I", res.sense[3:7])[0] == 2 * BS - 27
    assert bytes(run(target, rw10(0x28, 0, 2)).data) == b"B" * (2 * BS)  # untouched
    # NUMBER OF LOGICAL BLOCKS wrapped to 0 while data arrives: refused.
    assert sense_of(run(target, caw(0, 0), bytes(512 * BS))) == (5, 0x24, 0)


# ------------------------------------------------ WRITE SAME / UNMAP / LBA STATUS
def test_write_same_fills_and_zero_means_to_end(target: ScsiTarget) -> None:  # noqa: F811
    ws10 = [0x41, 0, 0, 0, 0, 8, 0, 0, 4, 0]
    assert run(target, ws10, b"\x77" * BS).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 8, 4)).data) == b"\x77" * (4 * BS)
    ws16 = rw16(0x93, BLOCKS - 3, 0)
    assert run(target, ws16, b"\x66" * BS).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, BLOCKS - 3, 3)).data) == b"\x66" * (3 * BS)
    anchor = rw16(0x93, 0, 1, 0x10)
    assert sense_of(run(target, anchor, bytes(BS))) == (5, 0x24, 0)


def test_write_same_ndob_writes_zeros(target: ScsiTarget) -> None:  # noqa: F811
    run(target, rw10(0x2A, 3, 1), b"\xff" * BS)
    assert run(target, rw16(0x93, 3, 1, 0x01)).status == Status.GOOD
    assert bytes(run(target, rw10(0x28, 3, 1)).data) == bytes(BS)


def unmap_list(*extents: tuple[int, int]) -> bytes:
    descs = b"".join(struct.pack(">QI4x", lba, n) for lba, n in extents)
    return struct.pack(">HH4x", 6 + len(descs), len(descs)) + descs


def test_unmap_and_get_lba_status(thin_target: ScsiTarget) -> None:  # noqa: F811
    t = thin_target
    run(t, rw10(0x2A, 0, 64), b"a" * (64 * BS))
    plist = unmap_list((0, 16))
    assert run(t, [0x42, 0, 0, 0, 0, 0, 0, 0, len(plist), 0], plist).status == Status.GOOD
    assert bytes(run(t, rw10(0x28, 0, 16)).data) == bytes(16 * BS)
    gls = [0x9E, 0x12, *(0).to_bytes(8, "big"), 0, 0, 0, 24, 0, 0]
    d = bytes(run(t, gls).data)
    lba, n, status = struct.unpack(">QIB", d[8:21])
    assert (lba, status) == (0, 1) and n >= 16
    gls = [0x9E, 0x12, *(16).to_bytes(8, "big"), 0, 0, 0, 24, 0, 0]
    lba, n, status = struct.unpack(">QIB", bytes(run(t, gls).data)[8:21])
    assert (lba, status) == (16, 0)
    beyond = [0x9E, 0x12, *BLOCKS.to_bytes(8, "big"), 0, 0, 0, 24, 0, 0]
    assert sense_of(run(t, beyond)) == (5, 0x21, 0)
    bad = unmap_list((BLOCKS - 1, 2))
    assert sense_of(run(t, [0x42, 0, 0, 0, 0, 0, 0, 0, len(bad), 0], bad)) == (5, 0x21, 0)
    assert sense_of(run(t, [0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], bytes(4))) == (5, 0x1A, 0)


def test_write_same_unmap(thin_target: ScsiTarget) -> None:  # noqa: F811
    t = thin_target
    run(t, rw16(0x8A, 100, 8), b"\xff" * (8 * BS))
    assert run(t, rw16(0x93, 100, 8, 0x08), bytes(BS)).status == Status.GOOD
    assert bytes(run(t, rw16(0x88, 100, 8)).data) == bytes(8 * BS)


def test_unmap_not_offered_without_thin_provisioning(target: ScsiTarget) -> None:  # noqa: F811
    plist = unmap_list((0, 1))
    assert sense_of(run(target, [0x42, 0, 0, 0, 0, 0, 0, 0, len(plist), 0], plist)) == (5, 0x20, 0)


# ----------------------------------------------------------- capacity, cache
def test_read_capacity(target: ScsiTarget) -> None:  # noqa: F811
    d = bytes(run(target, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).data)
    assert struct.unpack(">II", d) == (BLOCKS - 1, BS)
    assert sense_of(run(target, [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])) == (5, 0x24, 0)
    for alloc in range(0, 33):
        r = run(target, [0x9E, 0x10, *bytes(8), 0, 0, 0, alloc, 0, 0])
        assert r.status == Status.GOOD and len(r.data) == alloc


def test_read_capacity10_saturates() -> None:
    t = make_target(MemVolume(1, 512))
    unit(t).volume._n = 2**33  # type: ignore[attr-defined]
    d = bytes(run(t, [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).data)
    assert d[:4] == b"\xff" * 4


def test_prefetch_and_sync_cache(target: ScsiTarget) -> None:  # noqa: F811
    assert run(target, [0x34, 0, 0, 0, 0, 0, 0, 0, 8, 0]).status == Status.CONDITION_MET
    assert sense_of(run(target, [0x34, 0, 0, 0, 0x10, 0, 0, 0, 8, 0])) == (5, 0x21, 0)
    assert run(target, [0x35, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(target, rw16(0x91, 0, 8, 0x02)).status == Status.GOOD


# ------------------------------------------------------- START STOP / PREVENT
def test_start_stop_unit(target: ScsiTarget) -> None:  # noqa: F811
    assert run(target, [0x1B, 0, 0, 0, 0x00, 0]).status == Status.GOOD
    assert sense_of(run(target, [0, 0, 0, 0, 0, 0])) == (2, 0x04, 0x02)
    assert sense_of(run(target, rw10(0x28, 0, 1))) == (2, 0x04, 0x02)
    assert run(target, [0x12, 0, 0, 0, 36, 0]).status == Status.GOOD
    assert run(target, [0x1B, 0, 0, 0, 0x01, 0]).status == Status.GOOD
    assert run(target, [0, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert sense_of(run(target, [0x1B, 0, 0, 0, 0x40, 0])) == (5, 0x24, 0)


def test_prevent_blocks_eject_until_allowed_or_nexus_lost(target: ScsiTarget) -> None:  # noqa: F811
    assert run(target, [0x1E, 0, 0, 0, 1, 0]).status == Status.GOOD
    assert sense_of(run(target, [0x1B, 0, 0, 0, 0x02, 0], nexus=B)) == (5, 0x53, 0x02)
    target.nexus_loss(A)
    assert run(target, [0x1B, 0, 0, 0, 0x02, 0], nexus=B).status == Status.GOOD
    assert sense_of(run(target, [0x1E, 0, 0, 0, 2, 0], nexus=B)) == (5, 0x24, 0)


# ---------------------------------------------------------------- mode pages
def mode_sense6(t: ScsiTarget, page: int, pc: int = 0, dbd: bool = True, nexus=A) -> bytes:
    return bytes(run(t, [0x1A, 0x08 if dbd else 0, (pc << 6) | page, 0, 255, 0], nexus=nexus).data)


def test_mode_sense_all_pages_and_block_descriptor(target: ScsiTarget) -> None:  # noqa: F811
    d = mode_sense6(target, 0x3F, dbd=False)
    assert d[0] == len(d) - 1 and d[2] & 0x10 and d[3] == 8
    assert struct.unpack(">I", d[4:8])[0] == BLOCKS and int.from_bytes(d[9:12], "big") == BS
    codes = []
    pos = 12
    while pos < len(d):
        codes.append(d[pos] & 0x3F)
        pos += 2 + d[pos + 1]
    assert codes == [0x08, 0x0A, 0x1C]
    d10 = bytes(run(target, [0x5A, 0x10, 0x3F, 0, 0, 0, 0, 1, 0, 0]).data)
    assert d10[4] & 1 and struct.unpack(">H", d10[6:8])[0] == 16
    assert sense_of(run(target, [0x1A, 0, 0x05, 0, 255, 0])) == (5, 0x24, 0)
    assert len(run(target, [0x1A, 0, 0x3F, 0, 4, 0]).data) == 4


def test_mode_select_round_trip_and_ua_for_others(target: ScsiTarget) -> None:  # noqa: F811
    run(target, [0, 0, 0, 0, 0, 0], nexus=B)
    page = bytearray(mode_sense6(target, 0x08)[4:])
    page[0] &= 0x3F
    page[2] &= ~0x04  # WCE off
    assert run(target, [0x15, 0x11, 0, 0, 4 + len(page), 0], bytes(4) + page).status == Status.GOOD
    assert not mode_sense6(target, 0x08)[6] & 0x04
    assert not mode_sense6(target, 0x08, pc=3)[6] & 0x04  # SP saved it
    assert mode_sense6(target, 0x08, pc=2)[6] & 0x04  # default unchanged
    assert sense_of(run(target, [0, 0, 0, 0, 0, 0], nexus=B)) == (6, 0x2A, 0x01)
    assert run(target, [0, 0, 0, 0, 0, 0]).status == Status.GOOD  # not for the sender


def test_mode_select_rejects_unchangeable_bits(target: ScsiTarget) -> None:  # noqa: F811
    page = bytearray(mode_sense6(target, 0x0A)[4:])
    page[0] &= 0x3F
    page[2] |= 0x20  # TST is not changeable
    res = run(target, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes(4) + page)
    assert sense_of(res) == (5, 0x26, 0)
    assert struct.unpack(">H", res.sense[16:18])[0] == 4 + 2 and not res.sense[15] & 0x40
    res = run(target, [0x15, 0x00, 0, 0, 4 + len(page), 0], bytes(4) + page)
    assert sense_of(res) == (5, 0x24, 0)  # PF=0
    res = run(target, [0x15, 0x10, 0, 0, 3, 0], bytes(3))
    assert sense_of(res) == (5, 0x1A, 0)


def test_swp_write_protects(target: ScsiTarget) -> None:  # noqa: F811
    changeable = mode_sense6(target, 0x0A, pc=1)[4:]
    assert changeable[4] & 0x08
    page = bytearray(mode_sense6(target, 0x0A)[4:])
    page[0] &= 0x3F
    page[4] |= 0x08
    assert run(target, [0x15, 0x10, 0, 0, 4 + len(page), 0], bytes(4) + page).status == Status.GOOD
    assert mode_sense6(target, 0x3F)[2] & 0x80  # WP in the device-specific parameter
    assert sense_of(run(target, rw10(0x2A, 0, 1), bytes(BS))) == (7, 0x27, 0x02)
    assert run(target, rw10(0x28, 0, 1)).status == Status.GOOD


# ------------------------------------------------- REPORT SUPPORTED OPCODES
def rsoc(t: ScsiTarget, option: int, op: int = 0, sa: int = 0, rctd: bool = False):
    opts = (0x80 if rctd else 0) | option
    return run(t, [0xA3, 0x0C, opts, op, *sa.to_bytes(2, "big"), 0, 0, 0xFF, 0xFF, 0, 0])


def all_commands(t: ScsiTarget) -> list[tuple[int, int | None, int]]:
    d = bytes(rsoc(t, 0).data)
    out = []
    for pos in range(4, len(d), 8):
        op, _, sa, _, flags, length = struct.unpack(">BBHBBH", d[pos : pos + 8])
        out.append((op, sa if flags & 1 else None, length))
    return out


def test_rsoc_lists_and_reports_each_command(thin_target: ScsiTarget) -> None:  # noqa: F811
    cmds = all_commands(thin_target)
    ops = {op for op, _, _ in cmds}
    assert {0x28, 0x2A, 0x88, 0x8A, 0x89, 0x42, 0x93, 0x12, 0xA0} <= ops
    for op, sa, length in cmds:
        one = bytes((rsoc(thin_target, 2 if sa is not None else 1, op, sa or 0)).data)
        assert one[1] & 0x07 == 0x03 and struct.unpack(">H", one[2:4])[0] == length and one[4] == op
        wrong = rsoc(thin_target, 1 if sa is not None else 2, op, sa or 0)
        assert sense_of(wrong) == (5, 0x24, 0)
    d = bytes(rsoc(thin_target, 0, rctd=True).data)
    assert all(d[pos + 5] & 0x02 and d[pos + 8 : pos + 10] == b"\x00\x0a" for pos in range(4, len(d), 20))
    assert bytes(rsoc(thin_target, 1, 0xC9).data)[1] & 0x07 == 0x01  # not supported


def test_rsoc_usage_masks_agree_with_cdb_checks(thin_target: ScsiTarget) -> None:  # noqa: F811
    """Every bit outside the reported mask is rejected, pointing at that byte and bit."""
    for op, sa, length in all_commands(thin_target):
        one = bytes((rsoc(thin_target, 2 if sa is not None else 1, op, sa or 0)).data)
        mask = one[4 : 4 + length]
        for i in range(1, length):
            unused = ~mask[i] & 0xFF
            if sa is not None and i == 1:
                continue  # service action bits pick another command
            for bit in range(8):
                if unused >> bit & 1:
                    cdb = bytearray(length)
                    cdb[0] = op
                    if sa is not None:
                        cdb[1] = sa
                    cdb[i] |= 1 << bit
                    res = run(thin_target, bytes(cdb))
                    assert res.status == Status.CHECK_CONDITION, (hex(op), i, bit)
                    assert sense_of(res) == (5, 0x24, 0)
                    assert field_pointer(res) == (i, bit), (hex(op), i, bit)


# ------------------------------------------------------------- reservations
def test_spc2_reserve_conflicts_other_nexus(target: ScsiTarget) -> None:  # noqa: F811
    assert run(target, [0x16, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(target, rw10(0x28, 0, 1), nexus=B).status == Status.RESERVATION_CONFLICT
    assert run(target, rw10(0x28, 0, 1)).status == Status.GOOD
    assert run(target, [0x17, 0, 0, 0, 0, 0]).status == Status.GOOD
    assert run(target, rw10(0x28, 0, 1), nexus=B).status == Status.GOOD
