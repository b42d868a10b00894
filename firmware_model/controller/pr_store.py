"""Persistent reservations that survive power loss: APTPL (SPC-4 5.13.5 / 5.14.5).

A logical drive whose last REGISTER (REGISTER AND IGNORE EXISTING KEY, REGISTER AND MOVE)
carried APTPL=1 keeps its registrations and reservation in `persistent-reservations.json`,
written atomically and fsynced from the reservations object's change callback, i.e. before
the PERSISTENT RESERVE OUT command that changed them is acknowledged. A restart, a kill -9
and a shelf power cycle all restore from that file; units without APTPL come back with
nothing registered. A file that is not what this module writes refuses the start with one
line (a fencing decision must never be silently forgotten); delete the file to start afresh.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..scsi.pr_state import PrType
from ..scsi.reservations import Reservations
from .errors import ShelfError

if TYPE_CHECKING:
    from ..scsi.units import LogicalUnit
    from .core import Controller

log = logging.getLogger(__name__)

PR_FILE = "persistent-reservations.json"
PR_FORMAT = 1
_MASK64 = (1 << 64) - 1


class PrStore:
    def __init__(self, c: Controller) -> None:
        self.c = c
        self.path = c.state_dir / PR_FILE
        self.saved: dict[int, dict[str, Any]] = {}  # LUN -> {"serial", "state": Reservations.to_dict()}

    # ------------------------------------------------------------ load
    def load(self) -> None:
        """Read and check the file; ShelfError with one line when it is not ours."""
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self.saved = _checked(data)
        except (OSError, ValueError) as exc:
            raise ShelfError(f"persistent reservations {self.path}: {exc} (remove the file to forget them)") from None

    # ------------------------------------------------------------ units
    def attach(self, unit: LogicalUnit) -> None:
        """A logical drive comes up (start, power on, a new unit): its APTPL state, and a watch on it."""
        res = unit.reservations
        if not isinstance(res, Reservations):
            return
        lun = unit.lun
        entry = self.saved.get(lun)
        if entry is not None and entry["serial"] != unit.serial:
            log.warning("persistent reservations saved for LUN %d of %s ignored: the unit is %s",
                        lun, entry["serial"], unit.serial)
            entry = None
        # As after power loss (SPC-4): APTPL state comes back with PRgeneration 0, the rest is gone.
        state = Reservations.from_dict(entry["state"] if entry else {}, res.port_names, power_cycle=True)
        res.generation, res.aptpl = state.generation, state.aptpl
        res.registrations, res.reservation = state.registrations, state.reservation
        res.spc2_holder = None
        res.on_change = lambda: self.changed(unit)

    def power_on(self) -> None:
        """The shelf is powered again: every logical drive's reservations as the file has them."""
        for ld in self.c.lds.values():
            if ld.unit is not None:
                self.attach(ld.unit)

    def changed(self, unit: LogicalUnit) -> None:
        """A PR OUT changed a unit's state: keep it if APTPL is on, drop it if it went off."""
        res = unit.reservations
        assert isinstance(res, Reservations)
        saved = dict(self.saved)
        if res.aptpl:
            saved[unit.lun] = {"serial": unit.serial, "state": res.to_dict()}
        elif saved.pop(unit.lun, None) is None:
            return
        self._write(saved)  # OSError: nothing changes here, and the PR OUT undoes its change
        self.saved = saved

    def forget(self, lun: int) -> None:
        """A deleted logical drive takes its reservations with it."""
        if self.saved.pop(lun, None) is not None:
            self._write(self.saved)

    def _write(self, saved: dict[int, dict[str, Any]]) -> None:
        data = {"format": PR_FORMAT, "units": {str(lun): e for lun, e in sorted(saved.items())}}
        _durable_write(self.path, json.dumps(data, indent=1) + "\n")


def _durable_write(path: Path, text: str) -> None:
    """Write, fsync, rename over, fsync the directory: the old or the new file after any crash."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked(data: Any) -> dict[int, dict[str, Any]]:
    """The file's units, every field checked; ValueError naming the first bad one."""
    if not isinstance(data, dict) or data.get("format") != PR_FORMAT:
        raise ValueError(f"not format {PR_FORMAT}")
    units = data.get("units")
    if not isinstance(units, dict):
        raise ValueError("units is not an object")
    out: dict[int, dict[str, Any]] = {}
    for key, entry in units.items():
        where = f"units.{key}"
        if not key.isdigit() or not 1 <= int(key) <= 16383:
            raise ValueError(f"{where}: not a LUN")
        if not isinstance(entry, dict) or not isinstance(entry.get("serial"), str):
            raise ValueError(f"{where}.serial missing")
        st = entry.get("state")
        if not isinstance(st, dict) or not isinstance(st.get("aptpl"), bool):
            raise ValueError(f"{where}.state.aptpl missing")
        regs = st.get("registrations")
        if not isinstance(regs, list):
            raise ValueError(f"{where}.state.registrations is not a list")
        for i, r in enumerate(regs):
            _check_registration(f"{where}.state.registrations[{i}]", r)
        res = st.get("reservation")
        if res is not None:
            if not isinstance(res, dict) or res.get("type") not in {int(t) for t in PrType}:
                raise ValueError(f"{where}.state.reservation.type is not a reservation type")
            if res.get("holder") is not None:
                _check_nexus(f"{where}.state.reservation.holder", res["holder"])
        out[int(key)] = entry
    return out


def _check_registration(where: str, r: Any) -> None:
    _check_nexus(where, r)
    key = r.get("key")
    try:
        value = int(key, 0) if isinstance(key, str) else None
    except ValueError:
        value = None
    if value is None or not 0 < value <= _MASK64:
        raise ValueError(f"{where}.key is not a reservation key")
    if not isinstance(r.get("all_tg_pt", False), bool):
        raise ValueError(f"{where}.all_tg_pt is not true or false")


def _check_nexus(where: str, n: Any) -> None:
    if not isinstance(n, dict) or not isinstance(n.get("initiator"), str) or not n["initiator"]:
        raise ValueError(f"{where}.initiator missing")
    port = n.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 0xFFFF:
        raise ValueError(f"{where}.port is not a port")
