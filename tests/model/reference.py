"""The reference model of the data path: what each block of each logical drive may read as.

Written from the promise alone ("never a wrong byte with GOOD status; a read returns the last
acknowledged data or an error; an acknowledged write survives every crash the promise
covers"), with its own RAID arithmetic, so that it shares no code (and no bug) with the
firmware under test.

Per logical drive and block:
- `cur`: the contents a read may return with GOOD. Normally exactly the last acknowledged
  write (zeros for a block never written); after a write that was not acknowledged (it
  failed, or the controller was killed in it) {old, new} ... of each such write.
- `hist`: what the drives may hold if the cache is lost: `cur` plus every write acknowledged
  from the write-back cache since the block was last known to be on the drives (FUA, a
  SYNCHRONIZE CACHE over it, a write while the cache must write through, no unwritten cache
  line of it left). A loss the promise does not cover (a power cut longer than the battery
  hold-up, a logical drive that failed with data in the cache) makes `cur` = `hist`.
- `lost`: the block may answer an error (and may have lost its data: it may read as any
  value in `cur`, never anything else). Set when the block's redundancy was exceeded at some
  moment, or its cache data may have been lost; it stays until the block is written again.
- `failed`: the unit failed: every read must answer an error until it is re-enabled.
- `weak` (per array): member byte ranges of rows where a kill cut a member write short. The
  row's data and parity (P and Q) may disagree there (the RAID 5/ADG write hole), so the row
  has no redundancy left: any unavailable member makes its blocks may-error (never
  wrong data). Exact: the firmware writes a parity row as consecutive member writes of the same
  byte range, so the range of the write that was cut is the range left inconsistent. The model
  never clears it (conservative: a resync or a full-row write would make the row whole again).

Where redundancy is exceeded (`at_risk`): a row of a logical drive is every member at the same
member byte offset. A member is unavailable there when it is failed or missing, rebuilding
above its rebuilt point, or has a media error covering that offset. RAID 5 tolerates one
unavailable member per row, ADG two, RAID 1 / 1+0 one copy of each mirrored pair, RAID 0
none. For RAID 5/ADG the model marks every data block of an over-budget row (the k blocks
s*k*su + j*su + a, j in 0..k-1, whatever the parity rotation), which is conservative: only the
blocks on unavailable members (and none when only parity is unavailable) are really at risk,
but a controller may record the whole row as lost. For mirrored levels and RAID 0 the model is
exact (the block of the pair / member that is unavailable).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

BLOCK = 512
ZERO = bytes(BLOCK)
MAGIC = 0x4D44  # "DM"
SAME_LBA = (1 << 64) - 1  # WRITE SAME blocks carry no LBA: the same bytes everywhere
_UNIT = struct.Struct("<HHIQ")  # magic, lun, token, lba: repeated 32 times per block


def block(lun: int, lba: int, token: int, same: bool = False) -> bytes:
    """The contents written by write `token` at `lba` (token 0: zeros, never written)."""
    if token == 0:
        return ZERO
    return _UNIT.pack(MAGIC, lun & 0xFFFF, token, SAME_LBA if same else lba) * (BLOCK // _UNIT.size)


def blocks(lun: int, lba: int, n: int, token: int, same: bool = False) -> bytes:
    return b"".join(block(lun, lba + i, token, same) for i in range(n))


def decode(data: bytes) -> str:
    """A block in words, for failure messages: zeros, (lun, lba, write), or garbage."""
    if data == ZERO:
        return "zeros"
    head = data[: _UNIT.size]
    if head * (BLOCK // _UNIT.size) == data:
        magic, lun, token, lba = _UNIT.unpack(head)
        if magic == MAGIC:
            where = "WRITE SAME" if lba == SAME_LBA else f"lba {lba}"
            return f"write #{token} of LUN {lun} {where}"
    nz = sum(1 for b in data if b)
    return f"garbage ({nz} non-zero bytes, starts {data[:16].hex()})"


# ------------------------------------------------------------------ RAID arithmetic
PARITY_TOLERANCE = {"5": 1, "ADG": 2}


@dataclass
class Layout:
    """One placement of a logical drive's blocks on an array's members, as observed.

    `unavailable[i]`: byte ranges (start, end) of member i's data area (absolute offsets, the
    logical drive's extent starts at `base`) where the member cannot supply its data;
    `whole[i]`: member i is not OK at all (failed, missing or rebuilding: no redundancy from
    it for the unit's state). `lbas`: the logical blocks this layout holds (an expansion
    holds blocks below its watermark in the new layout, the others in the old one).
    """

    level: str  # "0", "1", "10", "5", "ADG"
    su: int  # stripe unit, bytes
    base: int
    num_blocks: int
    unavailable: list[list[tuple[int, int]]]
    whole: list[bool]
    lbas: tuple[int, int] = (0, 1 << 62)
    weak: list[tuple[int, int]] = field(default_factory=list)  # rows whose parity may be stale

    @property
    def n(self) -> int:
        return len(self.unavailable)

    @property
    def k(self) -> int:
        """Data chunks per stripe."""
        if self.level == "0":
            return self.n
        if self.level in ("1", "10"):
            return self.n // 2
        return self.n - PARITY_TOLERANCE[self.level]

    @property
    def per_member(self) -> int:
        stripe_data = self.k * self.su
        return -(-self.num_blocks * BLOCK // stripe_data) * self.su


def _rows(intervals: Iterable[tuple[int, int]], base: int, limit: int) -> list[tuple[int, int]]:
    """Byte ranges of a member's area -> sorted, merged 512-byte row ranges of the extent."""
    out = []
    for a, b in intervals:
        a, b = max(a - base, 0), min(b - base, limit)
        if a < b:
            out.append((a // BLOCK, -(-b // BLOCK)))
    out.sort()
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _intersect(x: list[tuple[int, int]], y: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _over(per_member: list[list[tuple[int, int]]], budget: int) -> list[tuple[int, int]]:
    """Row ranges where more than `budget` members are unavailable (a sweep)."""
    ev: list[tuple[int, int]] = []
    for rows in per_member:
        for a, b in rows:
            ev.append((a, 1))
            ev.append((b, -1))
    ev.sort()
    out: list[tuple[int, int]] = []
    cnt = 0
    start = 0
    for pos, d in ev:
        was = cnt > budget
        cnt += d
        now = cnt > budget
        if not was and now:
            start = pos
        elif was and not now and pos > start:
            out.append((start, pos))
    return out


def at_risk(lay: Layout) -> frozenset[int]:
    """The logical blocks whose redundancy is exceeded now (see the module docstring)."""
    key = (lay.level, lay.su, lay.base, lay.num_blocks, lay.lbas,
           tuple(tuple(x) for x in lay.unavailable), tuple(lay.weak))
    return _at_risk(key)


@lru_cache(maxsize=512)
def _at_risk(key: tuple) -> frozenset[int]:  # type: ignore[type-arg]
    level, su, base, num_blocks, lbas, unavailable, weak_iv = key
    lay = Layout(level, su, base, num_blocks, [list(x) for x in unavailable], [], lbas, list(weak_iv))
    limit = lay.per_member
    rows = [_rows(iv, lay.base, limit) for iv in lay.unavailable]
    su_rows = lay.su // BLOCK
    k = lay.k
    out: set[int] = set()
    lo, hi = lay.lbas
    hi = min(hi, lay.num_blocks)

    def add(a: int, b: int, j: int, width: int) -> None:
        """Rows [a, b) of data index j -> their logical blocks (contiguous within a stripe)."""
        while a < b:
            s, off = divmod(a, su_rows)
            e = min(b, (s + 1) * su_rows)
            first = s * width * su_rows + j * su_rows + off
            x, y = max(first, lo), min(first + e - a, hi)
            if x < y:
                out.update(range(x, y))
            a = e

    if lay.level in PARITY_TOLERANCE:
        budget = PARITY_TOLERANCE[lay.level]
        # a row a write was cut short in may have stale P (and Q): it has no redundancy left
        weak = _rows(lay.weak, lay.base, limit)
        for a, b in _over(rows + [weak] * budget, budget):
            for j in range(k):
                add(a, b, j, k)
    elif lay.level in ("1", "10"):
        half = lay.n // 2
        for j in range(half):
            for a, b in _intersect(rows[j], rows[j + half]):
                add(a, b, j, half)
    else:
        for j in range(lay.n):
            for a, b in rows[j]:
                add(a, b, j, lay.n)
    return frozenset(out)


def failure_plausible(lay: Layout) -> bool:
    """Whether the unit may fail: more whole members gone than the level survives."""
    w = lay.whole
    if lay.level == "0":
        return any(w)
    if lay.level in ("1", "10"):
        half = lay.n // 2
        return any(w[j] and w[j + half] for j in range(half))
    return sum(w) > PARITY_TOLERANCE[lay.level]


# ------------------------------------------------------------------ the model
@dataclass
class LdModel:
    lun: int
    num_blocks: int
    cur: dict[int, frozenset[int]] = field(default_factory=dict)  # absent: {0}
    hist: dict[int, frozenset[int]] = field(default_factory=dict)  # absent: same as cur
    lost: set[int] = field(default_factory=set)
    failed: bool = False
    why_lost: dict[int, str] = field(default_factory=dict)  # first reason, for messages

    def acceptable(self, lba: int) -> frozenset[int]:
        return self.cur.get(lba, _ZERO_SET)

    def history(self, lba: int) -> frozenset[int]:
        return self.hist.get(lba, self.acceptable(lba))


_ZERO_SET = frozenset({0})


class Reference:
    """Every logical drive's acceptable contents; the driver tells it what happened."""

    def __init__(self) -> None:
        self.lds: dict[int, LdModel] = {}
        self.same: set[int] = set()  # tokens written by WRITE SAME
        self.origin: dict[int, str] = {}  # token -> "step 12: WRITE(10) ..."
        self.weak: list[tuple[int, int]] = []  # member byte ranges of rows a kill left torn

    def add_ld(self, lun: int, num_blocks: int) -> None:
        self.lds[lun] = LdModel(lun, num_blocks)

    # ---------------------------------------------------------------- writes
    def acked(self, lun: int, lba: int, n: int, token: int, durable: bool) -> None:
        """A write answered GOOD: the blocks hold `token` now, and survive any crash."""
        ld = self.lds[lun]
        one = frozenset({token})
        for b in range(lba, lba + n):
            if durable:
                ld.hist.pop(b, None)
            else:
                ld.hist[b] = ld.history(b) | one
            ld.cur[b] = one
            ld.lost.discard(b)
            ld.why_lost.pop(b, None)

    def unacked(self, lun: int, lba: int, n: int, token: int) -> None:
        """A write that failed or was cut short: each block holds the old or the new data."""
        ld = self.lds[lun]
        for b in range(lba, lba + n):
            h = ld.history(b)
            ld.cur[b] = ld.acceptable(b) | {token}
            ld.hist[b] = h | {token}

    def durable(self, lun: int, lba: int = 0, n: int | None = None) -> None:
        """The blocks are on the drives (FUA, SYNCHRONIZE CACHE, nothing of them cached)."""
        ld = self.lds[lun]
        if n is None:
            ld.hist.clear()
            return
        if len(ld.hist) < n:
            for b in [b for b in ld.hist if lba <= b < lba + n]:
                del ld.hist[b]
        else:
            for b in range(lba, lba + n):
                ld.hist.pop(b, None)

    def durable_except(self, lun: int, keep: set[int]) -> None:
        """Only blocks in `keep` may still be in the cache (and nowhere else)."""
        ld = self.lds[lun]
        for b in [b for b in ld.hist if b not in keep]:
            del ld.hist[b]

    # ---------------------------------------------------------------- losses
    def cache_lost(self, lun: int, why: str) -> int:
        """Unwritten cache data may be gone: blocks fall back to any value they had since
        they were last on the drives, and may answer an error. Returns blocks affected."""
        ld = self.lds[lun]
        n = 0
        for b, h in list(ld.hist.items()):
            if h != ld.acceptable(b):
                ld.cur[b] = h | ld.acceptable(b)
                self._lose(ld, b, why)
                n += 1
        return n

    def at_risk(self, lun: int, lbas: Iterable[int], why: str) -> None:
        ld = self.lds[lun]
        for b in set(lbas) - ld.lost:
            if b < ld.num_blocks:
                self._lose(ld, b, why)

    @staticmethod
    def _lose(ld: LdModel, b: int, why: str) -> None:
        if b not in ld.lost:
            ld.lost.add(b)
            ld.why_lost.setdefault(b, why)

    def unit_failed(self, lun: int, why: str) -> None:
        ld = self.lds[lun]
        if not ld.failed:
            ld.failed = True
            self.cache_lost(lun, f"unit failed ({why})")

    def unit_reenabled(self, lun: int) -> None:
        self.lds[lun].failed = False

    def extend(self, lun: int, num_blocks: int) -> None:
        ld = self.lds[lun]
        for b in range(ld.num_blocks, num_blocks):  # new blocks read as zeros
            ld.cur.pop(b, None)
            ld.hist.pop(b, None)
            ld.lost.discard(b)
        ld.num_blocks = num_blocks

    # ---------------------------------------------------------------- checks
    def may_error(self, lun: int, lba: int, n: int = 1) -> bool:
        ld = self.lds[lun]
        if ld.failed:
            return True
        if n > len(ld.lost):
            return any(lba <= b < lba + n for b in ld.lost)
        return any(b in ld.lost for b in range(lba, lba + n))

    def expected(self, lun: int, lba: int, token: int) -> bytes:
        return block(lun, lba, token, token in self.same)

    def check_block(self, lun: int, lba: int, data: bytes) -> str | None:
        """None if `data` is acceptable for the block, else a description of the wrong answer."""
        ld = self.lds[lun]
        ok = ld.acceptable(lba)
        for t in ok:
            if data == self.expected(lun, lba, t):
                return None
        return (f"LUN {lun} LBA {lba}: read {decode(data)} with GOOD; acceptable: "
                f"{self.describe(lun, lba)}")

    def describe(self, lun: int, lba: int) -> str:
        ld = self.lds[lun]
        parts = []
        for t in sorted(ld.acceptable(lba)):
            parts.append("zeros (never written)" if t == 0 else f"#{t} ({self.origin.get(t, '?')})")
        extra = ""
        if lba in ld.lost:
            extra = f"; may error: {ld.why_lost.get(lba, '?')}"
        h = ld.history(lba) - ld.acceptable(lba)
        if h:
            extra += f"; older values not on the drives yet: {sorted(h)}"
        return " or ".join(parts) + extra
