"""Where a logical byte lives on the members, per RAID level (Smart Array layouts).

Vocabulary: a *chunk* (stripe unit) is `stripe_unit` contiguous bytes of one member; *stripe* s
is row s of chunks, i.e. bytes [s*stripe_unit, (s+1)*stripe_unit) of every member. Logical data
fills the data chunks of stripe 0 in data-index order, then stripe 1, and so on.

- RAID 0: data index j on member j.
- RAID 1 / 1+0: n/2 data chunks per stripe; data index j on member j and its mirror j + n/2
  (the first half of the drives striped, the second half their mirrors, as Smart Array does;
  RAID 1 is the two-member case).
- RAID 5, left-symmetric (Linux md's default): P on member n-1-(s mod n), data index j on
  member (P + 1 + j) mod n.
- ADG (RAID 6), left-symmetric as Linux md raid6: P on member n-1-(s mod n), Q on (P + 1) mod n,
  data index j on (P + 2 + j) mod n; Q = sum g^j * D_j with j the data index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .api import RaidLevel

KIB = 1024
MIN_STRIPE_UNIT = 16 * KIB
MAX_STRIPE_UNIT = 256 * KIB
MIRRORED = frozenset({RaidLevel.RAID1, RaidLevel.RAID10})
PARITY = frozenset({RaidLevel.RAID5, RaidLevel.ADG})


def min_members(level: RaidLevel) -> int:
    return {RaidLevel.RAID0: 1, RaidLevel.RAID1: 2, RaidLevel.RAID10: 4, RaidLevel.RAID5: 3,
            RaidLevel.ADG: 4}[level]


def validate(level: RaidLevel, n_members: int, stripe_unit: int) -> None:
    """Raise ValueError for a member count or stripe unit the level cannot use."""
    level = RaidLevel(level)
    if n_members < min_members(level):
        raise ValueError(f"RAID {level.value} needs at least {min_members(level)} members, got {n_members}")
    if level is RaidLevel.RAID1 and n_members != 2:
        raise ValueError("RAID 1 has exactly two members (use RAID 1+0 for more)")
    if level is RaidLevel.RAID10 and n_members % 2:
        raise ValueError("RAID 1+0 needs an even number of members")
    if n_members > 255:
        raise ValueError("too many members")
    if not (MIN_STRIPE_UNIT <= stripe_unit <= MAX_STRIPE_UNIT) or stripe_unit & (stripe_unit - 1):
        raise ValueError(f"stripe unit {stripe_unit} is not a power of two in 16-256 KiB")


def data_members(level: RaidLevel, n_members: int) -> int:
    """Data chunks per stripe."""
    if level is RaidLevel.RAID0:
        return n_members
    if level in MIRRORED:
        return n_members // 2
    if level is RaidLevel.RAID5:
        return n_members - 1
    return n_members - 2


def fault_tolerance(level: RaidLevel) -> int:
    """Member losses the level survives whatever members they are (RAID 1+0: one, guaranteed)."""
    return {RaidLevel.RAID0: 0, RaidLevel.RAID1: 1, RaidLevel.RAID10: 1, RaidLevel.RAID5: 1,
            RaidLevel.ADG: 2}[level]


def capacity_bytes(level: RaidLevel, n_members: int, member_bytes: int, stripe_unit: int) -> int:
    """Usable logical bytes of `n_members` members of `member_bytes` each (whole stripes only)."""
    validate(level, n_members, stripe_unit)
    return (member_bytes // stripe_unit) * stripe_unit * data_members(level, n_members)


@dataclass(frozen=True)
class StripeRoles:
    """Which members hold what in one stripe.

    `data[j]` lists the members holding data index j (one member, or a mirror pair with the
    primary first); `p` and `q` are the parity members (None where the level has none).
    """

    data: tuple[tuple[int, ...], ...]
    p: int | None = None
    q: int | None = None

    def role_of(self, member: int) -> tuple[str, int]:
        """("data", j), ("p", 0) or ("q", 0) for `member` in this stripe."""
        if member == self.p:
            return ("p", 0)
        if member == self.q:
            return ("q", 0)
        for j, holders in enumerate(self.data):
            if member in holders:
                return ("data", j)
        raise ValueError(f"member {member} holds nothing in this stripe")


@dataclass(frozen=True)
class Piece:
    """A contiguous run of logical bytes that sits inside one chunk."""

    logical_offset: int
    length: int
    stripe: int
    index: int  # data index within the stripe
    chunk_offset: int  # offset inside the chunk
    member_offset: int  # offset inside each holder's area (stripe * stripe_unit + chunk_offset)
    members: tuple[int, ...]  # the holders: one, or a mirror pair (primary first)


@lru_cache(maxsize=4096)
def _roles(level: RaidLevel, n: int, phase: int) -> StripeRoles:
    if level is RaidLevel.RAID0:
        return StripeRoles(tuple((j,) for j in range(n)))
    if level in MIRRORED:
        half = n // 2
        return StripeRoles(tuple((j, j + half) for j in range(half)))
    p = n - 1 - phase
    if level is RaidLevel.RAID5:
        return StripeRoles(tuple(((p + 1 + j) % n,) for j in range(n - 1)), p=p)
    q = (p + 1) % n
    return StripeRoles(tuple(((p + 2 + j) % n,) for j in range(n - 2)), p=p, q=q)


@dataclass(frozen=True)
class Layout:
    """The address map of one RAID level over `n_members` members."""

    level: RaidLevel
    n_members: int
    stripe_unit: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", RaidLevel(self.level))
        validate(self.level, self.n_members, self.stripe_unit)

    @property
    def data_per_stripe(self) -> int:
        return data_members(self.level, self.n_members)

    @property
    def stripe_data_bytes(self) -> int:
        """Logical bytes per stripe."""
        return self.data_per_stripe * self.stripe_unit

    @property
    def period(self) -> int:
        """Stripes after which the role pattern repeats."""
        return self.n_members if self.level in PARITY else 1

    def roles(self, stripe: int) -> StripeRoles:
        return _roles(self.level, self.n_members, stripe % self.period)

    def stripes_for(self, logical_bytes: int) -> int:
        """Stripes needed to hold `logical_bytes` (the last one possibly partly used)."""
        return -(-logical_bytes // self.stripe_data_bytes)

    def per_member_bytes(self, logical_bytes: int) -> int:
        """Bytes of each member an extent of `logical_bytes` occupies (rounded to whole stripes)."""
        return self.stripes_for(logical_bytes) * self.stripe_unit

    def pieces(self, offset: int, length: int) -> list[Piece]:
        """The logical byte range [offset, offset+length) cut at chunk boundaries, in order."""
        out: list[Piece] = []
        su = self.stripe_unit
        sdb = self.stripe_data_bytes
        pos = offset
        end = offset + length
        while pos < end:
            stripe, rest = divmod(pos, sdb)
            j, a = divmod(rest, su)
            n = min(su - a, end - pos)
            out.append(Piece(pos, n, stripe, j, a, stripe * su + a, self.roles(stripe).data[j]))
            pos += n
        return out

    def locate(self, member: int, member_offset: int) -> tuple[int, str, int, int]:
        """(stripe, role, data index, chunk offset) of a byte of `member` (role "data"/"p"/"q")."""
        stripe, a = divmod(member_offset, self.stripe_unit)
        role, j = self.roles(stripe).role_of(member)
        return stripe, role, j, a

    def logical_offset(self, stripe: int, index: int, chunk_offset: int = 0) -> int:
        """The logical byte at data index `index`, `chunk_offset` into it, in `stripe`."""
        return stripe * self.stripe_data_bytes + index * self.stripe_unit + chunk_offset
