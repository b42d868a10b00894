"""The array accelerator: the battery-backed cache shared by all logical drives, its battery,
and shelf power.

- write-back while the cache is enabled, its write share is above 0 % and the battery is ok
  (or "no-battery write cache" is forced on); otherwise everything is destaged and the cache
  writes through. The caching page's WCE follows the controller: it reads 0 and is not
  changeable while the cache writes through; the host's own WCE choice (MODE SELECT) is kept
  and applies again with write-back (effective write-back = host WCE and controller
  write-back). Each logical drive whose WCE changed queues MODE PARAMETERS CHANGED (2A/01)
  for every I_T nexus.
- power off: logical drives answer NOT READY 04/00 (the process drops the connections too);
  power on: the cache replays what the battery kept, every nexus gets POWER ON (29/00) first
  (SAM priority), then media access answers NOT READY 04/01 BECOMING READY for the spin-up time.
- unwritten cache data lost (a cut longer than the hold-up, no battery with write-back forced,
  a logical drive that failed before its data was destaged): event CACHE_DATA_LOST naming LUNs
  and block counts, and each affected logical drive reports, once to every I_T nexus, a deferred
  error (response code 71h/73h, SPC-4 4.5.5: an error of an earlier, acknowledged command):
  MEDIUM ERROR 0C/00 WRITE ERROR with the first lost LBA in INFORMATION. Linux logs it and
  retries the command that received it. The product's agents showed this as "Bad Data".
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..battery import Battery, BatteryState
from ..cache import CACHE_FILE, LINE_BYTES, RATIOS, CacheError, CacheSettings, WriteCache
from ..events import EventCode
from ..operations import CACHE_SIZE_MB, MIB
from ..scsi.errors import ScsiError
from .errors import (
    MODE_PARAMETERS_CHANGED,
    ControllerError,
    ShelfError,
    becoming_ready_sense,
    cache_data_lost_sense,
    powered_off_sense,
    unit_offline_sense,
)
from .records import UnitState
from .spec import BLOCK_SIZE

if TYPE_CHECKING:
    from .core import Controller


class Accelerator:
    def __init__(self, c: Controller) -> None:
        self.c = c
        self.powered = True
        self.battery_state = BatteryState.OK
        self.off_at = 0.0
        self.holdup_at_off = 0.0
        self.spinup_until: float | None = None
        self.cache_why = ""
        self.data_lost: dict[int, int] = {}  # LUN -> blocks of acknowledged writes lost since power on

    def to_dict(self) -> dict[str, Any]:
        """The accelerator's NVRAM part: its settings and the battery."""
        c = self.c
        return {"cache": c.cache_cfg.to_dict(), "battery": c.battery.to_dict(c.clock.now())}

    def next_deadline(self) -> float | None:
        """The next destage step, battery change or end of the spin-up, whichever comes first."""
        c = self.c
        due = [d for d in (c.cache.next_deadline(), c.battery.next_change(c.clock.now()), self.spinup_until)
               if d is not None]
        return min(due) if due else None

    def open(self, nvram: dict[str, Any] | None) -> None:
        """Settings (NVRAM first, else the spec), the battery, and the mapped cache file."""
        c = self.c
        raw = (nvram or {}).get("cache")
        base = c.spec.cache
        c.cache_cfg = CacheSettings.from_dict(raw, base) if isinstance(raw, dict) else \
            CacheSettings.from_dict(base.to_dict())
        self.check_cache_cfg(c.cache_cfg)
        now = c.clock.now()
        b = (nvram or {}).get("battery") or {}
        c.battery = Battery(now, holdup_s=c.cache_cfg.holdup_s, charge_s=c.cache_cfg.charge_s,
                            charge=float(b.get("charge", 100.0)), failed=bool(b.get("failed", False)),
                            missing=bool(b.get("missing", False)), low=bool(b.get("low", False)))
        self.battery_state = c.battery.state(now)
        path = c.state_dir / CACHE_FILE
        try:
            c.cache = WriteCache(path, c.cache_cfg.size_mb * MIB, c.clock,
                                 ratio_read_percent=c.cache_cfg.ratio_read_percent)
        except (CacheError, OSError) as exc:
            raise ShelfError(f"cache file {path}: {exc}") from exc
        c.cache.on_no_space = self.no_space

    def no_space(self, lun: int, exc: OSError | None) -> None:
        """The drive images' file system refusing the cache's writes (ENOSPC) is no loss: the data
        stays in the battery-backed cache; an event when it starts and when the writes go through again."""
        c = self.c
        if exc is None:
            c.log.emit(EventCode.STORAGE_AVAILABLE, f"LUN {lun}: the cache writes to the drive "
                       "images again", lun=lun)
            return
        try:
            st = os.statvfs(c.state_dir)
            free = f"{st.f_bavail * st.f_frsize // MIB} MiB free"
        except OSError:
            free = "free space unknown"
        c.log.emit(EventCode.STORAGE_FULL, f"LUN {lun}: cannot write to the drive images in "
                   f"{c.state_dir} ({exc.strerror}, {free}): destage blocked; unwritten data "
                   f"stays in the battery-backed cache until space returns "
                   f"({c.cache.dirty_bytes // BLOCK_SIZE} blocks now)", lun=lun)

    @staticmethod
    def check_cache_cfg(c: CacheSettings) -> None:
        if not isinstance(c.size_mb, int) or c.size_mb not in CACHE_SIZE_MB:
            raise ShelfError(f"cache size {c.size_mb} MB: {CACHE_SIZE_MB} (the MSA500 has 128 or 256)")
        if c.ratio_read_percent not in RATIOS:
            raise ShelfError(f"cache ratio {c.ratio_read_percent}: read share 0, 25, 50, 75 or 100 %")
        for name in ("holdup_s", "charge_s", "spinup_s"):
            v = getattr(c, name)
            if not isinstance(v, int | float) or v < 0:
                raise ShelfError(f"cache setting {name} {v!r}: seconds, not negative")

    def replay(self) -> None:
        """What the cache file still holds (a crash, a power cut) goes to the drives now."""
        c = self.c
        cache = c.cache
        held = cache.dirty_luns()
        if cache.torn or cache.superseded or held:
            blocks = cache.dirty_bytes // BLOCK_SIZE
            for lun in [x for x in held if x not in c.lds]:
                lost = cache.drop_lun(lun)
                c.log.emit(EventCode.CACHE_DATA_LOST,
                           f"cache held {lost} blocks for LUN {lun}, which no longer exists", lun=lun)
            cache.destage_all()
            for lun, exc in sorted(cache.errors.items()):
                self.cache_lost({lun: self.drop_failed(lun)}, f"cannot be written ({exc})")
            cache.errors.clear()
            per_lun = ", ".join(f"LUN {x}: {n} lines" for x, n in sorted(held.items())) or "nothing held"
            kept = cache.dirty_bytes // BLOCK_SIZE  # a full file system leaves them in the cache
            c.log.emit(EventCode.CACHE_REPLAYED,
                       f"cache replayed {blocks - kept} blocks to the drives ({per_lun}); "
                       f"{cache.torn} torn slots ignored"
                       + (f"; {kept} blocks stay in the cache until the drives take them" if kept else ""))
            for d in c.enclosure.present():
                d.flush()
        if cache.slots != cache.want_slots and not cache.dirty_lines:
            cache.resize(cache.want_slots * LINE_BYTES)

    def drop_failed(self, lun: int) -> tuple[int, int]:
        """Drop what the cache holds for a failed logical drive: (blocks lost, first LBA)."""
        cache = self.c.cache
        first = cache.first_dirty_lba(lun)
        return cache.drop_lun(lun), first if first is not None else 0

    def cache_lost(self, lost: dict[int, tuple[int, int]], why: str) -> None:
        """Acknowledged writes are gone: one event, and a deferred error on each LUN hit."""
        c = self.c
        lost = {lun: v for lun, v in lost.items() if v[0]}
        if not lost:
            return
        text = ", ".join(f"LUN {lun}: {n} blocks from LBA {first}" for lun, (n, first) in sorted(lost.items()))
        c.log.emit(EventCode.CACHE_DATA_LOST, f"unwritten cache data lost ({why}): {text}",
                   lun=next(iter(lost)) if len(lost) == 1 else None)
        for lun, (n, first) in lost.items():
            self.data_lost[lun] = self.data_lost.get(lun, 0) + n
            ld = c.lds.get(lun)
            if ld is not None and ld.unit is not None:
                ld.unit.set_deferred_error(cache_data_lost_sense(first))

    def not_ready(self, state: UnitState) -> ScsiError | None:
        if state is UnitState.FAILED:
            return unit_offline_sense()
        if not self.powered:
            return powered_off_sense()
        if self.spinup_until is not None:
            return becoming_ready_sense()
        return None

    def update_ready(self) -> None:
        c = self.c
        for ld in c.lds.values():
            if ld.unit is not None:
                ld.unit.not_ready_reason = self.not_ready(ld.state)

    def cache_mode(self) -> tuple[bool, str]:
        """(write-back?, why) from the settings and the battery."""
        c = self.c
        cs = c.cache_cfg
        if not cs.enabled:
            return False, "cache disabled"
        if not c.cache.can_write_back:
            return False, "write share 0 %"
        st = c.battery.state(c.clock.now())
        if st is not BatteryState.OK:
            if cs.force_write_back:
                return True, f"write-back forced on, battery {st.value}"
            return False, f"battery {st.value}"
        return True, "battery ok"

    def apply_mode(self, quiet: bool = False) -> None:
        """Switch write-back/write-through when the reasons say so; hosts see WCE change."""
        c = self.c
        wb, why = self.cache_mode()
        self.cache_why = why
        c.cache.set_read_cache(c.cache_cfg.enabled)
        if not c.cache_cfg.enabled:
            c.cache.drop_clean()
        if wb == c.cache.write_back:
            return
        if not wb:
            c.cache.destage_all()  # write-through from now on: nothing may stay behind
        c.cache.write_back = wb
        for lun, ld in sorted(c.lds.items()):
            if ld.unit is not None and ld.unit.mode.set_write_cache_available(wb) and not quiet:
                c.target.establish_unit_attention(lun, MODE_PARAMETERS_CHANGED)
        if not quiet:
            if wb:
                c.log.emit(EventCode.CACHE_WRITE_BACK, f"cache is write-back ({why})")
            else:
                c.log.emit(EventCode.CACHE_WRITE_THROUGH, f"cache is write-through ({why})")

    def advance(self, now: float) -> None:
        c = self.c
        if self.spinup_until is not None and now >= self.spinup_until:
            self.spinup_until = None
            self.update_ready()
        st = c.battery.state(now)
        if st is not self.battery_state:
            c.battery.refresh(now)
            self.battery_state = st
            if st is BatteryState.OK:
                c.log.emit(EventCode.BATTERY_CHARGED, "cache battery charged")
            self.apply_mode()
            c.nvram.save()
        due = c.cache.next_deadline()
        if due is not None and now >= due:
            c.cache.step()
            for lun in list(c.cache.errors):
                ld = c.lds.get(lun)
                if ld is None or ld.state is UnitState.FAILED:
                    self.cache_lost({lun: self.drop_failed(lun)}, f"logical drive {lun} failed")
                    c.cache.errors.pop(lun, None)

    def need_power(self, what: str) -> None:
        if not self.powered:
            raise ControllerError(f"{what}: the shelf is powered off")

    def set_cache(self, enabled: bool | None = None, ratio_read_percent: int | None = None,
                  size_mb: int | None = None, force_write_back: bool | None = None) -> dict[str, Any]:
        """ACU's array accelerator settings: enable/disable, read/write ratio, size, no-battery write cache."""
        c = self.c
        self.need_power("set cache")
        if enabled is None and ratio_read_percent is None and size_mb is None and force_write_back is None:
            raise ControllerError("set cache: nothing to change (enabled, ratio, size)")
        if enabled is not None and not isinstance(enabled, bool):
            raise ControllerError(f"set cache: enabled {enabled!r} is true or false")
        if force_write_back is not None and not isinstance(force_write_back, bool):
            raise ControllerError(f"set cache: force_write_back {force_write_back!r} is true or false")
        if ratio_read_percent is not None and (not isinstance(ratio_read_percent, int)
                                               or ratio_read_percent not in RATIOS):
            raise ControllerError(f"cache ratio {ratio_read_percent}: the read share is 0, 25, 50, 75 or 100 %")
        if size_mb is not None and (not isinstance(size_mb, int) or size_mb not in CACHE_SIZE_MB):
            raise ControllerError(f"cache size {size_mb} MB: 128 or 256 ({CACHE_SIZE_MB} allowed)")
        resize = size_mb is not None and size_mb * MIB != c.cache.slots * LINE_BYTES
        will_flush = enabled is False or ratio_read_percent == 100
        if resize and c.cache.dirty_lines and not will_flush:
            raise ControllerError(f"the cache holds {c.cache.dirty_bytes} bytes not yet written to the drives; "
                                  "disable it first (the data is written out), then change the size")
        cs = c.cache_cfg
        changes: list[str] = []
        if enabled is not None and enabled != cs.enabled:
            cs.enabled = enabled
            changes.append("enabled" if enabled else "disabled")
        if force_write_back is not None and force_write_back != cs.force_write_back:
            cs.force_write_back = force_write_back
            changes.append(f"no-battery write cache {'on' if force_write_back else 'off'}")
        self.apply_mode()
        if ratio_read_percent is not None and ratio_read_percent != cs.ratio_read_percent:
            c.cache.set_ratio(ratio_read_percent)
            cs.ratio_read_percent = ratio_read_percent
            changes.append(f"ratio {ratio_read_percent}% read / {100 - ratio_read_percent}% write")
            self.apply_mode()
        if resize and size_mb is not None:
            try:
                c.cache.resize(size_mb * MIB)
            except CacheError as exc:
                raise ControllerError(str(exc)) from None
            cs.size_mb = size_mb
            for ld in c.lds.values():
                if ld.unit is not None:
                    ld.unit.cache_bytes = size_mb * MIB
            changes.append(f"size {size_mb} MB")
        if changes:
            c.log.emit(EventCode.CACHE_SETTINGS, f"cache settings: {', '.join(changes)}")
            c.nvram.save()
        return self.stats()

    def fault_battery(self, action: str) -> dict[str, Any]:
        """Battery faults: fail, remove, low, restore (a new pack that then charges)."""
        c = self.c
        act = str(action).lower()
        now = c.clock.now()
        b = c.battery
        if act == "fail":
            if b.failed or b.missing:
                raise ControllerError(f"the battery is already {b.state(now).value}")
            b.fail(now)
            c.log.emit(EventCode.BATTERY_FAILED, "cache battery failed")
        elif act == "remove":
            if b.missing:
                raise ControllerError("the battery is already removed")
            b.remove(now)
            c.log.emit(EventCode.BATTERY_REMOVED, "cache battery removed")
        elif act == "low":
            if b.failed or b.missing:
                raise ControllerError(f"the battery is {b.state(now).value}")
            b.set_low(now)
            c.log.emit(EventCode.BATTERY_LOW, f"cache battery charge low ({b.charge(now):.0f} %)")
        elif act == "restore":
            if not (b.failed or b.missing or b.low):
                raise ControllerError("the battery has no fault to restore")
            b.restore(now)
            c.log.emit(EventCode.BATTERY_RESTORED, "cache battery installed; charging")
        else:
            raise ControllerError(f"battery action {action!r}: fail, remove, low or restore")
        self.battery_state = b.state(now)
        if self.powered:
            self.apply_mode()
        c.nvram.save()
        return b.describe(now)

    def power_off(self, now: float | None = None) -> dict[str, Any]:
        """A power cut: nothing is written out; the battery keeps the cache (and drains)."""
        c = self.c
        if not self.powered:
            raise ControllerError("the shelf is already powered off")
        t = c.clock.now() if now is None else now
        self.holdup_at_off = c.battery.holdup_left(t)
        c.battery.power_off(t)
        self.powered = False
        self.off_at = t
        self.spinup_until = None
        self.update_ready()
        dirty = c.cache.dirty_bytes
        c.log.emit(EventCode.SHELF_POWER_OFF,
                   f"shelf powered off; {dirty} bytes of unwritten cache data held by the battery "
                   f"({c.battery.state(t).value}, up to {self.holdup_at_off:.0f} s)")
        return {"powered": False, "dirty_bytes": dirty, "holdup_seconds": self.holdup_at_off}

    def power_on(self, now: float | None = None) -> dict[str, Any]:
        """Power back: the cache replays what the battery kept (or reports the loss), drives spin up."""
        c = self.c
        if self.powered:
            raise ControllerError("the shelf is already powered on")
        t = c.clock.now() if now is None else now
        off = max(0.0, t - self.off_at)
        c.battery.power_on(t)
        held = c.battery.holdup_left(t) > 0 and off <= self.holdup_at_off
        self.powered = True
        self.data_lost = {}
        c.target.power_on()  # every nexus seen next gets POWER ON (29/00)
        c.pr_store.power_on()  # registrations come back only where APTPL was on
        c.rso.restart()  # heartbeat deadlines count from power on
        for ld in c.lds.values():
            if ld.unit is not None:
                ld.unit.set_deferred_error(None)
        if not held:
            why = (f"the battery held the cache for at most {self.holdup_at_off:.0f} s, power was off "
                   f"{off:.0f} s") if self.holdup_at_off > 0 else f"battery {c.battery.state(t).value}"
            self.cache_lost(c.cache.drop_all(), why)
        else:
            self.replay()
        spin = float(c.cache_cfg.spinup_s)
        self.spinup_until = t + spin if spin > 0 else None
        self.battery_state = c.battery.state(t)
        self.update_ready()
        self.apply_mode()
        c.log.emit(EventCode.SHELF_POWER_ON, f"shelf powered on after {off:.0f} s; drives spin up for {spin:.0f} s")
        c.nvram.save()
        return {"powered": True, "off_seconds": off, "data_lost": dict(self.data_lost)}

    def stats(self) -> dict[str, Any]:
        c = self.c
        now = c.clock.now()
        s = c.cache.stats()
        s.update({
            "enabled": c.cache_cfg.enabled,
            "size_mb": s["size_bytes"] // MIB,
            "state": "write-back" if c.cache.write_back else "write-through",
            "reason": self.cache_why,
            "force_write_back": c.cache_cfg.force_write_back,
            "battery": c.battery.state(now).value,
            "battery_charge_percent": c.battery.reported_charge(now),
            "holdup_seconds": round(c.battery.holdup_left(now), 1),
            "data_lost_blocks": {str(k): v for k, v in sorted(self.data_lost.items())},
            "powered": self.powered,
        })
        return s
