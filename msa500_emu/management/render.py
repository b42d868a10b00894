"""Plain-text renderings of the management views, in the manner of the MSA CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

RAID_NAMES = {
    "0": "NO FAULT TOLERANCE (Raid 0)",
    "1": "MIRRORING (Raid 1)",
    "10": "MIRRORING (Raid 1+0)",
    "1+0": "MIRRORING (Raid 1+0)",
    "5": "DISTRIBUTED PARITY FAULT TOLERANCE (Raid 5)",
    "ADG": "ADVANCED DATA GUARDING (Raid ADG)",
}


def _gb(n: Any) -> str:
    try:
        return f"{int(n) / 1e9:.1f}GB"
    except (TypeError, ValueError):
        return "-"


def _mb(n: Any) -> str:
    try:
        return f"{int(n) // 1_000_000:,}MB"
    except (TypeError, ValueError):
        return "-"


def _disk_list(bays: Any) -> str:
    if not bays:
        return "none"
    return ", ".join(f"DISK{b}" if b is not None else "(missing member)" for b in bays)


def globals_text(g: dict[str, Any]) -> str:
    lines = ["Global Parameters:"]
    pairs = [
        ("System Name", g.get("product")),
        ("Serial Number", g.get("serial")),
        ("Firmware Revision", g.get("firmware")),
        ("iSCSI Target Name", g.get("target_name")),
        ("Array Accelerator (cache)", _mb(g["cache_bytes"]) if "cache_bytes" in g and "cache" not in g else None),
        ("Rebuild Priority", str(g.get("rebuild_priority", "")).upper() or None),
        ("Temperature", f"{g['temperature_c']} C" if "temperature_c" in g else None),
        ("Drive Bays", g.get("bays")),
    ]
    for label, value in pairs:
        if value is not None:
            lines.append(f"  {label}: {value}")
    cache = g.get("cache")
    if isinstance(cache, dict):
        state = str(cache.get("state", "-")).upper()
        lines.append(
            f"  Array Accelerator: {cache.get('size_mb', '-')}MB {state} ({cache.get('reason', '')}), "
            f"read {cache.get('ratio_read_percent', '-')}% / write {cache.get('ratio_write_percent', '-')}%"
        )
        lines.append(
            f"  Cache: dirty {_mb(cache.get('dirty_bytes'))}, read hit rate "
            f"{100 * float(cache.get('read_hit_rate') or 0):.0f}%, destage "
            f"{float(cache.get('destage_rate_bytes_per_s') or 0) / 1e6:.1f} MB/s"
        )
    battery = g.get("battery")
    if isinstance(battery, dict):
        hours = float(battery.get("holdup_seconds") or 0) / 3600
        lines.append(f"  Cache Battery: {str(battery.get('state', '-')).upper()}, charge "
                     f"{float(battery.get('charge_percent') or 0):.0f}%, hold-up {hours:.0f} h")
    for kind in ("power_supplies", "fans"):
        for i, state in enumerate(g.get(kind, []) or [], 1):
            name = "Power Supply" if kind == "power_supplies" else "Fan"
            lines.append(f"  {name} {i}: {str(state).upper()}")
    for port in g.get("portals", []):
        lines.append(f"  Port {port['port']}: iSCSI portal {port['address']} ({port['sessions']} sessions)")
    for ld in g.get("logical_drives", []):
        lines.append(f"  Logical Drive {ld['lun']}: {ld['bytes'] / (1 << 30):.2f} GiB")
    lines.append(f"  Up Time: {g.get('uptime_s', 0):.0f} s")
    return "\n".join(lines)


def disks_text(disks: list[dict[str, Any]]) -> str:
    lines = ["Disk List: (bay) Size State Role Array"]
    for d in disks:
        bay = d.get("bay")
        state = str(d.get("state", "-")).upper()
        if state in ("EMPTY", "MISSING") and not d.get("size_bytes"):
            lines.append(f"DISK{bay:<3} (bay {bay:02d})  {'-':>8}  {state}")
            continue
        role = d.get("role") or "-"
        array = d.get("array") or "-"
        extra = []
        if d.get("rebuild_percent") is not None and state == "REBUILDING":
            extra.append(f"rebuild {d['rebuild_percent']}%")
        if d.get("media_errors"):
            extra.append(f"media errors {d['media_errors']}")
        if d.get("latency_ms"):
            extra.append(f"latency {d['latency_ms']} ms")
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(
            f"DISK{bay:<3} (bay {bay:02d})  {_gb(d.get('size_bytes')):>8}  {state:<18} {role:<10} "
            f"array {array}{tail}"
        )
    return "\n".join(lines)


def units_text(units: list[dict[str, Any]]) -> str:
    if not units:
        return "No units configured."
    out = []
    for u in units:
        lun = u.get("lun")
        state = str(u.get("state", "-")).upper()
        status = f"VOLUME {state}"
        for key, what in (("rebuild_percent", "rebuild"), ("expand_percent", "expansion")):
            if u.get(key) is not None:
                status += f" ({what} {u[key]}% complete)"
        raid = str(u.get("raid", ""))
        out += [
            f"Unit {lun}:",
            f"   Unit {lun} is LUN {lun}; name: {u.get('name', '')}",
            f"   Volume Status : {status}",
            f"   Array : {u.get('array', '-')}",
            f"   {len(u.get('bays', []) or [])} Data Disk(s) used by unit {lun}: {_disk_list(u.get('bays'))}",
            f"   Spare Disk(s) used by unit {lun}: "
            + (_disk_list(u.get("spares")) if u.get("spares") else "No spare drive is designated."),
            f"   Logical Volume Raid Level: {RAID_NAMES.get(raid, raid)}",
            f"   stripe_size={u.get('stripe_kib', '-')}kB",
            f"   Logical Volume Capacity : {_mb(u.get('size_bytes'))}",
            f"   Fault Tolerance : survives {u.get('fault_tolerance', 0)} more drive failure(s)",
        ]
    return "\n".join(out)


def spares_text(spares: list[dict[str, Any]]) -> str:
    if not spares:
        return "No spare drive is designated."
    lines = []
    for s in spares:
        units = ", ".join(f"unit {u}" for u in s.get("luns", []) or []) or "-"
        arrays = ",".join(s.get("arrays", []) or []) or "-"
        where = f" replacing a member of array {s['replacing_in']}" if s.get("replacing_in") else ""
        lines.append(f"DISK{s.get('bay')}: {str(s.get('state', 'spare')).upper()}{where}, "
                     f"serves array {arrays} ({units})")
    return "\n".join(lines)


def events_text(events: list[dict[str, Any]]) -> str:
    if not events:
        return "No events."
    lines = []
    for e in events:
        t = e.get("time")
        when = dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if isinstance(t, (int, float)) else "-"
        lines.append(f"{e.get('id', '-'):>6} {when} {str(e.get('severity', '')).upper():<8} "
                     f"{e.get('code', ''):<20} {e.get('message', '')}")
    return "\n".join(lines)


def rso_text(st: dict[str, Any]) -> str:
    lines = ["Recovery Server Option:"]
    for key, label in (("state", "Status"), ("enabled", "Enabled"), ("timeout_s", "Heartbeat Timeout (s)"),
                       ("act_alone", "Controller Acts Alone"), ("active_port", "Active Port"),
                       ("fenced_port", "Fenced Port"),
                       ("heartbeat_age_s", "Last Heartbeat (s ago)"), ("ack_age_s", "Last Acknowledge (s ago)"),
                       ("failovers", "Failovers")):
        if key in st:
            value = st[key]
            if isinstance(value, dict):
                value = ", ".join(f"port {k}: {v}" for k, v in value.items())
            lines.append(f"  {label}: {value}")
    return "\n".join(lines)
