"""What a controller NVRAM document must hold before the controller believes any of it.

`controller-nvram.json` is plain JSON an operator (or a bad disk) can change. Valid JSON with
a wrong shape (`next_drive: null`, an array without members, a string where a number goes)
would otherwise surface as a KeyError or TypeError deep in start-up; here it is refused up
front with the path of the bad key (`config.arrays[0].members`), which the controller turns
into its one-line configuration error. Keys this module does not know are left alone (their
readers decide), so a newer writer's additions do not trip an older check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from .enclosure import BAY_COUNT, FAN_COUNT, PSU_COUNT, ComponentState
from .operations import ALUA_TRANSITION_MS, CONNECTION_NAME_MAX, IQN_MAX, LUNS, MAX_CONNECTIONS, PORT_ACCESS, PORTS
from .raid.api import RaidLevel

MAX_LUN = 16383


class NvramError(ValueError):
    """A key of the NVRAM document holds what no reader can use; the message names it."""


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f"the string {v[:40]!r}"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, list):
        return "an empty list" if not v else "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _bad(path: str, v: Any, want: str) -> NvramError:
    return NvramError(f"{path} is {_kind(v)}, expected {want}")


def _int(path: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f" {lo}..{hi}" if lo is not None and hi is not None else f" >= {lo}" if lo is not None else ""
        raise _bad(path, v, f"an integer{rng}")
    return v


def _num(path: str, v: Any, lo: float | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or (lo is not None and v < lo):
        raise _bad(path, v, "a number" + (f" >= {lo:g}" if lo is not None else ""))


def _bool(path: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise _bad(path, v, "true or false")


def _str(path: str, v: Any, choices: Collection[str] | None = None, nonempty: bool = False) -> str:
    if not isinstance(v, str) or (nonempty and not v) or (choices is not None and v not in choices):
        want = "one of " + ", ".join(repr(c) for c in choices) if choices is not None else "a string"
        raise _bad(path, v, want + (" (not empty)" if nonempty and choices is None else ""))
    return v


def _dict(path: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(path, v, "an object")
    return v


def _list(path: str, v: Any, nonempty: str = "") -> list[Any]:
    if not isinstance(v, list) or (nonempty and not v):
        raise _bad(path, v, nonempty or "a list")
    return v


def _opt(d: dict[str, Any], path: str, key: str, check: Callable[[str, Any], Any]) -> None:
    if key in d:
        check(f"{path}{key}", d[key])


def _need(d: dict[str, Any], path: str, key: str, check: Callable[[str, Any], Any]) -> Any:
    if key not in d:
        raise NvramError(f"{path}{key} is missing")
    return check(f"{path}{key}", d[key])


def _strs(path: str, v: Any, nonempty: str = "") -> list[str]:
    items = _list(path, v, nonempty)
    for i, s in enumerate(items):
        _str(f"{path}[{i}]", s, nonempty=True)
    return items


def _extent(path: str, v: Any) -> None:
    pair = _list(path, v)
    if len(pair) != 2:
        raise _bad(path, v, "a [start, length] pair")
    _int(f"{path}[0]", pair[0], 0)
    _int(f"{path}[1]", pair[1], 1)


def _array_name(path: str, v: Any, names: Collection[str]) -> str:
    if not names:
        raise _bad(path, v, "the name of an array (the configuration has none)")
    return _str(path, v, sorted(names))


def check_nvram(data: dict[str, Any], priorities: Collection[str] = ("high", "medium", "low")) -> None:
    """Raise NvramError naming the first key of `data` (format 2) that cannot be used."""
    _opt(data, "", "serial", _str)
    _opt(data, "", "product", _str)
    _opt(data, "", "firmware", _str)
    _opt(data, "", "next_drive", lambda p, v: _int(p, v, 1))
    if "enclosure" in data:
        env = _dict("enclosure", data["enclosure"])
        states = [s.value for s in ComponentState]
        for key, count in (("psus", PSU_COUNT), ("fans", FAN_COUNT)):
            if key in env:
                items = _list(f"enclosure.{key}", env[key])
                if len(items) != count:
                    raise _bad(f"enclosure.{key}", env[key], f"a list of {count} states")
                for i, s in enumerate(items):
                    _str(f"enclosure.{key}[{i}]", s, states)
        _opt(env, "enclosure.", "temperature_c", _num)
    if "faults" in data:
        for serial, f in _dict("faults", data["faults"]).items():
            p = f"faults.{serial}"
            f = _dict(p, f)
            if "media_errors" in f:
                for i, e in enumerate(_list(f"{p}.media_errors", f["media_errors"])):
                    _extent(f"{p}.media_errors[{i}]", e)
            _opt(f, f"{p}.", "latency_ms", lambda q, v: _num(q, v, 0))
            _opt(f, f"{p}.", "predictive", _bool)
    if "config" in data:
        check_config(_dict("config", data["config"]), "config.", priorities)
    if "cache" in data:
        c = _dict("cache", data["cache"])
        for key in ("size_mb", "ratio_read_percent"):
            _opt(c, "cache.", key, _int)
        for key in ("enabled", "force_write_back"):
            _opt(c, "cache.", key, _bool)
        for key in ("holdup_s", "charge_s", "spinup_s"):
            _opt(c, "cache.", key, lambda q, v: _num(q, v, 0))
    if data.get("battery") is not None:
        b = _dict("battery", data["battery"])
        _opt(b, "battery.", "charge", lambda q, v: _num(q, v, 0))
        for key in ("failed", "missing", "low"):
            _opt(b, "battery.", key, _bool)
    if data.get("rso") is not None:
        r = _dict("rso", data["rso"])
        for key in ("configured", "enabled", "act_alone"):
            _opt(r, "rso.", key, _bool)
        _opt(r, "rso.", "timeout_s", lambda q, v: _num(q, v, 0))
        _opt(r, "rso.", "failovers", lambda q, v: _int(q, v, 0))
        if r.get("failed_over") is not None:
            _str("rso.failed_over", r["failed_over"], ("auto", "user"))
    if data.get("access") is not None:
        check_access(_dict("access", data["access"]))
    if data.get("alua") is not None:
        a = _dict("alua", data["alua"])
        _opt(a, "alua.", "transition_ms", lambda q, v: _num(q, v, 0))
        if a.get("transition_ms", 0) not in ALUA_TRANSITION_MS:
            raise _bad("alua.transition_ms", a["transition_ms"], f"{ALUA_TRANSITION_MS} ms")


def check_access(acc: dict[str, Any]) -> None:
    """Host connections, port access and the units' ACLs (controller.access.Access.to_dict)."""
    names: set[str] = set()
    conns = _list("access.connections", acc.get("connections", []))
    if len(conns) > MAX_CONNECTIONS:
        raise NvramError(f"access.connections has {len(conns)} connections, at most {MAX_CONNECTIONS}")
    for i, h in enumerate(conns):
        p = f"access.connections[{i}]."
        h = _dict(p[:-1], h)
        name = _need(h, p, "name", lambda q, v: _str(q, v, nonempty=True))
        if len(name) > CONNECTION_NAME_MAX:
            raise NvramError(f"{p}name is longer than {CONNECTION_NAME_MAX} characters")
        if name.lower() in names:
            raise NvramError(f"{p}name: connection {name!r} appears twice")
        names.add(name.lower())
        iqn = _need(h, p, "iqn", lambda q, v: _str(q, v, nonempty=True))
        if len(iqn) > IQN_MAX:
            raise NvramError(f"{p}iqn is longer than {IQN_MAX} characters")
        if h.get("port") is not None:
            _int(f"{p}port", h["port"], PORTS.lo, PORTS.hi)
    if "port_access" in acc:
        for port, mode in _dict("access.port_access", acc["port_access"]).items():
            if not port.isdigit() or int(port) not in PORTS:
                raise NvramError(f"access.port_access.{port}: not a port ({PORTS})")
            _str(f"access.port_access.{port}", mode, PORT_ACCESS)
    if "acl" in acc:
        for lun, entries in _dict("access.acl", acc["acl"]).items():
            if not lun.isdigit() or int(lun) not in LUNS:
                raise NvramError(f"access.acl.{lun}: not a unit ({LUNS})")
            for j, name in enumerate(_strs(f"access.acl.{lun}", entries)):
                if name.lower() not in names:
                    raise NvramError(f"access.acl.{lun}[{j}] names connection {name!r}, which does not exist")


def check_config(cfg: dict[str, Any], path: str = "config.",
                 priorities: Collection[str] = ("high", "medium", "low")) -> None:
    """The array configuration (ShelfConfig.to_dict): shapes, and names that refer to each other."""
    _need(cfg, path, "serial", lambda p, v: _str(p, v, nonempty=True))
    _opt(cfg, path, "product", _str)
    _opt(cfg, path, "firmware", _str)
    _opt(cfg, path, "generation", lambda p, v: _int(p, v, 0))
    _opt(cfg, path, "rebuild_priority", lambda p, v: _str(p, v, priorities))
    levels = [lv.value for lv in RaidLevel]
    names: set[str] = set()
    for i, a in enumerate(_list(f"{path}arrays", cfg.get("arrays", []))):
        p = f"{path}arrays[{i}]."
        a = _dict(p[:-1], a)
        name = _need(a, p, "name", lambda q, v: _str(q, v, nonempty=True))
        if name in names:
            raise NvramError(f"{p}name: array {name!r} appears twice")
        names.add(name)
        members = _need(a, p, "members", lambda q, v: _strs(q, v, "a list of at least one drive serial"))
        bays = _need(a, p, "home_bays", _list)
        if len(bays) != len(members):
            raise NvramError(f"{p}home_bays has {len(bays)} bays for {len(members)} members")
        for j, b in enumerate(bays):
            _int(f"{p}home_bays[{j}]", b, 1, BAY_COUNT)
        _need(a, p, "member_bytes", lambda q, v: _int(q, v, 1))
        _opt(a, p, "spares", _strs)
        _opt(a, p, "copyback", _str)
        _opt(a, p, "copyback_slot", lambda q, v: _int(q, v, -1))
        if a.get("expand") is not None:
            e = _dict(f"{p}expand", a["expand"])
            if "old_count" not in e:
                raise NvramError(f"{p}expand.old_count is missing")
            _int(f"{p}expand.old_count", e["old_count"], 1, len(members))
            for k, x in enumerate(_need(e, f"{p}expand.", "lds", _list)):
                q = f"{p}expand.lds[{k}]."
                x = _dict(q[:-1], x)
                _need(x, q, "lun", lambda r, v: _int(r, v, 1, MAX_LUN))
                for key in ("old_raid", "new_raid"):
                    _need(x, q, key, lambda r, v: _str(r, v, levels))
                for key in ("old_base", "new_base", "watermark"):
                    _opt(x, q, key, lambda r, v: _int(r, v, 0))
                _opt(x, q, "done", _bool)
    luns: set[int] = set()
    for i, ld in enumerate(_list(f"{path}lds", cfg.get("lds", []))):
        p = f"{path}lds[{i}]."
        ld = _dict(p[:-1], ld)
        lun = _need(ld, p, "lun", lambda q, v: _int(q, v, 1, MAX_LUN))
        if lun in luns:
            raise NvramError(f"{p}lun: LUN {lun} appears twice")
        luns.add(lun)
        _need(ld, p, "name", _str)
        _need(ld, p, "array", lambda q, v: _array_name(q, v, names))
        _need(ld, p, "raid", lambda q, v: _str(q, v, levels))
        _need(ld, p, "stripe_kib", lambda q, v: _int(q, v, 1))
        _need(ld, p, "base_offset", lambda q, v: _int(q, v, 0))
        _need(ld, p, "num_blocks", lambda q, v: _int(q, v, 1))
        _opt(ld, p, "failed", _bool)
        _opt(ld, p, "gone", _bool)
        if "lost" in ld:
            for j, e in enumerate(_list(f"{p}lost", ld["lost"])):
                _extent(f"{p}lost[{j}]", e)
    _opt(cfg, path, "failed", _strs)
    if "rebuilding" in cfg:
        for serial, mark in _dict(f"{path}rebuilding", cfg["rebuilding"]).items():
            _int(f"{path}rebuilding.{serial}", mark, 0)


def check_v1(data: dict[str, Any]) -> None:
    """The foundation's NVRAM (format 1): a serial, drive sizes per bay, LUNs on bays."""
    _need(data, "", "serial", lambda p, v: _str(p, v, nonempty=True))
    sizes = _need(data, "", "drive_bytes", _list)
    for i, n in enumerate(sizes):
        _int(f"drive_bytes[{i}]", n, 0)
    for i, lun in enumerate(_list("luns", data.get("luns", []))):
        p = f"luns[{i}]."
        lun = _dict(p[:-1], lun)
        _need(lun, p, "lun", lambda q, v: _int(q, v, 1, MAX_LUN))
        _need(lun, p, "bay", lambda q, v: _int(q, v, 1, len(sizes)))
        _need(lun, p, "size_bytes", lambda q, v: _int(q, v, 1))
        _opt(lun, p, "name", _str)
        extra = sorted(set(lun) - {"lun", "bay", "size_bytes", "name"})
        if extra:
            raise NvramError(f"{p}{extra[0]} is not a key of a LUN")
    _opt(data, "", "product", _str)
    _opt(data, "", "firmware", _str)
