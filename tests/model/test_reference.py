"""The reference model's own arithmetic: which blocks it lets error, and what it lets reads return."""

from __future__ import annotations

from .reference import BLOCK, Layout, Reference, at_risk, block, decode, failure_plausible

SU = 16 * 1024  # 32 blocks
WHOLE = (0, 1 << 62)


def lay(level: str, unavailable: list[list[tuple[int, int]]], *, base: int = 0, weak=None) -> Layout:
    return Layout(level, SU, base, 4096, unavailable, [iv == [WHOLE] for iv in unavailable],
                  weak=list(weak or []))


def test_raid5_one_member_gone_is_within_budget() -> None:
    assert at_risk(lay("5", [[WHOLE], [], [], []])) == frozenset()


def test_raid5_failed_member_and_a_media_error_lose_the_row() -> None:
    # member 2, member row 40 (stripe 1, chunk offset 8): blocks 1*3*32 + j*32 + 8
    got = at_risk(lay("5", [[WHOLE], [], [(40 * BLOCK, 41 * BLOCK)], []]))
    assert got == {96 + 8, 128 + 8, 160 + 8}


def test_adg_tolerates_two() -> None:
    two = [[WHOLE], [WHOLE], [], [], []]
    assert at_risk(lay("ADG", two)) == frozenset()
    assert failure_plausible(lay("ADG", [[WHOLE], [WHOLE], [WHOLE], [], []]))
    assert not failure_plausible(lay("ADG", two))


def test_a_torn_row_has_no_redundancy_left() -> None:
    torn = [(0, 8 * BLOCK)]
    assert at_risk(lay("5", [[], [], [], []], weak=torn)) == frozenset()
    got = at_risk(lay("5", [[(4 * BLOCK, 5 * BLOCK)], [], [], []], weak=torn))
    assert got == {4, 36, 68}


def test_mirrors_lose_a_block_only_where_both_copies_are_gone() -> None:
    # RAID 1+0 over 4: pair 0 = members 0 and 2; member row 33 = stripe 1, offset 1 -> 64 + 1
    got = at_risk(lay("10", [[(30 * BLOCK, 40 * BLOCK)], [], [(33 * BLOCK, 34 * BLOCK)], []]))
    assert got == {65}


def test_raid0_loses_the_blocks_of_the_missing_member() -> None:
    got = at_risk(lay("0", [[], [WHOLE]]))
    assert len(got) == 2048 and 32 in got and 0 not in got


def test_the_extent_offset_counts() -> None:
    base = 1 << 20
    assert at_risk(lay("0", [[(0, base)], []], base=base)) == frozenset()
    assert at_risk(lay("0", [[(base, base + BLOCK)], []], base=base)) == {0}


def test_acceptable_contents_follow_acknowledgement() -> None:
    m = Reference()
    m.add_ld(1, 100)
    assert m.check_block(1, 5, bytes(BLOCK)) is None
    m.acked(1, 5, 2, 7, durable=False)
    assert m.check_block(1, 5, block(1, 5, 7)) is None
    assert m.check_block(1, 5, bytes(BLOCK)) is not None
    m.unacked(1, 5, 1, 8)
    assert m.check_block(1, 5, block(1, 5, 8)) is None and m.check_block(1, 5, block(1, 5, 7)) is None
    assert "lba 6" in decode(block(1, 6, 7))
    # a cache loss may bring back what was on the drives, and may error
    m.cache_lost(1, "test")
    assert m.check_block(1, 6, bytes(BLOCK)) is None and m.may_error(1, 6)
    m.acked(1, 6, 1, 9, durable=True)
    assert not m.may_error(1, 6) and m.check_block(1, 6, bytes(BLOCK)) is not None
