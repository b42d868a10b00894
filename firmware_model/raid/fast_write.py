"""Large RAID writes on more than one core: plan every member write first, then one task per drive.

A write of FAST_MIN bytes or more is planned by the volume's own write path with the member writes
held back (the parity of each row computed, read-modify-write reads done, nothing written yet).
The write-intent log is then told the whole member byte range the write will touch, once, instead
of row by row: at start after a crash every row of that range gets its redundancy recomputed from
its data, which is right whichever rows landed (the write was never acknowledged). Then each
member's writes run in order on a drive-I/O thread (drive_io.run_groups), different members at the
same time, and the caller waits for all of them. A member that fails its write is reported and
dropped afterwards, on the caller's thread, as the one-by-one path does; the parity written with
the other members already counts its new data, so the row reads back right from the survivors.

Taken only on a healthy parity volume or a mirrored/plain one (a degraded parity volume journals
its member writes: `apply` runs those the same way, after the journal is written), and only while
no member has a media error: recomputing an untouched row whose data chunk cannot be read would
lose that chunk (its parity was right and could have rebuilt it), so there the rows go one by one
and a stop recomputes only the row it interrupted.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .. import drive_io
from .api import DriveError
from .parity import Buffer

if TYPE_CHECKING:
    from .volume import MemberWrite, RaidVolume

FAST_MIN = 256 * 1024  # bytes: below this the plan and the thread handoff cost more than they gain


def write(vol: RaidVolume, off: int, mv: memoryview) -> bool:
    """Write extent bytes [off, off+len(mv)) with the members in parallel; False: not taken (the
    caller writes the ordinary way; nothing was written)."""
    if len(mv) < FAST_MIN or any(getattr(m, "media_errors", None) for m in vol.members):
        return False  # a latent media error: row by row, so a stop recomputes no row the write left untouched
    vol._deferred = []
    try:
        vol._write_bytes(off, mv, force_rcw=False)
        writes = vol._deferred
    finally:
        vol._deferred = None
    if not writes:
        return True
    if vol.on_row is not None:  # one range for every row, before any member write
        lo = min(o for _m, o, _d in writes)
        hi = max(o + len(d) for _m, o, d in writes)
        vol.on_row(vol.base_offset + lo, vol.base_offset + hi)
    apply(vol, writes)
    return True


def apply(vol: RaidVolume, writes: list[MemberWrite]) -> None:
    """Run planned member writes, each member's in order, members in parallel; then report the
    members that failed (DriveError) as `_write_member` would have, one by one."""
    by_member: dict[int, list[tuple[int, Buffer]]] = {}
    for m, o, d in writes:
        if vol._writable(m):
            by_member.setdefault(m, []).append((o, d))
    failed: dict[int, DriveError] = {}

    def group(m: int, items: list[tuple[int, Buffer]]) -> None:
        member = vol.members[m]
        base = vol.base_offset
        try:
            for o, d in items:
                member.write(base + o, d)
        except DriveError as exc:  # the rest of this member's writes are skipped, as once dropped
            failed[m] = exc

    drive_io.run_groups([functools.partial(group, m, items) for m, items in by_member.items()])
    for m in sorted(failed):
        if vol.on_member_error is None:
            raise failed[m]
        vol._dropped.add(m)
        vol.on_member_error(m, failed[m])
        vol._check_alive()
