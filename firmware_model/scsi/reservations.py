"""SCSI reservations of one logical unit: SPC-4 persistent reservations and SPC-2 RESERVE/RELEASE.

Cluster managers and fencing agents (fence_scsi, sg_persist, Windows failover clustering)
decide who may write a shared disk from these answers, so every rule follows the standard:

- which commands a non-holder may run under each persistent reservation type: each
  command's row in catalog.py declares its class (SPC-4 5.13.1 table 63, SBC-3 4.17),
  `conflict()` applies it;
- the PERSISTENT RESERVE OUT service actions (SPC-4 5.13.7 to 5.13.12) with their
  PRgeneration updates and unit attentions;
- SPC-2 RESERVE/RELEASE (spc2.py) and PERSISTENT RESERVE IN data (pr_in.py).

Registrations belong to I_T nexuses (initiator port + relative target port).  Pure and
synchronous: the dispatcher calls `conflict()` before each command and the PR/RESERVE
handlers for those opcodes; the owner persists `to_dict()` when `on_change` fires.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from firmware_model.scsi import spc2
from firmware_model.scsi.catalog import PersistentReserveOut, row_for
from firmware_model.scsi.commands import Access, AccessRule
from firmware_model.scsi.constants import Asc, PrInAction, PrOutAction
from firmware_model.scsi.errors import (
    illegal,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
    parameter_list_length_error,
)
from firmware_model.scsi.pr_in import persistent_reserve_in_data
from firmware_model.scsi.pr_state import (
    LU_SCOPE,
    PersistentReservation,
    PrState,
    PrType,
    Registration,
    ReservationConflict,
)
from firmware_model.scsi.transport_id import (
    decode_transport_id,
    encode_transport_id,
    normalize_port_name,
    split_port_name,
)
from firmware_model.scsi.types import Nexus

__all__ = [
    "LU_SCOPE",
    "PersistentReservation",
    "PrInAction",
    "PrOutAction",
    "PrType",
    "Registration",
    "ReservationConflict",
    "Reservations",
    "decode_transport_id",
    "encode_transport_id",
    "split_port_name",
]

_BASIC_PARAM_LEN = 24
_MASK64 = (1 << 64) - 1
_PR_TYPES = frozenset(int(t) for t in PrType)
_PROUT_ACTIONS = frozenset(int(a) for a in PrOutAction)
_TYPED_ACTIONS = frozenset(
    (PrOutAction.RESERVE, PrOutAction.RELEASE, PrOutAction.PREEMPT, PrOutAction.PREEMPT_AND_ABORT)
)


# Bound once: an Enum member lookup costs ~0.15 us on Python 3.11, and conflict() runs
# before every command while anything is registered or reserved.
_EXEMPT, _PR_EXEMPT, _WRITE = Access.EXEMPT, Access.PR_EXEMPT, Access.WRITE
_RESERVE_RELEASE = Access.RESERVE_RELEASE


def access_of(cdb: bytes) -> Access | AccessRule:
    """The reservation class the row of `cdb` declares.

    A CDB with no row conflicts as a write-like command does, the fail-safe answer; the
    dispatcher never asks about one, it answers INVALID OPERATION CODE first.
    """
    row = row_for(cdb)
    return row.access if row is not None else _WRITE


class Reservations(PrState):
    """SPC-2 and SPC-4 persistent reservation state of one logical unit.

    Features: all six PR types at LU scope; REGISTER, REGISTER AND IGNORE EXISTING KEY,
    RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND ABORT, REGISTER AND MOVE; ALL_TG_PT;
    APTPL (via to_dict/from_dict); READ KEYS, READ RESERVATION, REPORT CAPABILITIES,
    READ FULL STATUS.  SPEC_I_PT is not supported (SIP_C=0): a REGISTER with it set gets
    INVALID FIELD IN PARAMETER LIST.  Element scope and SPC-2 third-party/extent
    reservations are not supported (INVALID FIELD IN CDB).
    """

    def __init__(self, port_names: dict[int, str], on_change: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.port_names = dict(port_names)
        self.on_change = on_change
        # Nexuses whose registrations the last PREEMPT / PREEMPT AND ABORT removed...
        self.last_preempted: list[Nexus] = []
        # ...and, for PREEMPT AND ABORT only, those whose tasks the transport must abort.
        self.last_abort: list[Nexus] = []
        self._uas: list[tuple[Nexus, int, int]] = []

    # ----------------------------------------------------------------- conflicts

    def conflict(self, nexus: Nexus, cdb: bytes, access: Access | AccessRule | None = None) -> bool:
        """True if the command must end with RESERVATION CONFLICT before it runs.

        `access` is the reservation class of the command's row (the dispatcher passes the
        one it looked up); without it the row is looked up from the CDB.
        """
        if self.spc2_holder is None and self.reservation is None and not self.registrations:
            return False  # nothing reserved or registered, so nothing conflicts: the common case
        if not cdb:
            return False
        if access is None:
            access = access_of(cdb)
        if access is _RESERVE_RELEASE:
            return spc2.reserve_release_conflict(self, nexus, cdb[0])
        holder = self.spc2_holder
        res = self.reservation
        if holder is None and res is None:
            return False
        if not isinstance(access, Access):
            access = access(cdb)
        if holder is not None and holder != nexus and access is not _EXEMPT:
            return True  # SPC-2 5.5.1: only a few commands pass another's reservation
        if res is None or access <= _PR_EXEMPT or self.is_holder(nexus):
            return False
        if (res.type.registrants_only or res.type.all_registrants) and nexus in self.registrations:
            return False
        # WE / EA treat every non-holder alike, registered or not.
        return access is _WRITE or res.type.exclusive_access

    # ----------------------------------------------------------------- SPC-2

    def reserve(self, nexus: Nexus, cdb: bytes) -> None:
        """RESERVE(6) / RESERVE(10): reserve the whole logical unit for this I_T nexus."""
        spc2.reserve(self, nexus, cdb)

    def release(self, nexus: Nexus, cdb: bytes) -> None:
        """RELEASE(6) / RELEASE(10): GOOD; releases only if this I_T nexus holds the reservation."""
        spc2.release(self, nexus, cdb)

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

    def _ua(self, nexuses: Iterable[Nexus], code: Asc) -> None:
        for n in nexuses:
            self._uas.append((n, code.asc, code.ascq))

    # ----------------------------------------------------------------- PR IN

    def persistent_reserve_in(self, nexus: Nexus, cdb: bytes, alloc_len: int) -> bytes:
        """PERSISTENT RESERVE IN (0x5E); the answer is cut to alloc_len."""
        self._check_spc2_holder(nexus)
        return persistent_reserve_in_data(self, cdb)[: max(alloc_len, 0)]

    # ----------------------------------------------------------------- PR OUT

    def persistent_reserve_out(self, nexus: Nexus, cdb: bytes, data: bytes) -> None:
        """PERSISTENT RESERVE OUT (0x5F). Raises ScsiError or ReservationConflict on failure.

        A change the owner could not keep (on_change raised OSError: the APTPL file) is undone, so
        the command that fails with it changes nothing."""
        before = (self.generation, self.aptpl, copy.deepcopy(self.registrations), copy.deepcopy(self.reservation),
                  list(self._uas))
        try:
            self._persistent_reserve_out(nexus, cdb, data)
        except OSError:
            self.generation, self.aptpl, self.registrations, self.reservation, self._uas = before
            self.last_preempted, self.last_abort = [], []
            raise

    def _persistent_reserve_out(self, nexus: Nexus, cdb: bytes, data: bytes) -> None:
        self.last_preempted = []
        self.last_abort = []
        layout = PersistentReserveOut
        if len(cdb) < layout.size:
            raise invalid_field_in_cdb(0, 7)
        sa = layout.sa(cdb)
        if sa not in _PROUT_ACTIONS:
            raise layout.sa.invalid()
        action = PrOutAction(sa)
        plen = layout.length(cdb)
        self._check_spc2_holder(nexus)
        data = bytes(data[:plen])
        if plen < _BASIC_PARAM_LEN or len(data) < plen:
            raise parameter_list_length_error()

        if action is PrOutAction.REGISTER_AND_MOVE:
            self._register_and_move(nexus, data)
            return

        spec_i_pt = bool(data[20] & 0x08)
        all_tg_pt = bool(data[20] & 0x04)
        aptpl = bool(data[20] & 0x01)
        registering = action in (PrOutAction.REGISTER, PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY)
        if registering and spec_i_pt:
            raise invalid_field_in_parameter_list(20, 3)  # SIP_C=0
        if plen != _BASIC_PARAM_LEN:
            raise parameter_list_length_error()

        pr_type: PrType | None = None
        if action in _TYPED_ACTIONS:
            if layout.scope(cdb) != LU_SCOPE:
                raise layout.scope.invalid()
            raw_type = layout.type(cdb)
            if raw_type not in _PR_TYPES:
                raise layout.type.invalid()
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
                self._ua((n for n in self.registrations if n != initiated_by), Asc.RESERVATIONS_RELEASED)
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
            raise illegal(Asc.INVALID_RELEASE_OF_PERSISTENT_RESERVATION)
        self.reservation = None
        if res.type.registrants_only or res.type.all_registrants:
            self._ua((n for n in self.registrations if n != nexus), Asc.RESERVATIONS_RELEASED)
        self._changed()

    # CLEAR (SPC-4 5.13.11.3)
    def _clear(self, nexus: Nexus) -> None:
        others = [n for n in self.registrations if n != nexus]
        self.registrations.clear()
        self.reservation = None
        self._ua(others, Asc.RESERVATIONS_PREEMPTED)
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
            raise invalid_field_in_parameter_list(8)
        elif res is not None and not res.type.all_registrants and sa_key == self.reservation_key():
            # Preempt the reservation: remove the holders of that key (but not ourselves),
            # take the reservation with the requested type.
            removed = [n for n, r in self.registrations.items() if r.key == sa_key and n != nexus]
            self._remove_preempted(removed)
            self.reservation = PersistentReservation(pr_type, None if pr_type.all_registrants else nexus)
            if res.type != pr_type:
                self._ua((n for n in self.registrations if n != nexus), Asc.RESERVATIONS_RELEASED)
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
        self._ua(removed, Asc.REGISTRATIONS_PREEMPTED)

    # REGISTER AND MOVE (SPC-4 5.13.8)
    def _register_and_move(self, nexus: Nexus, data: bytes) -> None:
        key = int.from_bytes(data[0:8], "big")
        sa_key = int.from_bytes(data[8:16], "big")
        unreg = bool(data[17] & 0x02)
        aptpl = bool(data[17] & 0x01)
        rel_port = int.from_bytes(data[18:20], "big")
        tid_len = int.from_bytes(data[20:24], "big")
        if _BASIC_PARAM_LEN + tid_len > len(data):
            raise parameter_list_length_error()

        reg = self.registrations.get(nexus)
        if reg is None or reg.key != key:
            raise ReservationConflict()
        res = self.reservation
        if res is None or res.type.all_registrants or res.holder != nexus:
            raise ReservationConflict()
        if sa_key == 0:
            raise invalid_field_in_parameter_list(8)
        if rel_port not in self.port_names:
            raise invalid_field_in_parameter_list(18)
        try:
            initiator, used = decode_transport_id(data[24 : 24 + tid_len])
        except ValueError:
            raise invalid_field_in_parameter_list(24) from None
        if used > tid_len:
            raise invalid_field_in_parameter_list(20)
        dest = self._resolve_nexus(initiator, rel_port)
        if dest == nexus:
            raise invalid_field_in_parameter_list(24)

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
        norm = normalize_port_name(initiator)
        _, isid = split_port_name(initiator)
        known = [n for n in self.registrations if n.port == port]
        exact = [n for n in known if normalize_port_name(n.initiator) == norm]
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
