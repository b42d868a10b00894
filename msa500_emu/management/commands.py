"""The command language of `msa500-emu ctl`, in the style of the MSA family's CLI.

Commands are case-insensitive. Each returns a JSON-able result and its plain rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class CommandError(Exception):
    """A command that cannot run: the message is the one line the user sees."""


class Array(Protocol):
    def describe(self) -> dict[str, Any]: ...


@dataclass
class Reply:
    result: dict[str, Any]
    text: str


def run(array: Array, line: str) -> Reply:
    words = line.split()
    if not words:
        raise CommandError("empty command (try SHOW GLOBALS)")
    verb = words[0].upper()
    if verb == "SHOW":
        if len(words) < 2:
            raise CommandError("SHOW what? (GLOBALS)")
        what = words[1].upper()
        if what == "GLOBALS" and len(words) == 2:
            return _show_globals(array)
        raise CommandError(f"unknown SHOW command: {' '.join(words[1:])!r} (known: GLOBALS)")
    raise CommandError(f"unknown command {words[0]!r} (known: SHOW GLOBALS)")


def _show_globals(array: Array) -> Reply:
    g = array.describe()
    lines = [
        "Global Parameters:",
        f"  System Name: {g['product']}",
        f"  Serial Number: {g['serial']}",
        f"  Firmware Revision: {g['firmware']}",
        f"  iSCSI Target Name: {g['target_name']}",
        f"  Drive Bays: {g['bays']}",
    ]
    for port in g.get("portals", []):
        lines.append(f"  Port {port['port']}: iSCSI portal {port['address']} ({port['sessions']} sessions)")
    for ld in g.get("logical_drives", []):
        gib = ld["bytes"] / (1 << 30)
        blocks = f"{ld['blocks']} blocks of {ld['block_size']}"
        lines.append(f"  Logical Drive {ld['lun']}: {gib:.2f} GiB ({blocks})")
    lines.append(f"  Up Time: {g.get('uptime_s', 0):.0f} s")
    return Reply(g, "\n".join(lines))
