"""`msa500-emu lab ...`: the RSO lab (two QEMU hosts on the two ports, one shared OS image)."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ..management.render import pairs, value
from . import cluster, guest, markers, timeline_html
from .qmp import QmpError
from .rso_lab import DEFAULT_SERVICE_PORT, DEFAULT_TIMEOUT, Lab, LabError, alive, format_mark
from .supervisor import Supervisor

HELP = """commands:
  up [-d]            start the emulator (or --api: use a running one), install the OS image on LUN 1,
                     boot the primary VM (port 1) and the recovery VM's pre-boot monitor (port 2);
                     without -d it stays in the foreground printing the timeline (Ctrl-C: lab down)
  up --layout cluster  two Linux nodes instead (node A port 1, node B port 2, multipath, fence_scsi,
                     sbd; see docs/cluster-lab.md); --port1/--port2/--api-port fix the emulator's ports
  status             VMs, RSO state, who answers on the service address
  timeline           everything that happened, with times
  kill-primary       hard stop: the primary's VM process is killed (power cut)
  hang-primary       the primary's OS keeps running but stops scheduling its RSO agent
  wake-primary       ... and schedules it again (hang-then-wake)
  nic-down-primary   the primary's network link goes down (the RSO blind spot: no failover)
  nic-up-primary     ... and comes back
  f8                 forced failover from the recovery console
  restore            manual restore: recovery down, RSO RESTORE, primary boots, recovery listens
  down               stop the VMs, the supervisor, and the emulator if the lab started it"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msa500-emu lab", description="The RSO lab", epilog=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lab-dir", type=Path, help="lab state (default ~/.local/state/msa500-emu/lab, $MSA500_LAB_DIR)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="start the lab")
    up.add_argument("-d", "--detach", action="store_true", help="return once the lab is up")
    up.add_argument("--api", metavar="URL", help="use a running emulator (its LUN 1 is overwritten)")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="RSO heartbeat timeout, s (default 5)")
    up.add_argument("--service-port", type=int, default=DEFAULT_SERVICE_PORT,
                    help=f"the service address 127.0.0.1:PORT (default {DEFAULT_SERVICE_PORT})")
    up.add_argument("--cache", type=Path, help="guest image cache (default ~/.cache/msa500-emu/lab)")
    up.add_argument("--layout", choices=("rso", "cluster"), default="rso",
                    help="rso: the RSO pair (default); cluster: two nodes with the HA tools")
    for opt, what in (("--port1", "iSCSI port 1"), ("--port2", "iSCSI port 2"), ("--api-port", "management API")):
        up.add_argument(opt, type=int, default=0, metavar="PORT",
                        help=f"cluster layout: the started emulator's {what} on 127.0.0.1:PORT (default: a free one)")
    up.add_argument("--script", type=Path, help="cluster layout: a shell script each node runs (default: stay up)")
    up.add_argument("--single-path", action="store_true", help="cluster layout: each node on its own port only")
    for name, text in (("status", "show the lab"), ("timeline", "print the timeline"),
                       ("kill-primary", "kill the primary VM"), ("hang-primary", "stop the primary's agent"),
                       ("wake-primary", "resume the primary's agent"), ("nic-down-primary", "primary link down"),
                       ("nic-up-primary", "primary link up"), ("f8", "forced failover"),
                       ("down", "stop everything"), ("supervise", argparse.SUPPRESS)):
        s = sub.add_parser(name, help=text)
        if name == "status":
            s.add_argument("--json", action="store_true")
        if name == "timeline":
            s.add_argument("--html", type=Path, metavar="FILE",
                           help="write the run as swim lanes to FILE (self-contained HTML with SVG)")
    r = sub.add_parser("restore", help="manual restore")
    r.add_argument("--cache", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    lab = Lab(args.lab_dir)
    try:
        return COMMANDS[args.command](lab, args)
    except (LabError, QmpError, guest.GuestError, TimeoutError) as exc:
        print(f"msa500-emu lab: {exc}", file=sys.stderr)
        return 1


def _up_cluster(lab: Lab, args: argparse.Namespace) -> int:
    try:
        st = cluster.up(lab, api=args.api, port1=args.port1, port2=args.port2, api_port=args.api_port,
                        cache=args.cache, script=args.script, multipath=not args.single_path)
    except BaseException:
        lab.reload()
        with contextlib.suppress(Exception):
            cluster.down(lab)
            lab.down()
        raise
    d = f"--lab-dir {lab.dir}"
    print("\n".join(pairs(cluster.status_lines(lab), indent="")))
    print(f"try: msa500-emu ctl --api {st['api']} FAULT PORT1 DOWN | RSO ENABLE TIMEOUT=5 | RSO FAILOVER\n"
          f"     msa500-emu lab {d} status | timeline | down")
    return 0


def _up(lab: Lab, args: argparse.Namespace) -> int:
    if args.layout == "cluster":
        return _up_cluster(lab, args)
    if args.port1 or args.port2 or args.api_port or args.script or args.single_path:
        raise LabError("--port1, --port2, --api-port, --script and --single-path belong to --layout cluster")
    try:
        lab.up(api=args.api, timeout=args.timeout, service_port=args.service_port, cache=args.cache)
    except BaseException:
        lab.reload()
        with contextlib.suppress(Exception):
            lab.down()
        raise
    hint = (f"service: 127.0.0.1:{lab.state.service_port} (PUT key value / GET key / PING)\n"
            f"try: msa500-emu lab --lab-dir {lab.dir} kill-primary | hang-primary | nic-down-primary | f8 | restore"
            f" | down")
    if args.detach:
        log = open(lab.dir / "supervisor.log", "a")
        cmd = [sys.executable, "-m", "msa500_emu", "lab", "--lab-dir", str(lab.dir), "supervise"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            lab.reload()
            if lab.state.supervisor_pid == proc.pid:
                break
            time.sleep(0.05)
        print(hint)
        return 0
    print(hint + "\nCtrl-C stops the lab.")

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    try:
        Supervisor(lab).run()
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the teardown
    lab.reload()
    lab.down()
    return 0


def _supervise(lab: Lab, args: argparse.Namespace) -> int:
    sup = Supervisor(lab)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sup.run()
    return 0


def _status(lab: Lab, args: argparse.Namespace) -> int:
    if cluster.load(lab) is not None:
        print("\n".join(pairs([("lab directory", str(lab.dir)), *cluster.status_lines(lab)], indent="")))
        return 0
    s = lab.state
    out: dict[str, object] = {"lab_dir": str(lab.dir), "api": s.api, "service": f"127.0.0.1:{s.service_port}",
                              "service_on": s.service_on, "supervisor": alive(s.supervisor_pid)}
    out["vms"] = {r: {"running": alive(v.pid), "pid": v.pid, "boot": v.boot, "console": v.console,
                      "admin": f"127.0.0.1:{v.admin_port}"} for r, v in s.vms.items()}
    try:
        st = lab.rso()
        out["rso"] = {k: st.get(k) for k in ("state", "active_port", "fenced_port", "heartbeat_age_s",
                                                  "ack_age_s", "timeout_s", "failovers", "detection_ms")}
    except LabError as exc:
        out["rso"] = str(exc)
    try:
        out["service_answer"] = lab.service("PING")
    except (OSError, ConnectionError) as exc:
        out["service_answer"] = f"unreachable ({exc})"
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2))
    else:
        print(status_text(out))
    return 0


def status_text(out: dict[str, Any]) -> str:
    """`lab status` for people: one aligned `label: value` line per fact, no Python reprs."""
    items: list[tuple[str, str]] = [
        ("lab directory", value(out.get("lab_dir"))), ("emulator API", value(out.get("api"))),
        ("service address", value(out.get("service")) + (f" (on the {out['service_on']} VM)" if out.get("service_on")
                                                         else " (no VM serves it)")),
        ("service answer", value(out.get("service_answer"))),
        ("supervisor", "running" if out.get("supervisor") else "not running"),
    ]
    vms = out.get("vms")
    for role, vm in (vms.items() if isinstance(vms, dict) else ()):
        items.append((f"{role} VM", ", ".join([
            "running" if vm.get("running") else "not running", f"pid {value(vm.get('pid'))}",
            f"boot {value(vm.get('boot'))}", f"console {value(vm.get('console'))}",
            f"admin {value(vm.get('admin'))}"])))
    rso = out.get("rso")
    if isinstance(rso, dict):
        ages = {k: rso.get(k) for k in ("heartbeat_age_s", "ack_age_s")}
        items.append(("RSO", ", ".join([
            f"{value(rso.get('state'))}", f"active port {value(rso.get('active_port'))}",
            f"fenced port {value(rso.get('fenced_port'))}",
            "last heartbeat " + ("-" if ages["heartbeat_age_s"] is None else f"{value(ages['heartbeat_age_s'])} s ago"),
            "last acknowledge " + ("-" if ages["ack_age_s"] is None else f"{value(ages['ack_age_s'])} s ago"),
            f"timeout {value(rso.get('timeout_s'))} s", f"failovers {value(rso.get('failovers'))}",
            "detection " + ("-" if rso.get("detection_ms") is None else f"{value(rso.get('detection_ms'))} ms")])))
    else:
        items.append(("RSO", value(rso)))
    return "\n".join(pairs(items, indent=""))


def _timeline(lab: Lab, args: argparse.Namespace) -> int:
    recs = sorted(lab.timeline(), key=lambda r: float(r["t"]))
    if getattr(args, "html", None) is not None:
        try:
            args.html.write_text(timeline_html.render(recs), encoding="utf-8")
        except OSError as exc:
            raise LabError(f"cannot write {args.html}: {exc.strerror or exc}") from None
        pic = timeline_html.facts(recs)
        print(f"{args.html}: {len(pic.events)} events, {len(pic.failovers)} failover(s), "
              f"{len(pic.outages)} outage(s)")
        return 0
    t0 = float(recs[0]["t"]) if recs else None
    for rec in recs:
        print(format_mark(rec, t0))
    summary = lab.dir / "failover.txt"
    if summary.exists():  # the supervisor's summary quotes the fsck marker: in words here too
        print("the last failover:\n" + "\n".join(markers.plain(x) for x in summary.read_text().splitlines()))
    return 0


def _kill_primary(lab: Lab, args: argparse.Namespace) -> int:
    lab.kill_vm("primary")
    return 0


def _admin_agent(lab: Lab, action: str) -> int:
    reply = lab.admin("primary", f"AGENT {action}")
    if not reply.startswith("OK"):
        raise LabError(f"the primary's service answered {reply!r}")
    lab.mark(f"primary: RSO agent {'stopped (the OS no longer schedules it)' if action == 'STOP' else 'resumed'}")
    return 0


def _link(lab: Lab, up: bool) -> int:
    with lab.qmp("primary") as q:
        q.execute("set_link", name="n0", up=up)
    lab.mark(f"primary: network link {'up' if up else 'down'} (the heartbeat runs over the storage path)")
    return 0


def _f8(lab: Lab, args: argparse.Namespace) -> int:
    lab.f8()
    return 0


def _restore(lab: Lab, args: argparse.Namespace) -> int:
    lab.restore(guest.GuestImage.load(args.cache))
    return 0


def _down(lab: Lab, args: argparse.Namespace) -> int:
    cluster.down(lab)
    lab.down()
    return 0


COMMANDS = {
    "up": _up, "supervise": _supervise, "status": _status, "timeline": _timeline,
    "kill-primary": _kill_primary, "hang-primary": lambda lab, a: _admin_agent(lab, "STOP"),
    "wake-primary": lambda lab, a: _admin_agent(lab, "CONT"),
    "nic-down-primary": lambda lab, a: _link(lab, False), "nic-up-primary": lambda lab, a: _link(lab, True),
    "f8": _f8, "restore": _restore, "down": _down,
}


if __name__ == "__main__":
    sys.exit(main())
