"""The controller's event log: every state change of drives, arrays and logical drives.

Events carry a stable code (the table below; alerts and the management API key on it),
a severity, bay/array/LUN references and a one-line message. The log is an append-only
JSON-lines file in the state directory, bounded to the last `limit` events, so a
restarted emulator shows what happened before it stopped (as the real controller keeps
its event log in NVRAM).
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from .clock import Clock

EVENTS_FILE = "events.jsonl"
DEFAULT_LIMIT = 10000


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EventCode(StrEnum):
    CONTROLLER_STARTED = "CONTROLLER_STARTED"
    CONFIG_CREATED = "CONFIG_CREATED"
    CONFIG_RESTORED = "CONFIG_RESTORED"
    CONFIG_CHANGED = "CONFIG_CHANGED"
    DRIVE_FAILED = "DRIVE_FAILED"
    DRIVE_PULLED = "DRIVE_PULLED"
    DRIVE_INSERTED = "DRIVE_INSERTED"
    DRIVE_MOVED = "DRIVE_MOVED"
    DRIVE_MEDIA_ERROR = "DRIVE_MEDIA_ERROR"
    BLOCKS_LOST = "BLOCKS_LOST"  # blocks of a logical drive nothing could reconstruct
    BLOCKS_HEALED = "BLOCKS_HEALED"  # lost blocks written again by a host
    DRIVE_LATENCY = "DRIVE_LATENCY"
    DRIVE_PREDICTIVE_FAILURE = "DRIVE_PREDICTIVE_FAILURE"
    DRIVE_FAULTS_CLEARED = "DRIVE_FAULTS_CLEARED"
    SPARE_ADDED = "SPARE_ADDED"
    SPARE_REMOVED = "SPARE_REMOVED"
    SPARE_ACTIVATED = "SPARE_ACTIVATED"
    SPARE_RELEASED = "SPARE_RELEASED"
    REBUILD_STARTED = "REBUILD_STARTED"
    COPY_BACK_STARTED = "COPY_BACK_STARTED"
    COPY_BACK_DONE = "COPY_BACK_DONE"
    COPY_BACK_ABORTED = "COPY_BACK_ABORTED"
    REBUILD_PROGRESS = "REBUILD_PROGRESS"
    REBUILD_DONE = "REBUILD_DONE"
    REBUILD_ABORTED = "REBUILD_ABORTED"
    REBUILD_PRIORITY = "REBUILD_PRIORITY"
    UNIT_CREATED = "UNIT_CREATED"
    UNIT_DELETED = "UNIT_DELETED"
    UNIT_STATUS = "UNIT_STATUS"
    UNIT_FAILED = "UNIT_FAILED"
    UNIT_EXTENDED = "UNIT_EXTENDED"
    EXPAND_STARTED = "EXPAND_STARTED"
    EXPAND_PROGRESS = "EXPAND_PROGRESS"
    EXPAND_DONE = "EXPAND_DONE"
    EXPAND_ABORTED = "EXPAND_ABORTED"
    PSU_FAILED = "PSU_FAILED"
    PSU_RESTORED = "PSU_RESTORED"
    FAN_FAILED = "FAN_FAILED"
    FAN_RESTORED = "FAN_RESTORED"
    TEMPERATURE = "TEMPERATURE"
    CACHE_REPLAYED = "CACHE_REPLAYED"
    WRITES_RECOVERED = "WRITES_RECOVERED"
    CACHE_DATA_LOST = "CACHE_DATA_LOST"
    CACHE_WRITE_BACK = "CACHE_WRITE_BACK"
    CACHE_WRITE_THROUGH = "CACHE_WRITE_THROUGH"
    CACHE_SETTINGS = "CACHE_SETTINGS"
    STORAGE_FULL = "STORAGE_FULL"
    STORAGE_AVAILABLE = "STORAGE_AVAILABLE"
    BATTERY_FAILED = "BATTERY_FAILED"
    BATTERY_REMOVED = "BATTERY_REMOVED"
    BATTERY_LOW = "BATTERY_LOW"
    BATTERY_RESTORED = "BATTERY_RESTORED"
    BATTERY_CHARGED = "BATTERY_CHARGED"
    SHELF_POWER_OFF = "SHELF_POWER_OFF"
    SHELF_POWER_ON = "SHELF_POWER_ON"
    PORT_FAULT = "PORT_FAULT"
    PORT_FAULT_CLEARED = "PORT_FAULT_CLEARED"
    SESSION_FAULT = "SESSION_FAULT"
    INJECTION_FIRED = "INJECTION_FIRED"
    RSO_CONFIGURED = "RSO_CONFIGURED"
    RSO_SECONDARY_JOINED = "RSO_SECONDARY_JOINED"
    RSO_TIMEOUT = "RSO_TIMEOUT"
    RSO_HEARTBEAT_RESUMED = "RSO_HEARTBEAT_RESUMED"
    RSO_FAILOVER = "RSO_FAILOVER"
    RSO_SERVICE_LOST = "RSO_SERVICE_LOST"
    RSO_ACK_LOST = "RSO_ACK_LOST"
    RSO_ACK_RESTORED = "RSO_ACK_RESTORED"
    RSO_RESTORED = "RSO_RESTORED"
    RSO_LINK = "RSO_LINK"
    RSO_PRIMARY_STARTED = "RSO_PRIMARY_STARTED"
    HOST_AGENT_STARTED = "HOST_AGENT_STARTED"
    HOST_ACK_LOST = "HOST_ACK_LOST"
    HOST_ACK_RESTORED = "HOST_ACK_RESTORED"
    HOST_FENCED = "HOST_FENCED"
    HOST_FAILOVER = "HOST_FAILOVER"
    HOST_POWER_LOSS_HOLD = "HOST_POWER_LOSS_HOLD"
    HOST_ARRAY_LOST = "HOST_ARRAY_LOST"
    HOST_ARRAY_BACK = "HOST_ARRAY_BACK"
    SNAPSHOT_SAVED = "SNAPSHOT_SAVED"  # the process's snapshots of the whole shelf (msa500_emu.snapshot)
    SNAPSHOT_RESTORED = "SNAPSHOT_RESTORED"
    SHELF_RESET = "SHELF_RESET"


# code -> (default severity, what it means). Alerts and the web page read this table.
CODES: dict[EventCode, tuple[Severity, str]] = {
    EventCode.CONTROLLER_STARTED: (Severity.INFO, "the controller started"),
    EventCode.CONFIG_CREATED: (Severity.INFO, "a new shelf was built from the configuration file"),
    EventCode.CONFIG_RESTORED: (Severity.INFO, "the array configuration was read back from the drives"),
    EventCode.CONFIG_CHANGED: (Severity.INFO, "the array configuration changed"),
    EventCode.DRIVE_FAILED: (Severity.CRITICAL, "a physical drive failed"),
    EventCode.DRIVE_PULLED: (Severity.WARNING, "a physical drive was removed"),
    EventCode.DRIVE_INSERTED: (Severity.INFO, "a physical drive was inserted"),
    EventCode.DRIVE_MOVED: (Severity.INFO, "a configured drive was found in another bay"),
    EventCode.DRIVE_MEDIA_ERROR: (Severity.WARNING, "a drive reported an unrecoverable media error"),
    EventCode.BLOCKS_LOST: (Severity.CRITICAL, "blocks of a logical drive could not be reconstructed; "
                            "they read as MEDIUM ERROR until written"),
    EventCode.BLOCKS_HEALED: (Severity.INFO, "lost blocks of a logical drive were written again"),
    EventCode.DRIVE_LATENCY: (Severity.INFO, "added latency was set on a drive"),
    EventCode.DRIVE_PREDICTIVE_FAILURE: (Severity.WARNING, "a drive predicts its own failure"),
    EventCode.DRIVE_FAULTS_CLEARED: (Severity.INFO, "injected drive faults were cleared"),
    EventCode.SPARE_ADDED: (Severity.INFO, "an online spare was assigned to an array"),
    EventCode.SPARE_REMOVED: (Severity.INFO, "an online spare was unassigned"),
    EventCode.SPARE_ACTIVATED: (Severity.WARNING, "an online spare replaced a failed drive"),
    EventCode.SPARE_RELEASED: (Severity.INFO, "an online spare returned to standby"),
    EventCode.REBUILD_STARTED: (Severity.WARNING, "a rebuild started"),
    EventCode.COPY_BACK_STARTED: (Severity.INFO, "a replaced drive is being filled from the spare standing in for it"),
    EventCode.COPY_BACK_DONE: (Severity.INFO, "a replaced drive took its place back; the spare returns to standby"),
    EventCode.COPY_BACK_ABORTED: (Severity.WARNING, "a copy-back stopped before completion; the spare stays"),
    EventCode.REBUILD_PROGRESS: (Severity.INFO, "rebuild progress (every 10%)"),
    EventCode.REBUILD_DONE: (Severity.INFO, "a rebuild completed"),
    EventCode.REBUILD_ABORTED: (Severity.CRITICAL, "a rebuild stopped before completion"),
    EventCode.REBUILD_PRIORITY: (Severity.INFO, "the rebuild priority changed"),
    EventCode.UNIT_CREATED: (Severity.INFO, "a logical drive was created"),
    EventCode.UNIT_DELETED: (Severity.INFO, "a logical drive was deleted"),
    EventCode.UNIT_STATUS: (Severity.WARNING, "a logical drive changed status"),
    EventCode.UNIT_FAILED: (Severity.CRITICAL, "a logical drive failed: its data is unavailable"),
    EventCode.UNIT_EXTENDED: (Severity.INFO, "a logical drive grew"),
    EventCode.EXPAND_STARTED: (Severity.INFO, "an array capacity expansion started"),
    EventCode.EXPAND_PROGRESS: (Severity.INFO, "expansion progress (every 10%)"),
    EventCode.EXPAND_ABORTED: (Severity.WARNING, "an array expansion was called off before any data moved"),
    EventCode.EXPAND_DONE: (Severity.INFO, "an array capacity expansion completed"),
    EventCode.PSU_FAILED: (Severity.CRITICAL, "a power supply failed"),
    EventCode.PSU_RESTORED: (Severity.INFO, "a power supply is working again"),
    EventCode.FAN_FAILED: (Severity.CRITICAL, "a fan failed"),
    EventCode.FAN_RESTORED: (Severity.INFO, "a fan is working again"),
    EventCode.TEMPERATURE: (Severity.WARNING, "the enclosure temperature changed band"),
    EventCode.CACHE_REPLAYED: (Severity.INFO, "unwritten data held in the cache was written to the drives"),
    EventCode.WRITES_RECOVERED: (Severity.INFO, "writes interrupted by a stop were made consistent at start"),
    EventCode.CACHE_DATA_LOST: (Severity.CRITICAL, "acknowledged writes held in the cache were lost"),
    EventCode.CACHE_WRITE_BACK: (Severity.INFO, "the cache is write-back again"),
    EventCode.CACHE_WRITE_THROUGH: (Severity.WARNING, "the cache switched to write-through"),
    EventCode.CACHE_SETTINGS: (Severity.INFO, "the cache settings changed"),
    EventCode.STORAGE_FULL: (Severity.CRITICAL, "the drive images' file system is full: the cache cannot write "
                             "out (its data stays in the battery-backed cache)"),
    EventCode.STORAGE_AVAILABLE: (Severity.INFO, "the cache writes to the drive images again"),
    EventCode.BATTERY_FAILED: (Severity.CRITICAL, "the cache battery failed"),
    EventCode.BATTERY_REMOVED: (Severity.CRITICAL, "the cache battery was removed"),
    EventCode.BATTERY_LOW: (Severity.WARNING, "the cache battery charge is low"),
    EventCode.BATTERY_RESTORED: (Severity.INFO, "a cache battery was installed; it charges"),
    EventCode.BATTERY_CHARGED: (Severity.INFO, "the cache battery is charged"),
    EventCode.SHELF_POWER_OFF: (Severity.CRITICAL, "the shelf lost power"),
    EventCode.SHELF_POWER_ON: (Severity.INFO, "the shelf is powered again"),
    EventCode.PORT_FAULT: (Severity.WARNING, "an iSCSI port fault was injected (down, reset, black hole, delay, flap)"),
    EventCode.PORT_FAULT_CLEARED: (Severity.INFO, "an injected iSCSI port fault ended"),
    EventCode.SESSION_FAULT: (Severity.WARNING, "a host's sessions were dropped and their ISIDs retired, or let back"),
    EventCode.INJECTION_FIRED: (Severity.INFO, "an injected command error answered a host's command"),
    EventCode.RSO_CONFIGURED: (Severity.INFO, "the Recovery Server Option was configured"),
    EventCode.RSO_SECONDARY_JOINED: (Severity.INFO, "the recovery server acknowledges heartbeats"),
    EventCode.RSO_TIMEOUT: (Severity.CRITICAL, "no heartbeat from the primary within the timeout"),
    EventCode.RSO_HEARTBEAT_RESUMED: (Severity.INFO, "the primary's heartbeat resumed before failover"),
    EventCode.RSO_FAILOVER: (Severity.CRITICAL, "failover: the primary is fenced, the recovery server active"),
    EventCode.RSO_SERVICE_LOST: (Severity.CRITICAL, "the primary failed with no recovery server to take over"),
    EventCode.RSO_ACK_LOST: (Severity.WARNING, "the primary lost the recovery server's acknowledgment"),
    EventCode.RSO_ACK_RESTORED: (Severity.INFO, "the recovery server's acknowledgment is back"),
    EventCode.RSO_RESTORED: (Severity.INFO, "RSO restored: the primary is active again"),
    EventCode.RSO_LINK: (Severity.WARNING, "a port's heartbeat link went down or came back"),
    EventCode.RSO_PRIMARY_STARTED: (Severity.INFO, "the primary's first heartbeat after power on"),
    # Reported by the host agents through LOG HOST EVENT (C5h): both servers write the same log.
    EventCode.HOST_AGENT_STARTED: (Severity.INFO, "a host's RSO agent started"),
    EventCode.HOST_ACK_LOST: (Severity.WARNING, "the primary no longer receives the recovery's acknowledgment"),
    EventCode.HOST_ACK_RESTORED: (Severity.INFO, "the primary receives the recovery's acknowledgment again"),
    EventCode.HOST_FENCED: (Severity.CRITICAL, "the primary found itself fenced from the logical drives"),
    EventCode.HOST_FAILOVER: (Severity.CRITICAL, "the recovery server: primary failed, failover, recovery boots"),
    EventCode.HOST_POWER_LOSS_HOLD: (Severity.CRITICAL,
                                     "the primary saw the storage lose power and waits for an administrator"),
    EventCode.HOST_ARRAY_LOST: (Severity.WARNING, "a host's agent lost contact with the array"),
    EventCode.HOST_ARRAY_BACK: (Severity.INFO, "a host's agent reached the array again"),
    EventCode.SNAPSHOT_SAVED: (Severity.INFO, "a snapshot of the whole shelf was saved"),
    EventCode.SNAPSHOT_RESTORED: (Severity.WARNING, "the shelf was put back to a snapshot (hosts see a reset)"),
    EventCode.SHELF_RESET: (Severity.WARNING, "the shelf was reset to its state at start (hosts see a reset)"),
}


@dataclass
class Event:
    id: int
    time: float  # wall clock, seconds since the epoch, to the millisecond
    monotonic: float  # the controller clock
    severity: str
    code: str
    message: str
    bay: int | None = None
    array: str | None = None
    lun: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class EventLog:
    """Bounded, persistent, append-only list of events."""

    def __init__(
        self,
        path: Path | None,
        clock: Clock,
        wall: Callable[[], float],
        *,
        limit: int = DEFAULT_LIMIT,
        subscriber: Callable[[Event], None] | None = None,
    ) -> None:
        self.path = path
        self.clock = clock
        self.wall = wall
        self.limit = limit
        self.subscriber = subscriber
        self._events: deque[Event] = deque(maxlen=limit)
        self._next_id = 1
        self._lines = 0
        self.unsaved = 0  # events that could not be appended to the file (a full disk)
        self.save_error = ""
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text()
        except OSError:
            return
        for line in text.splitlines():
            try:
                raw = json.loads(line)
                ev = Event(**raw)
            except (ValueError, TypeError):
                continue  # a torn last line after a crash
            self._events.append(ev)
            self._next_id = max(self._next_id, ev.id + 1)
            self._lines += 1
        if self._lines > self.limit:
            self._rewrite()

    def _rewrite(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in self._events))
        os.replace(tmp, self.path)
        self._lines = len(self._events)

    def emit(
        self,
        code: EventCode,
        message: str,
        *,
        bay: int | None = None,
        array: str | None = None,
        lun: int | None = None,
        severity: Severity | None = None,
    ) -> Event:
        sev = severity or CODES[code][0]
        ev = Event(
            self._next_id, round(self.wall(), 3), round(self.clock.now(), 6), sev.value, code.value,
            message, bay, array, lun,
        )
        self._next_id += 1
        self._events.append(ev)
        if self.path is not None:
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(ev.to_dict()) + "\n")
                self._lines += 1
                if self._lines >= 2 * self.limit:
                    self._rewrite()
            except OSError as exc:  # a full disk: the event is still told, and kept in memory
                self.unsaved += 1
                self.save_error = str(exc)
        if self.subscriber is not None:
            self.subscriber(ev)
        return ev

    def events(self, since_id: int = 0, limit: int | None = None) -> list[dict[str, object]]:
        """Events with id > since_id, oldest first; at most `limit` (page on with the last id)."""
        out: list[dict[str, object]] = []
        for e in self._events:
            if e.id > since_id:
                if limit is not None and len(out) >= limit:
                    break
                out.append(e.to_dict())
        return out

    def continue_after(self, last_id: int) -> None:
        """Ids never go back (an older log put back by a snapshot restore): the next follows `last_id`."""
        self._next_id = max(self._next_id, last_id + 1)

    @property
    def last_id(self) -> int:
        return self._next_id - 1
