"""The fast path of a large RAID read: every piece from one member straight into one buffer.

Taken only when nothing needs more than an XOR: every piece has a member that holds valid data
for it, or (degraded RAID 5, or ADG short of one chunk of the row) every other chunk of its row and
P do, and the drives pass the read checks (present, not failed, no media error in range). Then the
read is planned as one job per (member, contiguous range): a RAID 1 or 1+0 piece is split between
the mirrors that hold it (both spindles work, as a real controller's read balancing does), a
parity level's pieces come from their data members, and a missing piece is the XOR of its row's
other chunks and P. The jobs run through `drive_io` (in parallel across drives, into slices of one
buffer: no per-piece bytes, no join). Anything else (two chunks of a row missing, a media error)
returns None and the volume's ordinary read
path runs, which knows how to reconstruct, retry the other copy and report lost blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import drive_io
from . import parity
from .api import DriveError

if TYPE_CHECKING:
    from .volume import RaidVolume

FAST_MIN = 64 * 1024  # bytes: smaller reads gain nothing from planning
SPLIT_MIN = 128 * 1024  # bytes: a mirrored piece at least this long is split between its copies
SPLIT_ALIGN = 64 * 1024  # the split falls on a multiple of this (whole track-sized reads)

Job = tuple[int, int, int, int]  # (member index, member byte offset, offset in the result, length)
# A piece rebuilt from its row: (offset in the result, length, the jobs reading the row's other
# chunks and P into scratch, whose XOR is the piece). Degraded RAID 5 (or ADG missing one chunk).
Rebuild = tuple[int, int, list[Job]]


def plan(vol: RaidVolume, off: int, length: int) -> tuple[list[Job], list[Rebuild]] | None:
    """The jobs of a read of extent bytes [off, off+length), or None when a piece has no valid member."""
    jobs: list[Job] = []
    rebuilds: list[Rebuild] = []
    if vol._parity:
        for pc in vol.layout.pieces(off, length):
            m = pc.members[0]
            moff, n = pc.member_offset, pc.length
            if vol._readable(m, moff, n):
                jobs.append((m, moff, pc.logical_offset - off, n))
                continue
            roles = vol.layout.roles(pc.stripe)
            others = [h[0] for j, h in enumerate(roles.data) if j != pc.index]
            if roles.p is None or not all(vol._readable(o, moff, n) for o in (*others, roles.p)):
                return None  # more than one chunk of the row missing: the ordinary path solves with Q
            row = [(o, moff, k * n, n) for k, o in enumerate((*others, roles.p))]
            rebuilds.append((pc.logical_offset - off, n, row))
        return jobs, rebuilds
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
    return jobs, rebuilds


def read(vol: RaidVolume, off: int, length: int) -> bytearray | None:
    """The bytes of [off, off+length), or None: take the ordinary path (nothing was counted).

    A bytearray nobody else holds, not copied into bytes (a megabyte copy per read): treat it as
    immutable, like every read's result."""
    if length < FAST_MIN:
        return None
    planned = plan(vol, off, length)
    if planned is None:
        return None
    jobs, rebuilds = planned
    out = bytearray(length)
    io: list[drive_io.ReadJob] = []
    done: list[tuple[Any, int]] = []  # (drive, bytes) to count once all are read
    scratch = [(dst, n, memoryview(bytearray(len(row) * n))) for dst, n, row in rebuilds]
    targets = [(memoryview(out), jobs)] + [(buf, row) for (_d, _n, buf), (_d2, _n2, row) in zip(scratch, rebuilds,
                                                                                               strict=True)]
    for view, group in targets:
        for m, moff, dst, n in group:
            if not _add(vol, m, moff, view[dst:dst + n], io, done):
                return None
    drive_io.read_all(io)
    for member, n in done:
        member.note_read(n)
    for dst, n, buf in scratch:  # the missing chunk = XOR of the row's other chunks and P
        out[dst:dst + n] = parity.xor_blocks([buf[k:k + n] for k in range(0, len(buf), n)])
    return out


def _add(vol: RaidVolume, m: int, moff: int, dest: memoryview, io: list[drive_io.ReadJob],
         done: list[tuple[Any, int]]) -> bool:
    """Plan one member read into `dest`; False when its drive refuses it (take the ordinary path)."""
    member = vol.members[m]
    n = dest.nbytes
    prepare = getattr(member, "prepare_read", None)
    try:
        if prepare is None:  # not a drive (the RAID engine's tests): its own read, on this thread
            dest[:] = member.read(vol.base_offset + moff, n)
            return True
        fd, pos = prepare(vol.base_offset + moff, n)
    except DriveError:
        return False
    io.append((fd, pos, dest))
    done.append((member, n))
    return True
