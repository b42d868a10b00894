"""The alert table and the dispatcher: every event code is mapped once, the traps are the Compaq
MIBs' (well-formed OIDs under 1.3.6.1.4.1.232, the MIB's VARIABLES in order), syslog lines are
RFC 5424, and a full queue or a failing sink never blocks or stops the caller."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from pathlib import Path

import pytest

from firmware_model.events import CODES, EventCode
from msa500_emu.alerting import dispatch, table
from msa500_emu.alerting.settings import AlertSettingsError, StateFile, addresses, apply_runtime, from_table, urls
from msa500_emu.alerting.snmp import default_engine_id
from msa500_emu.alerting.syslog import SyslogSink, format_message
from msa500_emu.alerting.table import OBJECTS, TABLE, TRAPS, Notice
from msa500_emu.alerts import Alert
from msa500_emu.config import ConfigError, Endpoint, load

OID = re.compile(r"^1(\.\d+)+$")
RFC5424 = re.compile(r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]+) "
                     r"(?P<app>[!-~]+) (?P<proc>[!-~]+) (?P<msgid>[!-~]{1,32}) (?P<sd>-|\[.*?[^\\]\]) "
                     r"\ufeff(?P<msg>.*)$", re.S)


def notice(code: EventCode, severity: str | None = None, **kw: object) -> Notice:
    sev = severity or CODES[code][0].value
    return Notice(Alert(code.value, sev, f"{code.value} happened", "array", 1764607000.25), event_id=7,
                  shelf_serial="TESTSHELF1", **kw)  # type: ignore[arg-type]


def test_every_event_code_has_exactly_one_row() -> None:
    assert set(TABLE) == set(EventCode)
    assert all(route.code is code for code, route in TABLE.items())


def test_trap_oids_are_the_mibs_under_the_compaq_enterprise() -> None:
    numbers = [t.number for t in TRAPS]
    assert len(set(numbers)) == len(numbers)
    for trap in TRAPS:
        assert OID.match(trap.oid) and trap.oid == f"1.3.6.1.4.1.232.0.{trap.number}", trap
        assert trap.variables[:2] == ("sysName", "cpqHoTrapFlags"), trap  # every cpqDa6/cpqSs trap starts so
        assert not trap.status or trap.status in trap.variables
        for name in trap.variables:
            obj = OBJECTS[name]
            assert OID.match(obj.oid), obj
            assert name == "sysName" or obj.oid.startswith("1.3.6.1.4.1.232."), obj
    # the numbers the public MIBs give (CPQIDA-MIB, CPQSTSYS-MIB)
    assert {t.name: t.number for t in TRAPS} == {
        "cpqDa6CntlrStatusChange": 3033, "cpqDa6LogDrvStatusChange": 3034, "cpqDa6SpareStatusChange": 3035,
        "cpqDa6PhyDrvStatusChange": 3036, "cpqDa6AccelStatusChange": 3038, "cpqDa6AccelBadDataTrap": 3039,
        "cpqDa6AccelBatteryFailed": 3040, "cpqSsExRecoveryServerStatusChange": 8025, "cpqSs6FanStatusChange": 8029,
        "cpqSs6TempStatusChange": 8030, "cpqSs6PwrSupplyStatusChange": 8031}


def test_the_events_the_issue_names_have_their_traps() -> None:
    assert TABLE[EventCode.DRIVE_FAILED].trap is table.PHYSICAL
    assert TABLE[EventCode.UNIT_STATUS].trap is table.LOGICAL
    assert TABLE[EventCode.SPARE_ACTIVATED].trap is table.SPARE
    assert TABLE[EventCode.BATTERY_FAILED].trap is table.ACCEL_BATTERY
    assert TABLE[EventCode.CACHE_WRITE_THROUGH].trap is table.ACCEL
    assert TABLE[EventCode.FAN_FAILED].trap is table.FAN
    assert TABLE[EventCode.PSU_FAILED].trap is table.POWER
    assert TABLE[EventCode.TEMPERATURE].trap is table.TEMPERATURE
    assert all(TABLE[c].trap is table.RSO for c in EventCode if c.value.startswith("RSO_"))


def test_a_drive_failure_carries_bay_serial_and_failed_status() -> None:
    n = notice(EventCode.DRIVE_FAILED, bay=4, drive_serial="3HX5W2T00004")
    vbs = {oid: value for oid, _syntax, value in table.varbinds(n)}
    assert table.trap_oid(n) == "1.3.6.1.4.1.232.0.3036"
    assert vbs["1.3.6.1.2.1.1.5.0"] == "MSA500 TESTSHELF1"
    assert vbs["1.3.6.1.4.1.232.11.2.11.1.0"] == 4 << 2  # cpqHoTrapFlags: condition failed
    assert vbs["1.3.6.1.4.1.232.3.2.5.1.1.5.1.4"] == 4  # cpqDaPhyDrvBay, instance controller.bay
    assert vbs["1.3.6.1.4.1.232.3.2.5.1.1.6.1.4"] == 3  # cpqDaPhyDrvStatus failed(3)
    assert vbs["1.3.6.1.4.1.232.3.2.5.1.1.51.1.4"] == "3HX5W2T00004"
    assert [oid.rsplit(".", 2)[0] for oid in list(vbs)[3:]] == [
        OBJECTS[name].oid for name in table.PHYSICAL.variables[3:]]


def test_state_values_read_at_the_event_and_by_severity() -> None:
    unit = notice(EventCode.UNIT_STATUS, "warning", lun=2, status=table.LOG_REBUILDING)
    vbs = {oid: v for oid, _s, v in table.varbinds(unit)}
    assert vbs["1.3.6.1.4.1.232.3.2.3.1.1.4.1.2"] == 7 and vbs["1.3.6.1.4.1.232.11.2.11.1.0"] == 3 << 2
    hot = {oid: v for oid, _s, v in table.varbinds(notice(EventCode.TEMPERATURE, "critical"))}
    assert hot["1.3.6.1.4.1.232.8.2.1.1.9.1.0"] == 4  # cpqSsBoxTempStatus failed(4)
    assert table.rso_status({"enabled": True, "failed_over": "user"}) == table.RSO_SECONDARY_USER
    assert table.rso_status({"enabled": True, "failed_over": "auto"}) == table.RSO_SECONDARY_AUTO
    assert table.rso_status({"enabled": True, "secondary_joined": True, "links": {"1": "up", "2": "down"}}) == 10
    assert table.rso_status({"enabled": True, "secondary_joined": True, "links": {"1": "up"}}) == table.RSO_OK
    assert table.rso_status({"enabled": False, "configured": True}) == table.RSO_DISABLED
    assert table.varbinds(notice(EventCode.CONFIG_CHANGED)) == []


def test_syslog_messages_are_rfc5424() -> None:
    raw = format_message(notice(EventCode.DRIVE_FAILED, bay=4, array='A"]x'), hostname="lab host", procid=42)
    m = RFC5424.match(raw.decode())
    assert m, raw
    assert int(m["pri"]) == 16 * 8 + 2 and m["msgid"] == "DRIVE_FAILED" and m["host"] == "labhost"
    assert m["ts"] == "2025-12-01T16:36:40.250Z" and m["proc"] == "42" and m["app"] == "msa500-emu"
    assert m["sd"].startswith("[msa500@232 ") and 'bay="4"' in m["sd"] and r'array="A\"\]x"' in m["sd"]
    assert m["msg"] == "DRIVE_FAILED happened"
    info = RFC5424.match(format_message(notice(EventCode.UNIT_STATUS, "info")).decode())
    assert info and int(info["pri"]) == 16 * 8 + 6  # the event's own severity


def test_syslog_sink_sends_a_datagram_to_the_receiver() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)

    async def go() -> None:
        sink = SyslogSink(Endpoint("127.0.0.1", rx.getsockname()[1]))
        await sink.send(notice(EventCode.FAN_FAILED))
        await sink.close()

    try:
        asyncio.run(go())
        data = rx.recv(4096).decode()
    finally:
        rx.close()
    assert RFC5424.match(data) and " FAN_FAILED " in data


class Slow:
    kind = "webhook"
    name = "slow test sink"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.got: list[str] = []
        self.closed = False

    async def send(self, n: Notice) -> None:
        await self.gate.wait()
        self.got.append(n.alert.code)

    async def close(self) -> None:
        self.closed = True


class Broken(Slow):
    name = "broken test sink"

    async def send(self, n: Notice) -> None:
        raise ConnectionError("receiver down")


def test_a_full_queue_drops_and_counts_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[Slow, dispatch.Counts]:
        d = dispatch.Dispatcher(queue_limit=3)
        slow = Slow()
        d.replace([slow])
        await d.start()
        for _ in range(10):  # the event loop's side: returns at once although nothing is sent
            d.send(notice(EventCode.DRIVE_FAILED, bay=1))
        counts = d.sinks[0][1]
        assert counts.dropped >= 6
        slow.gate.set()
        for _ in range(200):
            if counts.sent + counts.dropped == 10:
                break
            await asyncio.sleep(0.01)
        await d.close()
        return slow, counts

    with caplog.at_level(logging.WARNING, "msa500_emu.alerting"):
        slow, counts = asyncio.run(go())
    assert counts.sent + counts.dropped == 10 and counts.sent == len(slow.got) and slow.closed
    assert sum("dropping new ones" in r.getMessage() for r in caplog.records) == 1


def test_a_failing_sink_is_counted_and_reported_once_and_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[dispatch.Counts, dispatch.Counts]:
        d = dispatch.Dispatcher()
        good, bad = Slow(), Broken()
        good.gate.set()
        d.replace([bad, good])
        await d.start()
        for _ in range(5):
            d.send(notice(EventCode.PSU_FAILED))
        for _ in range(200):
            if d.sinks[0][1].failed == 5 and d.sinks[1][1].sent == 5:
                break
            await asyncio.sleep(0.01)
        out = d.sinks[0][1], d.sinks[1][1]
        await d.close()
        return out

    with caplog.at_level(logging.ERROR, "msa500_emu.alerting"):
        bad, good = asyncio.run(go())
    assert bad.failed == 5 and bad.sent == 0 and bad.last_error == "receiver down"
    assert good.sent == 5 and good.failed == 0
    assert [r.getMessage() for r in caplog.records if "broken test sink" in r.getMessage()] == [
        "alert sink broken test sink failed: receiver down (told again at most once a minute)"]


def test_snmp_sinks_skip_codes_without_a_trap() -> None:
    async def go() -> list[str]:
        d = dispatch.Dispatcher()
        s = Slow()
        s.kind = "snmp"
        s.gate.set()
        d.replace([s])
        await d.start()
        d.send(notice(EventCode.CONFIG_CHANGED))
        d.send(notice(EventCode.DRIVE_FAILED, bay=2))
        for _ in range(100):
            if s.got:
                break
            await asyncio.sleep(0.01)
        await d.close()
        return s.got

    assert asyncio.run(go()) == ["DRIVE_FAILED"]


def test_config_table_and_its_one_line_errors(tmp_path: Path) -> None:
    s = from_table({"snmp": ["127.0.0.1:16162"], "community": "lab", "syslog": ["127.0.0.1:5514"],
                    "webhook": ["http://127.0.0.1:9000/hook"],
                    "snmpv3": {"user": "ops", "auth_key": "authpass1", "priv_key": "privpass1"}})
    assert [str(e) for e in s.snmp] == ["127.0.0.1:16162"] and s.community == "lab" and s.v3 is not None
    assert "authpass1" not in repr(s) and "privpass1" not in repr(s)
    for bad, words in ([{"snmp": ["nohost"]}, "alerts.snmp: 'nohost' is not HOST:PORT"],
                       [{"webhook": ["ftp://x"]}, "not an http:// or https:// URL"],
                       [{"community": "has space"}, "alerts.community"],
                       [{"snmpv3": {"user": "u", "auth_key": "short", "priv_key": "privpass1"}}, "auth_key: 8-255"],
                       [{"traps": []}, "unknown key 'traps'"]):
        with pytest.raises(AlertSettingsError) as err:
            from_table(bad)
        assert words in str(err.value) and "\n" not in str(err.value) and "short" not in str(err.value)
    cfg = tmp_path / "shelf.toml"
    cfg.write_text('[alerts]\nsnmp = ["127.0.0.1:99999"]\n')
    with pytest.raises(ConfigError, match=r"alerts.snmp: port 99999 outside"):
        load(cfg, {"state_dir": str(tmp_path / "st")})
    assert addresses("", "SNMP") == () and urls("", "WEBHOOK") == ()
    changed = apply_runtime(s, {"snmp": "127.0.0.1:1,127.0.0.1:2", "webhook": ""}, "SET ALERTS")
    assert [str(e) for e in changed.snmp] == ["127.0.0.1:1", "127.0.0.1:2"] and changed.webhook == ()
    state = StateFile(tmp_path / "alerts.json")
    state.save(changed.runtime())
    assert (tmp_path / "alerts.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "alerts.json").read_text())["snmp"] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert default_engine_id("TESTSHELF1") == "800000e804" + b"TESTSHELF1".hex()


def test_the_docs_list_the_table_as_it_is() -> None:
    """docs/alerts.md lists every code with its trap: it cannot drift from the table."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    rows = dict(re.findall(r"^\| ([A-Z_]+) \| \w+ \| (none|`\w+` \(\d+\)) \|", docs, re.M))
    assert set(rows) == {c.value for c in EventCode}
    for code, route in TABLE.items():
        want = "none" if route.trap is None else f"`{route.trap.name}` ({route.trap.number})"
        assert rows[code.value] == want, code
