"""The fast path of a large RAID read: every piece from one member straight into one buffer.

Taken only when nothing needs repairing: every piece has a member that holds valid data for it
and whose drive passes the read checks (present, not failed, no media error in range). Then the
read is planned as one job per (member, contiguous range): a RAID 1 or 1+0 piece is split between
the mirrors that hold it (both spindles work, as a real controller's read balancing does), a
parity level's pieces come from their data members. The jobs run through `drive_io` (in parallel
across drives, into slices of one buffer: no per-piece bytes, no join). Anything else (a lost
member, a media error, a member that is not a drive) returns None and the volume's ordinary read
path runs, which knows how to reconstruct, retry the other copy and report lost blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import drive_io
from .api import DriveError

if TYPE_CHECKING:
    from .volume import RaidVolume

FAST_MIN = 64 * 1024  # bytes: smaller reads gain nothing from planning
SPLIT_MIN = 128 * 1024  # bytes: a mirrored piece at least this long is split between its copies
SPLIT_ALIGN = 64 * 1024  # the split falls on a multiple of this (whole track-sized reads)

Job = tuple[int, int, int, int]  # (member index, member byte offset, offset in the result, length)


def plan(vol: RaidVolume, off: int, length: int) -> list[Job] | None:
    """The jobs of a read of extent bytes [off, off+length), or None when a piece has no valid member."""
    jobs: list[Job] = []
    if vol._parity:
        for pc in vol.layout.pieces(off, length):
            m = pc.members[0]
            if not vol._readable(m, pc.member_offset, pc.length):
                return None
            jobs.append((m, pc.member_offset, pc.logical_offset - off, pc.length))
        return jobs
    for pc in vol._coalesced(off, length):
        holders = [m for m in pc.members if vol._readable(m, pc.member_offset, pc.length)]
        if not holders:
            return None
        ways = len(holders) if pc.length >= SPLIT_MIN else 1
        step = -(-pc.length // ways // SPLIT_ALIGN) * SPLIT_ALIGN or pc.length
        o = 0
        for m in holders[:ways]:
            if o >= pc.length:
                break
            n = min(step, pc.length - o)
            jobs.append((m, pc.member_offset + o, pc.logical_offset - off + o, n))
            o += n
    return jobs


def read(vol: RaidVolume, off: int, length: int) -> bytearray | None:
    """The bytes of [off, off+length), or None: take the ordinary path (nothing was counted).

    A bytearray nobody else holds, not copied into bytes (a megabyte copy per read): treat it as
    immutable, like every read's result."""
    if length < FAST_MIN:
        return None
    jobs = plan(vol, off, length)
    if jobs is None:
        return None
    out = bytearray(length)
    view = memoryview(out)
    io: list[drive_io.ReadJob] = []
    done: list[tuple[Any, int]] = []  # (drive, bytes) to count once all are read
    base = vol.base_offset
    for m, moff, dst, n in jobs:
        member = vol.members[m]
        prepare = getattr(member, "prepare_read", None)
        if prepare is None:  # not a drive (the RAID engine's tests): its own read, on this thread
            try:
                view[dst:dst + n] = member.read(base + moff, n)
            except DriveError:
                return None
            continue
        try:
            fd, pos = prepare(base + moff, n)
        except DriveError:
            return None
        io.append((fd, pos, view[dst:dst + n]))
        done.append((member, n))
    drive_io.read_all(io)
    for member, n in done:
        member.note_read(n)
    return out
