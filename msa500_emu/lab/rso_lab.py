"""The RSO lab: the emulator, a primary VM on port 1 and a recovery VM on port 2, one shared OS.

State lives in a lab directory (default ~/.local/state/msa500-emu/lab, $MSA500_LAB_DIR):
`lab.json` (PIDs, ports, sockets), the array's state and log, each VM's console and QMP socket,
and `timeline.jsonl`. A supervisor process watches the consoles, the array's events and the
service (`supervisor.py`), and does what the people in the machine room did: it attaches the
shared logical drive to the recovery host once its monitor has fenced the primary, and moves the
service address (127.0.0.1:SERVICE_PORT, a QEMU user-network forward) to whichever VM brought the
service up. Every other `lab` command acts directly on the processes it finds in lab.json (`Lab`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..management.auth import TokenError, find_token
from . import guest, markers
from .qmp import Qmp, QmpError

ROLES = ("primary", "recovery")
DEFAULT_SERVICE_PORT = 5555
DEFAULT_TIMEOUT = 5.0


class LabError(Exception):
    pass


def default_lab_dir() -> Path:
    env = os.environ.get("MSA500_LAB_DIR")
    return Path(env) if env else Path.home() / ".local" / "state" / "msa500-emu" / "lab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _terminate(pid: int | None, grace: float = 10.0) -> None:
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + grace
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class VmState:
    role: str
    pid: int | None = None
    boot: int = 0
    console: str = ""
    qmp: str = ""
    admin_port: int = 0  # 127.0.0.1:admin_port -> this VM's service, whichever holds the shared address
    initiator: str = ""
    lun_attached: bool = False
    started_at: float = 0.0


@dataclass
class LabState:
    lab_dir: str
    api: str = ""
    target: str = ""
    port1: int = 0
    port2: int = 0
    array_pid: int | None = None  # only when the lab started the array
    service_port: int = DEFAULT_SERVICE_PORT
    service_on: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    supervisor_pid: int | None = None
    vms: dict[str, VmState] = field(default_factory=dict)

    def url(self, port: int, lun: int) -> str:
        return f"iscsi://127.0.0.1:{self.port1 if port == 1 else self.port2}/{self.target}/{lun}"


class Lab:
    def __init__(self, lab_dir: Path | None = None) -> None:
        self.dir = (lab_dir or default_lab_dir()).resolve()
        self.state_file = self.dir / "lab.json"
        self.timeline_file = self.dir / "timeline.jsonl"
        self.state = self._load()

    # ------------------------------------------------------------ state
    def _load(self) -> LabState:
        try:
            raw = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return LabState(str(self.dir))
        vms = {k: VmState(**v) for k, v in raw.pop("vms", {}).items()}
        return LabState(**raw, vms=vms)

    def reload(self) -> None:
        self.state = self._load()

    def save(self) -> None:
        data = {k: v for k, v in self.state.__dict__.items() if k != "vms"}
        data["vms"] = {k: v.__dict__ for k, v in self.state.vms.items()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.state_file)

    def running(self) -> bool:
        s = self.state
        return any(alive(p) for p in [s.array_pid, s.supervisor_pid, *(v.pid for v in s.vms.values())])

    def vm(self, role: str) -> VmState:
        if role not in self.state.vms:
            self.state.vms[role] = VmState(role)
        return self.state.vms[role]

    # ------------------------------------------------------------ timeline
    def mark(self, event: str, **detail: Any) -> None:
        rec = {"t": time.time(), "event": event, **detail}
        with open(self.timeline_file, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(format_mark(rec, None), flush=True)

    def timeline(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(x) for x in self.timeline_file.read_text().splitlines() if x.strip()]
        except OSError:
            return []

    # ------------------------------------------------------------ the array
    def _auth(self) -> dict[str, str]:
        """The API token the array recorded for this user (or $MSA500_API_TOKEN), as a header."""
        try:
            return {"Authorization": f"Bearer {find_token(self.state.api)}"}
        except TokenError as exc:
            raise LabError(str(exc)) from None

    def command(self, line: str) -> Any:
        req = urllib.request.Request(self.state.api + "/api/command", data=json.dumps({"command": line}).encode(),
                                     headers={"Content-Type": "application/json", **self._auth()}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:
            raise LabError(f"the array's API at {self.state.api} does not answer: {exc}") from None
        if not body.get("ok"):
            raise LabError(f"{line}: {body.get('error')}")
        return body.get("result")

    def rso(self) -> dict[str, Any]:
        return dict(self.command("RSO STATUS"))

    def events(self, since: int) -> list[dict[str, Any]]:
        req = urllib.request.Request(f"{self.state.api}/api/events?since={since}", headers=self._auth())
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read())
        return list(body)

    def start_array(self) -> None:
        state_dir = self.dir / "array"
        shutil.rmtree(state_dir, ignore_errors=True)
        log = self.dir / "array.log"
        out = self.dir / "array.out"
        cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(state_dir),
               "--port1", "127.0.0.1:0", "--port2", "127.0.0.1:0", "--api", "127.0.0.1:0"]
        with open(out, "w") as o, open(log, "w") as e:
            proc = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        end = time.monotonic() + 60
        text = ""
        while time.monotonic() < end:
            text = out.read_text()
            if "msa500-emu ctl" in text:
                break
            if proc.poll() is not None:
                raise LabError(f"the emulator did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        ports = dict(re.findall(r"port (\d): iSCSI portal 127\.0\.0\.1:(\d+)", text))
        target = re.search(r"serving (\S+)", text)
        api = re.search(r"management API: (http://\S+)/api/health", text)
        if not (ports and target and api):
            proc.kill()
            raise LabError(f"could not read the emulator's banner:\n{text}")
        s = self.state
        s.array_pid, s.target, s.api = proc.pid, target.group(1), api.group(1)
        s.port1, s.port2 = int(ports["1"]), int(ports["2"])
        self.save()
        self.mark("array started", pid=proc.pid, port1=s.port1, port2=s.port2, api=s.api)

    def use_array(self, api: str) -> None:
        s = self.state
        s.api = api.rstrip("/")
        g = self.command("SHOW GLOBALS")
        s.target = g.get("target_name") or g["identity"]["target_name"]
        for p in g.get("portals", []):
            host, _, port = str(p["address"]).rpartition(":")
            if host not in ("127.0.0.1", "localhost"):
                raise LabError(f"port {p['port']} listens on {host}: the lab stays on loopback")
            if p["port"] == 1:
                s.port1 = int(port)
            else:
                s.port2 = int(port)
        self.save()
        self.mark("array in use", api=s.api, port1=s.port1, port2=s.port2)

    # ------------------------------------------------------------ VMs
    def boot(self, role: str, image: guest.GuestImage, attach_lun: bool) -> VmState:
        s = self.state
        vm = self.vm(role)
        if alive(vm.pid):
            raise LabError(f"the {role} VM is already running (pid {vm.pid})")
        vm.boot += 1
        vm.console = str(self.dir / f"{role}-{vm.boot}.console")
        vm.qmp = str(self.dir / f"{role}.qmp")
        vm.admin_port = vm.admin_port or free_port()
        vm.initiator = f"iqn.2026-11.lab.msa500-emu:{role}"
        vm.lun_attached = attach_lun
        with contextlib.suppress(FileNotFoundError):
            os.unlink(vm.qmp)
        port = 1 if role == "primary" else 2
        argv = guest.qemu_argv(image, role, role, s.url(port, 0), s.url(port, 1), vm.initiator, vm.admin_port,
                               Path(vm.qmp), Path(vm.console), attach_lun=attach_lun)
        log = open(self.dir / f"{role}.qemu.log", "a")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        vm.pid = proc.pid
        vm.started_at = time.time()
        if s.service_on == role:
            s.service_on = None
        self.save()
        self.mark(f"{role} VM boots", pid=proc.pid, boot=vm.boot, lun_attached=attach_lun,
                  port=port, admin=f"127.0.0.1:{vm.admin_port}")
        return vm

    def wait_console(self, role: str, marker: str, timeout: float) -> str:
        vm = self.vm(role)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                for line in Path(vm.console).read_text(errors="replace").splitlines():
                    if line.startswith(marker):
                        return line
            except OSError:
                pass
            if not alive(vm.pid):
                raise LabError(f"the {role} VM exited before {marker!r}; console {vm.console}")
            time.sleep(0.1)
        raise LabError(f"{marker!r} did not appear on the {role} console within {timeout:g} s ({vm.console})")

    def qmp(self, role: str) -> Qmp:
        vm = self.vm(role)
        if not alive(vm.pid):
            raise LabError(f"the {role} VM is not running")
        return Qmp(Path(vm.qmp))

    def attach_lun(self, role: str) -> None:
        vm = self.vm(role)
        port = 1 if role == "primary" else 2
        with self.qmp(role) as q:
            for cmd in guest.lun_hotplug_qmp(self.state.url(port, 1), vm.initiator):
                args: dict[str, Any] = cmd["arguments"]  # type: ignore[assignment]
                q.execute(str(cmd["execute"]), **args)
        vm.lun_attached = True
        self.save()
        self.mark(f"logical drive attached to the {role} VM", via=f"port {port}")

    def move_service(self, role: str) -> None:
        """The service address follows the VM that runs the service (both carry one identity)."""
        s = self.state
        fwd = f"tcp:127.0.0.1:{s.service_port}-:{guest.SERVICE_PORT}"
        for other in ROLES:
            if other != role and alive(self.vm(other).pid):
                with contextlib.suppress(QmpError, LabError), self.qmp(other) as q:
                    q.hmp(f"hostfwd_remove n0 tcp:127.0.0.1:{s.service_port}")
        end = time.monotonic() + 5
        while True:
            try:
                with self.qmp(role) as q:
                    q.hmp(f"hostfwd_add n0 {fwd}")
                break
            except QmpError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)  # the old holder's socket is still closing
        s.service_on = role
        self.save()
        self.mark(f"service address 127.0.0.1:{s.service_port} -> {role}")

    def service(self, line: str, port: int | None = None, timeout: float = 2.0) -> str:
        return guest.kv_request(port or self.state.service_port, line, timeout=timeout)[0]

    def admin(self, role: str, line: str) -> str:
        return guest.kv_request(self.vm(role).admin_port, line, timeout=5)[0]

    def kill_vm(self, role: str, how: str = "power cut") -> None:
        vm = self.vm(role)
        if not alive(vm.pid):
            raise LabError(f"the {role} VM is not running")
        assert vm.pid is not None
        os.kill(vm.pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while alive(vm.pid) and time.monotonic() < end:
            time.sleep(0.02)
        if self.state.service_on == role:
            self.state.service_on = None
        self.save()
        self.mark(f"{role} VM killed ({how})", pid=vm.pid)

    def halt_vm(self, role: str, timeout: float = 30) -> None:
        """A clean shutdown: the guest's init unmounts and powers off; killed after `timeout`."""
        vm = self.vm(role)
        if not alive(vm.pid):
            return
        with contextlib.suppress(OSError, ConnectionError, LabError):
            self.admin(role, "HALT")
        end = time.monotonic() + timeout
        while alive(vm.pid) and time.monotonic() < end:
            time.sleep(0.1)
        if alive(vm.pid):
            self.kill_vm(role, "did not halt in time")
        else:
            if self.state.service_on == role:
                self.state.service_on = None
            self.save()
            self.mark(f"{role} VM shut down")

    # ------------------------------------------------------------ whole-lab operations
    def up(self, *, api: str | None, timeout: float, service_port: int, cache: Path | None,
           boot_timeout: float = 180) -> None:
        if self.running():
            raise LabError(f"a lab is running in {self.dir} (msa500-emu lab down first)")
        self.dir.mkdir(parents=True, exist_ok=True)
        for f in self.dir.glob("*.console"):
            f.unlink()
        self.timeline_file.unlink(missing_ok=True)
        self.state = LabState(str(self.dir), service_port=service_port, timeout=timeout)
        self.save()
        t0 = time.monotonic()
        image = guest.build(cache)
        self.mark("guest image ready", seconds=round(time.monotonic() - t0, 1), key=image.key[:12])
        if api:
            self.use_array(api)
            st = self.rso()
            if st.get("failed_over"):
                raise LabError("the array is failed over: restore it first (msa500-emu ctl RSO RESTORE)")
            if st.get("enabled"):
                self.command("RSO DISABLE")
        else:
            self.start_array()
        seconds = guest.install(image, self.state.url(1, 1))
        self.mark("OS image installed on LUN 1", seconds=round(seconds, 1))
        self.boot("primary", image, attach_lun=True)
        self.wait_console("primary", "@@SERVICE up", boot_timeout)
        self.move_service("primary")
        self.command(f"RSO ENABLE TIMEOUT={timeout:g}")
        self.mark("RSO enabled", timeout_s=timeout)
        self._wait(lambda: self.rso()["heartbeats"] > 0, 30, "the primary's first heartbeat")
        self.boot("recovery", image, attach_lun=False)
        self.wait_console("recovery", "@@MONITOR start", boot_timeout)
        self._wait(lambda: self.rso()["state"] == "ok", 60, "RSO state ok (the recovery acknowledging)")
        self.mark("lab up: primary serves, recovery monitors", rso="ok")

    def _wait(self, pred: Any, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(LabError, KeyError):
                if pred():
                    return
            time.sleep(0.1)
        raise LabError(f"timed out after {timeout:g} s waiting for {what}")

    def down(self) -> None:
        s = self.state
        if s.supervisor_pid != os.getpid():  # `lab up` in the foreground is the supervisor itself
            _terminate(s.supervisor_pid, 5)
        for role in ROLES:
            vm = s.vms.get(role)
            if vm is not None and alive(vm.pid):
                _terminate(vm.pid, 5)
        if s.array_pid:
            _terminate(s.array_pid, 20)
        elif s.api:  # somebody else's array: leave it as the lab found it (RSO off, port 1 active)
            for line in ("RSO RESTORE", "RSO DISABLE"):
                with contextlib.suppress(LabError):
                    self._wait(lambda: self.rso()["sessions"]["2"] == 0, 10, "port 2 logged out")
                    self.command(line)
        s.supervisor_pid = None
        s.array_pid = None
        s.service_on = None
        for vm in s.vms.values():
            vm.pid = None
        self.save()
        self.mark("lab down")

    def f8(self) -> None:
        """Forced failover from port 2 (the F8 key at the recovery console)."""
        from ..agents.scsi import IscsiDevice, RsoClient

        client = RsoClient(IscsiDevice(self.state.url(2, 0), "iqn.2026-11.lab.msa500-emu:recovery-console"))
        try:
            client.force_failover()
        finally:
            client.close()
        self.mark("F8: forced failover from the recovery console")

    def restore(self, image: guest.GuestImage, boot_timeout: float = 180) -> None:
        """The manual restore: recovery down, RSO RESTORE, the primary boots, the recovery listens again."""
        self.halt_vm("recovery")
        self._wait(lambda: self.rso()["sessions"]["2"] == 0, 30, "port 2 to be logged out")
        if alive(self.vm("primary").pid):
            self.kill_vm("primary", "power cycle of the failed primary")
        self.command("RSO RESTORE")
        self.mark("RSO restored: port 1 active")
        self.boot("primary", image, attach_lun=True)
        self.wait_console("primary", "@@SERVICE up", boot_timeout)
        self._wait(lambda: self.state_reload_service() == "primary", 30, "the service address on the primary")
        self._wait(lambda: not self.rso()["awaiting_primary"], 30, "the primary's heartbeat")
        self.boot("recovery", image, attach_lun=False)
        self._wait(lambda: self.rso()["state"] == "ok", 60, "RSO state ok")
        self.mark("restore done: primary serves, recovery monitors")

    def state_reload_service(self) -> str | None:
        self.reload()
        return self.state.service_on


def format_mark(rec: dict[str, Any], t0: float | None) -> str:
    """One timeline record for people: the guests' raw @@ markers in words (markers.plain)."""
    t = float(rec["t"])
    stamp = time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
    rel = f" {t - t0:+8.3f}s" if t0 is not None else ""
    detail = " ".join(f"{k}={markers.plain(str(v))}" for k, v in rec.items() if k not in ("t", "event"))
    return f"{stamp}{rel}  {markers.plain(str(rec['event']))}" + (f"  ({detail})" if detail else "")
