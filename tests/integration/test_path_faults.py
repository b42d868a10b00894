"""Port faults and command error injection against a real emulator process, seen by hosts: the
project's initiator and libiscsi's tools. Waits are bounded; durations are only ever asserted
from below (a delay of d holds an answer at least d)."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_model.scsi.errors import ScsiError
from firmware_model.scsi.sense import build_sense
from msa500_emu.iscsi.constants import LoginStatus, Op, TmfFunction, TmfResponse
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig, LoginError
from msa500_emu.iscsi.pdu import encode
from msa500_emu.testing import RunningArray, mirror_shelf, start_array

from ..conftest import need

pytestmark = pytest.mark.slow

WAIT = 10.0
A, B = "iqn.2026-12.lab:node-a", "iqn.2026-12.lab:node-b"
ISID1, ISID2 = b"\x80\x12\x34\x56\x00\x01", b"\x80\x12\x34\x56\x00\x02"


@pytest.fixture(scope="module")
def shelf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    base = tmp_path_factory.mktemp("faults")
    arr = start_array(base / "shelf", mirror_shelf("FAULTS0001"))
    yield arr
    assert arr.stop() == 0, arr.log_tail()


@pytest.fixture
def arr(shelf: RunningArray) -> Iterator[RunningArray]:
    yield shelf
    for port in (1, 2):
        shelf.port_fault(port, "CLEAR")
    for name in (A, B):
        shelf.fault("SESSION", f"INITIATOR={name}", "CLEAR")
    shelf.clear_injections()
    assert shelf.alive, shelf.log_tail()


def host(arr: RunningArray, port: int = 1, name: str = A, isid: bytes = ISID1, timeout: float = WAIT) -> Initiator:
    ini = Initiator("127.0.0.1", arr.tcp_port(port), InitiatorConfig(initiator_name=name, isid=isid), timeout=timeout)
    try:
        ini.login(arr.target)
        ini.clear_unit_attentions(1)
    except BaseException:
        ini.close()
        raise
    return ini


def dropped(ini: Initiator) -> bool:
    """The connection is gone (reset or closed) without an answer to a NOP."""
    try:
        ini.nop(b"?")
    except (ConnectionError, OSError):
        return True
    return False


def refused(arr: RunningArray, port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", arr.tcp_port(port)), timeout=WAIT).close()
    except ConnectionRefusedError:
        return True
    return False


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def test_down_refuses_connects_and_up_logs_in_again(arr: RunningArray) -> None:
    ini = host(arr)
    arr.port_fault(1, "DOWN")
    assert refused(arr, 1) and dropped(ini)
    assert [f["fault"] for f in arr.ctl("SHOW", "FAULTS")] == ["down"]
    alua = {p["port"]: p["state"] for p in arr.ctl("ALUA", "STATUS")["ports"]}
    assert alua == {1: "offline", 2: "active/optimized"}  # what hosts on port 2 read in RTPG
    host(arr, 2).close()  # the other port serves on
    arr.port_fault(1, "UP")
    again = host(arr)
    assert again.read(1, 0, 1) == again.read(1, 0, 1)
    again.close()
    assert arr.ctl("ALUA", "STATUS")["ports"][0]["state"] == "active/optimized"
    codes = [e["code"] for e in arr.events()[-3:]]
    assert "PORT_FAULT" in codes and "PORT_FAULT_CLEARED" in codes


def test_blackhole_accepts_and_never_answers(arr: RunningArray) -> None:
    ini = host(arr)
    arr.port_fault(1, "BLACKHOLE")
    sock = socket.create_connection(("127.0.0.1", arr.port1), timeout=1.0)  # the connect succeeds
    late = Initiator(config=InitiatorConfig(initiator_name=B), sock=sock)
    with pytest.raises(TimeoutError):
        late.login(arr.target)  # no login answer within the wait, and no RST
    ini.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        ini.test_unit_ready(1)
    arr.port_fault(1, "CLEAR")
    ini.sock.settimeout(WAIT)
    assert ini.recv_pdu().opcode == Op.SCSI_RSP  # the held command is answered once the path heals
    assert ini.nop(b"back").data == b"back"
    ini.close()
    late.close()


def test_delay_holds_every_response_at_least_that_long(arr: RunningArray) -> None:
    ini = host(arr, 2)
    arr.port_fault(2, "DELAY", 400)
    t0 = time.monotonic()
    ini.read(1, 0, 8)
    assert time.monotonic() - t0 >= 0.4
    arr.port_fault(2, "CLEAR")
    ini.close()


def test_reset_drops_each_connection_once(arr: RunningArray) -> None:
    a, b = host(arr, 1, A), host(arr, 1, B)
    result = arr.port_fault(1, "RESET")
    assert result["connections_dropped"] == 2
    assert dropped(a) and dropped(b)
    assert arr.ctl("SHOW", "FAULTS") == []  # nothing lasts: the next login works
    host(arr, 1, A).close()


def test_initiator_faults_hit_that_host_only(arr: RunningArray) -> None:
    a, b = host(arr, 1, A), host(arr, 1, B)
    arr.port_fault(1, "DOWN", initiator=A)
    assert dropped(a)
    assert b.nop(b"b").data == b"b"
    with pytest.raises((ConnectionError, OSError)):  # A's login is closed at the transport, unanswered
        host(arr, 1, A)
    host(arr, 2, A).close()  # the other port still lets it in
    arr.port_fault(1, "DELAY", 300, initiator=B)
    t0 = time.monotonic()
    assert b.nop(b"slow").data == b"slow"
    assert time.monotonic() - t0 >= 0.3
    arr.port_fault(1, "CLEAR", initiator=A)
    host(arr, 1, A).close()
    b.close()


def test_reinstate_refuses_the_old_isid_and_takes_a_new_one(arr: RunningArray) -> None:
    old = host(arr, 1, A, ISID1)
    arr.reinstate_session(A)
    assert dropped(old)
    with pytest.raises(LoginError) as exc:
        host(arr, 1, A, ISID1)
    assert exc.value.status == LoginStatus.AUTHORIZATION_FAILURE
    new = host(arr, 1, A, ISID2)
    assert new.nop(b"new").data == b"new"
    assert any(f["fault"] == "reinstate" and f["initiator"] == A for f in arr.ctl("SHOW", "FAULTS"))
    new.close()


def test_injected_medium_error_reaches_the_host_with_its_sense(arr: RunningArray) -> None:
    ini = host(arr, 1, A)
    ident = arr.inject(1, "READ", "MEDIUM", lba=(16, 23), count=1, initiator=A)
    r = ini.scsi(1, read10(8, 16), read_len=16 * 512)
    assert r.status == 0x02 and r.sense == build_sense(ScsiError(3, 0x11, 0, info=16))
    assert ini.scsi(1, read10(8, 16), read_len=16 * 512).status == 0  # COUNT=1
    row = next(i for i in arr.injections() if i["id"] == ident)
    assert row["fired"] == 1 and row["remaining"] == 0
    assert arr.wait_for_event("INJECTION_FIRED")["lun"] == 1
    ini.close()


def test_injected_timeout_is_cleaned_up_by_abort_task(arr: RunningArray) -> None:
    ini = host(arr, 1, A)
    arr.inject(1, "READ", "TIMEOUT")
    bhs = bytearray(48)
    bhs[0], bhs[1], bhs[9] = Op.SCSI_CMD, 0xC1, 1
    struct.pack_into(">IIII", bhs, 16, 0x4242, 512, ini.cmd_sn, ini.exp_stat_sn)
    bhs[32:42] = read10(0, 1)
    ini.cmd_sn += 1
    ini.send_raw(b"".join(bytes(c) for c in encode(bhs)))
    ini.sock.settimeout(1.0)
    with pytest.raises(TimeoutError):
        ini.recv_pdu()  # no answer to the command
    ini.sock.settimeout(WAIT)
    assert ini.task_mgmt(TmfFunction.ABORT_TASK, 1, rtt=0x4242, ref_cmd_sn=ini.cmd_sn - 1) == TmfResponse.COMPLETE
    assert ini.read(1, 0, 1) == ini.read(1, 0, 1)  # the session carries on
    ini.close()


def test_libiscsi_sees_the_injected_sense(arr: RunningArray) -> None:
    tool = need("iscsi-inq")
    arr.inject(1, "ANY", "SENSE=4/3E/1", count=None, initiator="iqn.2026-12.lab:libiscsi")
    out = subprocess.run([tool, "-i", "iqn.2026-12.lab:libiscsi", arr.url(1, 1)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode != 0
    assert "SENSE KEY:HARDWARE_ERROR(4)" in out.stderr + out.stdout and "0x3e01" in out.stderr + out.stdout
    out = subprocess.run([tool, "-i", "iqn.2026-12.lab:other", arr.url(1, 1)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0 and "MSA500" in out.stdout  # another initiator is not hit


def test_injections_are_not_kept_across_a_restart(tmp_path: Path) -> None:
    arr = start_array(tmp_path / "shelf", mirror_shelf("FAULTS0002"))
    try:
        arr.inject(1, "ANY", "BUSY", count=None)
        assert len(arr.injections()) == 1
        arr.restart()
        assert arr.injections() == []
    finally:
        arr.stop()
