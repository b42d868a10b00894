"""Issue 10's first user report, as the user typed it, on the default shelf over iSCSI: a RAID 5
unit with a spare, 64 MiB written by qemu-io, a media error on a surviving member and a drive
failure. After the rebuild every block reads back the pattern except the truly lost ones, which
fail; nothing reads back wrong with GOOD status."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import need, start_array

pytestmark = pytest.mark.slow

CHUNK = 64 * 1024


def qemu_io(url: str, cmds: list[str]) -> str:
    args = [need("qemu-io"), "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=300, check=False)
    return out.stdout + out.stderr


def test_the_reported_sequence_reads_back_the_pattern_or_fails(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "state")
    try:
        arr.ctl("FAULT DISK11 INSERT")
        arr.ctl('ADD UNIT 3 DATA="DISK8-DISK10" RAID_LEVEL=5 STRIPE_SIZE=64 SIZE=4GB')
        arr.ctl("ADD SPARE UNIT=3 DISK11")
        url = arr.url(1, 3)
        out = qemu_io(url, ["write -P 0xab 0 64M"])
        assert "wrote 67108864" in out, out
        arr.ctl("FAULT DISK8 MEDIA-ERROR 4096 64")
        arr.ctl("FAULT DISK10 FAIL")  # the spare rebuilds; the unit returns to ok
        deadline = time.monotonic() + 240
        while arr.unit(3)["state"] != "ok":
            assert time.monotonic() < deadline, arr.unit(3)
            time.sleep(0.5)
        lost = [e for e in arr.events() if e["code"] == "BLOCKS_LOST"]
        assert len(lost) == 1, lost
        first, last = map(int, re.search(r"LBA (\d+)-(\d+)", lost[0]["message"]).groups())  # type: ignore[union-attr]
        assert arr.unit(3)["lost_blocks"] == last - first + 1 == 64
        # 64 KiB at a time, as the user read it: the pattern, or an error where blocks are lost
        out = qemu_io(url, [f"read -P 0xab {off} 64k" for off in range(0, 64 << 20, CHUNK)])
        assert "Pattern verification failed" not in out
        failed = [m for m in re.findall(r"read failed|read \d+/\d+ bytes at offset (\d+)", out)]
        assert out.count("read failed") == len(range(first * 512 // CHUNK, last * 512 // CHUNK + 1))
        assert out.count("read 65536/65536 bytes") == 1024 - out.count("read failed"), failed[:3]
        # block by block around the lost range: exactly those blocks fail
        lo, hi = first - 8, last + 8
        out = qemu_io(url, [f"read -P 0xab {b * 512} 512" for b in range(lo, hi + 1)])
        assert "Pattern verification failed" not in out
        assert out.count("read failed") == last - first + 1
        # a write over them heals them
        qemu_io(url, [f"write -P 0xab {first * 512} {(last - first + 1) * 512}"])
        assert arr.unit(3)["lost_blocks"] == 0
        out = qemu_io(url, [f"read -P 0xab {first * 512} {(last - first + 1) * 512}"])
        assert "read failed" not in out and "Pattern verification failed" not in out
    finally:
        assert arr.stop() == 0, arr.log_tail()
