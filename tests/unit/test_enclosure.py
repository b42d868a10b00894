"""Drives and bays: the data area after the reserved MiB, faults, hot plug, metadata records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware_model.enclosure import Drive, Enclosure, EnclosureError
from firmware_model.metadata import (
    METADATA_BYTES,
    SLOT_BYTES,
    ArrayConfig,
    DriveRecord,
    LdConfig,
    MetadataError,
    ShelfConfig,
    decode,
    encode,
)
from firmware_model.raid.api import DriveError, MemberState

MIB = 1 << 20


def test_member_offsets_start_after_the_reserved_area(tmp_path: Path) -> None:
    enc = Enclosure(tmp_path)
    d = enc.new_drive(3, 8 * MIB, "SER3", 1)
    d.write(0, b"\xab" * 512)
    with open(tmp_path / "bay03.img", "rb") as f:
        f.seek(METADATA_BYTES)
        assert f.read(512) == b"\xab" * 512
    assert d.read(0, 512) == b"\xab" * 512
    assert d.read(4096, 512) == bytes(512)  # a hole reads as zeros
    assert d.data_bytes == 7 * MIB
    assert os.stat(tmp_path / "bay03.img").st_blocks * 512 < MIB  # sparse


def test_media_error_fails_reads_until_the_range_is_rewritten(tmp_path: Path) -> None:
    d = Enclosure(tmp_path).new_drive(1, 8 * MIB, "S", 1)
    d.add_media_error(4096, 1024)
    d.read(0, 4096)
    with pytest.raises(DriveError) as exc:
        d.read(0, 8192)
    assert exc.value.offset == 4096 and exc.value.why == "media error"
    d.write(4096, bytes(512))  # remapped: the first half is good now
    d.read(4096, 512)
    with pytest.raises(DriveError):
        d.read(4608, 512)
    d.clear_faults()
    d.read(0, 8192)
    with pytest.raises(EnclosureError):
        d.add_media_error(8 * MIB, 512)


def test_failed_and_pulled_drives_refuse_io(tmp_path: Path) -> None:
    enc = Enclosure(tmp_path)
    d = enc.new_drive(2, 8 * MIB, "S2", 1)
    d.failed = True
    assert d.state is MemberState.FAILED
    with pytest.raises(DriveError):
        d.read(0, 512)
    d.failed = False
    d.write(0, b"x" * 512)
    enc.pull(2)
    assert d.state is MemberState.FAILED and enc.bays[2] is None
    with pytest.raises(DriveError) as exc:
        d.write(0, b"y" * 512)
    assert exc.value.why == "drive missing"
    assert (tmp_path / "pulled-02-S2.img").exists() and not (tmp_path / "bay02.img").exists()


def test_pulled_drive_comes_back_in_any_bay_with_its_data(tmp_path: Path) -> None:
    enc = Enclosure(tmp_path)
    d = enc.new_drive(2, 8 * MIB, "S2", 7)
    d.write_record(DriveRecord("S2", 7, 8 * MIB))
    d.write(512, b"z" * 512)
    enc.pull(2)
    enc.close()
    enc2 = Enclosure(tmp_path)
    enc2.scan()
    assert "S2" in enc2.aside and enc2.aside["S2"].last_bay == 2
    back = enc2.insert(9, "S2")
    assert back.bay == 9 and back.read(512, 512) == b"z" * 512
    with pytest.raises(EnclosureError):
        enc2.insert(9, "S2")


def test_scan_reads_serials_from_records_and_flags_blank_drives(tmp_path: Path) -> None:
    enc = Enclosure(tmp_path)
    a = enc.new_drive(1, 8 * MIB, "AAA1", 11)
    a.write_record(DriveRecord("AAA1", 11, 8 * MIB))
    enc.new_drive(2, 8 * MIB, "", 0)
    enc.close()
    enc2 = Enclosure(tmp_path)
    enc2.scan()
    one, two = enc2.bays[1], enc2.bays[2]
    assert one is not None and one.serial == "AAA1" and one.wwid == 11 and not one.blank
    assert two is not None and two.blank


def _cfg(gen: int) -> ShelfConfig:
    return ShelfConfig(
        serial="SHELF1", generation=gen,
        arrays=[ArrayConfig("A", ["D1", "D2"], [1, 2], 7 * MIB, ["D3"])],
        lds=[LdConfig(1, "boot", "A", "1", 64, 0, 2048)],
    )


def test_record_roundtrip_and_checksum(tmp_path: Path) -> None:
    raw = encode(DriveRecord("D1", 5, 8 * MIB, _cfg(3), seq=9), 0)
    rec = decode(raw)
    assert rec.serial == "D1" and rec.seq == 9 and rec.config == _cfg(3)
    bad = bytearray(raw)
    bad[-2] ^= 0xFF
    with pytest.raises(MetadataError):
        decode(bytes(bad))
    with pytest.raises(MetadataError):
        decode(bytes(64))


def test_two_slots_newest_wins_and_a_torn_slot_falls_back(tmp_path: Path) -> None:
    d = Enclosure(tmp_path).new_drive(1, 8 * MIB, "D1", 5)
    for gen in (1, 2, 3):
        d.write_record(DriveRecord("D1", 5, 8 * MIB, _cfg(gen)))
    fresh = Drive(d.path, "", 0, 8 * MIB)
    fresh.open(d.path)
    rec = fresh.read_record()
    assert rec is not None and rec.config is not None and rec.config.generation == 3
    # tear the newest slot: the previous record is still there
    newest = (d.meta_slot + 1) % 2
    assert d.fd is not None
    os.pwrite(d.fd, b"\x00" * 64, newest * SLOT_BYTES + 30)
    rec = fresh.read_record()
    assert rec is not None and rec.config is not None and rec.config.generation == 2
