"""Lost blocks of a RaidVolume: found by reads that salvage what they can, settled as zeros (with
parity to match) by writes and rebuilds, and reported to the volume's owner as runs.

RaidVolume binds these functions as its methods (`_report_lost`, `_settle`, ...), so calling
them costs no more than a method defined in the class; firmware_model.raid.repair uses them
through the volume too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import parity
from .api import RowLost
from .layout import Piece, StripeRoles

if TYPE_CHECKING:
    from .volume import RaidVolume


def note_member_lost(vol: RaidVolume, member: int, offset: int, length: int) -> None:
    """Extent bytes [offset, offset+length) of `member` are gone with no copy anywhere (e.g. a
    copy-back from a spare that was the last copy): report the logical blocks they held."""
    for o in range(offset, offset + length, vol.block_size):
        stripe, role, j, a = vol.layout.locate(member, o)
        if role == "data":
            vol._lost_lbas.append(vol._lba(stripe, j, a))
    vol._report_lost()


def report_lost(vol: RaidVolume) -> int | None:
    """Hand the lost blocks found by this operation to the owner, as runs; the first LBA."""
    lbas = sorted({x for x in vol._lost_lbas if x < vol._num_blocks})  # not the last stripe's padding
    vol._lost_lbas = []
    if not lbas:
        return None
    if vol.on_lost is not None:
        start = prev = lbas[0]
        for x in [*lbas[1:], None]:
            if x is not None and x == prev + 1:
                prev = x
                continue
            vol.on_lost(start, prev - start + 1)
            if x is not None:
                start = prev = x
    return lbas[0]


def salvage(vol: RaidVolume, pc: Piece, roles: StripeRoles) -> bytes:
    """Rebuild a piece block by block, noting every block that cannot be rebuilt."""
    bs = vol.block_size
    out = bytearray()
    for o in range(pc.chunk_offset, pc.chunk_offset + pc.length, bs):
        try:
            out += vol._gather_row(pc.stripe, roles, o, o + bs)[pc.index]
        except RowLost:
            vol._lost_lbas.append(vol._lba(pc.stripe, pc.index, o))
            out += bytes(bs)
    return bytes(out)


def settled_row(vol: RaidVolume, stripe: int, roles: StripeRoles, a: int, b: int,
                usable: Callable[[int], bool]) -> tuple[list[bytearray], list[tuple[int, int]]]:
    """The data chunks of row [a, b), solved block by block from the members `usable` allows;
    a block that cannot be solved is zeros, listed as (data index, chunk offset)."""
    bs = vol.block_size
    k = len(roles.data)
    full = [bytearray(b - a) for _ in range(k)]
    lost: list[tuple[int, int]] = []
    for o in range(a, b, bs):
        moff = stripe * vol.stripe_unit + o
        cur: list[parity.Buffer | None] = []
        for holders in roles.data:
            got = None
            for m in holders:
                if usable(m) and vol._readable(m, moff, bs):
                    got = vol._try_read(m, moff, bs)
                    if got is not None:
                        break
            cur.append(got)
        if vol._parity:
            p = vol._try_read(roles.p, moff, bs) if roles.p is not None and usable(roles.p) else None
            q = vol._try_read(roles.q, moff, bs) if roles.q is not None and usable(roles.q) else None
            try:
                vals: list[bytes | None] = list(parity.recover(cur, p, q))
            except parity.Unsolvable:
                vals = [None if c is None else parity._as_bytes(c) for c in cur]
        else:
            vals = [None if c is None else parity._as_bytes(c) for c in cur]
        for j, v in enumerate(vals):
            if v is None:
                lost.append((j, o))
            else:
                full[j][o - a:o - a + bs] = v
    return full, lost


def settle(vol: RaidVolume, stripe: int, roles: StripeRoles, a: int, lost: list[tuple[int, int]],
           full: list[bytearray], with_parity: bool = True) -> None:
    """Write zeros where lost data chunks sit (remapping media errors), note their LBAs, and
    (`with_parity`) bring P/Q of those blocks in line with the settled data `full`."""
    bs = vol.block_size
    base = stripe * vol.stripe_unit
    # the owner records them before the zeros land: a write over a media error remaps it, and
    # a kill after that must not leave the error gone and the loss unknown
    settled = [x for x in (vol._lba(stripe, j, o) for j, o in lost) if x < vol._num_blocks]
    vol._lost_count += len(settled)
    vol._lost_lbas.extend(settled)
    vol._report_lost()
    for j, o in lost:
        for m in roles.data[j]:
            if vol._writable(m):
                vol._write_member(m, base + o, bytes(bs))
    if not vol._parity or not with_parity:
        return
    for o in sorted({o for _, o in lost}):
        vol._write_parity(roles, base + o, [bytes(c[o - a:o - a + bs]) for c in full])
