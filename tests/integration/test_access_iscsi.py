"""Host connections and Selective Storage Presentation seen by libiscsi's tools over loopback:
a port limited to its connections refuses other initiators' logins and lists them nothing; a unit
with an ACL is left out of other hosts' REPORT LUNS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from msa500_emu.iscsi.initiator import LoginError
from msa500_emu.testing import InitiatorError, InProcessArray, start_array
from msa500_emu.testing.sessions import login

from ..conftest import need

WEB = "iqn.2026-12.lab:web"
STRANGER = "iqn.2026-12.lab:stranger"


@pytest.fixture
def shelf(tmp_path: Path) -> Iterator[InProcessArray]:
    arr = start_array(tmp_path / "shelf", mode="inprocess")
    yield arr
    assert arr.stop() == 0, arr.log_tail()


def tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=30, check=False)


def test_login_and_discovery_follow_the_port_access(shelf: InProcessArray) -> None:
    url = shelf.url(1, 1)
    assert tool("iscsi-ls", "-s", "-i", STRANGER, f"iscsi://{shelf.portal(1)}").stdout.count("Lun:") >= 3
    shelf.ctl(f"ADD CONNECTION web IQN={WEB} PORT=1")
    shelf.ctl("SET PORT 1 ACCESS=CONNECTIONS")
    # The stranger: SendTargets lists nothing on port 1, and a login straight to the target is refused.
    ls = tool("iscsi-ls", "-s", "-i", STRANGER, f"iscsi://{shelf.portal(1)}")
    assert "Target:" not in ls.stdout, ls.stdout
    inq = tool("iscsi-inq", "-i", STRANGER, url)
    assert inq.returncode != 0 and "Authorization failure" in inq.stderr + inq.stdout, (inq.stdout, inq.stderr)
    assert "refused (0x0202)" in shelf.log.read_text()
    # Port 2 still admits anyone; the connection's initiator gets in on port 1.
    assert "Lun:" in tool("iscsi-ls", "-s", "-i", STRANGER, f"iscsi://{shelf.portal(2)}").stdout
    assert tool("iscsi-inq", "-i", WEB, url).returncode == 0
    assert "Lun:2" in tool("iscsi-ls", "-s", "-i", WEB, f"iscsi://{shelf.portal(1)}").stdout


def test_a_unit_with_an_acl_is_left_out_of_other_hosts_lun_lists(shelf: InProcessArray) -> None:
    shelf.ctl(f"ADD CONNECTION web IQN={WEB}")
    shelf.ctl("ADD ACL CONNECTION=web UNIT=2")
    seen = tool("iscsi-ls", "-s", "-i", WEB, f"iscsi://{shelf.portal(1)}").stdout
    hidden = tool("iscsi-ls", "-s", "-i", STRANGER, f"iscsi://{shelf.portal(1)}").stdout
    assert "Lun:2" in seen and "Lun:1" in seen, seen
    assert "Lun:2" not in hidden and "Lun:1" in hidden, hidden
    inq = tool("iscsi-inq", "-i", STRANGER, shelf.url(1, 2))
    assert inq.returncode != 0 and "LOGICAL_UNIT_NOT_SUPPORTED" in inq.stderr + inq.stdout, (inq.stdout, inq.stderr)


def test_narrowing_a_port_ends_the_sessions_it_no_longer_admits(shelf: InProcessArray) -> None:
    host, port = shelf.portal(1).rsplit(":", 1)
    web = login(host, int(port), shelf.target, WEB)
    stranger = login(host, int(port), shelf.target, STRANGER)
    shelf.ctl(f"ADD CONNECTION web IQN={WEB} PORT=1")
    assert stranger.test_unit_ready(0).status == 0  # ACCESS=ALL still: nothing changes yet
    shelf.ctl("SET PORT 1 ACCESS=CONNECTIONS")
    with pytest.raises((InitiatorError, OSError)):
        stranger.test_unit_ready(0)  # its session ended: the connection is closed
    stranger.close()
    assert web.test_unit_ready(0).status == 0  # the host with a connection keeps its session
    with pytest.raises(LoginError) as refused:
        login(host, int(port), shelf.target, STRANGER)
    assert refused.value.status == 0x0202
    shelf.ctl("DELETE CONNECTION web")  # the last connection goes: so does its session
    with pytest.raises((InitiatorError, OSError)):
        web.test_unit_ready(0)
    web.close()
    assert "the port's access no longer admits it" in shelf.log.read_text()
