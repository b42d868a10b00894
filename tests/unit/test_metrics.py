"""/metrics without a network: the firmware's plain counters, the histogram's bucket math, and the
collector's families on a Controller built in-process (parsed back with prometheus-client's parser)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from firmware_model.controller import Controller
from firmware_model.scsi.catalog import COMMANDS
from firmware_model.scsi.stats import LATENCY_BUCKETS_S, UNKNOWN, VENDOR, LunStats, op_name
from firmware_model.scsi.types import Nexus, ScsiRequest, Status
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.management.metrics import DRIVE_STATES, ShelfCollector, registry_for
from tests.unit.iscsi_harness import connect
from tests.unit.shelf_helpers import HOST, Clocked, execute, run_idle

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def rw16(op: int, lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", op, 0, lba, blocks, 0, 0)


@pytest.fixture
def env() -> Clocked:
    return Clocked()


@pytest.fixture
def c(env: Clocked, tmp_path: Path) -> Iterator[Controller]:
    ctl = env.open(tmp_path)
    yield ctl
    ctl.close()


def scrape(c: Controller, node: TargetNode | None = None) -> Samples:
    text = generate_latest(registry_for(ShelfCollector(lambda: c, lambda: node))).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def has(samples: Samples, name: str, **labels: str) -> bool:
    return (name, frozenset(labels.items())) in samples


# ------------------------------------------------------------------ counters on the data path
def test_bytes_and_commands_move_with_io_through_execute(c: Controller) -> None:
    execute(c, 1, bytes(6))  # takes the power-on unit attention first
    before = scrape(c)
    payload = bytes(range(256)) * 32  # 8 KiB: 16 blocks
    assert execute(c, 1, rw16(0x8A, 100, 16), payload).status == Status.GOOD
    assert execute(c, 1, rw16(0x88, 100, 16)).data == payload
    assert execute(c, 1, rw16(0x88, 100, 4)).status == Status.GOOD
    after = scrape(c)
    assert value(after, "msa500_lun_write_bytes_total", lun="1") - value(before, "msa500_lun_write_bytes_total",
                                                                          lun="1") == 8192
    assert value(after, "msa500_lun_read_bytes_total", lun="1") - value(before, "msa500_lun_read_bytes_total",
                                                                         lun="1") == 8192 + 2048
    assert value(after, "msa500_lun_commands_total", lun="1", op="READ(16)") == 2
    assert value(after, "msa500_lun_commands_total", lun="1", op="WRITE(16)") == 1
    ports = value(after, "msa500_port_commands_total", port="1") - value(before, "msa500_port_commands_total", port="1")
    assert ports == 3 and value(after, "msa500_port_commands_total", port="2") == 0
    assert value(after, "msa500_lun_read_bytes_total", lun="2") == 0  # the other unit saw nothing


def test_a_refused_command_counts_as_a_command_but_moves_no_bytes(c: Controller) -> None:
    execute(c, 1, bytes(6))
    blocks = c.units()[0]["blocks"]
    res = execute(c, 1, rw16(0x8A, blocks, 1), bytes(512))  # LBA out of range
    assert res.status == Status.CHECK_CONDITION
    s = c.target.stats.luns[1]
    assert s.write_bytes == 0 and s.commands["WRITE(16)"] == 1


def test_a_lun_with_nothing_behind_it_counts_on_the_port_only(c: Controller) -> None:
    c.target.execute(ScsiRequest(Nexus(HOST.initiator, 2), 77, bytes(6)))
    assert 77 not in c.target.stats.luns and c.target.stats.port_commands[2] == 1
    assert not any(lun == "77" for (_, labels) in scrape(c) for k, lun in labels if k == "lun")


def test_op_labels_are_bounded_by_the_catalog(c: Controller) -> None:
    execute(c, 1, bytes(6))
    for op in range(256):  # every opcode once, with a zeroed CDB: the label set stays small
        c.target.execute(ScsiRequest(HOST, 1, bytes([op]) + bytes(15)))
    names = {row.name for row in COMMANDS} | {VENDOR, UNKNOWN}
    assert set(c.target.stats.luns[1].commands) <= names
    assert op_name(bytes([0x9E, 0x10]) + bytes(14)) == "READ CAPACITY(16)"  # by service action
    assert op_name(bytes([0xA3, 0x0A]) + bytes(10)) == "REPORT TARGET PORT GROUPS"
    assert op_name(bytes([0x9E, 0x1F]) + bytes(14)) == UNKNOWN
    assert op_name(bytes([0xC5]) + bytes(9)) == VENDOR and op_name(b"") == UNKNOWN


def test_deleting_a_unit_drops_its_series(c: Controller) -> None:
    execute(c, 2, rw16(0x88, 0, 1))
    assert has(scrape(c), "msa500_lun_read_bytes_total", lun="2")
    c.delete_unit(2)
    assert not has(scrape(c), "msa500_lun_read_bytes_total", lun="2")


# ------------------------------------------------------------------ the histogram
def test_bucket_bounds_are_inclusive_and_cumulative() -> None:
    s = LunStats()
    ns = [round(b * 1e9) for b in LATENCY_BUCKETS_S]
    s.observe(ns[0])  # exactly on the first bound: counted in it (le is "less or equal")
    s.observe(ns[0] + 1)  # just above: the next bucket
    s.observe(ns[3] - 1)
    s.observe(ns[-1] * 100)  # beyond the last bound: +Inf only
    s.observe(0)
    cum = s.cumulative()
    assert len(cum) == len(LATENCY_BUCKETS_S) + 1
    assert cum[0] == 2 and cum[1] == 3 and cum[2] == 3 and cum[3] == 4
    assert cum[-2] == 4 and cum[-1] == 5
    assert all(a <= b for a, b in pairwise(cum))
    assert s.latency_sum_ns == ns[0] + ns[0] + 1 + ns[3] - 1 + ns[-1] * 100


def test_latency_is_observed_per_command_over_iscsi(c: Controller) -> None:
    """Through the sans-I/O connection: one observation per command, writes with R2Ts included."""
    node = TargetNode(NodeConfig(target_name=c.identity.target_name), c.target, [PortalInfo(1, "127.0.0.1", 3260)])
    ini, _ = connect(node)
    ini.login(c.identity.target_name)
    ini.clear_unit_attentions(1)
    before = scrape(c, node)
    assert value(before, "msa500_port_sessions", port="1") == 1
    assert value(before, "msa500_port_sessions", port="2") == 0
    ini.write(1, 0, bytes(512 * 512))  # 256 KiB: beyond the first burst, so R2T-solicited data
    ini.read(1, 0, 512)
    ini.read(1, 0, 1)
    after = scrape(c, node)
    count = "msa500_lun_command_seconds_count"
    assert value(after, count, lun="1") - value(before, count, lun="1") == 3
    assert value(after, "msa500_lun_command_seconds_bucket", lun="1", le="+Inf") == value(after, count, lun="1")
    assert value(after, "msa500_lun_command_seconds_sum", lun="1") > value(before, "msa500_lun_command_seconds_sum",
                                                                          lun="1")
    assert value(after, "msa500_lun_write_bytes_total", lun="1") == 512 * 512
    ini.logout()


# ------------------------------------------------------------------ the shelf's state
def test_drive_unit_battery_rso_and_power_states(c: Controller, env: Clocked) -> None:
    s = scrape(c)
    for bay in range(1, 15):  # one series per state, exactly one of them 1
        assert sum(value(s, "msa500_drive_state", bay=str(bay), state=st) for st in DRIVE_STATES) == 1
    assert value(s, "msa500_drive_state", bay="1", state="ok") == 1
    assert value(s, "msa500_drive_state", bay="7", state="spare") == 1
    assert value(s, "msa500_unit_state", lun="1", state="ok") == 1
    assert value(s, "msa500_battery_state", state="ok") + value(s, "msa500_battery_state", state="charging") == 1
    assert value(s, "msa500_rso_state", state="notConfigured") == 1
    assert not has(s, "msa500_rso_heartbeat_age_seconds")  # no heartbeat yet
    assert value(s, "msa500_shelf_powered") == 1
    c.fault_disk(1, "fail")
    s = scrape(c)
    assert value(s, "msa500_drive_state", bay="1", state="failed") == 1
    assert value(s, "msa500_drive_state", bay="1", state="ok") == 0
    assert value(s, "msa500_unit_state", lun="1", state="ok") == 0
    assert 0 <= value(s, "msa500_unit_rebuild_progress_ratio", lun="1") < 1  # onto spare 7
    run_idle(c, env.clock)
    s = scrape(c)
    assert value(s, "msa500_unit_state", lun="1", state="ok") == 1
    assert not has(s, "msa500_unit_rebuild_progress_ratio", lun="1")
    c.fault_battery("fail")
    assert value(scrape(c), "msa500_battery_state", state="failed") == 1
    c.power_off()
    assert value(scrape(c), "msa500_shelf_powered") == 0


def test_cache_counters_follow_the_accelerator(c: Controller) -> None:
    execute(c, 1, bytes(6))
    execute(c, 1, rw16(0x8A, 0, 8), bytes(4096))
    s = scrape(c)
    assert value(s, "msa500_cache_dirty_bytes") == c.cache.dirty_bytes > 0
    assert value(s, "msa500_cache_write_back") == 1
    execute(c, 1, rw16(0x88, 0, 8))  # the data is in the cache: a hit
    s = scrape(c)
    assert value(s, "msa500_cache_read_hit_bytes_total") == value(s, "msa500_cache_read_bytes_total") == 4096
    assert value(s, "msa500_cache_read_hit_ratio") == 1
    c.flush()
    s = scrape(c)
    assert value(s, "msa500_cache_dirty_bytes") == 0 and value(s, "msa500_cache_destaged_bytes_total") >= 4096


def test_each_emulator_has_its_own_registry(env: Clocked, tmp_path: Path) -> None:
    a, b = env.open(tmp_path / "a"), env.open(tmp_path / "b")
    try:
        execute(a, 1, rw16(0x88, 0, 2))
        assert value(scrape(a), "msa500_lun_read_bytes_total", lun="1") == 1024
        assert value(scrape(b), "msa500_lun_read_bytes_total", lun="1") == 0
        assert b"msa500_" not in generate_latest(REGISTRY)  # the process-wide registry stays clean
    finally:
        a.close()
        b.close()


def test_a_stopped_emulator_scrapes_as_unpowered() -> None:
    text = generate_latest(registry_for(ShelfCollector(lambda: None))).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["msa500_shelf_powered"].samples[0].value == 0
