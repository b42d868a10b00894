"""The one table: each event code -> its SNMP trap (OID and varbinds) and its syslog severity.

The traps are those the product's Insight Management agents sent for an MSA500 (the drive array
MIB CPQIDA-MIB, revision with the cpqDa6* traps, and the storage system MIB CPQSTSYS-MIB), as
SNMPv2 notifications translated the RFC 3584 way: snmpTrapOID = enterprise.0.specific
(1.3.6.1.4.1.232.0.N) and snmpTrapEnterprise.0 = 1.3.6.1.4.1.232 last. Each trap carries the
VARIABLES its MIB lists, in that order. A code without a trap (None) still goes to syslog and
webhooks. Pure: no sockets, no pysnmp (the sinks turn varbinds into packets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from firmware_model.events import CODES, EventCode, Severity

from ..alerts import Alert

ENTERPRISE = "1.3.6.1.4.1.232"  # compaq
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SNMP_TRAP_OID = "1.3.6.1.6.3.1.1.4.1.0"
SNMP_TRAP_ENTERPRISE = "1.3.6.1.6.3.1.1.4.3.0"
CONTROLLER_INDEX = 1  # the MSA500's controller, as a host's agent numbered it
BOX_BUS = 0  # the storage box's bus index (cpqSsBoxEntry is indexed by controller, bus)
CHASSIS_INDEX = 1
MODEL = "MSA500"
SMART_ARRAY_CLUSTER_STORAGE = 4  # cpqSsChassisModel: "HP StorageWorks Modular Smart Array 500"


class Syntax(StrEnum):
    INTEGER = "INTEGER"
    STRING = "STRING"  # DisplayString


class Index(StrEnum):
    """How an object's instance is numbered (its table's INDEX)."""

    SCALAR = "0"
    CONTROLLER = "controller"  # cpqDaCntlrTable, cpqDaAccelTable: .controller
    LOGICAL = "controller.lun"  # cpqDaLogDrvTable
    PHYSICAL = "controller.bay"  # cpqDaPhyDrvTable, cpqDaSpareTable (drive index = bay)
    BOX = "controller.bus"  # cpqSsBoxTable
    CHASSIS = "chassis"  # cpqSsChassisTable


@dataclass(frozen=True)
class MibObject:
    name: str
    oid: str  # the column (or the scalar without .0)
    syntax: Syntax
    index: Index


def _objects(*rows: tuple[str, str, Syntax, Index]) -> dict[str, MibObject]:
    return {name: MibObject(name, oid, syntax, index) for name, oid, syntax, index in rows}


INT, STR = Syntax.INTEGER, Syntax.STRING
_DA, _SS = f"{ENTERPRISE}.3.2", f"{ENTERPRISE}.8.2"
OBJECTS = _objects(
    ("sysName", "1.3.6.1.2.1.1.5", STR, Index.SCALAR),
    ("cpqHoTrapFlags", f"{ENTERPRISE}.11.2.11.1", INT, Index.SCALAR),  # CPQHOST-MIB
    # CPQIDA-MIB
    ("cpqDaCntlrIndex", f"{_DA}.2.1.1.1", INT, Index.CONTROLLER),
    ("cpqDaCntlrModel", f"{_DA}.2.1.1.2", INT, Index.CONTROLLER),
    ("cpqDaCntlrFWRev", f"{_DA}.2.1.1.3", STR, Index.CONTROLLER),
    ("cpqDaCntlrBoardStatus", f"{_DA}.2.1.1.10", INT, Index.CONTROLLER),
    ("cpqDaCntlrSerialNumber", f"{_DA}.2.1.1.15", STR, Index.CONTROLLER),
    ("cpqDaCntlrHwLocation", f"{_DA}.2.1.1.20", STR, Index.CONTROLLER),
    ("cpqDaAccelCntlrIndex", f"{_DA}.2.2.1.1", INT, Index.CONTROLLER),
    ("cpqDaAccelStatus", f"{_DA}.2.2.1.2", INT, Index.CONTROLLER),
    ("cpqDaAccelErrCode", f"{_DA}.2.2.1.5", INT, Index.CONTROLLER),
    ("cpqDaAccelSerialNumber", f"{_DA}.2.2.1.11", STR, Index.CONTROLLER),
    ("cpqDaAccelTotalMemory", f"{_DA}.2.2.1.12", INT, Index.CONTROLLER),
    ("cpqDaLogDrvCntlrIndex", f"{_DA}.3.1.1.1", INT, Index.LOGICAL),
    ("cpqDaLogDrvIndex", f"{_DA}.3.1.1.2", INT, Index.LOGICAL),
    ("cpqDaLogDrvStatus", f"{_DA}.3.1.1.4", INT, Index.LOGICAL),
    ("cpqDaSpareCntlrIndex", f"{_DA}.4.1.1.1", INT, Index.PHYSICAL),
    ("cpqDaSparePhyDrvIndex", f"{_DA}.4.1.1.2", INT, Index.PHYSICAL),
    ("cpqDaSpareStatus", f"{_DA}.4.1.1.3", INT, Index.PHYSICAL),
    ("cpqDaSpareBusNumber", f"{_DA}.4.1.1.7", INT, Index.PHYSICAL),
    ("cpqDaSpareBay", f"{_DA}.4.1.1.8", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvCntlrIndex", f"{_DA}.5.1.1.1", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvIndex", f"{_DA}.5.1.1.2", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvModel", f"{_DA}.5.1.1.3", STR, Index.PHYSICAL),
    ("cpqDaPhyDrvFWRev", f"{_DA}.5.1.1.4", STR, Index.PHYSICAL),
    ("cpqDaPhyDrvBay", f"{_DA}.5.1.1.5", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvStatus", f"{_DA}.5.1.1.6", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvBusNumber", f"{_DA}.5.1.1.50", INT, Index.PHYSICAL),
    ("cpqDaPhyDrvSerialNum", f"{_DA}.5.1.1.51", STR, Index.PHYSICAL),
    ("cpqDaPhyDrvFailureCode", f"{_DA}.5.1.1.55", INT, Index.PHYSICAL),
    # CPQSTSYS-MIB
    ("cpqSsBoxCntlrIndex", f"{_SS}.1.1.1", INT, Index.BOX),
    ("cpqSsBoxBusIndex", f"{_SS}.1.1.2", INT, Index.BOX),
    ("cpqSsBoxModel", f"{_SS}.1.1.4", STR, Index.BOX),
    ("cpqSsBoxVendor", f"{_SS}.1.1.6", STR, Index.BOX),
    ("cpqSsBoxFanStatus", f"{_SS}.1.1.7", INT, Index.BOX),
    ("cpqSsBoxTempStatus", f"{_SS}.1.1.9", INT, Index.BOX),
    ("cpqSsBoxFltTolPwrSupplyStatus", f"{_SS}.1.1.11", INT, Index.BOX),
    ("cpqSsBoxSerialNumber", f"{_SS}.1.1.17", STR, Index.BOX),
    ("cpqSsBoxCntlrHwLocation", f"{_SS}.1.1.18", STR, Index.BOX),
    ("cpqSsBoxLocationString", f"{_SS}.1.1.23", STR, Index.BOX),
    ("cpqSsChassisIndex", f"{_SS}.2.1.1.1", INT, Index.CHASSIS),
    ("cpqSsChassisName", f"{_SS}.2.1.1.4", STR, Index.CHASSIS),
    ("cpqSsChassisTime", f"{_SS}.2.1.1.18", INT, Index.CHASSIS),
    ("cpqSsChassisRsoStatus", f"{_SS}.2.1.1.22", INT, Index.CHASSIS),
)


@dataclass(frozen=True)
class Trap:
    """One TRAP-TYPE of a Compaq MIB: its name, specific number and VARIABLES."""

    name: str
    number: int
    mib: str
    variables: tuple[str, ...]
    status: str = ""  # the variable that carries the new state ("" when none)

    @property
    def oid(self) -> str:
        return f"{ENTERPRISE}.0.{self.number}"


_HEAD = ("sysName", "cpqHoTrapFlags")
_ACCEL = (*_HEAD, "cpqDaCntlrHwLocation", "cpqDaCntlrModel", "cpqDaAccelCntlrIndex", "cpqDaAccelSerialNumber",
          "cpqDaAccelTotalMemory")
_BOX = (*_HEAD, "cpqSsBoxCntlrHwLocation", "cpqSsBoxCntlrIndex", "cpqSsBoxBusIndex", "cpqSsBoxVendor",
        "cpqSsBoxModel", "cpqSsBoxSerialNumber")
CNTLR = Trap("cpqDa6CntlrStatusChange", 3033, "CPQIDA-MIB",
             (*_HEAD, "cpqDaCntlrHwLocation", "cpqDaCntlrIndex", "cpqDaCntlrBoardStatus", "cpqDaCntlrModel",
              "cpqDaCntlrSerialNumber", "cpqDaCntlrFWRev", "cpqDaAccelTotalMemory"), "cpqDaCntlrBoardStatus")
LOGICAL = Trap("cpqDa6LogDrvStatusChange", 3034, "CPQIDA-MIB",
               (*_HEAD, "cpqDaCntlrHwLocation", "cpqDaLogDrvCntlrIndex", "cpqDaLogDrvIndex", "cpqDaLogDrvStatus"),
               "cpqDaLogDrvStatus")
SPARE = Trap("cpqDa6SpareStatusChange", 3035, "CPQIDA-MIB",
             (*_HEAD, "cpqDaCntlrHwLocation", "cpqDaSpareCntlrIndex", "cpqDaSparePhyDrvIndex", "cpqDaSpareStatus",
              "cpqDaSpareBusNumber", "cpqDaSpareBay"), "cpqDaSpareStatus")
PHYSICAL = Trap("cpqDa6PhyDrvStatusChange", 3036, "CPQIDA-MIB",
                (*_HEAD, "cpqDaCntlrHwLocation", "cpqDaPhyDrvCntlrIndex", "cpqDaPhyDrvIndex", "cpqDaPhyDrvBusNumber",
                 "cpqDaPhyDrvBay", "cpqDaPhyDrvModel", "cpqDaPhyDrvFWRev", "cpqDaPhyDrvSerialNum",
                 "cpqDaPhyDrvFailureCode", "cpqDaPhyDrvStatus"), "cpqDaPhyDrvStatus")
ACCEL = Trap("cpqDa6AccelStatusChange", 3038, "CPQIDA-MIB", (*_ACCEL, "cpqDaAccelStatus", "cpqDaAccelErrCode"),
             "cpqDaAccelStatus")
ACCEL_BAD_DATA = Trap("cpqDa6AccelBadDataTrap", 3039, "CPQIDA-MIB", _ACCEL)
ACCEL_BATTERY = Trap("cpqDa6AccelBatteryFailed", 3040, "CPQIDA-MIB", _ACCEL)
RSO = Trap("cpqSsExRecoveryServerStatusChange", 8025, "CPQSTSYS-MIB",
           (*_HEAD, "cpqSsChassisName", "cpqSsChassisTime", "cpqSsChassisRsoStatus", "cpqSsChassisIndex"),
           "cpqSsChassisRsoStatus")
FAN = Trap("cpqSs6FanStatusChange", 8029, "CPQSTSYS-MIB", (*_BOX, "cpqSsBoxFanStatus", "cpqSsBoxLocationString"),
           "cpqSsBoxFanStatus")
TEMPERATURE = Trap("cpqSs6TempStatusChange", 8030, "CPQSTSYS-MIB",
                   (*_BOX, "cpqSsBoxTempStatus", "cpqSsBoxLocationString"), "cpqSsBoxTempStatus")
POWER = Trap("cpqSs6PwrSupplyStatusChange", 8031, "CPQSTSYS-MIB",
             (*_BOX, "cpqSsBoxFltTolPwrSupplyStatus", "cpqSsBoxLocationString"), "cpqSsBoxFltTolPwrSupplyStatus")
TRAPS = (CNTLR, LOGICAL, SPARE, PHYSICAL, ACCEL, ACCEL_BAD_DATA, ACCEL_BATTERY, RSO, FAN, TEMPERATURE, POWER)


class Condition(IntEnum):
    """cpqHoTrapFlags bits 2-4: the condition the trap reports."""

    UNKNOWN = 1
    OK = 2
    DEGRADED = 3
    FAILED = 4

    @property
    def flags(self) -> int:
        return self.value << 2  # bit 0: agent type server (0), bit 1: static address (0)


class From(StrEnum):
    """Where a state value comes from when the row does not fix it."""

    UNIT = "unit"  # the logical drive's state at the event (UNIT_STATES)
    RSO = "rso"  # the Recovery Server Option's state at the event (rso_status below)
    SEVERITY = "severity"  # the event's own severity (ok / degraded / failed)


# the MIBs' values
PHY_OK, PHY_FAILED, PHY_PREDICTIVE = 2, 3, 4  # cpqDaPhyDrvStatus
LOG_OK, LOG_FAILED, LOG_RECOVERING, LOG_REBUILDING, LOG_EXPANDING = 2, 3, 5, 7, 12  # cpqDaLogDrvStatus
SPARE_INVALID, SPARE_INACTIVE, SPARE_BUILDING, SPARE_ACTIVE = 2, 4, 5, 6  # cpqDaSpareStatus
ACCEL_ENABLED, ACCEL_TMP_DISABLED = 3, 4  # cpqDaAccelStatus
BOARD_OK, BOARD_POWERED_OFF = 2, 5  # cpqDaCntlrBoardStatus
BOX_FAN_OK, BOX_FAN_FAILED = 2, 3  # cpqSsBoxFanStatus
BOX_OK, BOX_DEGRADED, BOX_FAILED = 2, 3, 4  # cpqSsBoxTempStatus, cpqSsBoxFltTolPwrSupplyStatus
RSO_NOT_CONFIGURED, RSO_DISABLED, RSO_OK, RSO_NO_SECONDARY, RSO_LINK_DOWN = 3, 4, 6, 8, 10  # cpqSsChassisRsoStatus
RSO_SECONDARY_AUTO, RSO_SECONDARY_USER, RSO_TIMEOUT_ERROR = 12, 13, 14
UNIT_STATES = {"ok": LOG_OK, "interim recovery": LOG_RECOVERING, "rebuilding": LOG_REBUILDING,
               "expanding": LOG_EXPANDING, "failed": LOG_FAILED}  # firmware UnitState -> cpqDaLogDrvStatus
BY_SEVERITY = {Severity.INFO.value: (BOX_OK, Condition.OK), Severity.WARNING.value: (BOX_DEGRADED, Condition.DEGRADED),
               Severity.CRITICAL.value: (BOX_FAILED, Condition.FAILED)}
#: RFC 5424 severities: 2 critical, 4 warning, 6 informational
SYSLOG_SEVERITY = {Severity.CRITICAL.value: 2, Severity.WARNING.value: 4, Severity.INFO.value: 6}


@dataclass(frozen=True)
class Route:
    """What one event code becomes: its trap (or none), the state value the trap carries, and the
    condition in cpqHoTrapFlags (both fixed, or read at the event from `source`)."""

    code: EventCode
    trap: Trap | None
    status: int | None = None
    source: From | None = None

    @property
    def severity(self) -> str:
        return CODES[self.code][0].value

    @property
    def syslog(self) -> int:
        """The syslog severity of the code's default severity (an event told at another uses that one's)."""
        return SYSLOG_SEVERITY[self.severity]


def _routes(*rows: tuple[EventCode, Trap | None, int | From | None]) -> dict[EventCode, Route]:
    out: dict[EventCode, Route] = {}
    for code, trap, value in rows:
        assert code not in out, code
        out[code] = Route(code, trap, value if isinstance(value, int) else None,
                          value if isinstance(value, From) else None)
    return out


E = EventCode
TABLE: dict[EventCode, Route] = _routes(
    (E.CONTROLLER_STARTED, CNTLR, BOARD_OK),
    (E.CONFIG_CREATED, None, None), (E.CONFIG_RESTORED, None, None), (E.CONFIG_CHANGED, None, None),
    (E.DRIVE_FAILED, PHYSICAL, PHY_FAILED),
    (E.DRIVE_PULLED, PHYSICAL, PHY_FAILED),  # the MIB has no "missing": a pulled drive reads failed
    (E.DRIVE_INSERTED, PHYSICAL, PHY_OK),
    (E.DRIVE_MOVED, None, None), (E.DRIVE_MEDIA_ERROR, None, None),
    (E.BLOCKS_LOST, None, None), (E.BLOCKS_HEALED, None, None), (E.DRIVE_LATENCY, None, None),
    (E.DRIVE_PREDICTIVE_FAILURE, PHYSICAL, PHY_PREDICTIVE),
    (E.DRIVE_FAULTS_CLEARED, PHYSICAL, PHY_OK),
    (E.SPARE_ADDED, SPARE, SPARE_INACTIVE), (E.SPARE_REMOVED, SPARE, SPARE_INVALID),
    (E.SPARE_ACTIVATED, SPARE, SPARE_BUILDING), (E.SPARE_RELEASED, SPARE, SPARE_INACTIVE),
    # rebuilds and expansions are told per array; the UNIT_STATUS events beside them carry each
    # logical drive's new status (cpqDa6LogDrvStatusChange), so they have no trap of their own
    (E.REBUILD_STARTED, None, None),
    (E.COPY_BACK_STARTED, None, None), (E.COPY_BACK_DONE, None, None), (E.COPY_BACK_ABORTED, None, None),
    (E.REBUILD_PROGRESS, None, None),
    (E.REBUILD_DONE, None, None), (E.REBUILD_ABORTED, None, None),
    (E.REBUILD_PRIORITY, None, None),
    (E.UNIT_CREATED, None, None), (E.UNIT_DELETED, None, None),
    (E.UNIT_STATUS, LOGICAL, From.UNIT), (E.UNIT_FAILED, LOGICAL, LOG_FAILED),
    (E.UNIT_EXTENDED, None, None),
    (E.EXPAND_STARTED, None, None), (E.EXPAND_PROGRESS, None, None),
    (E.EXPAND_DONE, None, None), (E.EXPAND_ABORTED, None, None),
    (E.PSU_FAILED, POWER, BOX_DEGRADED),  # one of two supplies: no fault tolerance left
    (E.PSU_RESTORED, POWER, BOX_OK),
    (E.FAN_FAILED, FAN, BOX_FAN_FAILED), (E.FAN_RESTORED, FAN, BOX_FAN_OK),
    (E.TEMPERATURE, TEMPERATURE, From.SEVERITY),
    (E.CACHE_REPLAYED, None, None), (E.WRITES_RECOVERED, None, None),
    (E.CACHE_DATA_LOST, ACCEL_BAD_DATA, None),
    (E.CACHE_WRITE_BACK, ACCEL, ACCEL_ENABLED), (E.CACHE_WRITE_THROUGH, ACCEL, ACCEL_TMP_DISABLED),
    (E.CACHE_SETTINGS, None, None),
    (E.STORAGE_FULL, None, None), (E.STORAGE_AVAILABLE, None, None),
    (E.BATTERY_FAILED, ACCEL_BATTERY, None), (E.BATTERY_REMOVED, ACCEL_BATTERY, None),
    (E.BATTERY_LOW, None, None), (E.BATTERY_RESTORED, None, None), (E.BATTERY_CHARGED, None, None),
    (E.SHELF_POWER_OFF, CNTLR, BOARD_POWERED_OFF), (E.SHELF_POWER_ON, CNTLR, BOARD_OK),
    (E.PORT_FAULT, None, None), (E.PORT_FAULT_CLEARED, None, None), (E.SESSION_FAULT, None, None),
    (E.INJECTION_FIRED, None, None),  # injected by a test: syslog and webhooks only, no trap
    (E.SNAPSHOT_SAVED, None, None), (E.SNAPSHOT_RESTORED, None, None), (E.SHELF_RESET, None, None),
    *((code, RSO, From.RSO) for code in EventCode if code.value.startswith("RSO_")),
    *((code, None, None) for code in EventCode if code.value.startswith("HOST_")),  # the hosts' own agents tell
)

def route_of(code: str) -> Route:
    """The code's row; a code the table does not know yet (a new one) goes to syslog and webhooks only."""
    try:
        return TABLE[EventCode(code)]
    except (ValueError, KeyError):
        return Route(EventCode.CONFIG_CHANGED, None)  # no trap; its severity: the alert's own


_CONDITION_OF = {  # a state value -> the condition in cpqHoTrapFlags, per status variable
    "cpqDaPhyDrvStatus": {PHY_OK: Condition.OK, PHY_PREDICTIVE: Condition.DEGRADED, PHY_FAILED: Condition.FAILED},
    "cpqDaLogDrvStatus": {LOG_OK: Condition.OK, LOG_FAILED: Condition.FAILED, LOG_EXPANDING: Condition.OK},
    "cpqDaSpareStatus": {SPARE_INACTIVE: Condition.OK, SPARE_ACTIVE: Condition.DEGRADED,
                         SPARE_BUILDING: Condition.DEGRADED, SPARE_INVALID: Condition.UNKNOWN},
    "cpqDaAccelStatus": {ACCEL_ENABLED: Condition.OK, ACCEL_TMP_DISABLED: Condition.DEGRADED},
    "cpqDaCntlrBoardStatus": {BOARD_OK: Condition.OK, BOARD_POWERED_OFF: Condition.FAILED},
    "cpqSsBoxFanStatus": {BOX_FAN_OK: Condition.OK, BOX_FAN_FAILED: Condition.FAILED},
    "cpqSsBoxFltTolPwrSupplyStatus": {BOX_OK: Condition.OK, BOX_DEGRADED: Condition.DEGRADED},
    "cpqSsChassisRsoStatus": {RSO_OK: Condition.OK, RSO_DISABLED: Condition.OK, RSO_NOT_CONFIGURED: Condition.OK},
}


def rso_status(st: dict[str, Any]) -> int:
    """cpqSsChassisRsoStatus of the controller's RSO view (Controller.rso_status())."""
    if not st.get("enabled"):
        return RSO_DISABLED if st.get("configured") else RSO_NOT_CONFIGURED
    if st.get("failed_over"):
        return RSO_SECONDARY_AUTO if st["failed_over"] == "auto" else RSO_SECONDARY_USER
    if st.get("take_over"):
        return RSO_TIMEOUT_ERROR
    if "down" in dict(st.get("links") or {}).values():
        return RSO_LINK_DOWN
    if not st.get("secondary_joined"):
        return RSO_NO_SECONDARY
    return RSO_OK


# ------------------------------------------------------------------------------ one notice
@dataclass(frozen=True)
class Notice:
    """An alert with what the event says about where (bay, LUN, array) and the facts its trap
    needs, read from the shelf when the event happened (the sinks send it later)."""

    alert: Alert
    event_id: int | None = None
    bay: int | None = None
    lun: int | None = None
    array: str | None = None
    shelf_serial: str = ""
    firmware: str = ""
    drive_serial: str = ""
    cache_mb: int = 0
    uptime_s: float = 0.0
    status: int | None = None  # the state value when the route reads it at the event (From)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> Route:
        return route_of(self.alert.code)

    @property
    def sys_name(self) -> str:
        return f"{MODEL} {self.shelf_serial}".strip()

    def to_dict(self) -> dict[str, Any]:
        """The webhook's JSON body: the alert, where, and the trap it maps to."""
        trap = self.route.trap
        return {**self.alert.to_dict(), "event_id": self.event_id, "bay": self.bay, "lun": self.lun,
                "array": self.array, "shelf": self.shelf_serial, "syslog_severity": syslog_severity(self),
                "snmp_trap": trap.name if trap else None, "snmp_trap_oid": trap.oid if trap else None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def syslog_severity(notice: Notice) -> int:
    """The event's own severity wins over the code's default (TEMPERATURE, UNIT_STATUS vary)."""
    return SYSLOG_SEVERITY.get(notice.alert.severity, notice.route.syslog)


def state_value(notice: Notice) -> tuple[int | None, Condition]:
    """The trap's state value and condition for this notice."""
    route = notice.route
    if route.source is From.SEVERITY:
        return BY_SEVERITY.get(notice.alert.severity, (BOX_OK, Condition.UNKNOWN))
    value = route.status if route.source is None else notice.status
    if route.trap is None or not route.trap.status:
        return value, Condition.FAILED if notice.alert.severity == Severity.CRITICAL.value else Condition.DEGRADED
    if value is None:
        return 1, Condition.UNKNOWN  # other(1): nothing known
    default = Condition.DEGRADED if notice.alert.severity != Severity.INFO.value else Condition.OK
    return value, _CONDITION_OF.get(route.trap.status, {}).get(value, default)


def _instance(obj: MibObject, notice: Notice) -> str:
    suffix = {Index.SCALAR: "0", Index.CONTROLLER: f"{CONTROLLER_INDEX}",
              Index.LOGICAL: f"{CONTROLLER_INDEX}.{notice.lun or 0}",
              Index.PHYSICAL: f"{CONTROLLER_INDEX}.{notice.bay or 0}",
              Index.BOX: f"{CONTROLLER_INDEX}.{BOX_BUS}", Index.CHASSIS: f"{CHASSIS_INDEX}"}[obj.index]
    return f"{obj.oid}.{suffix}"


def varbinds(notice: Notice) -> list[tuple[str, Syntax, int | str]]:
    """The trap's varbinds after sysUpTime and snmpTrapOID: (OID, syntax, value), in the MIB's order,
    then snmpTrapEnterprise.0 (RFC 3584). Empty when the code has no trap."""
    trap = notice.route.trap
    if trap is None:
        return []
    status, cond = state_value(notice)
    location = f"{MODEL} {notice.shelf_serial}".strip()
    values: dict[str, int | str] = {
        "sysName": notice.sys_name, "cpqHoTrapFlags": cond.flags,
        "cpqDaCntlrHwLocation": location, "cpqDaCntlrIndex": CONTROLLER_INDEX, "cpqDaCntlrModel": 1,  # other(1)
        "cpqDaCntlrFWRev": notice.firmware, "cpqDaCntlrSerialNumber": notice.shelf_serial,
        "cpqDaAccelCntlrIndex": CONTROLLER_INDEX, "cpqDaAccelErrCode": 1, "cpqDaAccelSerialNumber": notice.shelf_serial,
        "cpqDaAccelTotalMemory": notice.cache_mb * 1024,  # KiB, as the MIB counts
        "cpqDaLogDrvCntlrIndex": CONTROLLER_INDEX, "cpqDaLogDrvIndex": notice.lun or 0,
        "cpqDaSpareCntlrIndex": CONTROLLER_INDEX, "cpqDaSparePhyDrvIndex": notice.bay or 0,
        "cpqDaSpareBusNumber": 0, "cpqDaSpareBay": notice.bay or 0,
        "cpqDaPhyDrvCntlrIndex": CONTROLLER_INDEX, "cpqDaPhyDrvIndex": notice.bay or 0, "cpqDaPhyDrvBusNumber": 0,
        "cpqDaPhyDrvBay": notice.bay or 0, "cpqDaPhyDrvModel": "", "cpqDaPhyDrvFWRev": "",
        "cpqDaPhyDrvSerialNum": notice.drive_serial, "cpqDaPhyDrvFailureCode": 0,
        "cpqSsBoxCntlrHwLocation": location, "cpqSsBoxCntlrIndex": CONTROLLER_INDEX, "cpqSsBoxBusIndex": BOX_BUS,
        "cpqSsBoxVendor": "HP", "cpqSsBoxModel": MODEL, "cpqSsBoxSerialNumber": notice.shelf_serial,
        "cpqSsBoxLocationString": location,
        "cpqSsChassisIndex": CHASSIS_INDEX, "cpqSsChassisName": location,
        "cpqSsChassisTime": int(notice.uptime_s * 10),  # tenths of seconds
    }
    if trap.status:
        values[trap.status] = status if status is not None else 1
    out = [(_instance(OBJECTS[name], notice), OBJECTS[name].syntax, values[name]) for name in trap.variables]
    return out


def trap_oid(notice: Notice) -> str | None:
    trap = notice.route.trap
    return trap.oid if trap else None
