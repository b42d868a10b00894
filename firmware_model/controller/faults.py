"""Fault injection on the enclosure: drives (fail, pull, insert, media errors, latency,
predictive failure), power supplies, fans, temperature, and the RSO heartbeat links.

The faults a drive carries and the enclosure's environment are kept in NVRAM (`to_dict`/`load`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..enclosure import FAN_COUNT, PSU_COUNT, ComponentState, EnclosureError
from ..events import EventCode, Severity
from ..operations import (
    BAYS,
    COMPONENT_ACTIONS,
    DISK_FAULTS,
    LATENCY_MS,
    LINK_ACTIONS,
    MEDIA_ERROR_COUNT,
    MEDIA_ERROR_LBA,
    MIN_DRIVE_BYTES,
    PORTS,
    TEMPERATURE_C,
)
from .errors import ControllerError
from .spec import BLOCK_SIZE, GIB

if TYPE_CHECKING:
    from .core import Controller
    from .views import DiskView

TEMP_WARN_C = 50.0
TEMP_CRIT_C = 60.0


class Faults:
    def __init__(self, c: Controller) -> None:
        self.c = c

    # ------------------------------------------------------------------ NVRAM
    def to_dict(self) -> dict[str, Any]:
        """The enclosure's environment and each drive's injected faults (its NVRAM part)."""
        enc = self.c.enclosure
        faults: dict[str, Any] = {}
        for d in [*enc.present(), *enc.aside.values()]:
            if d.media_errors or d.latency_ms or d.predictive:
                faults[d.serial] = {
                    "media_errors": [[e.offset, e.length] for e in d.media_errors],
                    "latency_ms": d.latency_ms,
                    "predictive": d.predictive,
                }
        return {
            "enclosure": {
                "psus": [s.value for s in enc.psus],
                "fans": [s.value for s in enc.fans],
                "temperature_c": enc.temperature_c,
            },
            "faults": faults,
        }

    def load(self, nvram: dict[str, Any] | None) -> None:
        """Put back what `to_dict` kept (no NVRAM: the drives keep no faults, all parts ok)."""
        if not nvram:
            return
        enc = self.c.enclosure
        faults = nvram.get("faults", {})
        for d in [*enc.present(), *enc.aside.values()]:
            f = faults.get(d.serial)
            if f:
                d.latency_ms = float(f.get("latency_ms", 0.0))
                d.predictive = bool(f.get("predictive", False))
                for off, length in f.get("media_errors", []):
                    d.add_media_error(int(off), int(length))
        env = nvram.get("enclosure", {})
        enc.psus = [ComponentState(s) for s in env.get("psus", ["ok"] * PSU_COUNT)]
        enc.fans = [ComponentState(s) for s in env.get("fans", ["ok"] * FAN_COUNT)]
        enc.temperature_c = float(env.get("temperature_c", enc.temperature_c))

    # ------------------------------------------------------------------ drives

    def fault_disk(self, bay: int, action: str, **kw: Any) -> DiskView:
        """Inject a drive fault: fail, pull, insert, media-error, latency, predictive, clear.

        insert: `serial` (a pulled drive), `new=True` (a blank drive; `size_bytes` to choose its
        size), default: the drive last pulled from this bay, else a blank one. Inserting into a
        bay with a failed drive replaces it with a blank one. media-error: `lba`, `count` in
        512-byte blocks of the drive's data area (after its 1 MiB reserved area).
        """
        c = self.c
        if not isinstance(bay, int) or bay not in BAYS:
            raise ControllerError(f"bay {bay} outside {BAYS}")
        act = str(action).lower().replace("_", "-")
        allowed = DISK_FAULTS
        if act not in allowed:
            raise ControllerError(f"fault action {action!r}: one of {', '.join(allowed)}")
        extra = set(kw) - set(allowed[act])
        if extra:
            raise ControllerError(f"fault {act}: unexpected argument {sorted(extra)[0]}")
        d = c.enclosure.bays[bay]
        if act == "insert":
            self.insert(bay, kw.get("serial"), bool(kw.get("new", False)), kw.get("size_bytes"))
            return c.views.disks()[bay - 1]
        if d is None:
            raise ControllerError(f"bay {bay} is empty")
        if act == "fail":
            if d.failed:
                raise ControllerError(f"the drive in bay {bay} has already failed")
            d.failed = True
            c.log.emit(EventCode.DRIVE_FAILED, f"drive {d.serial} in bay {bay} failed", bay=bay,
                       array=c.views.role(d)[1])
            c.drive_events.drive_lost(d)
        elif act == "pull":
            array = c.views.role(d)[1]
            c.enclosure.pull(bay)
            c.log.emit(EventCode.DRIVE_PULLED, f"drive {d.serial} removed from bay {bay}", bay=bay, array=array)
            c.drive_events.drive_lost(d)
        elif act == "media-error":
            lba, count = kw.get("lba"), kw.get("count", 1)
            if (not isinstance(lba, int) or not isinstance(count, int) or lba not in MEDIA_ERROR_LBA
                    or count not in MEDIA_ERROR_COUNT):
                raise ControllerError(f"media-error: lba {MEDIA_ERROR_LBA} and count {MEDIA_ERROR_COUNT} "
                                      "(512-byte blocks)")
            try:
                d.add_media_error(lba * BLOCK_SIZE, count * BLOCK_SIZE)
            except EnclosureError as exc:
                raise ControllerError(str(exc)) from None
            c.log.emit(EventCode.DRIVE_MEDIA_ERROR,
                       f"drive {d.serial} in bay {bay}: media error injected at LBA {lba}+{count}", bay=bay)
            c.nvram.save()
        elif act == "latency":
            ms = kw.get("ms")
            if not isinstance(ms, int | float) or ms not in LATENCY_MS:
                raise ControllerError(f"latency: ms between {LATENCY_MS.lo} and {LATENCY_MS.hi}")
            d.latency_ms = float(ms)
            c.log.emit(EventCode.DRIVE_LATENCY, f"drive {d.serial} in bay {bay}: {ms} ms added latency", bay=bay)
            c.nvram.save()
        elif act == "predictive":
            d.predictive = True
            c.log.emit(EventCode.DRIVE_PREDICTIVE_FAILURE, f"drive {d.serial} in bay {bay} predicts failure",
                       bay=bay)
            c.nvram.save()
        elif act == "clear":
            d.clear_faults()
            c.log.emit(EventCode.DRIVE_FAULTS_CLEARED, f"drive {d.serial} in bay {bay}: faults cleared", bay=bay)
            c.nvram.save()
        return c.views.disks()[bay - 1]

    def insert(self, bay: int, serial: str | None, new: bool, size_bytes: int | None) -> None:
        c = self.c
        d = c.enclosure.bays[bay]
        if d is not None:
            if not d.failed:
                raise ControllerError(f"bay {bay} is occupied")
            if serial is not None:
                raise ControllerError(f"bay {bay} holds a failed drive; insert a new one there or pull it first")
            size_bytes = size_bytes or d.size_bytes
            c.enclosure.discard(bay)
            new = True
        if serial is None and not new:
            # the drive last pulled from this bay, unless it had failed (then: a new one)
            last = [x for x in c.enclosure.aside.values() if x.last_bay == bay and not x.failed]
            if last:
                serial = last[-1].serial
            else:
                new = True
        if new:
            size = size_bytes or self.typical_size()
            if not isinstance(size, int) or size < MIN_DRIVE_BYTES or size % BLOCK_SIZE:
                raise ControllerError(f"drive size {size}: at least 17 MiB, a multiple of 512")
            drive = c.enclosure.new_drive(bay, size, "", 0)
            c.drive_events.identify_blank(drive)
            c.log.emit(EventCode.DRIVE_INSERTED,
                       f"new drive {drive.serial} ({size} bytes) inserted in bay {bay}", bay=bay)
            c.drive_events.drive_arrived(drive, blank=True)
        else:
            assert serial is not None
            if serial not in c.enclosure.aside:
                raise ControllerError(f"no pulled drive with serial {serial}")
            try:
                drive = c.enclosure.insert(bay, serial)
            except EnclosureError as exc:
                raise ControllerError(str(exc)) from None
            c.log.emit(EventCode.DRIVE_INSERTED, f"drive {serial} inserted in bay {bay}", bay=bay)
            c.drive_events.drive_arrived(drive, blank=False)
        c.volumes.refresh()
        c.drive_events.activate_spares()

    def typical_size(self) -> int:
        c = self.c
        sizes = [d.size_bytes for d in c.enclosure.present()]
        return max(set(sizes), key=sizes.count) if sizes else 36 * GIB

    def component(self, kind: str, n: int, action: str) -> None:
        c = self.c
        states = c.enclosure.psus if kind == "psu" else c.enclosure.fans
        label = "power supply" if kind == "psu" else "fan"
        if not isinstance(n, int) or not 1 <= n <= len(states):
            raise ControllerError(f"{label} {n} outside 1..{len(states)}")
        act = str(action).lower()
        if act not in COMPONENT_ACTIONS:
            raise ControllerError(f"{label} action {action!r}: fail or restore")
        new = ComponentState.FAILED if act == "fail" else ComponentState.OK
        if states[n - 1] is new:
            return
        states[n - 1] = new
        code = {("psu", "fail"): EventCode.PSU_FAILED, ("psu", "restore"): EventCode.PSU_RESTORED,
                ("fan", "fail"): EventCode.FAN_FAILED, ("fan", "restore"): EventCode.FAN_RESTORED}[(kind, act)]
        c.log.emit(code, f"{label} {n} {'failed' if act == 'fail' else 'restored'}")
        c.nvram.save()

    def fault_psu(self, n: int, action: str) -> None:
        self.component("psu", n, action)

    def fault_fan(self, n: int, action: str) -> None:
        self.component("fan", n, action)

    def set_temperature(self, celsius: float) -> None:
        c = self.c
        if not isinstance(celsius, int | float) or celsius not in TEMPERATURE_C:
            raise ControllerError(f"temperature {celsius}: {TEMPERATURE_C} degrees C")

        def band(t: float) -> int:
            return 2 if t >= TEMP_CRIT_C else 1 if t >= TEMP_WARN_C else 0

        old = c.enclosure.temperature_c
        c.enclosure.temperature_c = float(celsius)
        if band(old) != band(celsius):
            sev = (Severity.CRITICAL, Severity.WARNING, Severity.INFO)[2 - band(celsius)]
            what = ("normal", "above the warning threshold", "critical")[band(celsius)]
            c.log.emit(EventCode.TEMPERATURE, f"enclosure temperature {celsius} C: {what}", severity=sev)
        c.nvram.save()


    def fault_link(self, port: int, action: str) -> dict[str, Any]:
        """Break ("down") or mend ("up") a port's heartbeat link."""
        c = self.c
        if port not in PORTS:
            raise ControllerError(f"port {port}: ports are 1 and 2")
        if action not in LINK_ACTIONS:
            raise ControllerError(f"link action {action!r}: down or up")
        c.rso.link(port, action == "up")
        return c.rso.status()
