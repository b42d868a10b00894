"""The `msa500_guest` fixture (issue 14 item 5): a user's shell script in a Linux guest logged in
to the array with the kernel initiator; its exit status and output come back."""

from __future__ import annotations

import pytest

from msa500_emu.testing import MSA500
from msa500_emu.testing.guest import GuestFactory

pytestmark = pytest.mark.slow

SCRIPT = r"""
sg_inq $DISK | grep -E 'Vendor|Product'
cat /sys/block/${DISK#/dev/}/device/wwid
yes "from-the-guest" | head -c 8192 >/tmp/p
dd if=/tmp/p of=$DISK bs=4096 seek=100 count=2 oflag=direct 2>/dev/null && echo "wrote 8192"
exit 7
"""


def test_script_runs_against_the_kernel_block_device(msa500: MSA500, msa500_guest: GuestFactory) -> None:
    result = msa500_guest(msa500, SCRIPT, ports=(1,), initiator="iqn.2026-11.lab:fixture")
    assert result.status == 7, result.console[-3000:]
    assert result.powered_off
    assert "MSA500" in result.output and "COMPAQ" in result.output
    assert "wrote 8192" in result.output
    wwid = msa500.ctl("SHOW UNITS")[0]
    assert wwid["lun"] == 1
    assert "naa." in result.output
    data = msa500.initiator(port=1).read(1, 100 * 8, 16)
    assert data == (b"from-the-guest\n" * 600)[:8192]
