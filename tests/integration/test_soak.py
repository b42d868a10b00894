"""scripts/soak, as the README shows it, cut to a short run: verified I/O on both ports under drive
faults, destage pressure and an RSO failover/restore, no verification error, no RSS/fd growth."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def test_a_short_soak_passes_with_no_verification_error() -> None:
    script = ROOT / "scripts" / "soak"
    out = subprocess.run([sys.executable, str(script), "--seconds", "30", "--sessions", "4", "--seed", "12"],
                         capture_output=True, text=True, timeout=360, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "VERIFY ERROR" not in text, text
    assert re.search(r"soak: passed, 0 verification errors", out.stdout), text
    end = re.search(r"^end\s+[\d.]+\s+(\d+)\s+(\d+)\s+(\d+)\s+[\d.]+\s+[\d.]+\s+(\d+)$", out.stdout, re.MULTILINE)
    assert end, text
    iops, verify, _other, fds = (int(g) for g in end.groups())
    assert iops > 0 and verify == 0 and fds > 0, text
    # the schedule really ran its faults underneath the I/O
    assert "FAULT DISK" in out.stdout and "RSO FAILOVER" in out.stdout, text
