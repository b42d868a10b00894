"""The shelf as a recording starts: the TOML that builds it again, the operations that bring a fresh
build to the same state, and the facts the replay checks before its first command.

The TOML is written from the running shelf, not from the file it was first built from: a recording
started on a shelf reconfigured since (ADD UNIT, SET CACHE...) must replay on what hosts saw. What a
TOML cannot say (an enabled RSO, failed or pulled drives, a powered-off shelf, a cache size other than
the MSA500's modules) goes into `setup`, registry operations the replay applies before record 1.
CHAP secrets are never written: the replay logs in without CHAP on a shelf built without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from firmware_model import operations as ops

from .format import toml_table


def _lds_by_array(units: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    arrays: dict[str, list[dict[str, Any]]] = {}
    for u in sorted(units, key=lambda u: (str(u["array"]), int(u["base_offset"]))):
        arrays.setdefault(str(u["array"]), []).append(u)
    return arrays


def config_toml(emulator: Any) -> str:
    """The TOML of the running shelf's build and the process's iSCSI settings (no CHAP, no addresses)."""
    ctl = emulator.shelf
    g = ctl.describe()
    disks = {int(d["bay"]): int(d.get("size_bytes") or 0) for d in ctl.disks()}
    shelf = {"serial": g["serial"], "drive_sizes": [disks.get(b, 0) or "empty" for b in range(1, ops.BAYS.hi + 1)],
             "rebuild_priority": g["rebuild_priority"]}
    arrays = _lds_by_array(ctl.units())
    lines = toml_table("shelf", shelf)
    if not arrays:
        lines.append("arrays = []")
    cache = ctl.cache_cfg
    lines += ["", *toml_table("shelf.cache", {
        "holdup_s": float(cache.holdup_s), "charge_s": float(cache.charge_s), "spinup_s": float(cache.spinup_s),
        "size_mb": cache.size_mb if cache.size_mb in ops.CACHE_MODULES_MB else None})]
    for conn in ctl.connections()["connections"]:
        lines += ["", *toml_table("shelf.connections", {"name": conn["name"], "iqn": conn["iqn"],
                                                        "port": conn["port"]}, array=True)]
    for name, lds in arrays.items():
        bays = [b for b in lds[0]["bays"] if b is not None]
        spares = [b for b in lds[0]["spares"] if b is not None]
        lines += ["", *toml_table("shelf.arrays", {"name": name, "bays": bays, "spares": spares}, array=True)]
    for lds in arrays.values():
        for u in lds:
            lines += ["", *toml_table("shelf.logical_drives", {
                "lun": u["lun"], "array": u["array"], "raid": u["raid"], "size": u["size_bytes"],
                "name": u["name"] or None, "stripe_kib": u["stripe_kib"]}, array=True)]
    s = emulator.settings
    lines += ["", *toml_table("iscsi", {
        "nop_interval": float(s.nop_interval), "nop_timeout": float(s.nop_timeout), "cmd_window": s.cmd_window,
        "login_timeout": float(s.login_timeout), "max_connections": s.max_connections,
        "max_connections_per_address": s.max_connections_per_address})]
    return "\n".join(lines) + "\n"


REPLAY_NOP_S = 86400.0  # the replay's array pings idle sessions once a day: see replay_config


def replay_config(toml: str) -> str:
    """The recorded TOML for the replay's own array: NOP-Ins a day apart. The replay's sessions sit
    idle while other nexuses' commands run and read nothing meanwhile; pings they cannot answer
    would end them (and a new session is a unit attention the recorded host never saw)."""
    return re.sub(r"(?m)^(nop_interval|nop_timeout) = .*$", lambda m: f"{m.group(1)} = {REPLAY_NOP_S}", toml)


def setup_ops(emulator: Any) -> list[dict[str, Any]]:
    """The registry operations that bring a fresh build of `config_toml` to the running shelf's state."""
    ctl = emulator.shelf
    out: list[dict[str, Any]] = []
    cache = ctl.cache_cfg
    out.append({"op": "set_cache", "args": {"enabled": cache.enabled, "ratio_read_percent": cache.ratio_read_percent,
                                            "size_mb": cache.size_mb, "force_write_back": cache.force_write_back}})
    for port in ctl.connections()["ports"]:
        if port["access"] != "all":
            out.append({"op": "set_port_access", "args": {"port": port["port"], "access": port["access"]}})
    rso = ctl.rso_status()
    if rso["enabled"]:
        out.append({"op": "rso_configure", "args": {"enabled": True, "timeout_s": rso["timeout_s"],
                                                    "act_alone": rso["act_alone"]}})
    if rso["failed_over"]:
        out.append({"op": "rso_failover", "args": {}})
    for d in ctl.disks():
        action = {"failed": "fail", "missing": "pull"}.get(str(d["state"]))
        if action:
            out.append({"op": "fault_disk", "args": {"bay": d["bay"], "action": action}})
    if not ctl.powered:
        out.append({"op": "power_off", "args": {}})
    return out


def start_state(emulator: Any) -> dict[str, Any]:
    """What the replay checks of its fresh shelf before record 1, and the nexuses already known."""
    ctl = emulator.shelf
    nexuses = []
    for nexus in ctl.target.known_nexuses():
        name, _, isid = nexus.initiator.rpartition(",i,")
        nexuses.append({"initiator": name, "isid": isid, "port": nexus.port})
    return {"units": facts(ctl.units()), "rso": rso_facts(ctl.rso_status()), "powered": bool(ctl.powered),
            "nexuses": sorted(nexuses, key=lambda n: (n["initiator"], n["isid"], n["port"]))}


def facts(units: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Of each unit, what a replay must find the same: LUN, RAID level, size, state."""
    return [{"lun": u["lun"], "raid": u["raid"], "size_bytes": u["size_bytes"], "state": u["state"]}
            for u in sorted(units, key=lambda u: int(u["lun"]))]


def rso_facts(rso: Mapping[str, Any]) -> dict[str, Any]:
    return {"enabled": rso["enabled"], "state": rso["state"], "fenced_port": rso["fenced_port"]}


def differences(recorded: Mapping[str, Any], units: Sequence[Mapping[str, Any]], rso: Mapping[str, Any],
                powered: bool) -> list[str]:
    """What differs between the recorded start state and a replay's shelf, one line each."""
    out: list[str] = []
    want = {u["lun"]: u for u in recorded.get("units", [])}
    got = {u["lun"]: u for u in facts(units)}
    for lun in sorted(set(want) | set(got)):
        w, g = want.get(lun), got.get(lun)
        if w != g:
            out.append(f"unit {lun}: recorded {_unit_text(w)}, replay has {_unit_text(g)}")
    w_rso = recorded.get("rso", {})
    g_rso = rso_facts(rso)
    if w_rso != g_rso:
        out.append(f"RSO: recorded {_pairs(w_rso)}, replay has {_pairs(g_rso)}")
    if recorded.get("powered", True) != powered:
        out.append(f"power: recorded {'on' if recorded.get('powered', True) else 'off'}, "
                   f"replay has {'on' if powered else 'off'}")
    return out


def _unit_text(u: dict[str, Any] | None) -> str:
    if u is None:
        return "no unit"
    return f"RAID {u['raid']} {u['size_bytes']} bytes {u['state']}"


def _pairs(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in d.items()) or "-"
