"""The RSO lab's supervisor: watches the VMs' consoles, the array's events and the service.

It does what the people in the machine room did: attaches the shared logical drive to the
recovery host once its monitor has fenced the primary (@@MONITOR exit=0), moves the service
address to whichever VM brought the service up, writes the array's RSO events into the
timeline, and after a failover prints (and writes to failover.txt) how long each step took.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from . import markers
from .qmp import QmpError
from .rso_lab import ROLES, Lab, LabError, VmState, alive, format_mark


class Supervisor:
    """Watches consoles, the array and the service; attaches the LUN and moves the address."""

    def __init__(self, lab: Lab, probe_interval: float = 0.2) -> None:
        self.lab = lab
        self.offsets: dict[tuple[str, int], int] = {}
        self.alive: dict[str, bool] = {}
        self.event_id = 0
        self.probe_interval = probe_interval
        self.next_probe = 0.0
        self.service_up: bool | None = None
        self.who = ""
        self.last_ok: float | None = None
        self.failover: dict[str, Any] = {}
        for role, vm in lab.state.vms.items():  # what `lab up` already reported is not repeated
            with contextlib.suppress(OSError):
                self.offsets[(role, vm.boot)] = os.path.getsize(vm.console)
            self.alive[f"{role}{vm.boot}"] = alive(vm.pid)

    def run(self) -> None:
        lab = self.lab
        lab.state.supervisor_pid = os.getpid()
        lab.save()
        with contextlib.suppress(LabError, OSError):
            self.event_id = max([e["id"] for e in lab.events(0)] or [0])
        while True:
            lab.reload()
            if lab.state.supervisor_pid != os.getpid():
                return
            self.once()
            time.sleep(0.05)

    def once(self) -> None:
        lab = self.lab
        for role in ROLES:
            vm = lab.state.vms.get(role)
            if vm is None:
                continue
            up = alive(vm.pid)
            if self.alive.get(f"{role}{vm.boot}") and not up:
                lab.mark(f"{role} VM process gone", boot=vm.boot)
            self.alive[f"{role}{vm.boot}"] = up
            self._console(vm)
        with contextlib.suppress(LabError, OSError, ValueError):
            self._events()
        now = time.monotonic()
        if now >= self.next_probe:
            self.next_probe = now + self.probe_interval
            self._probe()

    def _console(self, vm: VmState) -> None:
        key = (vm.role, vm.boot)
        start = self.offsets.get(key, 0)
        try:
            with open(vm.console, "rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offsets[key] = start + end + 1
        for raw in data[: end + 1].splitlines():
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("@@"):
                continue
            self.lab.mark(f"{vm.role}: {line}")
            try:
                self._react(vm, line)
            except (LabError, QmpError, OSError) as exc:
                self.lab.mark(f"supervisor: could not react to {line!r}: {exc}")

    def _react(self, vm: VmState, line: str) -> None:
        lab = self.lab
        if vm.role == "recovery" and line.startswith("@@MONITOR exit=0") and not vm.lun_attached:
            self.failover["monitor_exit"] = time.time()
            lab.attach_lun("recovery")
            self.failover["lun_attached"] = time.time()
        elif line.startswith("@@FSCK exit="):
            self.failover.setdefault("fsck", line)
        elif line.startswith("@@SERVICE up") and lab.state.service_on != vm.role:
            lab.move_service(vm.role)

    def _events(self) -> None:
        lab = self.lab
        for ev in lab.events(self.event_id):
            self.event_id = max(self.event_id, int(ev["id"]))
            code = str(ev["code"])
            if not (code.startswith("RSO_") or code.startswith("HOST_") or code.startswith("SHELF_")):
                continue
            extra: dict[str, Any] = {}
            if code == "RSO_FAILOVER":
                st = lab.rso()
                fence = float(ev["time"])
                extra = {"detection_ms": st.get("detection_ms")}
                # the summary waits for the service to come back on another host than this one
                self.failover = {"fence": fence, "auto": st.get("failed_over") == "auto", "from": self.who}
                if st.get("failed_over") == "auto" and st.get("detection_ms") is not None:
                    deadline = fence - float(st["detection_ms"]) / 1000
                    self.failover["deadline"] = deadline
                    self.failover["last_heartbeat"] = deadline - float(st["timeout_s"])
            rec = {"t": float(ev["time"]), "event": f"array: {code} {ev['message']}", **extra}
            with open(lab.timeline_file, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(format_mark(rec, None), flush=True)

    def _probe(self) -> None:
        lab = self.lab
        ok = False
        who = ""
        with contextlib.suppress(OSError, ConnectionError, IndexError):
            reply = lab.service("PING", timeout=0.5)
            ok = reply.startswith("PONG")
            who = reply.split()[1] if ok else ""
        now = time.time()
        if ok:
            if self.service_up is False:
                outage = None if self.last_ok is None else now - self.last_ok
                lab.mark("service back", answered_by=who,
                         outage_s=None if outage is None else round(outage, 2))
                if self.failover.get("fence") and who != self.failover.get("from"):
                    self._summary(now, outage)
            elif self.who and who != self.who:  # the address moved without a gap a PING could see
                lab.mark("service answered by another host", answered_by=who, before=self.who)
                if self.failover.get("fence") and who != self.failover.get("from"):
                    self._summary(now, 0.0)
            self.last_ok = now
            self.who = who
        elif self.service_up:
            lab.mark("service unreachable", last_answer=format_mark({"t": self.last_ok or now, "event": ""},
                                                                     None).strip())
        if ok or self.service_up is not None or self.last_ok is not None:
            self.service_up = ok

    def _summary(self, back: float, outage: float | None) -> None:
        f = self.failover
        t0 = f.get("last_heartbeat", f["fence"])
        rows = [("last heartbeat from the primary", f.get("last_heartbeat")),
                (f"heartbeat deadline (timeout {self.lab.state.timeout:g} s)", f.get("deadline")),
                ("fence: port 1 blocked, port 2 active", f.get("fence")),
                ("recovery monitor exits", f.get("monitor_exit")),
                ("logical drive attached, recovery boots", f.get("lun_attached")),
                ("service back on the same address", back)]
        lines = ["failover timeline (t=0: the primary's last heartbeat)" if "last_heartbeat" in f
                 else "failover timeline (t=0: forced failover)"]
        lines += [f"  {t - t0:8.3f} s  {name}" for name, t in rows if t is not None]
        if f.get("fsck"):
            lines.append(f"            {markers.plain(f['fsck'])}")
        if outage:
            lines.append(f"  service unreachable for {outage:.2f} s (PING every {self.probe_interval:g} s)")
        elif outage is not None:
            lines.append("  the address moved with no gap a PING could see (the old host answered until then)")
        text = "\n".join(lines)
        print(text, flush=True)
        (self.lab.dir / "failover.txt").write_text(text + "\n")
        self.lab.mark("failover summary", outage_s=None if outage is None else round(outage, 2),
                      detection_ms=None if "deadline" not in f else round((f["fence"] - f["deadline"]) * 1000, 2))
        self.failover = {}
