"""One node of the cluster layout in the foreground, for a container of compose.yaml: wait for the
array's API, read its token, boot the cluster guest (QEMU, TCG) logged in to the array, copy its
serial console to stdout (so `docker-compose logs nodea` shows it), and exit with QEMU.

    python3 -m msa500_emu.lab.node nodea --api http://127.0.0.1:8500 --token-file /var/lib/msa500-emu/api.token

`msa500-emu lab up --layout cluster` starts both nodes on this machine; this runs one, and stops
on SIGTERM (`docker stop`) by killing its QEMU. See docs/containers.md and docs/cluster-lab.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..management.auth import TOKEN_ENV, TokenError, find_token
from ..testing import guest as cg
from .cluster import IDLE_SCRIPT, NODES, _Array
from .rso_lab import Lab, LabError

API_WAIT_S = 300.0  # the array's container may still be starting (or building its shelf)
POLL_S = 0.5


def wait_for_api(api: str, timeout: float) -> None:
    """GET /api/health until it answers ok (bounded)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{api}/api/health", timeout=5) as resp:
                if json.loads(resp.read()).get("status") == "ok":
                    return
                last = "not ok"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(getattr(exc, "reason", exc))
        time.sleep(POLL_S)
    raise LabError(f"the array's API at {api} did not answer ok within {timeout:g} s ({last})")


def _token(api: str, token_file: Path | None, timeout: float) -> str:
    """The token file appears when the array starts the first time: wait for it too."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return find_token(api, token_file)
        except TokenError as exc:
            if token_file is None or time.monotonic() >= deadline:
                raise LabError(str(exc)) from None
        time.sleep(POLL_S)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m msa500_emu.lab.node",
                                description="one cluster node (QEMU) in the foreground, logged in to the array")
    p.add_argument("name", choices=sorted(NODES), help="the node (its initiator: iqn.2026-11.lab:NAME)")
    p.add_argument("--api", default=os.environ.get("MSA500_API", "127.0.0.1:8500"),
                   help="the array's API, URL or HOST:PORT (default $MSA500_API, else 127.0.0.1:8500)")
    p.add_argument("--token-file", type=Path, default=None,
                   help=f"the array's api.token (default ${TOKEN_ENV}, else the token the array recorded here)")
    p.add_argument("--single-path", action="store_true",
                   help="log in through the node's own port only (nodea: 1, nodeb: 2); default both, multipathed")
    p.add_argument("--cache", type=Path, default=None,
                   help="the cluster guest image's directory (default $MSA500_CLUSTER_CACHE, "
                        "else ~/.cache/msa500-emu/cluster-guest)")
    p.add_argument("--workdir", type=Path, default=None, help="console, initrd (default /tmp/msa500-lab/NAME)")
    p.add_argument("--script", type=Path, default=None, help="run once logged in (default: stay up)")
    p.add_argument("--api-timeout", type=float, default=API_WAIT_S, help="seconds to wait for the array")
    return p


def _copy_console(g: cg.Guest, stop: threading.Event) -> None:
    """Print the guest's console as it grows, until QEMU exits and the rest is out."""
    offset = 0
    while True:
        done = not g.running or stop.is_set()
        try:
            data = g.console_log.read_bytes()[offset:]
        except FileNotFoundError:
            data = b""
        if data:
            end = data.rfind(b"\n") + 1 if not done else len(data)
            if end:
                sys.stdout.write(data[:end].decode("utf-8", "replace").replace("\r", ""))
                sys.stdout.flush()
                offset += end
        if done:
            return
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    api = args.api if "://" in args.api else f"http://{args.api}"
    name = args.name
    try:
        image = cg.ClusterImage.load(args.cache)
        wait_for_api(api, args.api_timeout)
        os.environ[TOKEN_ENV] = _token(api, args.token_file, args.api_timeout)
        workdir = (args.workdir or Path("/tmp/msa500-lab") / name).resolve()
        lab = Lab(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        lab.use_array(api)
    except (cg.GuestError, LabError) as exc:
        print(f"msa500-emu lab node {name}: {exc}", file=sys.stderr)
        return 2
    s = lab.state
    script = args.script.read_text() if args.script else IDLE_SCRIPT
    ports = (NODES[name],) if args.single_path else (1, 2)
    g = cg.Guest(image, _Array(s.target, s.port1, s.port2), workdir, name=name, script=script, ports=ports,
                 multipath=not args.single_path)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        g.kill()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"msa500-emu lab node {name}: booting, initiator {g.initiator}, target {s.target}, "
          f"ports {', '.join(f'{p} (127.0.0.1:{s.port1 if p == 1 else s.port2})' for p in ports)}", flush=True)
    g.start()
    assert g.proc is not None
    _copy_console(g, stop)
    rc = g.proc.wait()
    qemu_log = g.dir / f"{name}.qemu.log"
    if rc and not stop.is_set() and qemu_log.exists():
        sys.stdout.write(qemu_log.read_text(errors="replace")[-2000:])
    print(f"msa500-emu lab node {name}: QEMU exited ({'stopped' if stop.is_set() else f'status {rc}'})", flush=True)
    return 0 if stop.is_set() else rc


if __name__ == "__main__":
    sys.exit(main())
