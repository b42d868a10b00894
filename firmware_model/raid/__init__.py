"""The RAID engine: layouts, parity and the RaidVolume that serves a logical drive."""

from .api import DriveError, Member, MemberState, RaidLevel, UnrecoverableRead, VolumeFailed
from .layout import Layout, Piece, StripeRoles, capacity_bytes, data_members, fault_tolerance, validate
from .parity import gf_mul, pq_syndromes, q_syndrome, recover, xor_blocks
from .volume import RaidVolume, restripe, restripe_safe

__all__ = [
    "DriveError",
    "Layout",
    "Member",
    "MemberState",
    "Piece",
    "RaidLevel",
    "RaidVolume",
    "StripeRoles",
    "UnrecoverableRead",
    "VolumeFailed",
    "capacity_bytes",
    "data_members",
    "fault_tolerance",
    "gf_mul",
    "pq_syndromes",
    "q_syndrome",
    "recover",
    "restripe",
    "restripe_safe",
    "validate",
    "xor_blocks",
]
