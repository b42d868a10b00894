"""Many arrays at once: N emulated MSA500s started in parallel on free loopback ports, each with
its own state directory (and shelf serial, so each has its own iSCSI target name).

    from msa500_emu.testing import start_arrays
    arrays = start_arrays(8, "/tmp/fleet")      # handles, as start_array gives
    ...
    stop_arrays(arrays)

`msa500-emu fleet up N --dir DIR` does the same from the command line: it prints each array's
portals and API, writes DIR/fleet.json, and stops them all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import StartError
from .handle import MSA500
from .launch import MODES, ConfigSource, mirror_shelf, start_array

MAX_ARRAYS = 64
FLEET_FILE = "fleet.json"
SPARSE_NOTE_MIB = 512  # each state directory may grow to its drive images' and cache's full size


def array_name(i: int) -> str:
    return f"array{i + 1:02d}"


def default_config(i: int) -> str:
    """A small mirror shelf whose serial (and so target name) is this array's own."""
    return mirror_shelf(serial=f"FLEET{i + 1:05d}")


def start_arrays(n: int, base_dir: str | os.PathLike[str],
                 config: ConfigSource | Callable[[int], ConfigSource] = None, *, mode: str = "subprocess",
                 startup_timeout: float = 60.0, workers: int | None = None) -> list[MSA500]:
    """Start n arrays in parallel under base_dir/array01 ... (state dirs, logs beside them).

    config: one shelf for all (TOML text or a file), a function of the array's index, or None
    (a small mirror shelf with a distinct serial each). All or nothing: if one fails to start,
    the others are stopped and StartError names the one that failed.
    """
    if not 1 <= n <= MAX_ARRAYS:
        raise ValueError(f"{n} arrays: 1..{MAX_ARRAYS}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {', '.join(MODES)}")
    base = Path(base_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> MSA500:
        cfg = config(i) if callable(config) else config if config is not None else default_config(i)
        return start_array(base / array_name(i), cfg, mode=mode, startup_timeout=startup_timeout)

    with ThreadPoolExecutor(max_workers=workers or min(n, 8), thread_name_prefix="msa500-fleet") as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        arrays: list[MSA500] = []
        errors: list[str] = []
        for i, f in enumerate(futures):
            try:
                arrays.append(f.result())
            except Exception as exc:  # collected: every started array is stopped below
                errors.append(f"{array_name(i)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if errors:
        stop_arrays(arrays)
        raise StartError(f"{len(errors)} of {n} arrays did not start: {'; '.join(errors)}")
    return arrays


def stop_arrays(arrays: Sequence[MSA500]) -> list[str]:
    """Stop every array (in parallel); one line for each that did not stop cleanly."""
    def one(a: MSA500) -> str | None:
        rc = a.stop()
        return None if rc == 0 else f"{a.state_dir.name}: exit status {rc} (log {a.log})"

    if not arrays:
        return []
    with ThreadPoolExecutor(max_workers=min(len(arrays), 8), thread_name_prefix="msa500-fleet-stop") as pool:
        return [p for p in pool.map(one, arrays) if p]


def table(arrays: Sequence[MSA500]) -> str:
    """One aligned row per array: name, portals, API, state directory."""
    rows = [("ARRAY", "PORT 1", "PORT 2", "API", "TARGET", "STATE DIRECTORY")]
    rows += [(a.state_dir.name, a.portal(1), a.portal(2), a.api, a.target, str(a.state_dir)) for a in arrays]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def describe(arrays: Sequence[MSA500]) -> list[dict[str, object]]:
    return [{"name": a.state_dir.name, "port1": a.portal(1), "port2": a.portal(2), "api": a.api,
             "target": a.target, "state_dir": str(a.state_dir),
             "token_file": str(a.token_file) if a.token_file else None} for a in arrays]


# ------------------------------------------------------------------------------ the command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msa500-emu fleet", description="many emulated arrays at once")
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start N arrays on free loopback ports; Ctrl-C or SIGTERM stops them")
    up.add_argument("count", type=int, metavar="N", help=f"how many (1..{MAX_ARRAYS})")
    up.add_argument("--dir", type=Path, required=True, metavar="DIR",
                    help="each array's state in DIR/array01 ...; DIR/fleet.json lists them")
    up.add_argument("--config", type=Path, metavar="TOML",
                    help="one shelf for all (default: a small mirror shelf with its own serial each)")
    up.add_argument("--json", action="store_true", help="print the list as JSON")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.count <= MAX_ARRAYS:
        print(f"msa500-emu fleet: N {args.count}: 1..{MAX_ARRAYS}", file=sys.stderr)
        return 2
    if args.config is not None and not args.config.is_file():
        print(f"msa500-emu fleet: --config {args.config}: no such file", file=sys.stderr)
        return 2
    base = args.dir.expanduser().resolve()
    try:
        base.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(base).free >> 20
    except OSError as exc:
        print(f"msa500-emu fleet: --dir {base}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if free < args.count * SPARSE_NOTE_MIB:
        print(f"msa500-emu fleet: note: {free} MiB free in {base}; each array may use up to "
              f"{SPARSE_NOTE_MIB} MiB", file=sys.stderr)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        arrays = start_arrays(args.count, base, args.config)
    except StartError as exc:
        print(f"msa500-emu fleet: {exc}", file=sys.stderr)
        return 2
    listing = describe(arrays)
    (base / FLEET_FILE).write_text(json.dumps(listing, indent=2) + "\n")
    print(json.dumps(listing, indent=2) if args.json else table(arrays), flush=True)
    print(f"msa500-emu fleet: {len(arrays)} arrays up ({base / FLEET_FILE}); Ctrl-C stops them", flush=True)
    while not stop.wait(3600):
        pass
    problems = stop_arrays(arrays)
    (base / FLEET_FILE).unlink(missing_ok=True)
    for p in problems:
        print(f"msa500-emu fleet: {p}", file=sys.stderr)
    print(f"msa500-emu fleet: {len(arrays)} arrays stopped", flush=True)
    return 1 if problems else 0
