"""Plain-text renderings of the management views, in the manner of the MSA CLI.

One way to write each kind of value, so every view reads the same:
- sizes are binary, with the unit written: B, KiB, MiB, GiB, TiB (1 GiB = 2^30 bytes), as the
  command language counts them (SIZE=4GB is 4 GiB); the JSON views give exact bytes;
- lists of drives are in the command language's own form, `DISK3-DISK6,DISK9`;
- times are local, to the millisecond; a value nobody knows is `-` (never None or a Python repr);
- tables have aligned columns, one row per drive, unit, spare or event;
- RAID levels as the product writes them (RAID 1+0, RAID ADG), from RaidLevel's one vocabulary.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from firmware_model.raid.api import RaidLevel

_UNITS = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def size(n: Any) -> str:
    """Bytes as a binary size with its unit: 36 GiB, 4.5 GiB, 128 MiB, 512 B; `-` when unknown."""
    if isinstance(n, bool) or not isinstance(n, int | float):
        return "-"
    for unit, name in _UNITS:
        if abs(n) >= unit:
            return f"{_num(n / unit, 2)} {name}"
    return f"{int(n)} B"


def rate(n: Any) -> str:
    """Bytes per second, binary units."""
    return "-" if size(n) == "-" else f"{size(n)}/s"


def _num(x: float, places: int) -> str:
    """A number without trailing zeros: 36, 4.5, 1.33."""
    text = f"{x:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def value(v: Any) -> str:
    """Any JSON value as plain words: no None, no braces, no quotes."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return _num(v, 3)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {value(x)}" for k, x in v.items()) or "-"
    if isinstance(v, list | tuple):
        return ", ".join(value(x) for x in v) or "-"
    return str(v)


def raid(level: Any) -> str:
    """A RAID level as the product writes it: RAID 5, RAID 1+0, RAID ADG; an unknown one as it is."""
    try:
        return RaidLevel.parse(level).display
    except ValueError:
        return value(level)


def disk_list(bays: Iterable[Any] | None) -> str:
    """Bays in the command language's form: DISK3-DISK6,DISK9; a missing member is `(missing)`."""
    parts: list[str] = []
    run: list[int] = []

    def close() -> None:
        if run:
            parts.append(f"DISK{run[0]}" if len(run) == 1 else f"DISK{run[0]}-DISK{run[-1]}")
            run.clear()

    for b in bays or []:
        if isinstance(b, int) and not isinstance(b, bool):
            if run and b != run[-1] + 1:
                close()
            run.append(b)
        else:
            close()
            parts.append("(missing)")
    close()
    return ",".join(parts) or "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Iterable[int] = ()) -> list[str]:
    """Rows under a header, each column as wide as its widest cell (right-aligned: numbers)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    align = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in align else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(out).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def help_text(rows: Sequence[tuple[str, str]], width: int = 44) -> str:
    """Commands and their summaries in two columns; a usage wider than `width` has its summary on
    the next line, in the summary column."""
    col = min(max((len(u) for u, _ in rows), default=0), width)
    lines: list[str] = []
    for usage, summary in rows:
        if len(usage) <= col:
            lines.append(f"  {usage.ljust(col)}  {summary}".rstrip())
        else:
            lines += [f"  {usage}", f"  {'':{col}}  {summary}"]
    return "\n".join(lines)


def pairs(items: Sequence[tuple[str, str]], indent: str = "  ") -> list[str]:
    """`label: value` lines with the values in one column."""
    width = max((len(k) for k, _ in items), default=0) + 1
    return [f"{indent}{(k + ':').ljust(width)} {v}" for k, v in items]


def when(t: Any) -> str:
    """Seconds since the epoch as local time to the millisecond."""
    if isinstance(t, bool) or not isinstance(t, int | float):
        return "-"
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _percent(x: Any) -> str:
    return "-" if isinstance(x, bool) or not isinstance(x, int | float) else f"{_num(float(x), 1)}%"


def _duration(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "-"
    s = float(seconds)
    if s >= 3600:
        return f"{_num(s / 3600, 1)} h"
    if s >= 60:
        return f"{_num(s / 60, 1)} min"
    return f"{_num(s, 1)} s"


POWER_OFF_NOTE = "The shelf is powered off: every unit answers the hosts NOT READY until FAULT SHELF POWER-ON."


def powered_off(state: str) -> str:
    """What a part of a powered-off shelf shows: POWERED OFF, and a fault it had (POWERED OFF, FAILED)."""
    state = state.upper()
    return "POWERED OFF" + ("" if state in ("OK", "-", "") else f", {state}")


def battery_text(b: dict[str, Any]) -> str:
    state = str(b.get("state", "-"))
    if state == "missing":
        charge = "no battery installed"
    elif b.get("charge_percent") is None:
        charge = "charge unknown"
    else:
        charge = f"charge {_percent(b['charge_percent'])}"
    return f"{state.upper()}, {charge}, hold-up {_duration(b.get('holdup_seconds'))}"


def globals_text(g: dict[str, Any]) -> str:
    items: list[tuple[str, str]] = []

    def add(label: str, v: Any) -> None:
        if v is not None:
            items.append((label, v if isinstance(v, str) else value(v)))

    add("System Name", g.get("product"))
    add("Serial Number", g.get("serial"))
    add("Firmware Revision", g.get("firmware"))
    add("iSCSI Target Name", g.get("target_name"))
    off = g.get("powered") is False
    if "powered" in g:
        since = f" since {when(g['powered_off_at'])}" if g.get("powered_off_at") is not None else ""
        add("Shelf Power", "ON" if not off else f"OFF{since} (units NOT READY until FAULT SHELF POWER-ON)")
    add("Rebuild Priority", str(g["rebuild_priority"]).upper() if g.get("rebuild_priority") else None)
    add("Temperature", f"{value(g['temperature_c'])} C" if "temperature_c" in g else None)
    if "bays" in g:
        add("Drive Bays", f"{g['bays']}" + (f" ({g['drives']} drives)" if "drives" in g else ""))
    for kind, name in (("power_supplies", "Power Supply"), ("fans", "Fan")):
        for i, state in enumerate(g.get(kind) or [], 1):
            add(f"{name} {i}", powered_off(str(state)) if off else str(state).upper())
    cache = g.get("cache")
    if isinstance(cache, dict):
        add("Array Accelerator",
            f"{size(cache.get('size_bytes'))}, {str(cache.get('state', '-')).upper()}"
            f" ({value(cache.get('reason'))}), read {_percent(cache.get('ratio_read_percent'))}"
            f" / write {_percent(cache.get('ratio_write_percent'))}")
        add("Cache Activity",
            f"dirty {size(cache.get('dirty_bytes'))}, read hit rate "
            f"{_percent(100 * float(cache.get('read_hit_rate') or 0))}, destage "
            f"{rate(cache.get('destage_rate_bytes_per_s') or 0)}")
        if cache.get("destage_blocked"):
            add("Cache Destage", f"BLOCKED: {cache['destage_blocked']} (unwritten data stays in the cache)")
        lost = cache.get("data_lost_blocks")
        if lost:
            add("Cache Data Lost", ", ".join(f"LUN {lun}: {n} blocks" for lun, n in dict(lost).items()))
    elif "cache_bytes" in g:
        add("Array Accelerator", size(g["cache_bytes"]))
    battery = g.get("battery")
    if isinstance(battery, dict):
        add("Cache Battery", battery_text(battery))
    for port in g.get("portals") or []:
        add(f"Port {port.get('port')}",
            f"iSCSI portal {port.get('address')} ({port.get('sessions', 0)} sessions)")
    rso = g.get("rso")
    if isinstance(rso, dict):
        add("Recovery Server Option", value(rso.get("state")))
    for ld in g.get("logical_drives") or []:
        state = str(ld.get("state", "-"))
        add(f"Logical Drive {ld.get('lun')}",
            f"{size(ld.get('bytes'))} ({powered_off(state) if off else state.upper()})")
    if "uptime_s" in g:
        add("Up Time", _duration(g["uptime_s"]))
    return "\n".join(["Global Parameters:", *pairs(items)])


def _disk_notes(d: Mapping[str, Any]) -> str:
    notes = []
    if d.get("rebuild_percent") is not None and str(d.get("state")) == "rebuilding":
        notes.append(f"rebuild {_percent(d['rebuild_percent'])}")
    errors = d.get("media_errors") or []
    if errors:
        spans = ", ".join(f"LBA {e.get('lba')}+{e.get('count')}" if isinstance(e, dict) else value(e)
                          for e in errors)
        notes.append(f"media errors at {spans}")
    if d.get("latency_ms"):
        notes.append(f"latency {value(d['latency_ms'])} ms")
    return "; ".join(notes)


def disks_text(disks: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    off = any(d.get("powered") is False for d in disks)
    for d in disks:
        state = str(d.get("state", "-")).upper()
        if off and state != "EMPTY":
            state = powered_off(state)
        rows.append([
            f"DISK{d.get('bay')}", size(d.get("size_bytes")), state, value(d.get("role")),
            value(d.get("array")), value(d.get("serial")), _disk_notes(d),
        ])
    lines = table(["Disk", "Size", "State", "Role", "Array", "Serial", "Notes"], rows, right=[1])
    return "\n".join([POWER_OFF_NOTE, *lines] if off else lines)


def unit_state(u: Mapping[str, Any]) -> str:
    """A unit's state as SHOW UNITS writes it: REBUILDING 40%, POWERED OFF, POWERED OFF, FAILED."""
    state = str(u.get("state", "-")).upper()
    for key in ("rebuild_percent", "expand_percent"):
        if u.get(key) is not None:
            state += f" {_percent(u[key])}"
            break
    return powered_off(state) if u.get("powered") is False else state


def units_text(units: Sequence[Mapping[str, Any]]) -> str:
    if not units:
        return "No units configured."
    lost = any("lost_blocks" in u for u in units)
    headers = ["Unit", "Name", "Array", "RAID", "Stripe", "Size", "State", "Tolerates"]
    if lost:
        headers.append("Lost blocks")
    headers += ["Data disks", "Spares"]
    rows = []
    for u in units:
        stripe = u.get("stripe_kib")
        row = [
            value(u.get("lun")), value(u.get("name")), value(u.get("array")), raid(u.get("raid")),
            size(stripe * 1024) if isinstance(stripe, int) else "-", size(u.get("size_bytes")), unit_state(u),
            f"{value(u.get('fault_tolerance', 0))} failure(s)",
        ]
        if lost:
            row.append(value(u.get("lost_blocks", 0)))
        row += [disk_list(u.get("bays")), disk_list(u.get("spares")) if u.get("spares") else "none"]
        rows.append(row)
    right = [0, 5] + ([8] if lost else [])
    lines = table(headers, rows, right=right)
    if any(u.get("powered") is False for u in units):
        lines.insert(0, POWER_OFF_NOTE)
    return "\n".join(lines)


def unit_text(u: Mapping[str, Any]) -> str:
    """SHOW UNIT n: one unit's facts, one per line."""
    stripe = u.get("stripe_kib")
    items = [
        ("Name", value(u.get("name"))), ("Array", value(u.get("array"))), ("RAID Level", raid(u.get("raid"))),
        ("Stripe Size", size(stripe * 1024) if isinstance(stripe, int) else "-"),
        ("Size", f"{size(u.get('size_bytes'))} ({value(u.get('blocks'))} blocks of {size(u.get('block_size'))})"),
        ("State", unit_state(u)),
        ("Fault Tolerance", f"{value(u.get('fault_tolerance', 0))} drive failure(s)"),
        ("Lost Blocks", value(u.get("lost_blocks", 0))),
        ("Data Disks", disk_list(u.get("bays"))),
        ("Spares", disk_list(u.get("spares")) if u.get("spares") else "none"),
    ]
    for key, label in (("rebuild_percent", "Rebuild Progress"), ("expand_percent", "Expansion Progress")):
        if u.get(key) is not None:
            items.insert(6, (label, _percent(u[key])))
    head = [POWER_OFF_NOTE] if u.get("powered") is False else []
    return "\n".join([*head, f"Unit {value(u.get('lun'))}:", *pairs(items)])


def spares_text(spares: Sequence[Mapping[str, Any]]) -> str:
    if not spares:
        return "No spare drive is designated."
    rows = []
    off = any(s.get("powered") is False for s in spares)
    for s in spares:
        bay = s.get("bay")
        state = str(s.get("state", "standby")).upper()
        rows.append([
            f"DISK{bay}" if bay is not None else "(missing)", powered_off(state) if off else state,
            value(s.get("arrays")), ", ".join(str(x) for x in s.get("luns") or []) or "-",
            value(s.get("replacing_in")), value(s.get("serial")),
        ])
    lines = table(["Spare", "State", "Arrays", "Units", "Replacing in", "Serial"], rows)
    return "\n".join([POWER_OFF_NOTE, *lines] if off else lines)


_BYTES = re.compile(r"\b(\d+) bytes\b")


def _message(text: Any) -> str:
    """An event message with its byte counts in the one size unit (the JSON keeps the exact message)."""
    return _BYTES.sub(lambda m: size(int(m.group(1))), value(text))


def events_text(events: Sequence[Mapping[str, Any]]) -> str:
    if not events:
        return "No events."
    rows = [[value(e.get("id")), when(e.get("time")), str(e.get("severity", "")).upper(), value(e.get("code")),
             _message(e.get("message"))] for e in events]
    return "\n".join(table(["Id", "Time", "Severity", "Code", "Message"], rows, right=[0]))


RSO_LABELS = (
    ("state", "Status"), ("enabled", "Enabled"), ("timeout_s", "Heartbeat Timeout"),
    ("act_alone", "Controller Acts Alone"), ("active_port", "Active Port"), ("fenced_port", "Fenced Port"),
    ("failed_over", "Failed Over"), ("heartbeat_age_s", "Last Heartbeat"), ("ack_age_s", "Last Acknowledge"),
    ("detection_ms", "Detection"), ("links", "Heartbeat Links"), ("sessions", "Sessions"),
    ("failovers", "Failovers"),
)


def rso_text(st: dict[str, Any]) -> str:
    items = []
    for key, label in RSO_LABELS:
        if key not in st:
            continue
        v = st[key]
        if key == "timeout_s":
            text = _duration(v)
        elif key in ("heartbeat_age_s", "ack_age_s"):
            text = "-" if v is None else f"{value(v)} s ago"
        elif key == "detection_ms":
            text = "-" if v is None else f"{value(v)} ms"
        elif isinstance(v, dict):
            text = ", ".join(f"port {k}: {value(x)}" for k, x in v.items()) or "-"
        else:
            text = value(v)
        items.append((label, text))
    return "\n".join(["Recovery Server Option:", *pairs(items)])


_ACCESS = {"all": "ALL (any initiator)", "connections": "CONNECTIONS (only the initiators of its connections)"}


def connections_text(c: Mapping[str, Any]) -> str:
    """Each port's access mode, then the host connections (SHOW CONNECTIONS)."""
    lines = table(["Port", "Access"], [[str(p.get("port")), _ACCESS.get(str(p.get("access")), value(p.get("access")))]
                                       for p in c.get("ports") or []], right=[0])
    conns = c.get("connections") or []
    if not conns:
        return "\n".join([*lines, "", "No host connection is defined."])
    rows = [[value(h.get("name")), value(h.get("iqn")), "ANY" if h.get("port") is None else str(h.get("port")),
             ", ".join(str(u) for u in h.get("units") or []) or "-"] for h in conns]
    return "\n".join([*lines, "", *table(["Connection", "Initiator IQN", "Port", "ACL units"], rows)])


def acl_text(entries: Sequence[Mapping[str, Any]]) -> str:
    """The units presented to some connections only (SHOW ACL)."""
    if not entries:
        return "No unit has an ACL: every host sees every unit."
    rows = [[str(e.get("unit")), ", ".join(map(str, e.get("connections") or [])) or "-"] for e in entries]
    return "\n".join([*table(["Unit", "Presented to"], rows, right=[0]),
                      "(units not listed are seen by every host)"])
