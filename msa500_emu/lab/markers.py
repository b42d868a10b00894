"""The guest consoles' @@ markers (docs/lab-guest.md) in words, for every timeline people read.

The supervisor records console lines as they come (`recovery: @@MONITOR exit=0 t=13.32`); those
raw markers are a protocol between the guest and the lab, not something to print. `plain()` turns
any text holding one into a sentence; the guest's own uptime (`t=`) is dropped, as the timeline
has the host's clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Args = dict[str, str]


def _exit(kv: Args) -> str:
    return kv.get("exit", "?")


def _monitor(first: str, kv: Args) -> str:
    if "exit" in kv:
        return ("pre-boot monitor exits 0: the primary is fenced, the boot goes on" if kv["exit"] == "0"
                else f"pre-boot monitor exits {kv['exit']}: it starts again")
    return "pre-boot monitor starts again" if first == "retry" else "pre-boot monitor starts"


def _fsck(first: str, kv: Args) -> str:
    if "exit" not in kv:
        return f"file system check of {kv.get('dev', 'the root drive')}"
    return {"0": "file system clean (e2fsck exit 0)", "1": "file system repaired (e2fsck exit 1)"}.get(
        kv["exit"], f"file system check failed (e2fsck exit {kv['exit']})")


def _agent(first: str, kv: Args) -> str:
    if "exit" in kv:
        why = {"3": ": fenced", "5": ": storage power loss"}.get(kv["exit"], "")
        return f"RSO agent exits {kv['exit']}{why}"
    if "error" in kv:
        return f"RSO agent not started ({kv['error'].rstrip(':')})"
    if first == "fenced":
        return "service stopped: this server lost the drives"
    if first == "storage-power-loss":
        return "service stopped: storage power loss"
    return "RSO agent heartbeating"


def _service(first: str, kv: Args) -> str:
    if "exit" in kv:
        return f"service exits {kv['exit']}"
    return f"service up ({kv.get('keys', '?')} keys, update {kv.get('seq', '?')})"


PHRASES: dict[str, Callable[[str, Args], str]] = {
    "INITRAMFS": lambda first, kv: f"initramfs starts (kernel {kv.get('kernel', '?')})",
    "NET": lambda first, kv: f"network up ({kv.get('addr', '?')})" if first == "up" else "network failed",
    "CONTROLLER": lambda first, kv: f"array controller found ({kv.get('dev', '?')})",
    "MONITOR": _monitor,
    "ROOT": lambda first, kv: ("root file system mounted" if first == "mounted"
                               else "waiting for the logical drive (not reachable through this port)"),
    "FSCK": _fsck,
    "INIT": lambda first, kv: "OS up" if first == "ready" else "OS starts (/sbin/init)",
    "AGENT": _agent,
    "SERVICE": _service,
    "SHUTDOWN": lambda first, kv: f"shutdown (signal {kv.get('signal', '?')})",
    "POWEROFF": lambda first, kv: "powered off cleanly" if first == "clean" else "powered off (root still read-write)",
}
_MARKER = re.compile(r"@@([A-Z]+)\b(.*)$")


def words(marker: str) -> str:
    """One marker line (`@@FSCK exit=0 t=13.73`) as words (`file system clean (e2fsck exit 0)`)."""
    m = _MARKER.search(marker)
    if m is None:
        return marker.replace("@@", "")
    name, rest = m.group(1), m.group(2).split()
    kv = dict(tok.split("=", 1) for tok in rest if "=" in tok)
    free = [tok.rstrip(":") for tok in rest if "=" not in tok]
    phrase = PHRASES.get(name)
    if phrase is not None:
        return phrase(free[0] if free else "", kv)
    kept = [tok for tok in rest if not tok.startswith("t=")]
    return " ".join([name.lower(), *kept])


def plain(text: str) -> str:
    """`text` with its marker (if any) in words: `recovery: @@MONITOR exit=0` -> `recovery: pre-boot ...`."""
    at = text.find("@@")
    if at < 0:
        return text
    return text[:at] + words(text[at:])


def is_marker(text: str) -> bool:
    return "@@" in text
