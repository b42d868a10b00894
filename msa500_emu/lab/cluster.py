"""`msa500-emu lab up --layout cluster`: two Linux nodes (QEMU, TCG) attached to the array like a
two-node HA cluster: node A logged in through port 1, node B through port 2, each with the kernel
initiator (open-iscsi), multipath-tools and the HA tools (sg3-utils, fence_scsi, sbd) of the
cluster guest (`msa500_emu.testing.guest`, scripts/lab/build-cluster-guest).

Each node runs a script (`--script FILE`, default: stay up) once logged in; its console is
`<lab-dir>/cluster/nodeX/nodeX.console`. The state is `<lab-dir>/cluster.json`; `lab down` stops
the nodes (by PID) and the emulator if the lab started it. See docs/cluster-lab.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..testing import guest as cg
from .rso_lab import Lab, LabError, LabState, _terminate, alive

STATE = "cluster.json"
NODES = {"nodea": 1, "nodeb": 2}  # node -> the array port it logs in through (multipath: both)
IDLE_SCRIPT = "mark IDLE\nwhile :; do sleep 3600; done\n"


@dataclass
class _Array:
    """What a Guest needs of the array: its target name and its ports' TCP ports."""

    target: str
    port1: int
    port2: int

    def tcp_port(self, port: int) -> int:
        return self.port1 if port == 1 else self.port2


def state_path(lab: Lab) -> Path:
    return lab.dir / STATE


def load(lab: Lab) -> dict[str, Any] | None:
    try:
        return dict(json.loads(state_path(lab).read_text()))
    except (OSError, ValueError):
        return None


def start_array(lab: Lab, port1: int, port2: int, api: int) -> None:
    """The emulator on fixed loopback ports (0: any free one), owned by the lab."""
    state_dir = lab.dir / "array"
    shutil.rmtree(state_dir, ignore_errors=True)
    out = lab.dir / "array.out"
    cmd = [sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(state_dir),
           "--port1", f"127.0.0.1:{port1}", "--port2", f"127.0.0.1:{port2}", "--api", f"127.0.0.1:{api}"]
    with open(out, "w") as o, open(lab.dir / "array.log", "w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    end = time.monotonic() + 60
    while "msa500-emu ctl" not in out.read_text():
        if proc.poll() is not None or time.monotonic() > end:
            _terminate(proc.pid, 5)
            raise LabError(f"the emulator did not start:\n{(lab.dir / 'array.log').read_text()[-2000:]}")
        time.sleep(0.05)
    lab.state.array_pid = proc.pid
    lab.save()
    text = out.read_text()
    ports = dict(re.findall(r"port (\d): iSCSI portal 127\.0\.0\.1:(\d+)", text))
    target = re.search(r"serving (\S+)", text)
    api_url = re.search(r"management API: (http://\S+)/api/health", text)
    if not (ports and target and api_url):
        _terminate(proc.pid, 5)
        raise LabError(f"could not read the emulator's banner:\n{text}")
    s = lab.state
    s.target, s.api, s.port1, s.port2 = target.group(1), api_url.group(1), int(ports["1"]), int(ports["2"])
    lab.save()
    lab.mark("array started", pid=proc.pid, port1=s.port1, port2=s.port2, api=s.api)


def up(lab: Lab, *, api: str | None, port1: int, port2: int, api_port: int, cache: Path | None,
       script: Path | None, multipath: bool = True, boot_timeout: float = 420) -> dict[str, Any]:
    """Start (or use) the array and boot both nodes; returns the cluster state."""
    if lab.running() or any(alive(n.get("pid")) for n in (load(lab) or {}).get("nodes", {}).values()):
        raise LabError(f"a lab is running in {lab.dir} (msa500-emu lab --lab-dir {lab.dir} down first)")
    lab.dir.mkdir(parents=True, exist_ok=True)
    lab.timeline_file.unlink(missing_ok=True)
    lab.state = LabState(str(lab.dir))
    lab.save()
    t0 = time.monotonic()
    image = cg.build(cache)
    lab.mark("cluster guest image ready", seconds=round(time.monotonic() - t0, 1), key=image.key[:12])
    if api:
        lab.use_array(api)
        if lab.rso().get("enabled"):
            lab.command("RSO DISABLE")
    else:
        start_array(lab, port1, port2, api_port)
    s = lab.state
    arr = _Array(s.target, s.port1, s.port2)
    text = script.read_text() if script else IDLE_SCRIPT
    state: dict[str, Any] = {"api": s.api, "target": s.target, "port1": s.port1, "port2": s.port2,
                             "multipath": multipath, "nodes": {}}
    guests = []
    for name, port in NODES.items():
        g = cg.Guest(image, arr, lab.dir / "cluster" / name, name=name, script=text,
                     ports=(1, 2) if multipath else (port,), initiator=f"iqn.2026-11.lab:{name}",
                     multipath=multipath)
        g.start(new_session=True)  # the nodes outlive `lab up`
        assert g.proc is not None
        guests.append(g)
        state["nodes"][name] = {"pid": g.proc.pid, "console": str(g.console_log), "host_channel": str(g.host_socket),
                                "initiator": g.initiator, "ports": list(g.ports)}
        lab.mark(f"{name} booting", pid=g.proc.pid, initiator=g.initiator)
    state_path(lab).write_text(json.dumps(state, indent=2))
    for g in guests:
        line = g.wait_marker(cg.READY, boot_timeout)
        lab.mark(f"{g.name} ready", console=line)
    for g in guests:  # the lab outlives this process: let QEMU go on without us
        g.proc = None
    return state


def down(lab: Lab) -> bool:
    """Stop the nodes (by PID); False when there was no cluster layout here."""
    st = load(lab)
    if st is None:
        return False
    for name, node in st.get("nodes", {}).items():
        pid = node.get("pid")
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
            lab.mark(f"{name} stopped", pid=pid)
    state_path(lab).unlink(missing_ok=True)
    return True


def status_lines(lab: Lab) -> list[tuple[str, str]]:
    """(label, value) lines for `lab status` of a cluster layout."""
    st = load(lab) or {}
    items = [("layout", "cluster (node A: port 1, node B: port 2" + (", both multipathed)" if st.get("multipath")
                                                                    else ")")),
             ("emulator API", str(st.get("api", "-"))),
             ("ports", f"1: 127.0.0.1:{st.get('port1', '-')}, 2: 127.0.0.1:{st.get('port2', '-')}")]
    for name, node in st.get("nodes", {}).items():
        items.append((name, f"{'running' if alive(node.get('pid')) else 'not running'}, pid {node.get('pid')}, "
                            f"initiator {node.get('initiator')}, console {node.get('console')}"))
    return items
