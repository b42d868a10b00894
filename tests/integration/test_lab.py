"""The RSO lab end to end: two QEMU hosts (TCG) boot one OS image from the array and fail over.

One lab for the module (heartbeat timeout 5 s); each test leaves it as `lab up` did (the primary
serves, the recovery monitors), restoring after a failover. The timelines are printed.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from msa500_emu.lab.rso_lab import Lab, free_port

from ..conftest import ROOT

pytestmark = pytest.mark.slow

TIMEOUT = 5.0


def lab_cmd(lab_dir: Path, *words: str, timeout: float = 600) -> str:
    out = subprocess.run([sys.executable, "-m", "msa500_emu", "lab", "--lab-dir", str(lab_dir), *words],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    assert out.returncode == 0, f"lab {' '.join(words)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def kv(port: int, line: str, timeout: float = 3.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s, s.makefile("rwb") as f:
        f.write(line.encode() + b"\n")
        f.flush()
        reply = f.readline()
    if not reply:
        raise ConnectionError("closed without an answer")
    return reply.decode().strip()


def answered_by(port: int) -> str:
    try:
        reply = kv(port, "PING", 1.0)
    except OSError:
        return ""
    return reply.split()[1] if reply.startswith("PONG") else ""


def wait_for(what: str, pred: Callable[[], bool], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


class Lab_:
    def __init__(self, lab_dir: Path, service: int) -> None:
        self.dir = lab_dir
        self.service = service

    def lab(self) -> Lab:
        return Lab(self.dir)

    def cmd(self, *words: str) -> str:
        return lab_cmd(self.dir, *words)

    def rso(self) -> dict[str, Any]:
        return self.lab().rso()

    def admin_port(self, role: str) -> int:
        return int(json.loads((self.dir / "lab.json").read_text())["vms"][role]["admin_port"])

    def console(self, role: str) -> str:
        return Path(self.lab().vm(role).console).read_text(errors="replace")

    def print_timeline(self, capsys: pytest.CaptureFixture[str], title: str) -> str:
        text = self.cmd("timeline")
        assert "@@" not in text, "a raw guest marker reached the printed timeline"
        self.cmd("timeline", "--html", str(self.dir / "timeline.html"))  # the picture of the same run
        page = (self.dir / "timeline.html").read_text()
        assert "@@" not in page and 'data-lane="recovery"' in page
        with capsys.disabled():
            print(f"\n===== {title} =====\n" + "\n".join(text.splitlines()[-45:]))
        return page

    def restore(self) -> None:
        self.cmd("restore")
        wait_for("the primary answers on the service address", lambda: answered_by(self.service).startswith("primary"))
        assert self.rso()["state"] == "ok"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab_]:
    lab_dir = tmp_path_factory.mktemp("lab")
    service = free_port()
    out = lab_cmd(lab_dir, "up", "-d", "--timeout", str(TIMEOUT), "--service-port", str(service))
    print(out)
    running = Lab_(lab_dir, service)
    try:
        assert answered_by(service).startswith("primary")
        yield running
    finally:
        subprocess.run([sys.executable, "-m", "msa500_emu", "lab", "--lab-dir", str(lab_dir), "down"],
                       cwd=ROOT, timeout=120, check=False, capture_output=True)


class Writer(threading.Thread):
    """A client writing to the service continuously, reconnecting through the outage."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: dict[str, str] = {}
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s, s.makefile("rwb") as f:
                    while not self.stop.is_set():
                        key, value = f"w{i}", f"value-{i}-{time.time():.3f}"
                        f.write(f"PUT {key} {value}\n".encode())
                        f.flush()
                        reply = f.readline().decode()
                        if not reply.startswith("OK"):
                            break
                        self.acked[key] = value
                        self.times.append(time.monotonic())
                        i += 1
                        time.sleep(0.02)
            except OSError:
                pass
            time.sleep(0.05)

    def outage(self) -> float:
        return max((b - a for a, b in zip(self.times, self.times[1:], strict=False)), default=0.0)


def test_a_primary_killed_the_recovery_takes_over_with_every_acknowledged_update(
        lab: Lab_, capsys: pytest.CaptureFixture[str]) -> None:
    writer = Writer(lab.service)
    writer.start()
    wait_for("the client's first writes", lambda: len(writer.acked) >= 20, 30)
    lab.cmd("kill-primary")
    t_kill = time.monotonic()
    wait_for("the service back on the recovery", lambda: answered_by(lab.service).startswith("recovery"), 120)
    wait_for("the client writing again", lambda: writer.times[-1] > t_kill + 1, 60)
    writer.stop.set()
    writer.join(10)
    st = lab.rso()
    assert st["state"] == "secondaryRunningAuto" and st["fenced_port"] == 1
    console = lab.console("recovery")
    assert "@@FSCK exit=0" in console, console[-2000:]
    missing = [k for k, v in writer.acked.items() if kv(lab.service, f"GET {k}") != f"VAL {v}"]
    assert not missing, f"{len(missing)} acknowledged updates lost, e.g. {missing[:5]}"
    lab.print_timeline(capsys, f"kill-primary: client outage {writer.outage():.2f} s, "
                               f"{len(writer.acked)} acknowledged updates all present")
    summary = (lab.dir / "failover.txt").read_text()
    assert "last heartbeat" in summary and "service back" in summary
    lab.restore()
    assert all(kv(lab.service, f"GET {k}") == f"VAL {v}" for k, v in list(writer.acked.items())[-20:])


def test_b_a_fenced_primary_that_wakes_up_cannot_write(lab: Lab_, capsys: pytest.CaptureFixture[str]) -> None:
    admin = lab.admin_port("primary")
    lab.cmd("hang-primary")  # its OS runs on; the agent is no longer scheduled
    results: list[tuple[str, str]] = []
    i = 0
    while not answered_by(lab.service).startswith("recovery"):
        key = f"p{i}"
        try:
            results.append((key, kv(admin, f"PUT {key} from-the-hung-primary")))
        except OSError as exc:
            results.append((key, f"ERR {exc}"))
        i += 1
        time.sleep(0.1)
        assert i < 2000, "the recovery never took over"
    for j in range(10):  # fenced, still running, still trying
        results.append((f"late{j}", kv(admin, f"PUT late{j} after-the-fence")))
    lab.cmd("wake-primary")
    wait_for("the woken primary's agent finds itself fenced", lambda: "@@AGENT exit=3" in lab.console("primary"))
    ok = [k for k, r in results if r.startswith("OK")]
    refused = [k for k, r in results if not r.startswith("OK")]
    assert refused and all(r.startswith("ERR") for _, r in results[-10:])
    assert results.index(next(x for x in results if not x[1].startswith("OK"))) == len(ok), \
        "a write succeeded after one was refused"
    for k in ok:
        assert kv(lab.service, f"GET {k}") == "VAL from-the-hung-primary"
    for k in refused:
        assert kv(lab.service, f"GET {k}") == "NONE", f"{k} from the fenced primary reached the disk"
    assert "HOST_FENCED" in [e["code"] for e in lab.lab().events(0)]
    lab.lab().mark("client: writes to the fenced primary", host="primary", accepted=len(ok),
                   refused_writes=len(refused))
    page = lab.print_timeline(capsys, f"hang-then-wake: {len(ok)} writes before the fence, "
                                      f"{len(refused)} refused after")
    assert f'data-refused-writes="{len(refused)}"' in page and 'data-mark="fence"' in page
    lab.restore()


def test_c_primary_nic_down_is_not_failed_over(lab: Lab_, capsys: pytest.CaptureFixture[str]) -> None:
    before = lab.rso()["failovers"]
    lab.cmd("nic-down-primary")
    time.sleep(3 * TIMEOUT)
    st = lab.rso()
    assert st["state"] == "ok" and st["failovers"] == before and st["active_port"] == 1
    assert answered_by(lab.service) == ""  # clients lost the primary; RSO cannot see it
    assert "@@MONITOR exit" not in lab.console("recovery")
    lab.cmd("nic-up-primary")
    wait_for("the primary answering again", lambda: answered_by(lab.service).startswith("primary"), 30)
    lab.print_timeline(capsys, "NIC down: no failover (the blind spot)")


def test_d_forced_failover_and_restore_round_trip(lab: Lab_, capsys: pytest.CaptureFixture[str]) -> None:
    assert kv(lab.service, "PUT roundtrip before-f8").startswith("OK")
    lab.cmd("f8")
    wait_for("the recovery serving", lambda: answered_by(lab.service).startswith("recovery"), 120)
    assert lab.rso()["state"] == "secondaryRunningUser"
    assert kv(lab.service, "GET roundtrip") == "VAL before-f8"
    assert kv(lab.service, "PUT roundtrip on-the-recovery").startswith("OK")
    lab.restore()
    assert kv(lab.service, "GET roundtrip") == "VAL on-the-recovery"
    lab.print_timeline(capsys, "F8 and restore")
