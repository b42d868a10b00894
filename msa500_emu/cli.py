"""The `msa500-emu` command: serve, ctl."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from firmware_model.controller import ShelfError

from .config import ConfigError, load, parse_endpoint, parse_size
from .management import watch
from .management.auth import TOKEN_ENV, TokenError, find_token
from .management.commands import CommandError, help_reply

DEFAULT_API = "http://127.0.0.1:8500"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msa500-emu", description="HP MSA500 storage array emulator")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the emulated array (two iSCSI portals + management API)")
    s.add_argument("--state-dir", help="where drive images and controller NVRAM live")
    s.add_argument("--config", type=Path, help="TOML file: process settings and first shelf build")
    s.add_argument("--port1", metavar="HOST:PORT", help="controller port 1 portal (default 127.0.0.1:3260)")
    s.add_argument("--port2", metavar="HOST:PORT", help="controller port 2 portal (default 127.0.0.1:3261)")
    s.add_argument("--api", metavar="HOST:PORT", help="management API (default 127.0.0.1:8500)")
    s.add_argument("--log-level", help="debug, info, warning or error (default info)")
    s.add_argument("--api-token-file", type=Path, metavar="PATH",
                   help="the API's bearer token: read, or made (mode 0600) on first start "
                        "(default STATE_DIR/api.token; [api] token_file in the TOML)")
    s.add_argument("--no-api-auth", action="store_true",
                   help="serve the API without a token (anyone who reaches it may use it)")
    s.add_argument("--record", type=Path, metavar="FILE",
                   help="record every SCSI command, operation and event into FILE (docs/recording.md)")
    s.add_argument("--record-data-cap", metavar="SIZE",
                   help="--record: data-out kept in full up to SIZE (default 64MiB), then digests only")
    c = sub.add_parser("ctl", help="send a management command to a running array",
                       description="Send one command of the management language to a running array "
                                   "(`ctl HELP [VERB]` lists them, and needs no array).",
                       epilog=help_reply([]).text, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--api", default=DEFAULT_API, metavar="URL", help=f"API base URL (default {DEFAULT_API})")
    c.add_argument("--json", action="store_true", help="print machine-readable JSON")
    c.add_argument("--token-file", type=Path, metavar="FILE",
                   help=f"the API token (default: ${TOKEN_ENV}, else the one the array recorded for this "
                        "user under ~/.local/state/msa500-emu/tokens/HOST_PORT)")
    c.add_argument("--watch", action="store_true",
                   help="with SHOW UNITS: redraw the table live (plain lines when not a terminal; Ctrl-C ends)")
    c.add_argument("--count", type=int, metavar="N", help="--watch: stop after N polls")
    c.add_argument("--interval", type=float, metavar="S",
                   help="seconds between polls of --watch (default 1) and WAIT (default 0.5)")
    c.add_argument("words", nargs="+", metavar="COMMAND",
                   help=f"e.g. SHOW GLOBALS; ctl also waits: {watch.WAIT_USAGE} (a progress bar; exit 0 reached, "
                        "1 impossible, 4 timed out; default TIMEOUT 3600 s)")
    sub.add_parser("agent", add_help=False, help="RSO host agents: `agent primary|recovery --help`")
    sub.add_parser("lab", add_help=False, help="the RSO lab with two QEMU hosts: `lab --help`")
    sub.add_parser("scenario", add_help=False, help="run a scenario file (docs/scenarios.md): `scenario --help`")
    sub.add_parser("fleet", add_help=False, help="start N arrays on free ports, stop them on Ctrl-C: `fleet --help`")
    sub.add_parser("replay", add_help=False, help="re-run a recording on a fresh array (docs/recording.md): "
                                                  "`replay --help`")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from .agents.cli import main as agent_main

        return agent_main(argv[1:])
    if argv[:1] == ["lab"]:
        from .lab.cli import main as lab_main

        return lab_main(argv[1:])
    if argv[:1] == ["scenario"]:
        from .scenario.cli import main as scenario_main

        return scenario_main(argv[1:])
    if argv[:1] == ["replay"]:
        from .recording.cli import main as replay_main

        return replay_main(argv[1:])
    if argv[:1] == ["fleet"]:
        from .testing.fleet import main as fleet_main

        return fleet_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _ctl(args)


def _serve(args: argparse.Namespace) -> int:
    try:
        # Listening addresses from the environment (the Docker image sets them):
        # command-line flag > environment variable > config file > default.
        for key, var in (("port1", "MSA500_PORT1"), ("port2", "MSA500_PORT2"), ("api", "MSA500_API")):
            if not getattr(args, key) and os.environ.get(var):
                parse_endpoint(os.environ[var], var)  # a bad value names the variable, not the flag
                setattr(args, key, os.environ[var])
        settings = load(args.config, {
            "state_dir": args.state_dir, "port1": args.port1, "port2": args.port2,
            "api": args.api, "log_level": args.log_level,
        })
        if args.api_token_file is not None:
            settings.api_token_file = args.api_token_file.expanduser()
        if args.no_api_auth:
            settings.api_auth = False
        if args.record is not None:
            settings.record_file = args.record.expanduser().resolve()
            settings.record_data_cap = parse_size(args.record_data_cap, "--record-data-cap") \
                if args.record_data_cap else None
        elif args.record_data_cap:
            raise ConfigError("--record-data-cap goes with --record")
    except ConfigError as exc:
        print(f"msa500-emu: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    from .server import serve
    from .statelock import StateDirBusy

    try:
        return runner(serve(settings))
    except ShelfError as exc:
        print(f"msa500-emu: configuration error: {exc}", file=sys.stderr)
        return 2
    except (StateDirBusy, TokenError, CommandError) as exc:  # CommandError: --record FILE cannot be written
        print(f"msa500-emu: cannot start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"msa500-emu: cannot start: {exc}{_space_note(exc, settings.state_dir)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _space_note(exc: OSError, state_dir: Path) -> str:
    """For a full file system: where, and how much is free (the error itself names no file)."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return ""
    try:
        st = os.statvfs(state_dir)
    except OSError:
        return f" (state directory {state_dir})"
    return f" (state directory {state_dir}: {st.f_bavail * st.f_frsize // (1 << 20)} MiB free)"


def _ctl(args: argparse.Namespace) -> int:
    if args.words[0].upper() == "HELP":  # the language itself: no array needed
        try:
            reply = help_reply(args.words[1:])
        except CommandError as exc:
            return _answer(args, {"ok": False, "error": str(exc)})
        return _answer(args, {"ok": True, "result": reply.result, "text": reply.text})
    base = args.api if "://" in args.api else f"http://{args.api}"
    line = " ".join(args.words)
    try:
        token = find_token(base, args.token_file)
    except TokenError as exc:
        print(f"msa500-emu ctl: {exc}", file=sys.stderr)
        return 3
    if args.watch or args.words[0].upper() == "WAIT":  # client-side: polls GET /api/units
        return watch.ctl(watch.Api(base, token), args.words, sys.stdout, sys.stderr, as_json=args.json,
                         watch=args.watch, count=args.count, interval=args.interval)
    if args.count is not None or args.interval is not None:
        return _answer(args, {"ok": False, "error": "--count and --interval go with --watch or WAIT"})
    req = urllib.request.Request(
        base.rstrip("/") + "/api/command",
        data=json.dumps({"command": line}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read())
        except ValueError:
            body = {"ok": False, "error": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"msa500-emu ctl: cannot reach the array at {base}: {reason}", file=sys.stderr)
        return 3
    return _answer(args, body)


def _answer(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """Print the API's answer (or the same shape, for HELP); the exit status: 0 ok, 1 refused."""
    try:
        if args.json:
            print(json.dumps(body, indent=2))
        elif body.get("ok"):
            print(body.get("text", ""))
        else:
            print(f"msa500-emu ctl: {body.get('error', 'command failed')}", file=sys.stderr)
    except BrokenPipeError:  # `ctl ... | head`
        sys.stderr.close()
    return 0 if body.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
