"""Repairs of a RaidVolume: rebuild a member, resync redundancy, restripe onto added members.

These work on a volume's rows (all members at one member offset) with the volume's own member
access and lost-block settling (firmware_model.raid.volume); RaidVolume delegates to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import parity
from .api import DriveError, RaidLevel, RowLost, UnrecoverableRead, VolumeFailed
from .layout import MIRRORED, StripeRoles

if TYPE_CHECKING:
    from .volume import RaidVolume


def rows_of(vol: RaidVolume, offset: int, length: int) -> list[tuple[int, int, int]]:
    """(stripe, a, b) rows covering extent bytes [offset, offset+length) of a member."""
    if offset < 0 or length < 0 or offset + length > vol.per_member_bytes:
        raise ValueError(f"member range {offset}+{length} outside 0..{vol.per_member_bytes}")
    su = vol.stripe_unit
    out = []
    pos, end = offset, offset + length
    while pos < end:
        s, a = divmod(pos, su)
        b = min(su, a + end - pos)
        out.append((s, a, b))
        pos += b - a
    return out

def _content(vol: RaidVolume, member: int, stripe: int, roles: StripeRoles, a: int, b: int) -> bytes:
    """What `member` should hold at row [a, b) of `stripe`, from the other members."""
    role, j = roles.role_of(member)
    moff = stripe * vol.stripe_unit + a
    if vol.level in MIRRORED:
        for c in roles.data[j]:
            if c != member:
                got = vol._try_read(c, moff, b - a)
                if got is not None:
                    return got
        raise RowLost
    row = vol._gather_row(stripe, roles, a, b, skip=frozenset({member}))
    if role == "data":
        return row[j]
    if role == "p":
        return parity.xor_blocks(row)
    return parity.q_syndrome(row)

def rebuild_region(vol: RaidVolume, member: int, offset: int, length: int) -> int:
    """Reconstruct extent bytes [offset, offset+length) of `member` from the others and write them.

    Offsets are relative to this volume's extent (base_offset). Blocks that cannot be rebuilt
    (a survivor unreadable there too) are settled as zeros on every writable member of the
    row, with parity to match, and reported to `on_lost`; the rest of the region is rebuilt
    all the same. Returns how many blocks were lost. A DriveError writing the member being
    rebuilt propagates.
    """
    rows = rows_of(vol, offset, length)
    vol._begin()
    if vol.level is RaidLevel.RAID0:
        raise VolumeFailed("RAID 0 has no redundancy to rebuild from")
    lost = vol._lost() | {member}
    if not vol._survives(lost):
        raise VolumeFailed(f"cannot rebuild member {member}: members {sorted(lost)} are gone")
    for s, a, b in rows:
        roles = vol.layout.roles(s)
        moff = s * vol.stripe_unit + a
        try:
            buf = _content(vol, member, s, roles, a, b)
        except RowLost:
            full, gone = vol._settled_row(s, roles, a, b, lambda m: m != member)
            role, j = roles.role_of(member)
            buf = (bytes(full[j]) if role == "data" else parity.xor_blocks(full) if role == "p"
                   else parity.q_syndrome(full))
            vol.members[member].write(vol.base_offset + moff, buf)
            vol._settle(s, roles, a, gone, full)
            continue
        vol.members[member].write(vol.base_offset + moff, buf)
    vol._report_lost()
    return vol._lost_count

def resync_region(vol: RaidVolume, offset: int, length: int) -> None:
    """Recompute the redundancy (P/Q, or mirror copies from the primary) of extent rows
    [offset, offset+length), e.g. to initialise parity over drives with stale contents."""
    rows = rows_of(vol, offset, length)
    vol._dropped = set()
    vol._check_alive()
    if vol.level is RaidLevel.RAID0:
        return
    for s, a, b in rows:
        roles = vol.layout.roles(s)
        moff = s * vol.stripe_unit + a
        n = b - a
        if vol.level in MIRRORED:
            for j, holders in enumerate(roles.data):
                src = next((c for c in holders if vol._readable(c, moff, n)), None)
                if src is None:
                    continue
                try:
                    buf = vol._read(src, moff, n)
                except DriveError:
                    raise UnrecoverableRead(vol._lba(s, j, a)) from None
                for c in holders:
                    if c != src and vol._writable(c):
                        vol._write_member(c, moff, buf)
            continue
        try:
            row = vol._gather_row(s, roles, a, b)
        except RowLost:
            raise UnrecoverableRead(vol._lba(s, 0, a)) from None
        vol._write_parity(roles, moff, row)


def resync_untrusted(vol: RaidVolume, offset: int, length: int) -> None:
    """After a write that was interrupted: make extent rows [offset, offset+length) consistent
    from their data alone (parity recomputed; mirror copies from the first readable one). A data
    chunk no member holds (its only trace was the parity, which cannot be trusted now) is lost:
    settled as zeros and reported."""
    rows = rows_of(vol, offset, length)
    vol._begin()
    if vol.level is RaidLevel.RAID0 or vol.state() == "failed":
        return
    for s, a, b in rows:
        roles = vol.layout.roles(s)
        parity_members = frozenset(m for m in (roles.p, roles.q) if m is not None)
        full, lost = vol._settled_row(s, roles, a, b, lambda m, pm=parity_members: m not in pm)  # type: ignore[misc]
        if lost and roles.q is not None:
            lost = _proven_by_q(vol, s, roles, a, full, lost)
        moff = s * vol.stripe_unit + a
        if vol._parity:
            vol._write_parity(roles, moff, full)
        else:
            for j, holders in enumerate(roles.data):
                for c in holders:
                    if vol._writable(c):
                        vol._write_member(c, moff, bytes(full[j]))
        vol._settle(s, roles, a, lost, full, with_parity=False)
    vol._report_lost()


def _proven_by_q(vol: RaidVolume, stripe: int, roles: StripeRoles, a: int, full: list[bytearray],
                 lost: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """ADG after an interrupted write: a block row with one unreadable data chunk is solved from P
    and kept only if Q agrees (a half-written row cannot satisfy both); the rest stays lost."""
    bs = vol.block_size
    by_row: dict[int, list[int]] = {}
    for j, o in lost:
        by_row.setdefault(o, []).append(j)
    still: list[tuple[int, int]] = []
    for o, js in sorted(by_row.items()):
        moff = stripe * vol.stripe_unit + o
        p = vol._try_read(roles.p, moff, bs) if len(js) == 1 else None
        q = vol._try_read(roles.q, moff, bs) if p is not None else None
        if p is not None and q is not None:
            cur: list[parity.Buffer | None] = [bytes(c[o - a:o - a + bs]) for c in full]
            cur[js[0]] = None
            solved = parity.recover(cur, p, None)
            if parity.q_syndrome(solved) == q:
                full[js[0]][o - a:o - a + bs] = solved[js[0]]
                continue
        still.extend((j, o) for j in js)
    return still


def restripe(old: RaidVolume, new: RaidVolume, start_lba: int, max_blocks: int) -> int:
    """Move logical blocks from `start_lba` from the `old` layout to the `new` one; return the new
    watermark (the first block not yet moved).

    For capacity expansion: `new` is the same logical drive over the old members plus the
    added ones (same order, added ones last), possibly at another base_offset. The controller
    keeps a watermark starting at 0 and calls this repeatedly; host I/O below the watermark
    goes to `new`, at or above it to `old`. Each step moves whole stripes of the new layout
    (at least one, about `max_blocks` blocks), written as full stripes so parity is computed
    from the data alone. A step that would overwrite old-layout rows still holding blocks
    not yet moved raises ValueError (e.g. a level migration that needs more room per member;
    those must move top-down or through a backup area, which this helper does not do).
    """
    if old.block_size != new.block_size or old.num_blocks != new.num_blocks:
        raise ValueError("old and new layouts must describe the same logical drive")
    bs = new.block_size
    per = new.layout.stripe_data_bytes // bs
    if start_lba % per and start_lba != new.num_blocks:
        raise ValueError(f"watermark {start_lba} is not on a stripe boundary of the new layout ({per} blocks)")
    if start_lba >= new.num_blocks:
        return new.num_blocks
    end = min(new.num_blocks, start_lba + max(1, max_blocks // per) * per)
    if not restripe_safe(old, new, start_lba, end):
        raise ValueError(f"restriping blocks {start_lba}..{end} would overwrite old-layout data not yet moved")
    data = old.read(start_lba, end - start_lba)
    new._dropped = set()
    new._check_alive()
    new._write_bytes(start_lba * bs, memoryview(data), force_rcw=True)
    return end


def restripe_safe(old: RaidVolume, new: RaidVolume, start: int, end: int) -> bool:
    """Whether the member rows `new` writes for blocks [start, end) hold no old-layout data >= end
    (assumes `new.members[:len(old.members)]` are the old members, in the same order)."""
    bs = new.block_size
    sdb_new = new.layout.stripe_data_bytes
    s_a = start * bs // sdb_new
    s_b = -(-end * bs // sdb_new)
    lo = new.base_offset + s_a * new.stripe_unit
    hi = new.base_offset + s_b * new.stripe_unit
    old_lo, old_hi = old.base_offset, old.base_offset + old.per_member_bytes
    if hi <= old_lo or lo >= old_hi:
        return True
    os_b = -(-(min(hi, old_hi) - old.base_offset) // old.stripe_unit)
    return min(os_b * old.layout.stripe_data_bytes, old.size_bytes) <= end * bs
