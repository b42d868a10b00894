"""Alerts leave a real emulator process the way an operator receives them: SNMP traps caught by
Debian's snmptrapd (v2c, and v3 authPriv with the engine id pinned on the sender), RFC 5424
syslog datagrams on a UDP socket, and webhook POSTs on a small aiohttp server, for a drive
failure, a battery failure and an RSO failover; SET ALERTS / SHOW ALERTS at run time, kept over a
restart; and no secret (community, SNMPv3 keys) in what SHOW ALERTS prints or the log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from msa500_emu.testing import RunningArray, mirror_shelf, start_array

pytestmark = pytest.mark.slow

SNMPTRAPD = "/usr/sbin/snmptrapd"
COMMUNITY = "labCommunity7"
V3_USER, V3_AUTH, V3_PRIV = "msa500ops", "authPassPhrase9", "privPassPhrase9"
ENGINE_ID = "800000e80454524150544553543031"  # pinned on the sender ([alerts.snmpv3] engine_id)
TRAP_OID = ".1.3.6.1.6.3.1.1.4.1.0"
SYS_NAME = ".1.3.6.1.2.1.1.5.0"
TRAP_FLAGS = ".1.3.6.1.4.1.232.11.2.11.1.0"
PHY_BAY, PHY_STATUS = ".1.3.6.1.4.1.232.3.2.5.1.1.5.1.1", ".1.3.6.1.4.1.232.3.2.5.1.1.6.1.1"
RSO_STATUS = ".1.3.6.1.4.1.232.8.2.2.1.1.22.1"
ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+ \[UDP: [^\n]*\]:\n", re.M)

if not os.access(SNMPTRAPD, os.X_OK):
    pytest.skip("Debian's snmptrapd is not installed", allow_module_level=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):  # bounded in count and time
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class TrapReceiver:
    """snmptrapd on a loopback port, logging numeric OIDs to a file; ended by its PID."""

    def __init__(self, where: Path, conf: str) -> None:
        self.port = free_udp_port()
        self.log = where / "traps.log"
        self.conf = where / "snmptrapd.conf"
        self.conf.write_text(conf)
        self.proc = subprocess.Popen(
            [SNMPTRAPD, "-f", "-Lf", str(self.log), "-C", "-c", str(self.conf), "-m", "", "-M", str(where),
             "-p", str(where / "snmptrapd.pid"), "-On", f"udp:127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "SNMP_PERSISTENT_DIR": str(where)})
        wait_for("snmptrapd to start", lambda: self.log.exists() and "NET-SNMP version" in self.log.read_text())

    def traps(self) -> list[dict[str, str]]:
        text = self.log.read_text() if self.log.exists() else ""
        out = []
        for chunk in ENTRY.split(text)[1:]:
            vbs: dict[str, str] = {}
            for item in chunk.strip().split("\t"):
                oid, _, value = item.partition(" = ")
                vbs[oid.strip()] = value.strip()
            out.append(vbs)
        return out

    def wait_trap(self, number: int, **match: str) -> dict[str, str]:
        oid = f"OID: .1.3.6.1.4.1.232.0.{number}"

        def find() -> dict[str, str] | None:
            return next((t for t in self.traps() if t.get(TRAP_OID) == oid
                         and all(t.get(k) == v for k, v in match.items())), None)

        return wait_for(f"trap {number} {match} (got {[t.get(TRAP_OID) for t in self.traps()]})", find)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Webhook:
    """A small aiohttp server on its own loop and thread, keeping the JSON bodies POSTed to /hook."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        started = threading.Event()
        self.port = 0

        async def hook(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.json_response({"ok": True})

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/hook", hook)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        assert started.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Syslog:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        for _ in range(100):
            try:
                self.lines.append(self.sock.recv(4096).decode())
            except TimeoutError:
                break
        return self.lines

    def wait(self, code: str) -> str:
        return wait_for(f"a syslog line for {code}",
                        lambda: next((line for line in self.poll() if f" {code} " in line), None))


@pytest.fixture
def trapd(tmp_path: Path) -> Iterator[TrapReceiver]:
    (tmp_path / "v2").mkdir()
    rx = TrapReceiver(tmp_path / "v2", "disableAuthorization yes\n")
    yield rx
    rx.stop()


def ctl_text(arr: RunningArray, *words: str) -> str:
    """`msa500-emu ctl` as a user runs it."""
    assert arr.token_file is not None
    out = subprocess.run([sys.executable, "-m", "msa500_emu", "ctl", "--api", arr.api, "--token-file",
                          str(arr.token_file), *words], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_traps_syslog_and_webhooks_for_drive_battery_and_failover(tmp_path: Path, trapd: TrapReceiver) -> None:
    hook, syslog = Webhook(), Syslog()
    config = (mirror_shelf() + f'[alerts]\nsnmp = ["127.0.0.1:{trapd.port}"]\ncommunity = "{COMMUNITY}"\n'
              f'syslog = ["127.0.0.1:{syslog.port}"]\nwebhook = ["{hook.url}"]\n')
    arr = start_array(tmp_path / "shelf", config)
    try:
        arr.fail_drive(1)
        drive = trapd.wait_trap(3036, **{PHY_BAY: "INTEGER: 1"})
        assert drive[PHY_STATUS] == "INTEGER: 3"  # cpqDaPhyDrvStatus failed(3)
        assert drive[SYS_NAME] == 'STRING: "MSA500 TESTSHELF1"' and drive[TRAP_FLAGS] == "INTEGER: 16"
        assert drive[".1.3.6.1.6.3.1.1.4.3.0"] == "OID: .1.3.6.1.4.1.232"  # snmpTrapEnterprise (RFC 3584)
        unit = trapd.wait_trap(3034)  # cpqDa6LogDrvStatusChange: unit 1 lost its mirror
        assert unit[".1.3.6.1.4.1.232.3.2.3.1.1.4.1.1"] == "INTEGER: 5"  # recovering(5): interim recovery
        line = syslog.wait("DRIVE_FAILED")
        assert re.match(r"^<130>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ msa500-emu \d+ DRIVE_FAILED "
                        r"\[msa500@232 [^\]]*bay=\"1\"[^\]]*\] \ufeffdrive \S+ in bay 1 failed$", line), line
        body = wait_for("the webhook's DRIVE_FAILED", lambda: next(
            (b for b in hook.bodies if b["code"] == "DRIVE_FAILED"), None))
        assert body["bay"] == 1 and body["severity"] == "critical" and body["shelf"] == "TESTSHELF1"
        assert body["snmp_trap"] == "cpqDa6PhyDrvStatusChange" and body["snmp_trap_oid"] == "1.3.6.1.4.1.232.0.3036"

        arr.battery("fail")
        battery = trapd.wait_trap(3040)  # cpqDa6AccelBatteryFailed
        assert battery[TRAP_FLAGS] == "INTEGER: 16" and battery[SYS_NAME] == 'STRING: "MSA500 TESTSHELF1"'
        syslog.wait("BATTERY_FAILED")

        arr.ctl("RSO ENABLE TIMEOUT=5")
        arr.ctl("RSO FAILOVER")
        rso = trapd.wait_trap(8025, **{RSO_STATUS: "INTEGER: 13"})  # secondaryRunningUser(13)
        assert rso[".1.3.6.1.4.1.232.8.2.2.1.1.4.1"] == 'STRING: "MSA500 TESTSHELF1"'  # cpqSsChassisName
        assert any(b["code"] == "RSO_FAILOVER" for b in wait_for("the webhook's RSO_FAILOVER", lambda: [
            b for b in hook.bodies if b["code"] == "RSO_FAILOVER"]))

        shown = arr.ctl("SHOW ALERTS")
        by_kind = {s["sink"]: s for s in shown["sinks"]}
        assert by_kind["snmp"]["sent"] >= 4 and by_kind["snmp"]["failed"] == 0 and by_kind["snmp"]["version"] == "v2c"
        assert by_kind["syslog"]["sent"] >= 3 and by_kind["webhook"]["sent"] >= 3
        text = ctl_text(arr, "SHOW", "ALERTS")
        json_text = ctl_text(arr, "--json", "SHOW", "ALERTS")
        assert re.search(r"SNMP community:\s+\(hidden\)", text), text
        assert re.search(rf"snmp\s+udp:127\.0\.0\.1:{trapd.port}\s+v2c\s+\d+\s+0\s+0", text), text
        assert COMMUNITY not in text and COMMUNITY not in json_text

        # at run time: no SNMP manager, then one again (the syslog line tells the event went out)
        arr.ctl("SET ALERTS SNMP=")
        assert [s["sink"] for s in arr.ctl("SHOW ALERTS")["sinks"]] == ["syslog", "webhook"]
        arr.fan(1, "fail")
        syslog.wait("FAN_FAILED")
        wait_for("the webhook's FAN_FAILED", lambda: any(b["code"] == "FAN_FAILED" for b in hook.bodies))
        arr.ctl(f"SET ALERTS SNMP=127.0.0.1:{trapd.port} COMMUNITY=other7")
        arr.fan(1, "restore")
        fan = trapd.wait_trap(8029)  # cpqSs6FanStatusChange
        assert fan[".1.3.6.1.4.1.232.8.2.1.1.7.1.0"] == "INTEGER: 2"  # cpqSsBoxFanStatus ok(2)
        assert not [t for t in trapd.traps() if t.get(".1.3.6.1.4.1.232.8.2.1.1.7.1.0") == "INTEGER: 3"], \
            "a FAN_FAILED trap went out while no SNMP manager was set"
        refused = arr._http("/api/command", {"command": "SET ALERTS SNMP=nohost"})
        assert refused["ok"] is False and refused["error"] == "SNMP: 'nohost' is not HOST:PORT"

        arr.restart()  # SET ALERTS is kept in the state directory and wins over [alerts]
        again = arr.ctl("SHOW ALERTS")
        assert again["source"].startswith("SET ALERTS") and again["webhook"] == [hook.url]
        assert again["snmp"] == [f"127.0.0.1:{trapd.port}"]
        state = json.loads((tmp_path / "shelf" / "alerts.json").read_text())
        assert state["community"] == "other7" and (tmp_path / "shelf" / "alerts.json").stat().st_mode & 0o077 == 0
    finally:
        assert arr.stop() == 0, arr.log_tail()
        hook.stop()
        syslog.sock.close()
    log = arr.log.read_text()
    assert COMMUNITY not in log and "other7" not in log and "Traceback" not in log, log[-3000:]


def test_snmpv3_authpriv_trap_with_the_pinned_engine_id(tmp_path: Path) -> None:
    (tmp_path / "v3").mkdir()
    rx = TrapReceiver(tmp_path / "v3", f"createUser -e 0x{ENGINE_ID} {V3_USER} SHA {V3_AUTH} AES {V3_PRIV}\n"
                                       f"authUser log {V3_USER} priv\n")  # v2c traps are not logged
    config = (mirror_shelf("TRAPTEST01") + f'[alerts]\nsnmp = ["127.0.0.1:{rx.port}"]\n'
              f'[alerts.snmpv3]\nuser = "{V3_USER}"\nauth_key = "{V3_AUTH}"\npriv_key = "{V3_PRIV}"\n'
              f'engine_id = "0x{ENGINE_ID}"\n')
    arr = start_array(tmp_path / "shelf", config)
    try:
        arr.fail_drive(2)
        trap = rx.wait_trap(3036, **{".1.3.6.1.4.1.232.3.2.5.1.1.5.1.2": "INTEGER: 2"})
        assert trap[".1.3.6.1.4.1.232.3.2.5.1.1.6.1.2"] == "INTEGER: 3"
        assert trap[SYS_NAME] == 'STRING: "MSA500 TRAPTEST01"'
        shown = arr.ctl("SHOW ALERTS")
        assert shown["snmpv3"] == {"user": V3_USER, "auth": "SHA", "priv": "AES", "engine_id": ENGINE_ID}
        assert shown["sinks"][0]["version"] == "v3 authPriv"
        for out in (ctl_text(arr, "SHOW", "ALERTS"), ctl_text(arr, "--json", "SHOW", "ALERTS")):
            assert V3_AUTH not in out and V3_PRIV not in out and V3_USER in out
    finally:
        assert arr.stop() == 0, arr.log_tail()
        rx.stop()
    log = arr.log.read_text()
    assert V3_AUTH not in log and V3_PRIV not in log and "Traceback" not in log, log[-3000:]
