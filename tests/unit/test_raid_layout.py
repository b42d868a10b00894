"""RAID address maps and parity math: where bytes live, and that P/Q solve for lost blocks."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_model.raid import parity
from firmware_model.raid.api import RaidLevel
from firmware_model.raid.layout import Layout, capacity_bytes, validate

KIB = 1024
SU = 16 * KIB


def slow_gf_mul(a: int, b: int) -> int:
    """Carry-less multiply then reduce by 0x11D: the textbook definition."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return r


def slow_q(data: list[bytes]) -> bytes:
    out = bytearray(len(data[0]))
    g = 1
    for d in data:
        for i, x in enumerate(d):
            out[i] ^= slow_gf_mul(g, x)
        g = slow_gf_mul(g, 2)
    return bytes(out)


# ---- parity ---------------------------------------------------------------------------------

def test_gf_tables_match_the_textbook_multiply() -> None:
    for a in range(256):
        for b in (0, 1, 2, 3, 0x1D, 0x80, 0x8E, 0xFF, a):
            assert parity.gf_mul(a, b) == slow_gf_mul(a, b)
        assert parity.mul_table(a) == bytes(slow_gf_mul(a, x) for x in range(256))
        if a:
            assert slow_gf_mul(a, parity.gf_inv(a)) == 1


def test_q_is_linux_md_syndrome() -> None:
    # Q = D0 ^ 2*D1 ^ 4*D2: with every byte 0x01 that is 1 ^ 2 ^ 4
    assert parity.q_syndrome([b"\x01", b"\x01", b"\x01"]) == b"\x07"
    assert parity.q_syndrome([b"\x00", b"\x80"]) == bytes([0x1D])  # 2 * 0x80 wraps through 0x11D
    data = [os.urandom(64) for _ in range(6)]
    assert parity.q_syndrome(data) == slow_q(data)
    p, q = parity.pq_syndromes(data)
    assert p == bytes(a ^ b ^ c ^ d ^ e ^ f for a, b, c, d, e, f in zip(*data, strict=True))
    assert q == slow_q(data)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 12), size=st.integers(1, 64), seed=st.integers(0, 2**32))
def test_recover_any_one_or_two_missing_blocks(k: int, size: int, seed: int) -> None:
    """Every combination of up to two lost blocks among data, P and Q is solvable."""
    rnd = __import__("random").Random(seed)
    data = [rnd.randbytes(size) for _ in range(k)]
    p, q = parity.pq_syndromes(data)
    slots = [*range(k), "p", "q"]
    for lost in itertools.chain(itertools.combinations(slots, 1), itertools.combinations(slots, 2)):
        d = [None if j in lost else data[j] for j in range(k)]
        got = parity.recover(d, None if "p" in lost else p, None if "q" in lost else q)
        assert got == data, lost


def test_three_missing_is_unsolvable() -> None:
    data = [os.urandom(8) for _ in range(4)]
    p, q = parity.pq_syndromes(data)
    with pytest.raises(parity.Unsolvable):
        parity.recover([None, None, None, data[3]], p, q)
    with pytest.raises(parity.Unsolvable):
        parity.recover([None, None, data[2], data[3]], p, None)


def test_q_delta_updates_q() -> None:
    data = [os.urandom(32) for _ in range(4)]
    q = parity.q_syndrome(data)
    new2 = os.urandom(32)
    delta = parity.xor_blocks([data[2], new2])
    data[2] = new2
    assert parity.xor_blocks([q, parity.q_delta(delta, 2)]) == parity.q_syndrome(data)


# ---- layouts --------------------------------------------------------------------------------

def test_raid5_is_left_symmetric() -> None:
    """Linux md's default RAID 5 layout: parity walks from the last member to the first."""
    lay = Layout(RaidLevel.RAID5, 4, SU)
    expect = [(3, (0, 1, 2)), (2, (3, 0, 1)), (1, (2, 3, 0)), (0, (1, 2, 3)), (3, (0, 1, 2))]
    for s, (p, data) in enumerate(expect):
        r = lay.roles(s)
        assert r.p == p and r.q is None
        assert tuple(h[0] for h in r.data) == data


def test_adg_is_left_symmetric_with_q_after_p() -> None:
    lay = Layout(RaidLevel.ADG, 5, SU)
    expect = [(4, 0, (1, 2, 3)), (3, 4, (0, 1, 2)), (2, 3, (4, 0, 1)), (1, 2, (3, 4, 0)), (0, 1, (2, 3, 4))]
    for s, (p, q, data) in enumerate(expect):
        r = lay.roles(s)
        assert (r.p, r.q, tuple(h[0] for h in r.data)) == (p, q, data)


def test_raid10_mirrors_first_half_onto_second() -> None:
    lay = Layout(RaidLevel.RAID10, 6, SU)
    assert lay.roles(0).data == ((0, 3), (1, 4), (2, 5))
    assert Layout(RaidLevel.RAID1, 2, SU).roles(7).data == ((0, 1),)


@pytest.mark.parametrize(("level", "n"), [(RaidLevel.RAID0, 3), (RaidLevel.RAID1, 2), (RaidLevel.RAID10, 4),
                                          (RaidLevel.RAID5, 5), (RaidLevel.ADG, 6)])
def test_every_member_chunk_has_exactly_one_role(level: RaidLevel, n: int) -> None:
    lay = Layout(level, n, SU)
    for s in range(2 * n):
        r = lay.roles(s)
        owners = [m for h in r.data for m in h] + [m for m in (r.p, r.q) if m is not None]
        assert sorted(owners) == list(range(n))


@settings(max_examples=200, deadline=None)
@given(level=st.sampled_from([(RaidLevel.RAID0, 3), (RaidLevel.RAID10, 4), (RaidLevel.RAID5, 4),
                              (RaidLevel.ADG, 5)]),
       su_shift=st.integers(0, 4), off=st.integers(0, 4 * 2**20), length=st.integers(0, 2**20))
def test_pieces_partition_the_range(level: tuple[RaidLevel, int], su_shift: int, off: int, length: int) -> None:
    lay = Layout(level[0], level[1], SU << su_shift)
    pieces = lay.pieces(off, length)
    pos = off
    for pc in pieces:
        assert pc.logical_offset == pos and pc.length > 0
        assert pc.chunk_offset + pc.length <= lay.stripe_unit
        assert pc.member_offset == pc.stripe * lay.stripe_unit + pc.chunk_offset
        assert lay.logical_offset(pc.stripe, pc.index, pc.chunk_offset) == pos
        s, role, j, a = lay.locate(pc.members[0], pc.member_offset)
        assert (s, role, j, a) == (pc.stripe, "data", pc.index, pc.chunk_offset)
        pos += pc.length
    assert pos == off + length


def test_capacity_counts_whole_stripes_of_data() -> None:
    m = 10 * 2**20 + 5000  # not a multiple of the stripe unit: the tail is unused
    assert capacity_bytes(RaidLevel.RAID0, 4, m, 64 * KIB) == 4 * 160 * 64 * KIB
    assert capacity_bytes(RaidLevel.RAID1, 2, m, 64 * KIB) == 160 * 64 * KIB
    assert capacity_bytes(RaidLevel.RAID10, 6, m, 64 * KIB) == 3 * 160 * 64 * KIB
    assert capacity_bytes(RaidLevel.RAID5, 5, m, 64 * KIB) == 4 * 160 * 64 * KIB
    assert capacity_bytes(RaidLevel.ADG, 6, m, 256 * KIB) == 4 * 40 * 256 * KIB
    lay = Layout(RaidLevel.RAID5, 5, 64 * KIB)
    assert lay.per_member_bytes(4 * 64 * KIB + 512) == 2 * 64 * KIB


@pytest.mark.parametrize(("level", "n", "su"), [(RaidLevel.RAID1, 3, SU), (RaidLevel.RAID10, 5, SU),
                                                (RaidLevel.RAID5, 2, SU), (RaidLevel.ADG, 3, SU),
                                                (RaidLevel.RAID0, 2, 8 * KIB), (RaidLevel.RAID0, 2, 48 * KIB),
                                                (RaidLevel.RAID0, 2, 512 * KIB)])
def test_invalid_geometries_are_refused(level: RaidLevel, n: int, su: int) -> None:
    with pytest.raises(ValueError):
        validate(level, n, su)
