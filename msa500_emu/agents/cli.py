"""`msa500-emu agent primary|recovery` (also `python3 -m msa500_emu.agents ...` inside a VM)."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ..alerts import Alerts, AlertSink, CommandSink, FileSink, StreamSink, default_source
from ..iscsi.url import IscsiUrl
from .agent import EXIT_USAGE, PrimaryAgent, RecoveryAgent, run
from .scsi import DeviceLost, IscsiDevice, RsoClient, SgDevice, find_array_controller


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msa500-emu agent",
                                description="RSO host agents: the primary's heartbeat, the recovery's pre-boot monitor")
    sub = p.add_subparsers(dest="role", required=True)
    for role, text in (("primary", "send heartbeats from port 1; raise the lost-acknowledgment alarm"),
                       ("recovery", "acknowledge from port 2; fence the primary on timeout (or --force) and "
                                    "exit 0 so the recovery host boots")):
        a = sub.add_parser(role, help=text, description=text)
        where = a.add_mutually_exclusive_group(required=True)
        where.add_argument("--target", metavar="URL",
                           help="iscsi://HOST:PORT/TARGET-IQN[/0] (LUN 0, the array controller)")
        where.add_argument("--device", metavar="DEV", help="/dev/sgN of the array controller, or 'auto'")
        a.add_argument("--initiator-name", help=f"iSCSI initiator name (default iqn.2026-11.io.msa500-emu:{role}."
                                                f"HOSTNAME)")
        a.add_argument("--interval", type=float, metavar="S",
                       help="seconds between rounds (default: timeout/5, at most 1 s)")
        a.add_argument("--alert-file", type=Path, metavar="PATH", help="append alerts as JSON lines")
        a.add_argument("--alert-command", metavar="CMD",
                       help="run CMD per alert with MSA500_ALERT_* in its environment (e.g. an snmptrap wrapper)")
        a.add_argument("--quiet", action="store_true", help="no JSON alert lines on stderr")
        a.add_argument("--log-level", default="info", help="debug, info, warning or error")
        if role == "primary":
            a.add_argument("--configure", type=float, metavar="TIMEOUT",
                           help="first enable RSO on the array with this heartbeat timeout in seconds "
                                "(the product's order: the primary configures)")
            a.add_argument("--act-alone", action="store_true",
                           help="with --configure: the controller fails over by itself (no recovery agent)")
        else:
            a.add_argument("--force", action="store_true", help="forced failover now (the F8 key)")
            a.add_argument("--max-wait", type=float, metavar="S", help="give up (exit 4) after S seconds")
    return p


def _connector(args: argparse.Namespace) -> Callable[[], RsoClient]:
    name = args.initiator_name or f"iqn.2026-11.io.msa500-emu:{args.role}.{socket.gethostname().lower()}"

    def connect() -> RsoClient:
        if args.target:
            return RsoClient(IscsiDevice(args.target, name))
        path = find_array_controller() if args.device == "auto" else args.device
        return RsoClient(SgDevice(path))

    return connect


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s {args.role}-agent %(levelname)s: %(message)s")
    if args.target:
        try:
            url = IscsiUrl.parse(args.target, default_lun=0)
        except ValueError as exc:
            print(f"msa500-emu agent: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if url.lun != 0:
            print(f"msa500-emu agent: LUN {url.lun}: the RSO commands go to LUN 0 (the array controller)",
                  file=sys.stderr)
            return EXIT_USAGE
    if args.role == "primary" and args.act_alone and args.configure is None:
        print("msa500-emu agent: --act-alone needs --configure TIMEOUT", file=sys.stderr)
        return EXIT_USAGE
    sinks: list[AlertSink] = [] if args.quiet else [StreamSink()]
    if args.alert_file:
        sinks.append(FileSink(args.alert_file))
    if args.alert_command:
        sinks.append(CommandSink(shlex.split(args.alert_command)))
    alerts = Alerts(default_source(args.role), sinks)
    connect = _connector(args)
    agent: PrimaryAgent | RecoveryAgent
    if args.role == "primary":
        agent = PrimaryAgent(connect, alerts, args.interval,
                             None if args.configure is None else (args.configure, args.act_alone))
    else:
        agent = RecoveryAgent(connect, alerts, args.interval, force=args.force, max_wait=args.max_wait)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return run(agent)
    except KeyboardInterrupt:
        logging.getLogger("msa500_emu.agents").info("stopped by signal")
        return 130
    except DeviceLost as exc:  # pragma: no cover - step() handles it; kept for clarity
        print(f"msa500-emu agent: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
