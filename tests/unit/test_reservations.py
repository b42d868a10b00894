"""Pins the SPC-4 persistent reservation and SPC-2 RESERVE/RELEASE rules of one logical unit.

Scenarios mirror libiscsi's conformance tests (ProutRegister, ProutReserve.Access*/Ownership*,
ProutClear, ProutPreempt, PrinReadKeys, PrinServiceactionRange, PrinReportCapabilities,
Reserve6.*) plus the SPC-4 rules those tests do not reach.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_model.scsi.errors import ScsiError
from firmware_model.scsi.reservations import (
    PrType,
    ReservationConflict,
    Reservations,
    decode_transport_id,
    encode_transport_id,
)
from firmware_model.scsi.types import Nexus

PORTS = {1: "iqn.2004-07.com.hp:msa500.ctrl1,t,0x0001", 2: "iqn.2004-07.com.hp:msa500.ctrl1,t,0x0002"}
A = Nexus("iqn.1994-05.com.redhat:host1,i,0x23d000000001", 1)
A2 = Nexus("iqn.1994-05.com.redhat:host1,i,0x23d000000001", 2)  # same initiator port, other target port
B = Nexus("iqn.1994-05.com.redhat:host2,i,0x23d000000002", 1)
C = Nexus("iqn.1991-05.com.microsoft:node3,i,0x400001370000", 2)

WE, EA, WERO, EARO, WEAR, EAAR = (
    PrType.WRITE_EXCLUSIVE,
    PrType.EXCLUSIVE_ACCESS,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
    PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
    PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
)
ALL_TYPES = [WE, EA, WERO, EARO, WEAR, EAAR]

READ10 = bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 1, 0, 0, 1, 0])
TUR = bytes(6)
INQUIRY = bytes([0x12, 0, 0, 0, 36, 0])
MODE_SENSE6 = bytes([0x1A, 0, 0x3F, 0, 255, 0])
MODE_SELECT6 = bytes([0x15, 0x10, 0, 0, 12, 0])
REPORT_LUNS = bytes([0xA0] + [0] * 11)
REQUEST_SENSE = bytes([0x03, 0, 0, 0, 18, 0])
READ_CAPACITY10 = bytes(
    [0x25] + [0] * 9,
)
SYNC_CACHE10 = bytes([0x35] + [0] * 9)
RESERVE6 = bytes([0x16, 0, 0, 0, 0, 0])
RELEASE6 = bytes([0x17, 0, 0, 0, 0, 0])
RESERVE10 = bytes([0x56] + [0] * 9)
RELEASE10 = bytes([0x57] + [0] * 9)

REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_ABORT, REG_IGNORE, REG_MOVE = range(8)


def prout_cdb(sa: int, pr_type: int = 0, scope: int = 0, plen: int = 24) -> bytes:
    return bytes([0x5F, sa, (scope << 4) | pr_type, 0, 0, *plen.to_bytes(4, "big"), 0])


def params(
    key: int = 0, sa_key: int = 0, *, all_tg_pt: bool = False, aptpl: bool = False, spec_i_pt: bool = False
) -> bytes:
    flags = (0x08 if spec_i_pt else 0) | (0x04 if all_tg_pt else 0) | (0x01 if aptpl else 0)
    return key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(4) + bytes([flags, 0, 0, 0])


def prin_cdb(sa: int, alloc: int = 16384) -> bytes:
    return bytes([0x5E, sa, 0, 0, 0, 0, 0, *alloc.to_bytes(2, "big"), 0])


class LU:
    """Terse driver over Reservations, in the style of libiscsi's prin_/prout_ helpers."""

    def __init__(self) -> None:
        self.changes = 0
        self.r = Reservations(PORTS, on_change=self._changed)

    def _changed(self) -> None:
        self.changes += 1

    def out(self, n: Nexus, sa: int, key: int = 0, sa_key: int = 0, pr_type: int = 0, **kw: bool) -> None:
        self.r.persistent_reserve_out(n, prout_cdb(sa, pr_type), params(key, sa_key, **kw))

    def register(self, n: Nexus, key: int, **kw: bool) -> None:
        self.out(n, REG_IGNORE, sa_key=key, **kw)

    def unregister(self, n: Nexus, key: int) -> None:
        self.out(n, REGISTER, key=key, sa_key=0)

    def reserve(self, n: Nexus, key: int, t: PrType) -> None:
        self.out(n, RESERVE, key=key, pr_type=t)

    def release(self, n: Nexus, key: int, t: PrType) -> None:
        self.out(n, RELEASE, key=key, pr_type=t)

    def prin(self, n: Nexus, sa: int, alloc: int = 16384) -> bytes:
        return self.r.persistent_reserve_in(n, prin_cdb(sa, alloc), alloc)

    def keys(self, n: Nexus = A) -> tuple[int, list[int]]:
        d = self.prin(n, 0)
        length = int.from_bytes(d[4:8], "big")
        assert length == len(d) - 8
        return int.from_bytes(d[0:4], "big"), [
            int.from_bytes(d[8 + i : 16 + i], "big") for i in range(0, length, 8)
        ]

    def resv(self, n: Nexus = A) -> tuple[int, int] | None:
        """(reservation key, type) or None, as READ RESERVATION reports it."""
        d = self.prin(n, 1)
        if int.from_bytes(d[4:8], "big") == 0:
            assert len(d) == 8
            return None
        assert int.from_bytes(d[4:8], "big") == 16 and len(d) == 24
        assert d[21] >> 4 == 0  # LU_SCOPE
        return int.from_bytes(d[8:16], "big"), d[21] & 0x0F

    def can_read(self, n: Nexus) -> bool:
        return not self.r.conflict(n, READ10)

    def can_write(self, n: Nexus) -> bool:
        return not self.r.conflict(n, WRITE10)

    def uas(self) -> list[tuple[Nexus, int, int]]:
        return self.r.pending_unit_attentions()


@pytest.fixture
def lu() -> LU:
    return LU()


def sense_of(exc: pytest.ExceptionInfo[ScsiError]) -> tuple[int, int, int]:
    return exc.value.key, exc.value.asc, exc.value.ascq


# ------------------------------------------------------------------------ REGISTER


def test_register_and_ignore_then_read_keys_then_unregister(lu: LU) -> None:
    lu.register(A, 0x1234)
    gen, keys = lu.keys()
    assert keys == [0x1234] and gen == 1
    lu.unregister(A, 0x1234)
    gen, keys = lu.keys()
    assert keys == [] and gen == 2


def test_reregister_with_wrong_key_is_conflict(lu: LU) -> None:
    """ProutRegister.Simple: REGISTER with RESERVATION KEY 0 while registered must conflict."""
    lu.register(A, 0x1234)
    with pytest.raises(ReservationConflict):
        lu.out(A, REGISTER, key=0, sa_key=0x1235)
    assert lu.keys()[1] == [0x1234]


def test_register_unregistered_with_nonzero_key_is_conflict(lu: LU) -> None:
    with pytest.raises(ReservationConflict):
        lu.out(A, REGISTER, key=7, sa_key=8)
    assert lu.keys()[1] == []


def test_register_changes_key_and_bumps_generation(lu: LU) -> None:
    lu.out(A, REGISTER, key=0, sa_key=5)
    lu.out(A, REGISTER, key=5, sa_key=6)
    lu.out(A, REG_IGNORE, key=99, sa_key=7)  # existing key ignored
    gen, keys = lu.keys()
    assert keys == [7] and gen == 3


def test_unregistered_register_with_zero_sa_key_is_a_noop(lu: LU) -> None:
    lu.out(A, REGISTER, key=0, sa_key=0)
    assert lu.keys() == (0, [])
    assert lu.changes == 0


def test_same_key_from_two_nexuses_is_two_registrations(lu: LU) -> None:
    lu.register(A, 9)
    lu.register(B, 9)
    assert lu.keys()[1] == [9, 9]


def test_all_tg_pt_registers_on_every_target_port_and_unregisters_as_a_group(lu: LU) -> None:
    lu.register(A, 0xAA, all_tg_pt=True)
    assert lu.r.is_registered(A) and lu.r.is_registered(A2)
    assert lu.keys()[1] == [0xAA, 0xAA]
    lu.unregister(A2, 0xAA)
    assert lu.keys()[1] == []


def test_spec_i_pt_is_not_supported(lu: LU) -> None:
    with pytest.raises(ScsiError) as exc:
        lu.r.persistent_reserve_out(A, prout_cdb(REGISTER, plen=24), params(0, 5, spec_i_pt=True))
    assert sense_of(exc) == (0x05, 0x26, 0x00)
    assert exc.value.cd is False and exc.value.field_pointer == 20 and exc.value.bit_pointer == 3


@pytest.mark.parametrize("plen", [0, 8, 23, 25, 32])
def test_parameter_list_length_must_be_24(lu: LU, plen: int) -> None:
    data = params(0, 5) + bytes(8)
    with pytest.raises(ScsiError) as exc:
        lu.r.persistent_reserve_out(A, prout_cdb(REG_IGNORE, plen=plen), data[:plen])
    assert sense_of(exc) == (0x05, 0x1A, 0x00)


def test_short_data_out_is_parameter_list_length_error(lu: LU) -> None:
    with pytest.raises(ScsiError) as exc:
        lu.r.persistent_reserve_out(A, prout_cdb(REG_IGNORE), params(0, 5)[:20])
    assert sense_of(exc) == (0x05, 0x1A, 0x00)


@pytest.mark.parametrize("sa", [8, 9, 0x10, 0x1F])
def test_unknown_prout_service_action_is_invalid_field_in_cdb(lu: LU, sa: int) -> None:
    with pytest.raises(ScsiError) as exc:
        lu.r.persistent_reserve_out(A, prout_cdb(sa), params(0, 5))
    assert sense_of(exc) == (0x05, 0x24, 0x00)
    assert exc.value.field_pointer == 1 and exc.value.cd


@pytest.mark.parametrize("bad_type", [0, 2, 4, 9, 0xF])
def test_invalid_type_is_invalid_field_in_cdb(lu: LU, bad_type: int) -> None:
    lu.register(A, 1)
    with pytest.raises(ScsiError) as exc:
        lu.reserve(A, 1, bad_type)  # type: ignore[arg-type]
    assert sense_of(exc) == (0x05, 0x24, 0x00)
    assert (exc.value.field_pointer, exc.value.bit_pointer) == (2, 3)


def test_non_lu_scope_is_invalid_field_in_cdb(lu: LU) -> None:
    lu.register(A, 1)
    with pytest.raises(ScsiError) as exc:
        lu.r.persistent_reserve_out(A, prout_cdb(RESERVE, WE, scope=2), params(1))
    assert sense_of(exc) == (0x05, 0x24, 0x00)
    assert (exc.value.field_pointer, exc.value.bit_pointer) == (2, 7)


# ------------------------------------------------------------------------ RESERVE / RELEASE


@pytest.mark.parametrize("t", ALL_TYPES)
def test_reserve_read_reservation_release_each_type(lu: LU, t: PrType) -> None:
    """ProutReserve.Simple and PrinReportCapabilities: all registrants types report key 0."""
    lu.register(A, 0xBEEF)
    gen = lu.keys()[0]
    lu.reserve(A, 0xBEEF, t)
    assert lu.resv() == (0 if t in (WEAR, EAAR) else 0xBEEF, t)
    lu.release(A, 0xBEEF, t)
    assert lu.resv() is None
    assert lu.keys()[0] == gen  # RESERVE and RELEASE do not touch PRgeneration


def test_reserve_requires_registration_and_matching_key(lu: LU) -> None:
    with pytest.raises(ReservationConflict):
        lu.reserve(A, 0, WE)
    lu.register(A, 1)
    with pytest.raises(ReservationConflict):
        lu.reserve(A, 2, WE)
    assert lu.resv() is None


def test_reserve_again_by_holder_same_type_is_good_other_type_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, WE)
    lu.reserve(A, 1, WE)
    with pytest.raises(ReservationConflict):
        lu.reserve(A, 1, EA)
    assert lu.resv() == (1, WE)


def test_reserve_by_registered_non_holder_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, EA)
    with pytest.raises(ReservationConflict):
        lu.reserve(B, 2, EA)


def test_all_registrants_reserve_by_other_registrant_same_type_is_good(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WEAR)
    lu.reserve(B, 2, WEAR)
    with pytest.raises(ReservationConflict):
        lu.reserve(B, 2, EAAR)


def test_release_by_non_holder_is_good_and_keeps_reservation(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WE)
    lu.release(B, 2, EA)  # wrong type does not matter for a non-holder
    assert lu.resv() == (1, WE)


def test_release_by_holder_with_wrong_type_is_invalid_release(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, WE)
    with pytest.raises(ScsiError) as exc:
        lu.release(A, 1, EA)
    assert sense_of(exc) == (0x05, 0x26, 0x04)
    assert lu.resv() == (1, WE)


def test_release_with_wrong_key_or_unregistered_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, WE)
    with pytest.raises(ReservationConflict):
        lu.release(A, 2, WE)
    with pytest.raises(ReservationConflict):
        lu.release(B, 0, WE)


def test_release_without_reservation_is_good(lu: LU) -> None:
    lu.register(A, 1)
    lu.release(A, 1, WE)


@pytest.mark.parametrize("t", [WERO, EARO, WEAR, EAAR])
def test_release_of_registrants_type_gives_reservations_released_ua_to_other_registrants(
    lu: LU, t: PrType
) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.register(C, 3)
    lu.reserve(A, 1, t)
    lu.uas()
    lu.release(A, 1, t)
    assert sorted(lu.uas(), key=str) == sorted([(B, 0x2A, 0x04), (C, 0x2A, 0x04)], key=str)


@pytest.mark.parametrize("t", [WE, EA])
def test_release_of_we_ea_gives_no_ua(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    lu.release(A, 1, t)
    assert lu.uas() == []


# ------------------------------------------------------------------------ access (command table)

# (type, registered i2 can read, can write, unregistered i2 can read, can write): ProutReserve.Access*
ACCESS = [
    (EA, False, False, False, False),
    (WE, True, False, True, False),
    (EARO, True, True, False, False),
    (WERO, True, True, True, False),
    (EAAR, True, True, False, False),
    (WEAR, True, True, True, False),
]


@pytest.mark.parametrize(("t", "reg_r", "reg_w", "unreg_r", "unreg_w"), ACCESS)
def test_access_by_reservation_type(
    lu: LU, t: PrType, reg_r: bool, reg_w: bool, unreg_r: bool, unreg_w: bool
) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    assert lu.can_read(A) and lu.can_write(A)
    assert (lu.can_read(B), lu.can_write(B)) == (reg_r, reg_w)
    lu.unregister(B, 2)
    assert (lu.can_read(B), lu.can_write(B)) == (unreg_r, unreg_w)
    assert lu.can_read(A) and lu.can_write(A)
    lu.release(A, 1, t)
    assert lu.can_read(B) and lu.can_write(B)


def test_holder_on_another_target_port_is_a_different_nexus(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, EA)
    assert lu.r.conflict(A2, READ10)


ALWAYS_ALLOWED = [
    TUR,
    INQUIRY,
    REPORT_LUNS,
    REQUEST_SENSE,
    READ_CAPACITY10,
    bytes([0x9E, 0x10] + [0] * 14),  # READ CAPACITY(16)
    bytes([0x5E, 0] + [0] * 8),  # PERSISTENT RESERVE IN
    bytes([0x5F, 0] + [0] * 8),  # PERSISTENT RESERVE OUT (service actions check keys themselves)
    bytes([0x4D] + [0] * 9),  # LOG SENSE
    bytes([0xA3, 0x0A] + [0] * 10),  # REPORT TARGET PORT GROUPS
    bytes([0x1E, 0, 0, 0, 0, 0]),  # PREVENT ALLOW MEDIUM REMOVAL, prevent=0
    bytes([0x1B, 0, 0, 0, 0x01, 0]),  # START STOP UNIT start=1
]
READ_LIKE = [
    READ10,
    MODE_SENSE6,
    bytes([0x5A] + [0] * 9),  # MODE SENSE(10)
    bytes([0x3C] + [0] * 9),  # READ BUFFER
    bytes([0x1C] + [0] * 5),  # RECEIVE DIAGNOSTIC RESULTS
    bytes([0xA3, 0x0C] + [0] * 10),  # REPORT SUPPORTED OPERATION CODES
    bytes([0x2F] + [0] * 9),  # VERIFY(10)
    bytes([0x88] + [0] * 15),  # READ(16)
    bytes([0x9E, 0x12] + [0] * 14),  # GET LBA STATUS
    bytes([0x08, 0, 0, 0, 1, 0]),  # READ(6)
]
WRITE_LIKE = [
    WRITE10,
    MODE_SELECT6,
    SYNC_CACHE10,
    bytes([0x8A] + [0] * 15),  # WRITE(16)
    bytes([0x42] + [0] * 9),  # UNMAP
    bytes([0x93] + [0] * 15),  # WRITE SAME(16)
    bytes([0x89] + [0] * 15),  # COMPARE AND WRITE
    bytes([0x3B] + [0] * 9),  # WRITE BUFFER
    bytes([0x4C] + [0] * 9),  # LOG SELECT
    bytes([0x1D] + [0] * 5),  # SEND DIAGNOSTIC
    bytes([0x04] + [0] * 5),  # FORMAT UNIT
    bytes([0xA4, 0x0A] + [0] * 10),  # SET TARGET PORT GROUPS
    bytes([0x1E, 0, 0, 0, 1, 0]),  # PREVENT ALLOW MEDIUM REMOVAL, prevent=1
    bytes([0x1B, 0, 0, 0, 0x00, 0]),  # START STOP UNIT stop
    bytes([0xEE] + [0] * 9),  # unknown opcode: conflicts (safe default)
]


@pytest.mark.parametrize("t", ALL_TYPES)
def test_command_table_for_unregistered_non_holder(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, t)
    for cdb in ALWAYS_ALLOWED:
        assert not lu.r.conflict(B, cdb), cdb.hex()
    for cdb in READ_LIKE:
        assert lu.r.conflict(B, cdb) == t.exclusive_access, cdb.hex()
    for cdb in WRITE_LIKE:
        assert lu.r.conflict(B, cdb), cdb.hex()
    for cdb in ALWAYS_ALLOWED + READ_LIKE + WRITE_LIKE:
        assert not lu.r.conflict(A, cdb), cdb.hex()


@pytest.mark.parametrize("t", ALL_TYPES)
def test_command_table_for_registered_non_holder(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    open_to_registrants = t not in (WE, EA)
    for cdb in ALWAYS_ALLOWED:
        assert not lu.r.conflict(B, cdb)
    for cdb in READ_LIKE:
        assert lu.r.conflict(B, cdb) == (t == EA), cdb.hex()
    for cdb in WRITE_LIKE:
        assert lu.r.conflict(B, cdb) == (not open_to_registrants), cdb.hex()


def test_no_reservation_no_conflict_even_with_registrations(lu: LU) -> None:
    lu.register(A, 1)
    for cdb in READ_LIKE + WRITE_LIKE:
        assert not lu.r.conflict(B, cdb)


# ------------------------------------------------------------------------ ownership


@pytest.mark.parametrize("t", [EA, WE, EARO, WERO])
def test_unregistering_the_holder_releases_the_reservation(lu: LU, t: PrType) -> None:
    """ProutReserve.Ownership{EA,WE,EARO,WERO} (tgt fails these)."""
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    lu.uas()
    lu.unregister(A, 1)
    assert lu.resv() is None
    assert lu.can_write(B)
    expected = [(B, 0x2A, 0x04)] if t in (EARO, WERO) else []
    assert lu.uas() == expected
    lu.unregister(B, 2)
    assert lu.keys()[1] == []


@pytest.mark.parametrize("t", [EAAR, WEAR])
def test_all_registrants_reservation_survives_while_any_registrant_remains(lu: LU, t: PrType) -> None:
    """ProutReserve.Ownership{EAAR,WEAR}: the remaining registrant holds it and may release it."""
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    lu.unregister(A, 1)
    assert lu.resv() == (0, t)
    assert lu.r.is_holder(B) and not lu.r.is_holder(A)
    assert lu.can_write(B) and not lu.can_write(A)
    lu.release(B, 2, t)
    assert lu.resv() is None
    lu.unregister(B, 2)
    assert lu.keys()[1] == []


@pytest.mark.parametrize("t", [EAAR, WEAR])
def test_all_registrants_reservation_ends_with_last_registrant(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(B, 2, t)
    lu.unregister(A, 1)
    lu.unregister(B, 2)
    assert lu.resv() is None
    lu.register(C, 3)  # a newcomer must not inherit a stale reservation
    assert lu.resv() is None


def test_holder_key_change_changes_reservation_key(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, WE)
    lu.out(A, REGISTER, key=1, sa_key=0x55)
    assert lu.resv() == (0x55, WE)
    lu.release(A, 0x55, WE)


# ------------------------------------------------------------------------ CLEAR


def test_clear_removes_everything_bumps_generation_once_and_notifies_others(lu: LU) -> None:
    """ProutClear.Simple: the generation goes up by one for CLEAR, not for RESERVE."""
    lu.register(A, 1)
    lu.register(B, 2)
    gen = lu.keys()[0]
    lu.reserve(A, 1, EA)
    lu.out(A, CLEAR, key=1)
    assert lu.resv() is None
    assert lu.keys() == (gen + 1, [])
    assert lu.uas() == [(B, 0x2A, 0x03)]


def test_clear_by_registered_non_holder_is_allowed(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, EA)
    lu.out(B, CLEAR, key=2)
    assert lu.resv() is None and lu.keys()[1] == []
    assert lu.uas() == [(A, 0x2A, 0x03)]


def test_clear_with_wrong_key_or_unregistered_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    with pytest.raises(ReservationConflict):
        lu.out(A, CLEAR, key=2)
    with pytest.raises(ReservationConflict):
        lu.out(B, CLEAR, key=1)
    assert lu.keys()[1] == [1]


# ------------------------------------------------------------------------ PREEMPT


def test_preempt_without_reservation_removes_registrations(lu: LU) -> None:
    """ProutPreempt.RemoveRegistration."""
    lu.register(A, 1)
    lu.register(B, 2)
    gen = lu.keys()[0]
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=EA)
    lu.uas()
    assert lu.keys() == (gen + 1, [2])
    assert lu.resv() is None
    assert lu.r.last_preempted == [A]
    assert lu.r.last_abort == []


def test_preempt_gives_registrations_preempted_ua(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=EA)
    assert lu.uas() == [(A, 0x2A, 0x05)]


def test_preempt_unknown_key_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    with pytest.raises(ReservationConflict):
        lu.out(A, PREEMPT, key=1, sa_key=77, pr_type=EA)


def test_preempt_zero_sa_key_without_all_registrants_is_invalid_param(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WE)
    with pytest.raises(ScsiError) as exc:
        lu.out(B, PREEMPT, key=2, sa_key=0, pr_type=WE)
    assert sense_of(exc) == (0x05, 0x26, 0x00) and exc.value.cd is False


def test_preempt_the_reservation_takes_it_over_with_new_type(lu: LU) -> None:
    """fence_scsi: the surviving node preempts the dead node's key and holds the reservation."""
    lu.register(A, 1)
    lu.register(B, 2)
    lu.register(C, 3)
    lu.reserve(A, 1, WERO)
    gen = lu.keys()[0]
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=EARO)
    assert lu.resv() == (2, EARO)
    assert lu.r.is_holder(B) and not lu.r.is_registered(A)
    assert lu.keys() == (gen + 1, [2, 3])
    # A lost its registration; C keeps its key but the reservation changed type.
    assert lu.uas() == [(A, 0x2A, 0x05), (C, 0x2A, 0x04)]
    assert not lu.can_write(A) and lu.can_write(C)


def test_preempt_the_reservation_same_type_gives_no_released_ua(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.register(C, 3)
    lu.reserve(A, 1, WERO)
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=WERO)
    assert lu.uas() == [(A, 0x2A, 0x05)]


def test_preempt_removes_every_nexus_with_that_key(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(A2, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WE)
    lu.out(B, PREEMPT_ABORT, key=2, sa_key=1, pr_type=WE)
    assert lu.keys()[1] == [2]
    assert lu.r.last_preempted == [A, A2]
    assert lu.r.last_abort == [A, A2]
    assert lu.resv() == (2, WE)


def test_preempt_non_holder_key_leaves_reservation(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.register(C, 3)
    lu.reserve(A, 1, WE)
    lu.out(B, PREEMPT, key=2, sa_key=3, pr_type=EA)
    assert lu.resv() == (1, WE)
    assert lu.keys()[1] == [1, 2]


def test_preempt_own_reservation_changes_type(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WE)
    lu.out(A, PREEMPT, key=1, sa_key=1, pr_type=EA)
    assert lu.resv() == (1, EA)
    assert lu.keys()[1] == [1, 2]
    assert lu.uas() == [(B, 0x2A, 0x04)]


@pytest.mark.parametrize("t", [WEAR, EAAR])
def test_preempt_all_registrants_with_zero_key_clears_others_and_reserves(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.register(C, 3)
    lu.reserve(A, 1, t)
    lu.out(B, PREEMPT, key=2, sa_key=0, pr_type=WE)
    assert lu.resv() == (2, WE)
    assert lu.keys()[1] == [2]
    assert sorted(lu.uas(), key=str) == sorted([(A, 0x2A, 0x05), (C, 0x2A, 0x05)], key=str)


def test_preempt_all_registrants_with_key_removes_only_that_registrant(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, WEAR)
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=WEAR)
    assert lu.resv() == (0, WEAR)
    assert lu.keys()[1] == [2]


def test_preempt_unregistered_or_wrong_key_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    with pytest.raises(ReservationConflict):
        lu.out(B, PREEMPT, key=0, sa_key=1, pr_type=WE)
    lu.register(B, 2)
    with pytest.raises(ReservationConflict):
        lu.out(B, PREEMPT, key=3, sa_key=1, pr_type=WE)
    assert lu.keys()[1] == [1, 2]


def test_last_preempted_is_reset_by_next_prout(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.out(B, PREEMPT_ABORT, key=2, sa_key=1, pr_type=WE)
    assert lu.r.last_abort == [A]
    lu.register(C, 3)
    assert lu.r.last_preempted == [] and lu.r.last_abort == []


# ------------------------------------------------------------------------ REGISTER AND MOVE


def move_params(key: int, sa_key: int, port: int, initiator: str, *, unreg: bool = False) -> bytes:
    tid = encode_transport_id(initiator)
    return (
        key.to_bytes(8, "big")
        + sa_key.to_bytes(8, "big")
        + bytes([0, 0x02 if unreg else 0])
        + port.to_bytes(2, "big")
        + len(tid).to_bytes(4, "big")
        + tid
    )


def test_register_and_move_hands_reservation_to_another_nexus(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, EA)
    data = move_params(1, 0x77, 1, B.initiator, unreg=True)
    gen = lu.keys()[0]
    lu.r.persistent_reserve_out(A, prout_cdb(REG_MOVE, plen=len(data)), data)
    assert lu.resv() == (0x77, EA)
    assert lu.r.is_holder(B) and not lu.r.is_registered(A)
    assert lu.keys(B) == (gen + 1, [0x77])


def test_register_and_move_by_non_holder_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, EA)
    data = move_params(2, 5, 1, C.initiator)
    with pytest.raises(ReservationConflict):
        lu.r.persistent_reserve_out(B, prout_cdb(REG_MOVE, plen=len(data)), data)


def test_register_and_move_to_self_or_bad_port_is_invalid_param(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, EA)
    for data in (move_params(1, 5, 1, A.initiator), move_params(1, 5, 9, B.initiator)):
        with pytest.raises(ScsiError) as exc:
            lu.r.persistent_reserve_out(A, prout_cdb(REG_MOVE, plen=len(data)), data)
        assert sense_of(exc) == (0x05, 0x26, 0x00)
    assert lu.resv() == (1, EA)


def test_register_and_move_of_all_registrants_reservation_conflicts(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, WEAR)
    data = move_params(1, 5, 1, B.initiator)
    with pytest.raises(ReservationConflict):
        lu.r.persistent_reserve_out(A, prout_cdb(REG_MOVE, plen=len(data)), data)


# ------------------------------------------------------------------------ PR IN


def test_prin_service_actions_0_to_3_work_and_4_to_1f_fail(lu: LU) -> None:
    """PrinServiceactionRange.Range (tgt fails it: no READ FULL STATUS)."""
    for sa in range(4):
        lu.prin(A, sa)
    for sa in range(4, 0x20):
        with pytest.raises(ScsiError) as exc:
            lu.prin(A, sa)
        assert sense_of(exc) == (0x05, 0x24, 0x00)
        assert (exc.value.field_pointer, exc.value.bit_pointer) == (1, 4)


def test_read_keys_truncated_keeps_additional_length(lu: LU) -> None:
    """PrinReadKeys.Truncate."""
    lu.register(A, 0x1122334455667788)
    d = lu.prin(A, 0, alloc=8)
    assert len(d) == 8
    assert int.from_bytes(d[4:8], "big") == 8


def test_report_capabilities(lu: LU) -> None:
    d = lu.prin(A, 2)
    assert len(d) == 8 and int.from_bytes(d[0:2], "big") == 8
    crh, sip_c, atp_c, ptpl_c = d[2] & 0x10, d[2] & 0x08, d[2] & 0x04, d[2] & 0x01
    assert crh and not sip_c and atp_c and ptpl_c
    assert d[3] & 0x80  # TMV
    assert (d[3] >> 4) & 0x07 <= 5  # ALLOW COMMANDS
    assert not d[3] & 0x01  # PTPL_A
    assert int.from_bytes(d[4:6], "big") == 0xEA01  # all six types, nothing else
    lu.register(A, 1, aptpl=True)
    assert lu.prin(A, 2)[3] & 0x01


def test_read_full_status_encoding(lu: LU) -> None:
    lu.register(A, 0x0A)
    lu.register(C, 0x0C)
    lu.reserve(C, 0x0C, WERO)
    d = lu.prin(A, 3)
    gen = int.from_bytes(d[0:4], "big")
    assert gen == 2
    assert int.from_bytes(d[4:8], "big") == len(d) - 8
    descs = []
    off = 8
    while off < len(d):
        add = int.from_bytes(d[off + 20 : off + 24], "big")
        descs.append((d[off : off + 24], d[off + 24 : off + 24 + add]))
        off += 24 + add
    assert off == len(d)
    (da, ta), (dc, tc) = descs
    assert int.from_bytes(da[0:8], "big") == 0x0A and da[12] == 0 and int.from_bytes(da[18:20], "big") == 1
    assert int.from_bytes(dc[0:8], "big") == 0x0C and dc[12] & 0x01 and dc[13] == WERO
    assert int.from_bytes(dc[18:20], "big") == 2
    # iSCSI TransportID, format 01b: "name,i,0xISID", null terminated, padded to 4.
    assert ta[0] == 0x45 and len(ta) % 4 == 0 and len(ta) >= 24
    assert int.from_bytes(ta[2:4], "big") == len(ta) - 4
    assert ta[4:].rstrip(b"\0").decode() == A.initiator
    assert decode_transport_id(tc)[0] == C.initiator


def test_read_full_status_all_registrants_every_registrant_is_holder(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(B, 2, EAAR)
    d = lu.prin(A, 3)
    first_len = int.from_bytes(d[8 + 20 : 8 + 24], "big")
    second = 8 + 24 + first_len
    assert d[8 + 12] & 1 and d[8 + 13] == EAAR
    assert d[second + 12] & 1 and d[second + 13] == EAAR


def test_transport_id_format_00b_for_name_without_isid() -> None:
    tid = encode_transport_id("iqn.2000-01.x:y")
    assert tid[0] == 0x05
    assert len(tid) == 24 and decode_transport_id(tid) == ("iqn.2000-01.x:y", 24)


@given(
    name=st.from_regex(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z.]{1,20}:[a-z0-9.-]{0,200}", fullmatch=True),
    isid=st.one_of(st.none(), st.integers(0, (1 << 48) - 1)),
)
def test_transport_id_round_trip(name: str, isid: int | None) -> None:
    port = name if isid is None else f"{name},i,0x{isid:012x}"
    tid = encode_transport_id(port)
    assert len(tid) % 4 == 0 and len(tid) >= 24
    assert tid[0] >> 6 == (0 if isid is None else 1)
    assert decode_transport_id(tid) == (port, len(tid))


@given(st.binary(max_size=64))
def test_decode_transport_id_never_crashes(data: bytes) -> None:
    try:
        decode_transport_id(data)
    except ValueError:
        pass


# ------------------------------------------------------------------------ SPC-2 RESERVE / RELEASE


def test_reserve6_two_initiators() -> None:
    """Reserve6.2Initiators (tgt fails it)."""
    r = Reservations(PORTS)
    assert not r.conflict(A, RESERVE6)
    r.reserve(A, RESERVE6)
    assert not r.conflict(A, RESERVE6)
    r.reserve(A, RESERVE6)  # holder may reserve again
    assert r.conflict(B, RESERVE6)
    with pytest.raises(ReservationConflict):
        r.reserve(B, RESERVE6)
    assert not r.conflict(B, RELEASE6)
    r.release(B, RELEASE6)  # GOOD, but nothing released
    assert not r.conflict(A, MODE_SENSE6)
    assert r.conflict(B, MODE_SENSE6)
    assert r.conflict(B, RESERVE6)
    r.release(A, RELEASE6)
    assert not r.conflict(B, RESERVE6)
    r.reserve(B, RESERVE6)
    r.release(B, RELEASE6)
    assert r.spc2_holder is None


def test_spc2_reservation_blocks_others_except_a_few_commands() -> None:
    r = Reservations(PORTS)
    r.reserve(A, RESERVE10)
    for cdb in (INQUIRY, REPORT_LUNS, REQUEST_SENSE, RELEASE6, RELEASE10, bytes([0x4D] + [0] * 9)):
        assert not r.conflict(B, cdb), cdb.hex()
    for cdb in (TUR, READ10, WRITE10, MODE_SENSE6, READ_CAPACITY10, bytes([0x5E, 0] + [0] * 8)):
        assert r.conflict(B, cdb), cdb.hex()
    for cdb in (TUR, READ10, WRITE10, MODE_SENSE6):
        assert not r.conflict(A, cdb)
    assert r.conflict(A2, WRITE10)  # same initiator through the other port is another nexus


def test_spc2_reservation_blocks_prout_from_others() -> None:
    r = Reservations(PORTS)
    r.reserve(A, RESERVE6)
    assert r.conflict(B, prout_cdb(REG_IGNORE))
    with pytest.raises(ReservationConflict):
        r.persistent_reserve_out(B, prout_cdb(REG_IGNORE), params(0, 5))
    with pytest.raises(ReservationConflict):
        r.persistent_reserve_in(B, prin_cdb(0), 100)


@pytest.mark.parametrize("drop", ["nexus_loss", "reset"])
def test_spc2_reservation_released_by_nexus_loss_and_lu_reset(drop: str) -> None:
    """Reserve6.ITNexusLoss / Logout / LUNReset / target resets."""
    r = Reservations(PORTS)
    r.reserve(A, RESERVE6)
    if drop == "nexus_loss":
        r.nexus_loss(B)  # someone else's loss changes nothing
        assert r.conflict(B, RESERVE6)
        r.nexus_loss(A)
    else:
        r.reset()
    assert not r.conflict(B, RESERVE6)
    r.reserve(B, RESERVE6)


def test_nexus_loss_and_reset_keep_persistent_reservations(lu: LU) -> None:
    lu.register(A, 1)
    lu.reserve(A, 1, EA)
    lu.r.nexus_loss(A)
    lu.r.reset()
    assert lu.resv() == (1, EA)
    assert lu.r.conflict(B, READ10)


@pytest.mark.parametrize(
    ("cdb", "fp", "bp"),
    [
        (bytes([0x16, 0x10, 0, 0, 0, 0]), 1, 4),  # RESERVE(6) 3RDPTY
        (bytes([0x16, 0x01, 0, 0, 0, 0]), 1, 0),  # RESERVE(6) extent
        (bytes([0x56, 0x10] + [0] * 8), 1, 4),  # RESERVE(10) 3RDPTY
        (bytes([0x56, 0x02] + [0] * 8), 1, 1),  # RESERVE(10) LONGID
        (bytes([0x57, 0x10] + [0] * 8), 1, 4),  # RELEASE(10) 3RDPTY
    ],
)
def test_third_party_and_extent_reservations_are_invalid(cdb: bytes, fp: int, bp: int) -> None:
    r = Reservations(PORTS)
    with pytest.raises(ScsiError) as exc:
        if cdb[0] in (0x16, 0x56):
            r.reserve(A, cdb)
        else:
            r.release(A, cdb)
    assert sense_of(exc) == (0x05, 0x24, 0x00)
    assert (exc.value.field_pointer, exc.value.bit_pointer) == (fp, bp)
    assert r.spc2_holder is None


def test_reserve6_conflicts_while_registrations_exist(lu: LU) -> None:
    """SPC-4 5.13.3 with SPC-2: any registration makes RESERVE/RELEASE from others conflict."""
    lu.register(A, 1)
    assert lu.r.conflict(B, RESERVE6) and lu.r.conflict(B, RELEASE6)
    assert lu.r.conflict(A, RESERVE6)  # registered, but no RO/AR reservation and not holder
    with pytest.raises(ReservationConflict):
        lu.r.reserve(B, RESERVE6)
    assert lu.r.spc2_holder is None


@pytest.mark.parametrize("t", ALL_TYPES)
def test_reserve6_from_pr_holder_or_ro_ar_registrant_is_good_noop(lu: LU, t: PrType) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.reserve(A, 1, t)
    assert not lu.r.conflict(A, RESERVE6)
    lu.r.reserve(A, RESERVE6)
    lu.r.release(A, RELEASE10)
    assert lu.r.spc2_holder is None and lu.resv() is not None
    registrant_ok = t not in (WE, EA)
    assert lu.r.conflict(B, RESERVE6) == (not registrant_ok)
    assert lu.r.conflict(C, RESERVE6)  # unregistered


def test_after_registrations_go_spc2_works_again(lu: LU) -> None:
    lu.register(A, 1)
    lu.unregister(A, 1)
    lu.r.reserve(B, RESERVE6)
    assert lu.r.spc2_holder == B


# ------------------------------------------------------------------------ UAs, on_change


def test_pending_unit_attentions_drains(lu: LU) -> None:
    lu.register(A, 1)
    lu.register(B, 2)
    lu.out(A, CLEAR, key=1)
    assert lu.uas() == [(B, 0x2A, 0x03)]
    assert lu.uas() == []


def test_ua_recorded_for_registrant_without_session(lu: LU) -> None:
    lu.register(A, 1)
    lu.r.nexus_loss(A)  # session gone, registration stays
    lu.register(B, 2)
    lu.out(B, PREEMPT, key=2, sa_key=1, pr_type=WE)
    assert lu.uas() == [(A, 0x2A, 0x05)]


def test_on_change_fires_on_pr_state_changes_only(lu: LU) -> None:
    lu.prin(A, 0)
    assert lu.changes == 0
    lu.register(A, 1)
    assert lu.changes == 1
    lu.reserve(A, 1, WE)
    assert lu.changes == 2
    lu.reserve(A, 1, WE)  # no-op
    assert lu.changes == 2
    with pytest.raises(ReservationConflict):
        lu.out(A, CLEAR, key=9)
    assert lu.changes == 2
    lu.release(A, 1, WE)
    assert lu.changes == 3


# ------------------------------------------------------------------------ APTPL persistence


def _populated(aptpl: bool) -> LU:
    lu = LU()
    lu.register(A, 0xFFFFFFFFFFFFFFFF, aptpl=aptpl)
    lu.register(B, 2, aptpl=aptpl, all_tg_pt=True)
    lu.reserve(A, 0xFFFFFFFFFFFFFFFF, WERO)
    lu.r.reserve(A, RESERVE6)  # would be a no-op anyway under PR; SPC-2 never persists
    return lu


def test_aptpl_state_survives_power_cycle_through_json() -> None:
    lu = _populated(aptpl=True)
    saved = json.loads(json.dumps(lu.r.to_dict()))
    r = Reservations.from_dict(saved, PORTS)
    assert r.aptpl
    assert r.generation == 0  # PRgeneration restarts at power on
    assert list(r.registrations) == [A, B, Nexus(B.initiator, 2)]
    assert r.registrations[A].key == 0xFFFFFFFFFFFFFFFF
    assert r.is_holder(A) and r.reservation is not None and r.reservation.type == WERO
    assert r.spc2_holder is None
    assert r.conflict(C, WRITE10) and not r.conflict(B, WRITE10)


def test_without_aptpl_power_cycle_forgets_registrations() -> None:
    lu = _populated(aptpl=False)
    r = Reservations.from_dict(lu.r.to_dict(), PORTS)
    assert r.registrations == {} and r.reservation is None and r.generation == 0


def test_exact_restore_round_trip() -> None:
    lu = _populated(aptpl=False)
    d = lu.r.to_dict()
    r = Reservations.from_dict(d, PORTS, power_cycle=False)
    assert r.to_dict() == d
    assert r.generation == lu.r.generation


def test_latest_aptpl_bit_governs(lu: LU) -> None:
    lu.register(A, 1, aptpl=True)
    lu.register(B, 2, aptpl=False)
    assert not lu.r.aptpl
    assert Reservations.from_dict(lu.r.to_dict(), PORTS).registrations == {}


def test_all_registrants_reservation_round_trip() -> None:
    lu = LU()
    lu.register(A, 1, aptpl=True)
    lu.reserve(A, 1, EAAR)
    r = Reservations.from_dict(lu.r.to_dict(), PORTS)
    assert r.reservation is not None and r.reservation.holder is None and r.is_holder(A)


# ------------------------------------------------------------------------ invariants


OPS = st.lists(
    st.tuples(
        st.sampled_from([A, A2, B, C]),
        st.sampled_from([REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_ABORT, REG_IGNORE]),
        st.sampled_from([0, 1, 2, 3]),
        st.sampled_from([0, 1, 2, 3]),
        st.sampled_from([int(t) for t in ALL_TYPES]),
        st.booleans(),
    ),
    max_size=40,
)


@given(OPS)
def test_state_invariants_hold_under_any_sequence(ops: list[tuple[Nexus, int, int, int, int, bool]]) -> None:
    r = Reservations(PORTS)
    for n, sa, key, sa_key, t, atp in ops:
        gen = r.generation
        before = r.to_dict()
        try:
            r.persistent_reserve_out(n, prout_cdb(sa, t), params(key, sa_key, all_tg_pt=atp))
        except (ReservationConflict, ScsiError):
            assert r.to_dict() == before  # a failed command changes nothing
        else:
            if sa in (RESERVE, RELEASE):
                assert r.generation == gen
        assert all(reg.key != 0 for reg in r.registrations.values())
        res = r.reservation
        if res is not None:
            assert r.registrations, "no reservation without registrants"
            if res.type.all_registrants:
                assert res.holder is None
            else:
                assert res.holder in r.registrations
        # A holder never conflicts; READ KEYS always lists one key per registration.
        for m in (A, A2, B, C):
            if r.is_holder(m):
                assert not r.conflict(m, WRITE10) and not r.conflict(m, READ10)
        assert len(r.persistent_reserve_in(A, prin_cdb(0), 65535)) == 8 + 8 * len(r.registrations)
        assert Reservations.from_dict(r.to_dict(), PORTS, power_cycle=False).to_dict() == r.to_dict()
