"""The array accelerator's battery pack: charge on the injected clock, hold-up time, faults.

The charge is a straight line in time: it rises while the shelf is powered (from 0 to 100 %
in `charge_s`) and falls while the shelf is off (from 100 % to 0 in `holdup_s`: the pack
keeps the cache memory alive). Nothing ticks: the charge at any moment is computed from the
last fixed point, and `next_change` says when the state next changes (so the controller can
switch the cache back to write-back on time).

States (as the product's agents report them): `ok` (charge at least OK_PCT), `charging`,
`low` (after a low-charge fault or a long cut, until it is charged again), `failed`, `missing`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

OK_PCT = 90.0  # enough charge to hold the cache: write-back allowed
LOW_PCT = 25.0  # a long power cut that drains the pack below this reports `low`
LOW_FAULT_PCT = 10.0  # charge after FAULT BATTERY LOW
DEFAULT_HOLDUP_S = 4 * 86400.0  # 4 days for the 128 MB module
DEFAULT_CHARGE_S = 600.0  # from empty to full


class BatteryState(StrEnum):
    CHARGING = "charging"
    OK = "ok"
    LOW = "low"
    FAILED = "failed"
    MISSING = "missing"


class Battery:
    """One battery pack; every method takes `now` from the controller's clock."""

    def __init__(self, now: float, *, holdup_s: float = DEFAULT_HOLDUP_S,
                 charge_s: float = DEFAULT_CHARGE_S, charge: float = 100.0,
                 failed: bool = False, missing: bool = False, low: bool = False) -> None:
        self.holdup_s = float(holdup_s)
        self.charge_s = float(charge_s)
        self.failed = failed
        self.missing = missing
        self.low = low  # sticky until the pack reaches OK_PCT again
        self._charge = max(0.0, min(100.0, float(charge)))
        self._t = now
        self._charging = True  # the shelf is powered

    # ------------------------------------------------------------------ reading
    def _healthy(self) -> bool:
        return not (self.failed or self.missing)

    def charge(self, now: float) -> float:
        """Charge in percent at `now`."""
        if not self._healthy():
            return 0.0 if self.missing else self._charge
        dt = max(0.0, now - self._t)
        if self._charging:
            rate = 100.0 / self.charge_s if self.charge_s > 0 else float("inf")
            return min(100.0, self._charge + dt * rate)
        rate = 100.0 / self.holdup_s if self.holdup_s > 0 else float("inf")
        return max(0.0, self._charge - dt * rate)

    def _settle(self, now: float) -> None:
        """Fix the charge at `now` as the new starting point."""
        c = self.charge(now)
        self._charge = c
        self._t = now
        if self.low and c >= OK_PCT:
            self.low = False

    def state(self, now: float) -> BatteryState:
        if self.missing:
            return BatteryState.MISSING
        if self.failed:
            return BatteryState.FAILED
        c = self.charge(now)
        if c >= OK_PCT:
            return BatteryState.OK
        return BatteryState.LOW if self.low else BatteryState.CHARGING

    def holdup_left(self, now: float) -> float:
        """Seconds the pack would keep the cache alive if power went now."""
        if not self._healthy():
            return 0.0
        return self.charge(now) / 100.0 * self.holdup_s

    def next_change(self, now: float) -> float | None:
        """When charging next crosses OK_PCT (the state changes to ok), if it will."""
        if not self._healthy() or not self._charging or self.charge_s <= 0:
            return None
        c = self.charge(now)
        if c >= OK_PCT:
            return None
        return now + (OK_PCT - c) / 100.0 * self.charge_s

    # ------------------------------------------------------------------- events
    def fail(self, now: float) -> None:
        self._settle(now)
        self.failed = True

    def remove(self, now: float) -> None:
        self._settle(now)
        self.missing = True
        self.failed = False
        self._charge = 0.0

    def restore(self, now: float) -> None:
        """A new (or repaired) pack: empty, charging from now on."""
        self.failed = False
        self.missing = False
        self.low = False
        self._charge = 0.0
        self._t = now

    def set_low(self, now: float) -> None:
        self._settle(now)
        if self._healthy():
            self._charge = min(self._charge, LOW_FAULT_PCT)
            self.low = True

    def power_off(self, now: float) -> None:
        """The shelf lost power: from now on the pack feeds the cache and drains."""
        self._settle(now)
        self._charging = False

    def power_on(self, now: float) -> None:
        self._settle(now)
        if self._healthy() and self._charge < LOW_PCT:
            self.low = True
        self._charging = True

    def refresh(self, now: float) -> None:
        """Fix the charge at `now` (clears the sticky low flag once charged)."""
        self._settle(now)

    # -------------------------------------------------------------- persistence
    def to_dict(self, now: float) -> dict[str, Any]:
        return {"charge": round(self.charge(now), 4), "failed": self.failed, "missing": self.missing,
                "low": self.low}

    def reported_charge(self, now: float) -> float | None:
        """The charge the controller can report: none (None) for a failed pack, whose gauge is not
        believed, or a missing one; 0 hold-up either way."""
        return round(self.charge(now), 1) if self._healthy() else None

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state(now).value,
            "charge_percent": self.reported_charge(now),
            "holdup_seconds": round(self.holdup_left(now), 1),
            "holdup_full_seconds": self.holdup_s,
            "charge_seconds": self.charge_s,
        }
