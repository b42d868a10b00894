"""The LUN field codec (firmware_model.lun_address): SAM-5 single-level addressing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_model.lun_address import MAX_FLAT_LUN, NO_LUN, decode_lun, encode_lun

LUNS = st.integers(0, MAX_FLAT_LUN)


@given(LUNS)
def test_every_addressable_lun_round_trips(lun: int) -> None:
    field = encode_lun(lun)
    assert len(field) == 8 and field[2:] == bytes(6)
    assert decode_lun(field) == lun


@given(LUNS)
def test_peripheral_addressing_below_256_and_flat_space_from_256(lun: int) -> None:
    method = encode_lun(lun)[0] >> 6
    assert method == (0 if lun < 256 else 1)


def test_the_fields_hosts_and_report_luns_use() -> None:
    assert encode_lun(0) == bytes(8)
    assert encode_lun(1) == bytes([0, 1]) + bytes(6)
    assert encode_lun(300) == bytes([0x41, 300 & 0xFF]) + bytes(6)
    assert encode_lun(MAX_FLAT_LUN) == bytes([0x7F, 0xFF]) + bytes(6)


@pytest.mark.parametrize("lun", [-1, MAX_FLAT_LUN + 1, 1 << 16])
def test_a_lun_beyond_single_level_addressing_is_refused(lun: int) -> None:
    with pytest.raises(ValueError, match="cannot be addressed"):
        encode_lun(lun)


@given(st.integers(0, 0xFF))
def test_a_small_lun_in_flat_space_reads_the_same(lun: int) -> None:
    """Flat space addressing of a LUN below 256 is legal too; some hosts send it."""
    assert decode_lun(bytes([0x40, lun]) + bytes(6)) == lun


@given(st.integers(0x80, 0xFF), st.binary(min_size=7, max_size=7))
def test_other_addressing_methods_name_no_lun(byte0: int, rest: bytes) -> None:
    """Logical unit (10b) and extended (11b) addressing: NO_LUN, which no shelf has."""
    assert decode_lun(bytes([byte0]) + rest) == NO_LUN
    assert NO_LUN > MAX_FLAT_LUN
