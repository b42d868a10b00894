"""SPC-2 RESERVE/RELEASE (SPC-2 7.21/7.18) and how they meet persistent reservations.

Only whole-unit reservations by the issuing I_T nexus: third-party and extent
reservations are refused. With persistent reservations in use the SPC-4 5.13.3
exceptions apply (CRH=1): RESERVE/RELEASE are GOOD without effect for the holder and
for registrants under an RO/AR reservation, and conflict for everyone else.
"""

from __future__ import annotations

from firmware_model.scsi.catalog import Reserve10
from firmware_model.scsi.constants import Opcode
from firmware_model.scsi.errors import invalid_field_in_cdb
from firmware_model.scsi.pr_state import PrState, ReservationConflict
from firmware_model.scsi.types import Nexus

_RESERVE_OPS = frozenset((Opcode.RESERVE_6, Opcode.RESERVE_10))
_RELEASE_OPS = frozenset((Opcode.RELEASE_6, Opcode.RELEASE_10))
_LONG_ID_OPS = frozenset((Opcode.RESERVE_10, Opcode.RELEASE_10))


def reserve_release_conflict(state: PrState, nexus: Nexus, op: int) -> bool:
    """Whether RESERVE/RELEASE with opcode `op` from `nexus` ends in RESERVATION CONFLICT."""
    if state.registrations:
        # SPC-4 5.13.3: GOOD without effect for the PR holder and for registrants under
        # an RO/AR reservation; otherwise SPC-2 applies, and SPC-2 says any registration
        # makes every RESERVE and RELEASE conflict.
        return not state.shares_reservation(nexus)
    if op in _RESERVE_OPS:
        return state.spc2_holder is not None and state.spc2_holder != nexus
    return False  # RELEASE from a non-holder is GOOD and does nothing


def check_cdb(cdb: bytes) -> None:
    """Refuse what this unit does not do: third-party, long-id and extent reservations."""
    if not cdb or cdb[0] not in _RESERVE_OPS | _RELEASE_OPS:
        raise invalid_field_in_cdb(0, 7)
    if len(cdb) < 2:
        return
    if Reserve10.third_party(cdb):
        raise Reserve10.third_party.invalid()
    if cdb[0] in _LONG_ID_OPS and Reserve10.long_id(cdb):
        raise Reserve10.long_id.invalid()
    if Reserve10.extent(cdb):  # obsolete
        raise Reserve10.extent.invalid()


def reserve(state: PrState, nexus: Nexus, cdb: bytes) -> None:
    """RESERVE(6) / RESERVE(10): reserve the whole logical unit for this I_T nexus."""
    check_cdb(cdb)
    if reserve_release_conflict(state, nexus, cdb[0]):
        raise ReservationConflict()
    if state.registrations:
        return  # 5.13.3: GOOD, no reservation established, PR unchanged
    state.spc2_holder = nexus


def release(state: PrState, nexus: Nexus, cdb: bytes) -> None:
    """RELEASE(6) / RELEASE(10): GOOD; releases only if this I_T nexus holds the reservation."""
    check_cdb(cdb)
    if reserve_release_conflict(state, nexus, cdb[0]):
        raise ReservationConflict()
    if state.registrations:
        return
    if state.spc2_holder == nexus:
        state.spc2_holder = None
