"""The plain renderings: one size unit (binary, written), aligned columns, no Python reprs, ms times."""

from __future__ import annotations

import datetime as dt
import re

from msa500_emu.lab.cli import status_text
from msa500_emu.management import render

REPR = re.compile(r"\{'|\['|\bNone\b|\bTrue\b|\bFalse\b")
GIB = 1 << 30


def test_sizes_are_binary_with_the_unit_written() -> None:
    assert render.size(36 * GIB) == "36 GiB"
    assert render.size(4 * GIB + GIB // 2) == "4.5 GiB"
    assert render.size(128 << 20) == "128 MiB"
    assert render.size(64 << 10) == "64 KiB"
    assert render.size(512) == "512 B" and render.size(0) == "0 B"
    assert render.size(3 << 40) == "3 TiB"
    assert render.size(None) == "-" and render.size("x") == "-" and render.size(True) == "-"
    assert render.rate(3 << 20) == "3 MiB/s"


def test_values_read_as_words() -> None:
    assert render.value(None) == "-" and render.value(True) == "yes" and render.value(False) == "no"
    assert render.value({"1": "up", "2": None}) == "1: up, 2: -"
    assert render.value(["A", "B"]) == "A, B" and render.value(0.25) == "0.25" and render.value(2.0) == "2"
    assert render.disk_list([3, 4, 5, 6, 9]) == "DISK3-DISK6,DISK9"
    assert render.disk_list([1, None, 2]) == "DISK1,(missing),DISK2"
    assert render.disk_list([]) == "-"


def test_tables_align_every_column() -> None:
    lines = render.table(["A", "Long header", "N"], [["x", "y", "1"], ["longer cell", "", "100"]], right=[2])
    assert lines[0].index("Long header") == lines[1].index("y") == lines[2].index("  ") + 2
    assert lines[1].endswith("  1") and lines[2].endswith("100")


UNIT = {"lun": 2, "name": "data", "array": "B", "raid": "5", "stripe_kib": 64, "size_bytes": 16 * GIB,
        "state": "rebuilding", "rebuild_percent": 40, "expand_percent": None, "fault_tolerance": 0,
        "bays": [3, 4, 5, 7], "spares": [7]}


def test_units_table_shows_lost_blocks_only_when_known_and_says_power_off() -> None:
    text = render.units_text([UNIT])
    assert "Lost blocks" not in text
    head, row = text.splitlines()
    assert row.split() == ["2", "data", "B", "RAID", "5", "64", "KiB", "16", "GiB", "REBUILDING", "40%", "0",
                           "failure(s)", "DISK3-DISK5,DISK7", "DISK7"]
    assert head.index("State") == row.index("REBUILDING")
    text = render.units_text([{**UNIT, "lost_blocks": 12, "powered": False}])
    lines = text.splitlines()
    assert lines[0] == render.POWER_OFF_NOTE
    assert lines[2][lines[1].index("Lost blocks"):].split()[0] == "12"
    assert "POWERED OFF, REBUILDING 40%" in lines[2]
    assert render.units_text([]) == "No units configured."


def test_disks_write_media_errors_and_latency_as_words() -> None:
    disks = [{"bay": 8, "state": "ok", "size_bytes": 36 * GIB, "serial": "S8", "role": "unassigned", "array": None,
              "media_errors": [{"lba": 4096, "count": 64}, {"lba": 10, "count": 1}], "latency_ms": 200.0,
              "rebuild_percent": None},
             {"bay": 11, "state": "empty"}]
    text = render.disks_text(disks)
    assert not REPR.search(text), text
    row8, row11 = text.splitlines()[1:]
    assert "media errors at LBA 4096+64, LBA 10+1; latency 200 ms" in row8 and "36 GiB" in row8
    assert row11.split()[:3] == ["DISK11", "-", "EMPTY"]


def test_a_failed_or_missing_battery_has_no_charge() -> None:
    assert render.battery_text({"state": "ok", "charge_percent": 100.0, "holdup_seconds": 345600}) == \
        "OK, charge 100%, hold-up 96 h"
    assert render.battery_text({"state": "failed", "charge_percent": None, "holdup_seconds": 0}) == \
        "FAILED, charge unknown, hold-up 0 s"
    assert render.battery_text({"state": "missing", "charge_percent": None, "holdup_seconds": 0}) == \
        "MISSING, no battery installed, hold-up 0 s"


def test_globals_say_the_shelf_is_off_and_align_values() -> None:
    g = {"product": "MSA500", "serial": "S1", "powered": False, "cache_bytes": 128 << 20,
         "battery": {"state": "failed", "charge_percent": None, "holdup_seconds": 0.0}}
    lines = render.globals_text(g).splitlines()
    assert lines[0] == "Global Parameters:"
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines[1:]}) == 1  # one value column
    text = "\n".join(lines)
    assert re.search(r"Shelf Power:\s+OFF", text) and "128 MiB" in text and "charge unknown" in text


def test_event_times_to_the_millisecond() -> None:
    t = dt.datetime(2026, 12, 1, 10, 41, 21, 497000).timestamp()
    text = render.events_text([{"id": 7, "time": t, "severity": "warning", "code": "UNIT_STATUS", "message": "m"},
                               {"id": 12, "time": t, "severity": "info", "code": "DRIVE_PREDICTIVE_FAILURE",
                                "message": "n"}])
    head, first, second = text.splitlines()
    assert "2026-12-01 10:41:21.497" in first
    assert first.index("m") == second.index("n") == head.index("Message")
    sized = render.events_text([{"id": 1, "time": t, "severity": "info", "code": "DRIVE_INSERTED",
                                 "message": "new drive (38654705664 bytes) inserted; 0 bytes held"}])
    assert "new drive (36 GiB) inserted; 0 B held" in sized


def test_rso_status_has_no_reprs() -> None:
    text = render.rso_text({"state": "ok", "enabled": True, "timeout_s": 5.0, "fenced_port": None,
                            "heartbeat_age_s": 0.25, "links": {"1": "up", "2": "down"}, "detection_ms": None})
    assert not REPR.search(text), text
    assert re.search(r"Heartbeat Links:\s+port 1: up, port 2: down", text)
    assert re.search(r"Last Heartbeat:\s+0.25 s ago", text) and re.search(r"Heartbeat Timeout:\s+5 s", text)


def test_lab_status_prints_lines_not_dicts() -> None:
    out = {"lab_dir": "/lab", "api": "http://127.0.0.1:8500", "service": "127.0.0.1:5555", "service_on": "primary",
           "supervisor": True, "service_answer": "PONG primary-primary 3",
           "vms": {"primary": {"running": True, "pid": 42, "boot": 1, "console": "/lab/p.log",
                               "admin": "127.0.0.1:7001"},
                   "recovery": {"running": False, "pid": None, "boot": 0, "console": "", "admin": "127.0.0.1:0"}},
           "rso": {"state": "ok", "active_port": 1, "fenced_port": None, "heartbeat_age_s": 0.4, "ack_age_s": None,
                   "timeout_s": 5.0, "failovers": 0, "detection_ms": None}}
    text = status_text(out)
    assert not REPR.search(text), text
    lines = text.splitlines()
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in lines}) == 1  # one value column
    assert any(line.startswith("primary VM:") and "running, pid 42" in line for line in lines)
    assert any(line.startswith("RSO:") and "last heartbeat 0.4 s ago" in line and "fenced port -" in line
               for line in lines)
    assert "RSO:" in status_text({"rso": "the array does not answer", "vms": {}})
