"""The RSO failure table over iSCSI with the real agents as subprocesses and short timeouts.

Each test starts its own array; the primary agent configures RSO (the product's order) with a
1.5 s heartbeat timeout, the recovery agent joins on port 2, and faults are made for real:
agent processes killed or stopped, the shelf powered off, a port's link cut, the network to
the array cut by a TCP relay.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.testing import mirror_shelf

from ..conftest import ROOT, RunningArray, start_array

pytestmark = pytest.mark.slow

TIMEOUT = 1.5
SHELF = mirror_shelf("RSOAGENTS1", size="32MiB")


class Agent:
    """An agent subprocess with its alert file."""

    def __init__(self, tmp: Path, role: str, url: str, *extra: str, name: str | None = None) -> None:
        self.name = name or role
        self.alerts = tmp / f"{self.name}.alerts"
        self.log = tmp / f"{self.name}.log"
        cmd = [sys.executable, "-m", "msa500_emu", "agent", role, "--target", url, "--quiet",
               "--alert-file", str(self.alerts), "--initiator-name", f"iqn.2026-11.test:{self.name}", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"), cwd=ROOT)

    def codes(self) -> list[str]:
        if not self.alerts.exists():
            return []
        return [json.loads(line)["code"] for line in self.alerts.read_text().splitlines() if line.strip()]

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} agent still running; log:\n{self.log.read_text()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        return self.proc.poll() is None


def ctl(arr: RunningArray, *words: str) -> Any:
    out = subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, "--json", *words],
                         capture_output=True, text=True, timeout=30, check=False)
    body = json.loads(out.stdout)
    if not body.get("ok"):
        raise AssertionError(f"ctl {' '.join(words)}: {body.get('error')}")
    return body["result"]


def rso(arr: RunningArray) -> dict[str, Any]:
    return ctl(arr, "RSO", "STATUS")  # type: ignore[no-any-return]


def events(arr: RunningArray) -> list[str]:
    return [e["code"] for e in ctl(arr, "SHOW", "EVENTS")]


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


def host(arr: RunningArray, port: int, name: str, **cfg: Any) -> Initiator:
    ini = Initiator("127.0.0.1", arr.port1 if port == 1 else arr.port2,
                    InitiatorConfig(initiator_name=f"iqn.2026-11.test:{name}", **cfg))
    ini.login(arr.target)
    ini.clear_unit_attentions(1)
    return ini


@pytest.fixture
def arr(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "s.toml").write_text(SHELF)
    running = start_array(tmp_path / "st", tmp_path / "s.toml")
    agents: list[Agent] = []
    running.agents = agents  # type: ignore[attr-defined]
    yield running
    for a in agents:
        if a.running():
            a.cont()
        a.kill()
    running.stop()


def pair(arr: RunningArray, tmp: Path, primary_url: str | None = None,
         recovery_url: str | None = None) -> tuple[Agent, Agent]:
    p = Agent(tmp, "primary", primary_url or arr.url(1, 0), "--configure", str(TIMEOUT))
    arr.agents.append(p)  # type: ignore[attr-defined]
    wait_for("RSO enabled by the primary", lambda: rso(arr)["enabled"])
    r = Agent(tmp, "recovery", recovery_url or arr.url(2, 0))
    arr.agents.append(r)  # type: ignore[attr-defined]
    wait_for("state ok", lambda: rso(arr)["state"] == "ok")
    return p, r


def test_primary_fails_the_recovery_fences_and_exits_0(arr: RunningArray, tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    time.sleep(3 * TIMEOUT)  # the blind spot: heartbeats run, nothing happens
    assert rso(arr)["state"] == "ok" and r.running() and p.running()
    p.kill()  # the primary server dies
    assert r.wait() == 0
    st = rso(arr)
    assert st["state"] == "secondaryRunningAuto" and st["fenced_port"] == 1
    print(f"detection (missed deadline -> fence): {st['detection_ms']} ms")
    assert "HOST_FAILOVER" in r.codes()
    ev = events(arr)
    assert {"RSO_TIMEOUT", "RSO_FAILOVER", "HOST_FAILOVER", "HOST_AGENT_STARTED"} <= set(ev)
    recovery_host = host(arr, 2, "recovery-os")
    recovery_host.write(1, 0, b"\x42" * 512)
    reborn = host(arr, 1, "primary-os")
    res = reborn.scsi(1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), read_len=512)
    assert res.status == 2 and res.asc_ascq == (0x04, 0x0C)


def test_recovery_fails_while_the_primary_serves_the_primary_alarms(arr: RunningArray, tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    r.kill()
    wait_for("the primary's lost-acknowledgment alarm", lambda: "HOST_ACK_LOST" in p.codes())
    assert p.running() and rso(arr)["failed_over"] is None
    # the agent and the array notice on their own clocks: under load the array's alarm may come second
    wait_for("the array's lost-acknowledgment alarm", lambda: {"RSO_ACK_LOST", "HOST_ACK_LOST"} <= set(events(arr)))
    assert p.running() and rso(arr)["failed_over"] is None
    r2 = Agent(tmp_path, "recovery", arr.url(2, 0), name="recovery2")
    arr.agents.append(r2)  # type: ignore[attr-defined]
    wait_for("acknowledgment restored", lambda: "HOST_ACK_RESTORED" in p.codes())
    # the agent saw the acknowledgment come back; the array's state follows on its own clock (as above)
    wait_for("the array's state ok again", lambda: rso(arr)["state"] == "ok")


def test_recovery_fails_while_the_primary_is_offline_clients_lose_service(arr: RunningArray,
                                                                          tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    r.kill()
    p.kill()
    wait_for("service lost", lambda: "RSO_SERVICE_LOST" in events(arr))
    st = rso(arr)
    assert st["state"] == "timeoutError" and st["failovers"] == 0 and st["active_port"] == 1


def test_storage_power_loss_the_primary_does_not_resume_unattended(arr: RunningArray, tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    ctl(arr, "FAULT", "SHELF", "POWER-OFF")
    wait_for("both agents notice", lambda: "HOST_ARRAY_LOST" in p.codes() and "HOST_ARRAY_LOST" in r.codes())
    time.sleep(2 * TIMEOUT)
    ctl(arr, "FAULT", "SHELF", "POWER-ON")
    assert p.wait() == 5
    assert "HOST_POWER_LOSS_HOLD" in p.codes()
    wait_for("the recovery is back", lambda: "HOST_ARRAY_BACK" in r.codes())
    time.sleep(3 * TIMEOUT)  # no deadline runs: nobody takes over, clients stay without service
    st = rso(arr)
    assert r.running() and st["failovers"] == 0 and st["awaiting_primary"] and st["state"] == "daemonDown"
    p2 = Agent(tmp_path, "primary", arr.url(1, 0), name="primary-after-admin")  # a normal boot
    arr.agents.append(p2)  # type: ignore[attr-defined]
    wait_for("state ok again", lambda: rso(arr)["state"] == "ok")


def test_broken_port2_link_fails_over_although_the_primary_heartbeats(arr: RunningArray,
                                                                      tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    ctl(arr, "FAULT", "LINK2", "DOWN")
    assert r.wait() == 0
    assert p.wait() == 3 and "HOST_FENCED" in p.codes()
    assert rso(arr)["state"] == "secondaryRunningAuto"


def test_forced_failover_and_manual_restore_round_trip(arr: RunningArray, tmp_path: Path) -> None:
    p, r = pair(arr, tmp_path)
    f8 = Agent(tmp_path, "recovery", arr.url(2, 0), "--force", name="f8")
    assert f8.wait() == 0
    assert rso(arr)["state"] == "secondaryRunningUser"
    assert p.wait() == 3
    assert r.wait() == 0  # the waiting monitor sees the failover and lets its host boot
    serving = host(arr, 2, "recovery-os")  # the recovery host runs the service
    serving.write(1, 8, b"\x77" * 512)
    with pytest.raises(AssertionError, match="logged in on port 2"):
        ctl(arr, "RSO", "RESTORE")
    serving.logout()
    ctl(arr, "RSO", "RESTORE")
    p2 = Agent(tmp_path, "primary", arr.url(1, 0), name="primary2")
    arr.agents.append(p2)  # type: ignore[attr-defined]
    r2 = Agent(tmp_path, "recovery", arr.url(2, 0), name="recovery2")
    arr.agents.append(r2)  # type: ignore[attr-defined]
    wait_for("state ok after restore", lambda: rso(arr)["state"] == "ok")
    primary_os = host(arr, 1, "primary-os")
    assert primary_os.read(1, 8, 1) == b"\x77" * 512


class Relay:
    """A TCP relay on loopback between an agent and a portal; cut() drops every connection."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.open = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if not self.open:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def mend(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.lsock.close()


def test_array_disappears_briefly_and_comes_back(arr: RunningArray, tmp_path: Path) -> None:
    r1, r2 = Relay(arr.port1), Relay(arr.port2)
    try:
        url = arr.url(1, 0).replace(f":{arr.port1}/", f":{r1.port}/")
        url2 = arr.url(2, 0).replace(f":{arr.port2}/", f":{r2.port}/")
        p, r = pair(arr, tmp_path, url, url2)
        r1.cut()
        r2.cut()
        wait_for("both agents lose the array", lambda: "HOST_ARRAY_LOST" in p.codes() and
                 "HOST_ARRAY_LOST" in r.codes(), timeout=5)
        time.sleep(TIMEOUT / 3)
        r1.mend()
        r2.mend()
        wait_for("both reach it again", lambda: "HOST_ARRAY_BACK" in p.codes() and "HOST_ARRAY_BACK" in r.codes())
        time.sleep(2 * TIMEOUT)
        assert p.running() and r.running() and rso(arr)["state"] == "ok"
        # cut only the primary, for longer than the timeout: the recovery takes over
        r1.cut()
        assert r.wait() == 0
        r1.mend()
        assert p.wait() == 3
    finally:
        r1.close()
        r2.close()


def test_split_brain_a_fenced_primary_that_keeps_writing_lands_nothing(arr: RunningArray,
                                                                       tmp_path: Path) -> None:
    """The primary hangs (its agent stops being scheduled) while its I/O path keeps writing."""
    p, r = pair(arr, tmp_path)
    writer = host(arr, 1, "primary-os")
    blocks = 4096  # 2 MiB: block i holds (i, attempt) from the primary
    acked: dict[int, bytes] = {}
    rejected = 0
    # A write waiting for its data (R2T) at the fence instant: it must not land either.
    slow = host(arr, 1, "primary-os-slow", immediate_data="No", initial_r2t="Yes")
    pending = _start_write_waiting_for_r2t(slow, lba=blocks + 1, data=b"\xdd" * 512)
    p.stop()  # hang: no more heartbeats, but the OS's writes continue
    attempt = 0
    fence_seen_at = None
    while r.running() or attempt < 50:
        i = attempt % blocks
        data = struct.pack(">II", i, attempt).ljust(512, b"\xab")
        res = writer.scsi(1, struct.pack(">BBQIBB", 0x8A, 0, i, 1, 0, 0), data=data)
        if res.status == 2 and res.sense_key == 0x06 and res.asc_ascq == (0x2A, 0x06):
            continue  # told the ports' states changed (SPC-4: every I_T nexus); nothing ran: retry it
        if res.status == 0:
            assert fence_seen_at is None, "a write succeeded after a rejected one"
            acked[i] = data
        else:
            assert res.status == 2 and res.asc_ascq == (0x04, 0x0C), (res.status, res.sense.hex())
            rejected += 1
            fence_seen_at = fence_seen_at or attempt
        attempt += 1
        if attempt > 200_000:
            raise AssertionError("the recovery never took over")
    assert r.wait() == 0 and rejected >= 50
    res = _finish_write_waiting_for_r2t(slow, *pending)
    assert res in ((2, (0x04, 0x0C)), (2, (0x2A, 0x06))), res  # fenced, or told first: either way not run
    p.cont()  # the hung primary wakes up: it finds itself fenced and stops
    assert p.wait() == 3
    reader = host(arr, 2, "recovery-os")
    disk = reader.read(1, 0, blocks + 2)
    expected = b"".join(acked.get(i, b"\0" * 512) for i in range(blocks)) + b"\0" * 1024
    assert disk == expected, "the logical drive holds bytes the fenced primary never got acknowledged"
    print(f"split brain: {len(acked)} blocks acknowledged before the fence, {rejected} writes rejected after")


def _start_write_waiting_for_r2t(ini: Initiator, lba: int, data: bytes) -> tuple[int, bytes]:
    """Send WRITE(16) without data (InitialR2T=Yes, ImmediateData=No) and wait for its R2T."""
    from msa500_emu.iscsi.constants import Op
    from msa500_emu.iscsi.initiator import lun_field

    itt = 0x5151
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD
    bhs[1] = 0x80 | 0x20 | 0x01
    bhs[8:16] = lun_field(1)
    struct.pack_into(">IIII", bhs, 16, itt, len(data), ini._next_cmd_sn(False), ini.exp_stat_sn)
    bhs[32:48] = struct.pack(">BBQIBB", 0x8A, 0, lba, 1, 0, 0)
    ini.send_pdu(bhs)
    pdu = ini.recv_pdu()
    assert pdu.opcode == Op.R2T, hex(pdu.opcode)
    return pdu.u32(20), data


def _finish_write_waiting_for_r2t(ini: Initiator, ttt: int, data: bytes) -> tuple[int, tuple[int, int]]:
    from msa500_emu.iscsi.constants import Op

    ini._send_data(0x5151, ttt, data, 0, len(data))
    while True:
        pdu = ini.recv_pdu()
        if pdu.opcode == Op.SCSI_RSP:
            sense = bytes(pdu.data[2:]) if pdu.data else b""
            return pdu.bhs[3], ((sense[12], sense[13]) if len(sense) >= 14 else (0, 0))

