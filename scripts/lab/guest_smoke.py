#!/usr/bin/env python3
"""End-to-end check of the RSO lab guest on this machine (root; TCG; loopback only).

    scripts/lab/guest_smoke.py [--cache DIR] [--no-failover] [--keep]

Builds (or finds cached) the guest, starts an emulator of its own (temporary state directory,
free ports), installs the OS image on LUN 1 through port 1, then:
  1. boots the primary, checks the console (sg_inq of the controller, markers) and the
     key-value service (PUT/INCR/GET/PING) through its host forward;
  2. kills it hard (SIGKILL of QEMU), boots it again: e2fsck's exit code, every acknowledged
     update still there;
  3. (unless --no-failover) enables RSO (timeout 5 s), boots the recovery on port 2 with the
     controller only, sees its pre-boot monitor acknowledge, kills the primary, sees the monitor
     exit 0, hot-plugs the logical drive over QMP, sees the recovery boot and serve the data;
     a recovery attached to port 1 shows a failing monitor (exit 2) being retried.
Prints the numbers (build, install, boot to @@SERVICE up, failover) and exits 0 when all passed.
Every QEMU and the emulator are stopped by their PIDs at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP))

from msa500_emu.lab import guest  # noqa: E402

EMU = TOP / ".venv" / "bin" / "msa500-emu"
VM_DEADLINE_S = 240  # no QEMU of this script lives longer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    def __init__(self, workdir: Path, image: guest.GuestImage) -> None:
        self.dir = workdir
        self.image = image
        self.procs: list[subprocess.Popen[bytes]] = []
        self.emu: subprocess.Popen[bytes] | None = None
        self.p1, self.p2, self.api = free_port(), free_port(), free_port()
        self.iqn = ""
        self.failures: list[str] = []
        self.numbers: dict[str, object] = {}

    # -- the emulator ---------------------------------------------------------------------------
    def start_emulator(self) -> None:
        log = open(self.dir / "emulator.log", "wb")
        self.emu = subprocess.Popen(
            [str(EMU), "serve", "--state-dir", str(self.dir / "state"), "--port1", f"127.0.0.1:{self.p1}",
             "--port2", f"127.0.0.1:{self.p2}", "--api", f"127.0.0.1:{self.api}"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(rb"serving (iqn\S+)", (self.dir / "emulator.log").read_bytes())
            if m:
                self.iqn = m.group(1).decode()
                return
            if self.emu.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the emulator did not start; see {self.dir / 'emulator.log'}")

    def ctl(self, command: str) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.api}/api/command",
                                     data=json.dumps({"command": command}).encode(),
                                     headers={"Content-Type": "application/json", "Authorization":
                                              f"Bearer {(self.dir / 'state' / 'api.token').read_text().strip()}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.loads(r.read()))

    def url(self, port: int, lun: int) -> str:
        return f"iscsi://127.0.0.1:{port}/{self.iqn}/{lun}"

    # -- VMs -------------------------------------------------------------------------------------
    def boot(self, tag: str, role: str, port: int, fwd: int, *, attach_lun: bool | None = None
             ) -> tuple[subprocess.Popen[bytes], Path, float]:
        log = self.dir / f"{tag}.console"
        log.unlink(missing_ok=True)
        argv = guest.qemu_argv(self.image, role, role, self.url(port, 0), self.url(port, 1),
                               f"iqn.2026-11.lab:{role}", fwd, self.dir / f"{tag}.qmp", log,
                               interval=0.5, attach_lun=attach_lun)
        (self.dir / f"{tag}.argv").write_text(" ".join(argv) + "\n")
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=open(self.dir / f"{tag}.qemu", "wb"), stderr=subprocess.STDOUT)
        self.procs.append(p)
        timer = threading.Timer(VM_DEADLINE_S, self._expire, (p,))
        timer.daemon = True
        timer.start()
        return p, log, t0

    @staticmethod
    def _expire(p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            print(f"  (QEMU {p.pid} hit the {VM_DEADLINE_S} s deadline: killed)")
            p.kill()

    def kill(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            self.kill(p)
        if self.emu is not None and self.emu.poll() is None:
            self.emu.send_signal(signal.SIGTERM)
            try:
                self.emu.wait(20)
            except subprocess.TimeoutExpired:
                self.emu.kill()
                self.emu.wait()

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.failures.append(what)


def qmp(path: Path, commands: list[dict[str, object]]) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting
        answers = []
        for c in [{"execute": "qmp_capabilities"}, *commands]:
            f.write(json.dumps(c).encode() + b"\n")
            f.flush()
            while True:
                r = json.loads(f.readline())
                if "return" in r or "error" in r:
                    answers.append(r)
                    break
        return answers[1:]


def run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    image = guest.build(args.cache, quiet=False)
    build_s = time.monotonic() - t0
    manifest = json.loads((image.cache_dir / "manifest.json").read_text())
    print(f"guest image {image.key[:12]}: build-guest took {build_s:.1f} s this time "
          f"(the last real build: {manifest['build_seconds']} s); initramfs "
          f"{image.initrd.stat().st_size / 2**20:.1f} MiB, vmlinuz {image.kernel.stat().st_size / 2**20:.1f} MiB")
    work = Path(tempfile.mkdtemp(prefix="msa500-guest-smoke."))
    lab = Lab(work, image)
    ok = False
    try:
        lab.start_emulator()
        print(f"emulator: ports {lab.p1}/{lab.p2}, api {lab.api}, work dir {work}")
        secs = guest.install(image, lab.url(lab.p1, 1))
        lab.numbers["install_s"] = round(secs, 1)
        print(f"installed rootfs.ext4 on LUN 1 through port 1 in {secs:.1f} s")

        # 1. the primary boots and serves
        fwd1, fwd2 = free_port(), free_port()
        p, log, tb = lab.boot("primary-1", "primary", lab.p1, fwd1)
        line, _ = guest.wait_for_marker(log, guest.MARKERS["service"], 90, proc=p)
        boot_s = time.monotonic() - tb
        lab.numbers["boot_to_service_s"] = round(boot_s, 1)
        print(f"primary: {line}  ({boot_s:.1f} s after QEMU started)")
        console = log.read_text(errors="replace")
        lab.check("Peripheral device type: storage array controller" in console and "MSA500" in console,
                  "sg_inq of the controller /dev/sg in the guest (console)")
        for m in ("initramfs", "controller", "fsck", "root", "agent", "service"):
            lab.check(guest.MARKERS[m] in console, f"marker {guest.MARKERS[m]}")
        answers = guest.kv_request(fwd1, ["PING", "PUT colour blue", "PUT phrase a b  c", "INCR hits",
                                          "INCR hits", "GET colour", "GET phrase", "GET hits", "GET none"])
        print("  ", answers)
        lab.check(answers[0].startswith("PONG primary-primary "), "PING answers from the primary")
        lab.check(answers[5:] == ["VAL blue", "VAL a b  c", "VAL 2", "NONE"], "PUT/INCR then GET")
        acked = {}
        for i in range(50):
            reply = guest.kv_request(fwd1, f"PUT burst{i} {i}")[0]
            if reply.startswith("OK "):
                acked[f"burst{i}"] = str(i)
        last = guest.kv_request(fwd1, "PING")[0]

        # 2. hard kill, boot again
        lab.kill(p)
        p, log, tb = lab.boot("primary-2", "primary", lab.p1, fwd1)
        line, _ = guest.wait_for_marker(log, guest.MARKERS["service"], 90, proc=p)
        print(f"primary after SIGKILL: {line}  ({time.monotonic() - tb:.1f} s)")
        fsck, _ = guest.wait_for_marker(log, guest.MARKERS["fsck"], 1)
        lab.numbers["fsck_after_kill"] = fsck
        lab.check(fsck.startswith(("@@FSCK exit=0 ", "@@FSCK exit=1 ")), f"e2fsck -p after the kill: {fsck}")
        got = guest.kv_request(fwd1, [f"GET {k}" for k in acked] + ["GET hits", "PING"])
        lab.check(got[:-2] == [f"VAL {v}" for v in acked.values()] and got[-2] == "VAL 2",
                  f"all {len(acked) + 5} acknowledged updates survived")
        lab.check(got[-1].split()[-1] == last.split()[-1], f"same sequence number after the crash ({got[-1]})")

        if not args.no_failover:
            # 3. RSO: the recovery's pre-boot monitor, failover, hot-plugged drive
            lab.ctl("RSO ENABLE TIMEOUT=5")
            guest.wait_for_marker(log, guest.MARKERS["agent"], 5)
            r, rlog, _ = lab.boot("recovery", "recovery", lab.p2, fwd2)
            line, roff = guest.wait_for_marker(rlog, guest.MARKERS["monitor_start"], 90, proc=r)
            print(f"recovery: {line}")
            deadline = time.monotonic() + 30
            state = ""
            while time.monotonic() < deadline and state != "ok":
                time.sleep(0.5)
                state = str(lab.ctl("RSO STATUS")["result"]["state"])
            lab.check(state == "ok", f"RSO state {state}: heartbeat and acknowledgment flowing")
            lab.check(guest.MARKERS["root_waiting"] not in rlog.read_text(errors="replace"),
                      "the recovery does not touch the logical drive while its monitor runs")
            guest.kv_request(fwd1, "PUT before-failover 1")
            lab.kill(p)
            tk = time.monotonic()
            line, roff = guest.wait_for_marker(rlog, guest.MARKERS["monitor_exit"], 60, proc=r, start=roff)
            lab.check(line.startswith("@@MONITOR exit=0"), f"monitor: {line}")
            answers_qmp = qmp(lab.dir / "recovery.qmp", guest.lun_hotplug_qmp(lab.url(lab.p2, 1),
                                                                              "iqn.2026-11.lab:recovery"))
            lab.check(all("return" in a for a in answers_qmp), f"LUN 1 hot-plugged over QMP {answers_qmp}")
            line, _ = guest.wait_for_marker(rlog, guest.MARKERS["service"], 90, proc=r, start=roff)
            fo = time.monotonic() - tk
            lab.numbers["failover_s"] = round(fo, 1)
            print(f"recovery: {line}  ({fo:.1f} s after the primary was killed; heartbeat timeout 5 s)")
            got = guest.kv_request(fwd2, ["PING", "GET before-failover", "GET hits"])
            lab.check(got[0].startswith("PONG recovery-recovery ") and got[1:] == ["VAL 1", "VAL 2"],
                      f"the recovery serves the same data: {got}")
            lab.kill(r)
            # a monitor that fails (the recovery's agent on port 1 is refused) is retried
            lab.ctl("RSO RESTORE")
            w, wlog, _ = lab.boot("wrong-port", "recovery", lab.p1, free_port(), attach_lun=False)
            line, off = guest.wait_for_marker(wlog, guest.MARKERS["monitor_exit"], 90, proc=w)
            retry, _ = guest.wait_for_marker(wlog, "@@MONITOR ", 10, proc=w, start=off)
            lab.check(not line.startswith("@@MONITOR exit=0") and retry.startswith("@@MONITOR retry"),
                      f"a failing monitor is retried, the boot waits: {line} / {retry}")
            lab.kill(w)
        ok = not lab.failures
    finally:
        lab.stop_all()
        print("numbers:", json.dumps(lab.numbers))
        if args.keep or not ok:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("guest smoke:", "passed" if ok else f"FAILED: {lab.failures}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="build-guest cache (default: its own default)")
    ap.add_argument("--no-failover", action="store_true", help="skip the RSO part")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (consoles, emulator log)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("guest_smoke: run as root (build-guest needs it)", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
