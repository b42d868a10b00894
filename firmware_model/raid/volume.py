"""One logical drive striped over an array's members: a BlockVolume with real RAID layouts.

The volume owns no drives: the controller hands it `Member`s (with their states) and keeps
deciding which member is failed or rebuilding; the volume reads around what is missing,
keeps parity and mirrors current on every write, and rebuilds on request.

Several logical drives share one array: each `RaidVolume` uses bytes
[base_offset, base_offset + per_member_bytes) of every member's area.

Lost blocks: a block whose content neither its member nor the redundancy can give (a media
error on a survivor of a degraded row, both copies of a mirror unreadable) is lost. (A RAID 0
read has no redundancy to exceed: a media error there is the drive's, answered but not recorded;
data moved by an expansion that cannot be read is lost at any level.) Reads name
every such block to `on_lost(lba, count)` and fail with UnrecoverableRead at the first one.
Writes and rebuilds never stop at one: they settle the row (the unknown data chunks become
zeros on every member that can be written, parity is recomputed over that), report the lost
blocks and carry on, so parity always agrees with what the members hold and nothing that was
reconstructible changes. The owner keeps the list (reads of a lost block must fail until it
is written again).

Write errors: when a member raises DriveError on a write, the volume calls
`on_member_error(member_index, error)` if given (the controller marks that member FAILED) and
carries on degraded for the rest of the operation, so the data stays consistent and the host
write succeeds as long as the level survives. Without the callback the DriveError propagates;
the stripe being written may then be half-updated, and the controller must fail the member and
retry the whole write (which restores consistency for that range).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Literal, Protocol, cast

from . import fast_read, losses, parity, repair
from .api import DriveError, Member, MemberState, RaidLevel, RowLost, UnrecoverableRead, VolumeFailed
from .layout import MIRRORED, Layout, Piece, StripeRoles, fault_tolerance

OnMemberError = Callable[[int, DriveError], None]
OnLost = Callable[[int, int], None]  # (first LBA, count) of logical blocks that could not be reconstructed
MemberWrite = tuple[int, int, "parity.Buffer"]  # (member index, offset into the extent's member area, data)


class Journal(Protocol):
    """Where a degraded parity write puts its member writes before applying them (crash safety:
    its parity cannot be recomputed from the data afterwards)."""

    def record(self, writes: list[MemberWrite]) -> None: ...

    def clear(self) -> None: ...
VolumeState = Literal["ok", "degraded", "failed"]


class _MemberReadError(Exception):
    def __init__(self, member: int) -> None:
        super().__init__(member)
        self.member = member


class RaidVolume:
    """`num_blocks` blocks of `block_size` bytes laid out at RAID `level` over `members`.

    `members` is kept by reference: the controller may put a replacement Member at an index
    (typically REBUILDING with rebuilt_to at the start of its area) and then call
    `rebuild_region` over it.
    """

    def __init__(self, level: RaidLevel, members: list[Member], stripe_unit: int, num_blocks: int,
                 block_size: int = 512, base_offset: int = 0,
                 on_member_error: OnMemberError | None = None, on_lost: OnLost | None = None) -> None:
        self.layout = Layout(RaidLevel(level), len(members), stripe_unit)
        if stripe_unit % block_size:
            raise ValueError(f"stripe unit {stripe_unit} is not a multiple of the block size {block_size}")
        if num_blocks < 0 or base_offset < 0:
            raise ValueError("negative size or offset")
        self.level = self.layout.level
        self.members = members
        self.stripe_unit = stripe_unit
        self.block_size = block_size
        self._num_blocks = num_blocks
        self.base_offset = base_offset
        self.on_member_error = on_member_error
        self.on_lost = on_lost
        self.journal: Journal | None = None
        # told the member byte range of each row a write is about to touch (the write-intent log)
        self.on_row: Callable[[int, int], None] | None = None
        self._deferred: list[MemberWrite] | None = None  # member writes held back for the journal
        self._lost_lbas: list[int] = []  # lost blocks found by the current operation, not yet reported
        self._lost_count = 0  # blocks settled as lost by the current operation
        self._parity = self.level not in MIRRORED and self.level is not RaidLevel.RAID0
        self._dropped: set[int] = set()  # members that failed a write in the current operation

    # ---- geometry -------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def size_bytes(self) -> int:
        return self._num_blocks * self.block_size

    @property
    def per_member_bytes(self) -> int:
        """Bytes of each member this logical drive occupies (whole stripes)."""
        return self.layout.per_member_bytes(self.size_bytes)

    @property
    def full_stripe_blocks(self) -> int:
        """Blocks of one whole stripe of a parity level (written without reading back); 0 otherwise."""
        return self.layout.stripe_data_bytes // self.block_size if self._parity else 0

    def _span(self, lba: int, count: int) -> tuple[int, int]:
        if lba < 0 or count < 0 or lba + count > self._num_blocks:
            raise ValueError(f"LBA range {lba}+{count} outside 0..{self._num_blocks}")
        return lba * self.block_size, count * self.block_size

    # ---- health ---------------------------------------------------------------------------

    def _lost(self) -> set[int]:
        """Members that give no redundancy now: failed, rebuilding, or dropped by a write error."""
        return {i for i, m in enumerate(self.members) if m.state is not MemberState.OK or i in self._dropped}

    def _survives(self, lost: set[int]) -> bool:
        if self.level is RaidLevel.RAID0:
            return not lost
        if self.level in MIRRORED:
            half = len(self.members) // 2
            return not any(j in lost and j + half in lost for j in range(half))
        return len(lost) <= fault_tolerance(self.level)

    def state(self) -> VolumeState:
        """"ok", "degraded" (running without full redundancy, incl. while rebuilding) or "failed"."""
        lost = self._lost()
        if not lost:
            return "ok"
        return "degraded" if self._survives(lost) else "failed"

    def fault_tolerance(self) -> int:
        """How many more member losses, whichever members, the volume survives now."""
        lost = self._lost()
        if not self._survives(lost):
            return 0
        if self.level is RaidLevel.RAID10:
            return 0 if lost else 1
        return fault_tolerance(self.level) - len(lost)

    def _check_alive(self) -> None:
        if self.state() == "failed":
            lost = sorted(self._lost())
            raise VolumeFailed(f"RAID {self.level.value} volume lost members {lost}")

    # ---- member access --------------------------------------------------------------------

    def _readable(self, m: int, off: int, n: int) -> bool:
        """Whether member `m` holds valid data for extent bytes [off, off+n)."""
        if m in self._dropped:
            return False
        mem = self.members[m]
        st = mem.state
        if st is MemberState.OK:
            return True
        if st is MemberState.REBUILDING:
            return self.base_offset + off + n <= mem.rebuilt_to
        return False

    def _writable(self, m: int) -> bool:
        return m not in self._dropped and self.members[m].state is not MemberState.FAILED

    def _read(self, m: int, off: int, n: int) -> bytes:
        return self.members[m].read(self.base_offset + off, n)

    def _write_member(self, m: int, off: int, data: parity.Buffer) -> bool:
        """Write to member `m`; on DriveError report it and go on without the member."""
        if self._deferred is not None:
            self._deferred.append((m, off, data))
            return True
        try:
            self.members[m].write(self.base_offset + off, data)
            return True
        except DriveError as e:
            if self.on_member_error is None:
                raise
            self._dropped.add(m)
            self.on_member_error(m, e)
            self._check_alive()
            return False

    def _lba(self, stripe: int, index: int, chunk_offset: int) -> int:
        return self.layout.logical_offset(stripe, index, chunk_offset) // self.block_size

    # ---- BlockVolume ----------------------------------------------------------------------

    def read(self, lba: int, count: int) -> bytes:
        # RAID 0 has no redundancy to exceed: a media error there is the drive's, answered but not
        # recorded as lost (the block reads again when the fault is gone)
        data, first = self._read_all(lba, count, record=self.level is not RaidLevel.RAID0)
        if first is not None:
            raise UnrecoverableRead(first)
        return data

    def read_salvaged(self, lba: int, count: int) -> bytes:
        """Like read, but lost blocks come back as zeros (reported to `on_lost`) instead of an
        error: for moving data (expansion), where the owner keeps the lost list. What cannot be
        read is lost at any level here: the moved copy holds zeros."""
        return self._read_all(lba, count, record=True)[0]

    def _read_all(self, lba: int, count: int, record: bool) -> tuple[bytes, int | None]:
        off, length = self._span(lba, count)
        if not length:
            return b"", None
        self._begin()
        self._check_alive()
        fast = fast_read.read(self, off, length)
        if fast is not None:  # nothing to repair: straight from the members (fast_read.py)
            # a fresh bytearray nobody mutates, handed on as the read's bytes (no megabyte copy)
            return cast(bytes, fast), (self._report_lost() if record else None)
        if self._parity:
            parts = self._read_parity(off, length)
        else:
            parts = [self._read_copies(pc) for pc in self._coalesced(off, length)]
        if not record:
            lbas, self._lost_lbas = self._lost_lbas, []
            return (parts[0] if len(parts) == 1 else b"".join(parts)), min(lbas, default=None)
        first = self._report_lost()
        return (parts[0] if len(parts) == 1 else b"".join(parts)), first

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data).cast("B")
        if len(mv) % self.block_size:
            raise ValueError(f"write of {len(mv)} bytes is not a whole number of blocks")
        off, length = self._span(lba, len(mv) // self.block_size)
        if not length:
            return
        self._begin()
        self._check_alive()
        if self.journal is None or not self._parity or not self._lost():
            self._write_bytes(off, mv, force_rcw=False)
        else:
            self._deferred = []
            try:
                self._write_bytes(off, mv, force_rcw=False)
                writes = self._deferred
            finally:
                self._deferred = None
            self.journal.record([(m, self.base_offset + o, d) for m, o, d in writes])
            for m, o, d in writes:
                if self._writable(m):
                    self._write_member(m, o, d)
            self.journal.clear()
        self._report_lost()

    # ---- lost blocks (firmware_model.raid.losses, bound here as methods) --------------------

    note_member_lost = losses.note_member_lost
    _report_lost = losses.report_lost
    _salvage = losses.salvage
    _settled_row = losses.settled_row
    _settle = losses.settle

    def _begin(self) -> None:
        self._dropped = set()
        self._lost_lbas = []
        self._lost_count = 0

    def flush(self) -> None:
        for m in self.members:
            if m.state is not MemberState.FAILED:
                m.flush()

    def sync_fds(self) -> list[int]:
        """What flush() syncs, as duplicated fds for drive_io.sync_all (members that are not drives:
        flushed here and now)."""
        fds = []
        for m in self.members:
            if m.state is MemberState.FAILED:
                continue
            dup = getattr(m, "sync_fd", None)
            if dup is None:
                m.flush()
            elif (fd := dup()) is not None:
                fds.append(fd)
        return fds

    # ---- mirrored and plain levels ----------------------------------------------------------

    def _coalesced(self, off: int, length: int) -> list[Piece]:
        """Pieces, with runs that continue on the same members merged (RAID 1 is one run)."""
        out: list[Piece] = []
        for pc in self.layout.pieces(off, length):
            if out:
                last = out[-1]
                if last.members == pc.members and last.member_offset + last.length == pc.member_offset:
                    out[-1] = Piece(last.logical_offset, last.length + pc.length, last.stripe, last.index,
                                    last.chunk_offset, last.member_offset, last.members)
                    continue
            out.append(pc)
        return out

    def _read_copies(self, pc: Piece) -> bytes:
        holders = [m for m in pc.members if self._readable(m, pc.member_offset, pc.length)]
        if not holders:
            raise VolumeFailed(f"no copy of LBA {pc.logical_offset // self.block_size} is available")
        for m in holders:
            try:
                return self._read(m, pc.member_offset, pc.length)
            except DriveError:
                continue
        # every copy failed somewhere in the piece: go block by block, alternating copies
        bs = self.block_size
        out = bytearray()
        for o in range(0, pc.length, bs):
            for m in holders:
                try:
                    out += self._read(m, pc.member_offset + o, bs)
                    break
                except DriveError:
                    continue
            else:
                self._lost_lbas.append((pc.logical_offset + o) // bs)
                out += bytes(bs)
        return bytes(out)

    # ---- parity levels: reads -----------------------------------------------------------------

    def _read_parity(self, off: int, length: int) -> list[bytes]:
        parts: list[bytes] = []
        pieces = self.layout.pieces(off, length)
        i = 0
        while i < len(pieces):
            j = i + 1
            while j < len(pieces) and pieces[j].stripe == pieces[i].stripe:
                j += 1
            parts.extend(self._read_stripe(pieces[i:j]))
            i = j
        return parts

    def _read_stripe(self, group: list[Piece]) -> list[bytes]:
        got: list[bytes | None] = []
        for pc in group:
            m = pc.members[0]
            buf = None
            if self._readable(m, pc.member_offset, pc.length):
                try:
                    buf = self._read(m, pc.member_offset, pc.length)
                except DriveError:
                    pass
            got.append(buf)
        missing = [k for k, g in enumerate(got) if g is None]
        if missing:
            stripe = group[0].stripe
            roles = self.layout.roles(stripe)
            a = min(group[k].chunk_offset for k in missing)
            b = max(group[k].chunk_offset + group[k].length for k in missing)
            cache = {pc.index: (pc.chunk_offset, g) for pc, g in zip(group, got, strict=True) if g is not None}
            try:
                row = self._gather_row(stripe, roles, a, b, cache=cache)
                for k in missing:
                    pc = group[k]
                    got[k] = row[pc.index][pc.chunk_offset - a:pc.chunk_offset - a + pc.length]
            except RowLost:
                for k in missing:
                    got[k] = self._salvage(group[k], roles)
        return [g for g in got if g is not None]

    def _write_parity(self, roles: StripeRoles, moff: int, row: Sequence[parity.Buffer]) -> None:
        """P (and Q) of the data chunks `row`, written to the parity members that can be written."""
        names = [name for name, m in (("p", roles.p), ("q", roles.q)) if m is not None and self._writable(m)]
        if not names:
            return
        values = self._parity_of(row, names)
        for name in names:
            pm = roles.p if name == "p" else roles.q
            assert pm is not None
            self._write_member(pm, moff, values[name])

    def _gather_row(self, stripe: int, roles: StripeRoles, a: int, b: int,
                    cache: dict[int, tuple[int, bytes]] | None = None,
                    skip: frozenset[int] = frozenset()) -> list[bytes]:
        """All data chunks of stripe row [a, b), reading what is readable and solving for the rest."""
        n = b - a
        moff = stripe * self.stripe_unit + a
        data: list[parity.Buffer | None] = []
        for j, holders in enumerate(roles.data):
            if cache and j in cache:
                co, buf = cache[j]
                if co <= a and b <= co + len(buf):
                    data.append(memoryview(buf)[a - co:b - co])
                    continue
            m = holders[0]
            buf2 = None
            if m not in skip and self._readable(m, moff, n):
                try:
                    buf2 = self._read(m, moff, n)
                except DriveError:
                    pass
            data.append(buf2)
        missing = sum(d is None for d in data)
        if not missing:
            return [parity._as_bytes(d) for d in data if d is not None]
        p = self._try_read(roles.p, moff, n, skip)
        q = None
        if missing > (p is not None):
            q = self._try_read(roles.q, moff, n, skip)
        try:
            return parity.recover(data, p, q)
        except parity.Unsolvable:
            raise RowLost from None

    def _try_read(self, m: int | None, off: int, n: int, skip: frozenset[int] = frozenset()) -> bytes | None:
        if m is None or m in skip or not self._readable(m, off, n):
            return None
        try:
            return self._read(m, off, n)
        except DriveError:
            return None

    # ---- parity levels: writes ----------------------------------------------------------------

    def _write_bytes(self, off: int, mv: memoryview, force_rcw: bool) -> None:
        if not self._parity:
            for pc in self._coalesced(off, len(mv)):
                chunk = mv[pc.logical_offset - off:pc.logical_offset - off + pc.length]
                if self.on_row is not None and self._deferred is None:
                    self.on_row(self.base_offset + pc.member_offset, self.base_offset + pc.member_offset + pc.length)
                wrote = False
                for m in pc.members:
                    if self._writable(m) and self._write_member(m, pc.member_offset, chunk):
                        wrote = True
                if not wrote:
                    raise VolumeFailed(f"no copy of LBA {pc.logical_offset // self.block_size} could be written")
            return
        pieces = self.layout.pieces(off, len(mv))
        i = 0
        while i < len(pieces):
            j = i + 1
            while j < len(pieces) and pieces[j].stripe == pieces[i].stripe:
                j += 1
            self._write_stripe(pieces[i:j], off, mv, force_rcw)
            i = j

    def _write_stripe(self, group: list[Piece], off: int, mv: memoryview, force_rcw: bool) -> None:
        """Cut the stripe into rows where each data chunk is either wholly new or untouched."""
        stripe = group[0].stripe
        roles = self.layout.roles(stripe)
        cuts = sorted({0, self.stripe_unit}
                      | {pc.chunk_offset for pc in group}
                      | {pc.chunk_offset + pc.length for pc in group})
        for a, b in pairwise(cuts):
            new: dict[int, memoryview] = {}
            for pc in group:
                if pc.chunk_offset <= a and b <= pc.chunk_offset + pc.length:
                    start = pc.logical_offset - off + (a - pc.chunk_offset)
                    new[pc.index] = mv[start:start + b - a]
            if new:
                self._write_row(stripe, roles, a, b, new, force_rcw)

    def _write_row(self, stripe: int, roles: StripeRoles, a: int, b: int,
                   new: dict[int, memoryview], force_rcw: bool) -> None:
        """Write new data to some data chunks of row [a, b) and bring P/Q up to date.

        Reconstruct-write (read the untouched chunks) or read-modify-write (read the old
        touched chunks and parity), whichever reads less and is possible; failing both (members
        missing or unreadable) the old row is solved for from whatever is readable.
        """
        n = b - a
        moff = stripe * self.stripe_unit + a
        if self.on_row is not None and self._deferred is None:  # before any member write of the row
            self.on_row(self.base_offset + moff, self.base_offset + moff + n)
        k = len(roles.data)
        dm = [h[0] for h in roles.data]
        covered = sorted(new)
        uncovered = [j for j in range(k) if j not in new]
        par = [(name, m) for name, m in (("p", roles.p), ("q", roles.q))
               if m is not None and self._writable(m)]
        bad: set[int] = set()

        def ok(m: int) -> bool:
            return m not in bad and self._readable(m, moff, n)

        def rd(m: int) -> bytes:
            try:
                return self._read(m, moff, n)
            except DriveError:
                raise _MemberReadError(m) from None

        values: dict[str, bytes] = {}
        while par:
            rcw_ok = all(ok(dm[j]) for j in uncovered)
            rmw_ok = not force_rcw and all(ok(dm[j]) for j in covered) and all(ok(m) for _, m in par)
            try:
                if rcw_ok and (not rmw_ok or len(uncovered) <= len(covered) + len(par)):
                    full: list[parity.Buffer] = [new[j] if j in new else rd(dm[j]) for j in range(k)]
                    values = self._parity_of(full, [name for name, _ in par])
                elif rmw_ok:
                    old = {j: rd(dm[j]) for j in covered}
                    oldpar = {name: rd(m) for name, m in par}
                    if "q" not in oldpar:  # RAID 5: P' = P ^ old ^ new, one vector XOR
                        values = {"p": parity.xor_blocks([oldpar["p"], *(old[j] for j in covered),
                                                          *(new[j] for j in covered)])}
                        break
                    pacc = parity._int(oldpar["p"]) if "p" in oldpar else 0
                    qacc = parity._int(oldpar["q"]) if "q" in oldpar else 0
                    for j in covered:
                        d = parity._int(old[j]) ^ parity._int(new[j])
                        pacc ^= d
                        if "q" in oldpar:
                            qacc ^= parity._int(parity.q_delta(d.to_bytes(n, "little"), j))
                    values = {name: (pacc if name == "p" else qacc).to_bytes(n, "little") for name in oldpar}
                else:
                    # solve for the old row from what is readable (unreadable touched chunks too)
                    cur: list[parity.Buffer | None] = [
                        self._try_read(dm[j], moff, n) if ok(dm[j]) else None for j in range(k)]
                    try:
                        solved = parity.recover(cur, self._try_read(roles.p, moff, n),
                                                self._try_read(roles.q, moff, n))
                        full = [new[j] if j in new else solved[j] for j in range(k)]
                    except parity.Unsolvable:
                        # blocks of untouched chunks nothing can give are lost: settle them as zeros
                        # (block by block: a member that failed a read of the row may read most blocks)
                        settled, lost = self._settled_row(stripe, roles, a, b, lambda m: True)
                        for j in covered:
                            settled[j][:] = new[j]
                        self._settle(stripe, roles, a, [(j, o) for j, o in lost if j not in new], settled,
                                     with_parity=False)
                        full = list(settled)
                    values = self._parity_of(full, [name for name, _ in par])
                break
            except _MemberReadError as e:
                bad.add(e.member)
        for j in covered:
            if self._writable(dm[j]):
                self._write_member(dm[j], moff, new[j])
        for name, m in par:
            if self._writable(m):
                self._write_member(m, moff, values[name])

    @staticmethod
    def _parity_of(full: Sequence[parity.Buffer], names: list[str]) -> dict[str, bytes]:
        if "p" in names and "q" in names:
            p, q = parity.pq_syndromes(full)
            return {"p": p, "q": q}
        if "q" in names:
            return {"q": parity.q_syndrome(full)}
        return {"p": parity.xor_blocks(full)}

    # ---- repairs (firmware_model.raid.repair) ----------------------------------------------

    def _rows(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        return repair.rows_of(self, offset, length)

    def rebuild_region(self, member: int, offset: int, length: int) -> int:
        """See repair.rebuild_region: reconstruct a member's extent bytes; lost blocks settled."""
        return repair.rebuild_region(self, member, offset, length)

    def resync_region(self, offset: int, length: int) -> None:
        """See repair.resync_region: recompute the redundancy of extent rows."""
        repair.resync_region(self, offset, length)


restripe = repair.restripe
restripe_safe = repair.restripe_safe
resync_untrusted = repair.resync_untrusted
