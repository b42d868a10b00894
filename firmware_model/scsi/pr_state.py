"""The reservation state of one logical unit, and the vocabulary it is written in (SPC-4 5.13).

Registrations belong to I_T nexuses (initiator port + relative target port). The PR IN
builders and the SPC-2 rules read this state; reservations.py changes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from firmware_model.scsi.types import Nexus

LU_SCOPE = 0x0


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


@dataclass
class Registration:
    key: int
    all_tg_pt: bool = False  # created by a REGISTER with ALL_TG_PT=1 (one of a group)


@dataclass
class PersistentReservation:
    type: PrType
    holder: Nexus | None  # None for the all-registrants types: every registrant holds it
    scope: int = LU_SCOPE


class PrState:
    """Registrations, the persistent reservation, PRgeneration, APTPL and the SPC-2 holder."""

    def __init__(self) -> None:
        self.generation = 0
        self.aptpl = False
        self.registrations: dict[Nexus, Registration] = {}
        self.reservation: PersistentReservation | None = None
        self.spc2_holder: Nexus | None = None

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

    def shares_reservation(self, nexus: Nexus) -> bool:
        """The holder, or a registrant of a registrants-only / all-registrants reservation."""
        if self.is_holder(nexus):
            return True
        res = self.reservation
        return (
            res is not None
            and (res.type.registrants_only or res.type.all_registrants)
            and nexus in self.registrations
        )
