"""What a hostile initiator cannot do to the sans-I/O target (issue 10, item 7).

A command's data-out is refused beyond the unit's maximum transfer length and buffered only
as it arrives; the CmdSN window bounds the tasks a session holds; R2Ts stay within a write
budget; a connection whose output backs up takes no new PDU; a flood of bad PDUs is logged
once plus a count. Byte and PDU counts only, no wall clock.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import tracemalloc
from pathlib import Path

import pytest

from firmware_model.cache import CACHE_FILE, CacheError, CacheSettings, WriteCache
from firmware_model.clock import VirtualClock
from firmware_model.enclosure import Drive
from firmware_model.nvram_check import NvramError, check_nvram
from firmware_model.scsi.target import ScsiTarget
from firmware_model.scsi.types import Status
from msa500_emu.iscsi import connection as connection_mod
from msa500_emu.iscsi import data_out as data_out_mod
from msa500_emu.iscsi.connection import Connection
from msa500_emu.iscsi.constants import RESERVED_TAG, Op
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.iscsi.pdu import Pdu
from msa500_emu.statelock import StateDirBusy, StateDirLock

from .iscsi_harness import TARGET, Clock, FakeDisk, connect, make_node, replies
from .shelf_helpers import MIB, Clocked, codes, small_spec
from .shelf_helpers import read as ctl_read
from .shelf_helpers import write as ctl_write
from .test_scsi_target import make_target


def firmware_node(window: int = 128) -> tuple[TargetNode, ScsiTarget]:
    """A node over the real SCSI target (LUN 0 controller, LUN 1 a 2 MiB logical drive)."""
    scsi = make_target()
    cfg = NodeConfig(target_name=TARGET, cmd_window=window, nop_interval=5, nop_timeout=15)
    return TargetNode(cfg, scsi, [PortalInfo(1, "127.0.0.1", 3260)]), scsi


def logged_in(node: TargetNode, config: InitiatorConfig | None = None,
              clock: Clock | None = None) -> tuple[Initiator, Connection]:
    ini, conn = connect(node, config=config, clock=clock)
    ini.login(TARGET)
    for _ in range(4):  # the power-on / new-nexus unit attentions
        if ini.test_unit_ready(1).status == Status.GOOD:
            break
    return ini, conn


def scsi_cmd(ini: Initiator, itt: int, cdb: bytes, edtl: int, *, write: bool, immediate: bool = False,
             final: bool = True, lun: int = 1) -> bytes:
    """One SCSI Command PDU (no data), CmdSN taken from the initiator unless immediate."""
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD | (0x40 if immediate else 0)
    bhs[1] = (0x80 if final else 0) | (0x20 if write else 0x40) | 0x01
    bhs[8:16] = bytes([0, lun]) + bytes(6)
    sn = ini.cmd_sn
    if not immediate:
        ini.cmd_sn = (ini.cmd_sn + 1) & 0xFFFFFFFF
    struct.pack_into(">IIII", bhs, 16, itt, edtl, sn, ini.exp_stat_sn)
    bhs[32:48] = cdb.ljust(16, b"\0")
    return bytes(bhs)


def write16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, 0, lba, blocks, 0, 0)


def read16(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBQIBB", 0x88, 0, lba, blocks, 0, 0)


def data_out(itt: int, ttt: int, offset: int, data: bytes, datasn: int = 0, final: bool = True) -> bytes:
    bhs = bytearray(48)
    bhs[0] = Op.DATA_OUT
    bhs[1] = 0x80 if final else 0
    n = len(data)
    bhs[5:8] = n.to_bytes(3, "big")
    struct.pack_into(">II", bhs, 16, itt, ttt)
    struct.pack_into(">II", bhs, 36, datasn, offset)
    return bytes(bhs) + data + b"\0" * (-n % 4)


def sense_of(pdu: Pdu) -> tuple[int, int, int]:
    n = struct.unpack_from(">H", pdu.data)[0]
    s = bytes(pdu.data[2 : 2 + n])
    return s[2] & 0xF, s[12], s[13]


# ------------------------------------------------------------------------- data-out limits
def test_block_unit_reports_its_limit_and_the_target_refuses_beyond_it() -> None:
    scsi = make_target()
    unit = scsi.luns[1]
    assert unit.max_data_out == 0x10000 * 512  # MAXIMUM TRANSFER LENGTH of the Block Limits page
    vpd = scsi.luns[1].vpd_pages()[0xB0](None)  # type: ignore[operator]
    assert struct.unpack_from(">I", vpd, 4)[0] * 512 == unit.max_data_out
    from firmware_model.scsi.types import ScsiRequest

    from .test_scsi_target import A
    ok = ScsiRequest(A, 1, write16(0, 0x10000), b"", unit.max_data_out)
    assert scsi.check_data_out(ok) is None
    res = scsi.check_data_out(ScsiRequest(A, 1, write16(0, 8), b"", 0xFFFFFFFF))
    assert res is not None and res.status == Status.CHECK_CONDITION
    assert (res.sense[2] & 0xF, res.sense[12], res.sense[13]) == (0x5, 0x24, 0x00)
    res = scsi.check_data_out(ScsiRequest(A, 7, write16(0, 8), b"", 0xFFFFFFFF))  # no such LUN
    assert res is not None and (res.sense[2] & 0xF, res.sense[12]) == (0x5, 0x25)


def test_huge_edtl_write_is_refused_at_once_without_buffering() -> None:
    node, _ = firmware_node()
    ini, conn = logged_in(node)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2):
            conn.receive(scsi_cmd(ini, 0x100 + i, write16(0, 0xFFFFFFFF), 0xFFFFFFFF, write=True, final=False))
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert grown < 1 * MIB
    got = replies(conn)
    assert [p.opcode for p in got] == [Op.SCSI_RSP, Op.SCSI_RSP]  # no R2T was sent
    for p in got:
        assert p.bhs[3] == Status.CHECK_CONDITION and sense_of(p) == (0x5, 0x24, 0x00)
        assert p.flags & 0x02 and p.u32(44) == 0xFFFFFFFF  # underflow: nothing was taken
    assert conn.tasks == {}
    # Unsolicited data the initiator still sends for the refused command is dropped quietly.
    conn.receive(data_out(0x100, RESERVED_TAG, 0, bytes(4096), final=False))
    assert replies(conn) == [] and not conn.close_after_flush
    assert ini.test_unit_ready(1).status == Status.GOOD


def test_write_buffer_grows_with_the_data_not_with_edtl() -> None:
    node = make_node(FakeDisk(blocks=0x10000))
    ini, conn = logged_in(node, InitiatorConfig(initial_r2t="Yes", immediate_data="No", max_burst=MIB))
    edtl = 32 * MIB
    conn.receive(scsi_cmd(ini, 0x10, write16(0, edtl // 512), edtl, write=True))
    r2ts = [p for p in replies(conn) if p.opcode == Op.R2T]
    assert len(r2ts) == 1
    ttt, (offset, length) = r2ts[0].u32(20), struct.unpack_from(">II", r2ts[0].bhs, 40)
    assert (offset, length) == (0, MIB)
    task = conn.tasks[0x10]
    assert len(task.buf) == 0
    conn.receive(data_out(0x10, ttt, 0, b"\x5a" * 8192, final=False))
    assert len(task.buf) == 8192  # what arrived, not the 32 MiB the command announced


# --------------------------------------------------------------- tasks and the CmdSN window
def test_window_bounds_the_tasks_a_session_holds() -> None:
    window = 8
    disk = FakeDisk()
    node = make_node(disk)
    node.config.cmd_window = window
    ini, conn = logged_in(node, InitiatorConfig(initial_r2t="Yes", immediate_data="No"))
    s = conn.session
    assert s is not None
    start_max = s.max_cmd_sn
    for i in range(3 * window):  # data never follows: each one would wait for ever
        conn.receive(scsi_cmd(ini, 0x200 + i, write16(i, 8), 4096, write=True))
    assert len(conn.tasks) == window  # the rest were beyond MaxCmdSN: silently ignored
    assert s.max_cmd_sn == start_max  # the window did not open while the tasks wait
    got = replies(conn)
    assert all(p.u32(32) == start_max for p in got if p.opcode == Op.R2T)
    # An immediate command is not bound by CmdSN, but the task set is full.
    conn.receive(scsi_cmd(ini, 0x300, write16(0, 8), 4096, write=True, immediate=True))
    full = [p for p in replies(conn) if p.opcode == Op.SCSI_RSP]
    assert [p.bhs[3] for p in full] == [Status.TASK_SET_FULL]
    # Finish one task: one slot opens.
    first = next(iter(conn.tasks.values()))
    ttt = next(iter(first.outstanding))
    conn.receive(data_out(first.itt, ttt, 0, bytes(4096)))
    done = [p for p in replies(conn) if p.opcode == Op.SCSI_RSP]
    assert len(done) == 1 and done[0].bhs[3] == Status.GOOD
    assert s.max_cmd_sn == (start_max + 1) & 0xFFFFFFFF


def test_r2ts_stay_within_the_write_budget_and_the_oldest_task_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_out_mod, "WRITE_BUDGET", 2 * MIB)
    disk = FakeDisk(blocks=8 * 4096)
    node = make_node(disk)
    ini, conn = logged_in(node, InitiatorConfig(initial_r2t="Yes", immediate_data="No", max_burst=MIB))
    n = 6
    edtl = 2 * MIB
    for i in range(n):
        conn.receive(scsi_cmd(ini, 0x400 + i, write16(i * 4096, 4096), edtl, write=True))
    pending = [p for p in replies(conn) if p.opcode == Op.R2T]
    solicited = sum(struct.unpack_from(">I", p.bhs, 44)[0] for p in pending)
    assert solicited <= 2 * MIB + MIB  # the budget, plus the oldest task's own burst
    assert len(pending) < n  # some commands wait for their first R2T
    # Answer every R2T as an initiator would: all commands complete, in order, with their data.
    completed = 0
    seg = 256 * 1024  # the target's MaxRecvDataSegmentLength
    for _round in range(200):
        for p in pending:
            itt, ttt = p.itt, p.u32(20)
            offset, length = struct.unpack_from(">II", p.bhs, 40)
            for k, pos in enumerate(range(offset, offset + length, seg)):
                last = pos + seg >= offset + length
                conn.receive(data_out(itt, ttt, pos, bytes([itt & 0xFF]) * seg, datasn=k, final=last))
        got = replies(conn)
        completed += sum(1 for p in got if p.opcode == Op.SCSI_RSP and p.bhs[3] == Status.GOOD)
        pending = [p for p in got if p.opcode == Op.R2T]
        live = sum(len(t.buf) for t in conn.tasks.values())
        assert live <= 2 * MIB + edtl
        if completed == n:
            break
    assert completed == n and conn.tasks == {}
    for i in range(n):
        assert disk.data[i * 4096 * 512 : i * 4096 * 512 + edtl] == bytes([(0x400 + i) & 0xFF]) * edtl


# ---------------------------------------------------------------------- output back-pressure
def test_no_new_command_is_taken_while_the_output_is_backed_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_mod, "OUTPUT_HIGH_WATER", 2 * MIB)
    disk = FakeDisk(blocks=4096)
    ini, conn = logged_in(make_node(disk))
    blocks = 2048  # 1 MiB each
    burst = b"".join(scsi_cmd(ini, 0x500 + i, read16(0, blocks), blocks * 512, write=False) for i in range(20))
    before = len(disk.seen)
    conn.receive(burst)
    assert len(disk.seen) - before == 2  # then the output held 2 MiB: the rest waits unparsed
    assert conn.input_held and conn.reader.buffered == 18 * 48
    taken = 0
    for _ in range(40):  # the shell writes the output out, then pumps on
        taken += sum(len(c) for c in conn.take_output())
        if not conn.input_held:
            break
        conn.pump()
    taken += sum(len(c) for c in conn.take_output())
    assert len(disk.seen) - before == 20 and not conn.input_held
    assert taken >= 20 * blocks * 512
    # While the shell's transport is paused, nothing is taken at all.
    conn.paused = True
    conn.receive(scsi_cmd(ini, 0x600, read16(0, 1), 512, write=False))
    assert len(disk.seen) - before == 20 and conn.input_held
    conn.paused = False
    conn.pump()
    assert len(disk.seen) - before == 21


# ----------------------------------------------------------------------- log rate limiting
def test_a_flood_of_rejected_pdus_logs_one_line_and_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    _ini, conn = logged_in(make_node(), clock=clock)
    bad = bytearray(48)
    bad[0] = 0x1C | 0x40  # an opcode nobody defined, immediate
    bad[1] = 0x80
    struct.pack_into(">I", bad, 16, 7)
    caplog.set_level(logging.WARNING, logger="msa500_emu.iscsi")
    for _ in range(1000):
        conn.receive(bytes(bad))
    clock.t += 6.0  # past the summary interval: the next repeat sums up the ones before
    for _ in range(1000):
        conn.receive(bytes(bad))
    rejects = [p for p in replies(conn) if p.opcode == Op.REJECT]
    assert len(rejects) == 2000  # every PDU still gets its answer
    conn.connection_lost()
    lines = [r.getMessage() for r in caplog.records if r.name == "msa500_emu.iscsi" and r.levelno >= logging.WARNING]
    assert lines[0] == "reject (0x05) of opcode 0x1c: unknown opcode 0x1c"
    assert len(lines) == 3, lines
    counts = [int(line.split()[0]) for line in lines[1:]]
    assert sum(counts) == 1999
    assert "more like this from iqn.2026-11.org.msa500-emu:test on port 1" in lines[1]


# ------------------------------------------------------------ the cache on a full file system
class _FullDisk:
    """A volume whose file system is full (every write: ENOSPC) until `space` is set."""

    block_size = 512
    num_blocks = 1 << 16

    def __init__(self) -> None:
        self.space = False
        self.data = bytearray(self.num_blocks * 512)

    def read(self, lba: int, count: int) -> bytes:
        return bytes(self.data[lba * 512 : (lba + count) * 512])

    def write(self, lba: int, data: bytes | bytearray | memoryview) -> None:
        if not self.space:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.data[lba * 512 : lba * 512 + len(data)] = data

    def flush(self) -> None:
        pass


def test_destage_refused_for_want_of_space_keeps_the_data_and_says_so(tmp_path: Path) -> None:
    clock = VirtualClock(0.0)
    cache = WriteCache(tmp_path / CACHE_FILE, 1 * MIB, clock)
    cache.write_back = True
    vol = _FullDisk()
    cache.attach(1, vol)
    told: list[tuple[int, bool]] = []
    cache.on_no_space = lambda lun, exc: told.append((lun, exc is not None))
    for i in range(4):
        cache.write(1, i * 8, bytes([i + 1]) * 4096)
    assert cache.step() == 0 and cache.destage_all() == 0
    assert told == [(1, True)]  # once per episode, not per attempt
    assert cache.dirty_bytes == 4 * 4096 and cache.errors == {}  # not an error: nothing may drop it
    assert "no space" in (cache.stats()["destage_blocked"] or "")
    with pytest.raises(OSError):
        cache.flush(1)  # SYNCHRONIZE CACHE must not report GOOD
    cache.write_back = False
    with pytest.raises(OSError):  # write-through over older unwritten data: refused, not reordered
        cache.write(1, 8, b"\xee" * 4096)
    assert cache.read(1, 8, 8) == b"\x02" * 4096
    cache.close()
    again = WriteCache(tmp_path / CACHE_FILE, 1 * MIB, clock)  # a restart replays it all
    assert again.dirty_bytes == 4 * 4096
    vol.space = True
    again.attach(1, vol)
    again.on_no_space = cache.on_no_space
    again.no_space = {1: OSError(errno.ENOSPC, "full")}  # as the episode stood
    assert again.destage_all() == 4 * 4096
    assert told[-1] == (1, False) and again.stats()["destage_blocked"] is None
    assert vol.read(0, 32) == b"".join(bytes([i + 1]) * 4096 for i in range(4))
    again.close()


def test_cache_file_space_is_reserved_or_start_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock(0.0)
    path = tmp_path / CACHE_FILE
    c = WriteCache(path, 1 * MIB, clock)
    c.close()
    assert os.stat(path).st_blocks * 512 >= os.path.getsize(path)  # no holes left to fault in
    # A sparse file of an older version, on a file system that cannot give it its blocks:
    os.truncate(path, 0)
    WriteCache(path, 1 * MIB, clock).close()
    with open(path, "r+b") as f:
        f.truncate(4096)
        f.truncate(os.path.getsize(path) + 1 * MIB + 8192)

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_room)
    with pytest.raises(CacheError) as exc:
        WriteCache(path, 1 * MIB, clock)
    assert "MiB free" in str(exc.value) and "No space left on device" in str(exc.value)
    with pytest.raises(CacheError):  # a new cache file: refused the same way, nothing left behind
        WriteCache(tmp_path / "other.nvram", 1 * MIB, clock)
    assert not (tmp_path / "other.tmp").exists()


def test_a_full_disk_under_the_controller_gives_an_event_and_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = Clocked()
    spec = small_spec()
    spec.cache = CacheSettings(size_mb=4)
    c = env.open(tmp_path, spec)
    full = [True]
    real_write = Drive.write

    def write(self: Drive, offset: int, data: bytes | bytearray | memoryview) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(self, offset, data)

    monkeypatch.setattr(Drive, "write", write)
    data = bytes(range(256)) * 32
    assert ctl_write(c, 1, 64, data).status == Status.GOOD  # acknowledged from the cache
    env.clock.advance(1.0)
    c.advance(env.clock.now())
    assert codes(c).count("STORAGE_FULL") == 1
    st = c.cache_stats()
    assert st["dirty_bytes"] == len(data) and st["destage_blocked"]
    full[0] = False
    for _ in range(5):
        env.clock.advance(1.5)
        c.advance(env.clock.now())
    assert "STORAGE_AVAILABLE" in codes(c) and "CACHE_DATA_LOST" not in codes(c)
    assert c.cache_stats()["dirty_bytes"] == 0
    assert bytes(ctl_read(c, 1, 64, len(data) // 512).data) == data
    c.close()


# ------------------------------------------------------------------------ NVRAM of a wrong shape
@pytest.mark.parametrize(("key", "value", "said"), [
    ("config.arrays.0.members", [], "config.arrays[0].members is an empty list"),
    ("next_drive", None, "next_drive is null"),
    ("config.lds.0.num_blocks", "many", "config.lds[0].num_blocks is the string 'many'"),
    ("config.lds.0.array", "Z", "config.lds[0].array is the string 'Z'"),
    ("config.arrays.0.home_bays", [1], "config.arrays[0].home_bays has 1 bays for 2 members"),
    ("enclosure.temperature_c", "hot", "enclosure.temperature_c is the string 'hot'"),
    ("battery", [1], "battery is a list"),
    ("rso.timeout_s", "soon", "rso.timeout_s is the string 'soon'"),
    ("config", None, "config is null"),
    ("access.connections.0.port", 3, "access.connections[0].port is the number 3"),
    ("access.connections.0.iqn", None, "access.connections[0].iqn is null"),
    ("access.port_access.2", "some", "access.port_access.2 is the string 'some'"),
    ("access.acl.1", ["db"], "access.acl.1[0] names connection 'db', which does not exist"),
    ("access.acl", [], "access.acl is an empty list"),
])
def test_nvram_of_a_wrong_shape_is_named_key_by_key(key: str, value: object, said: str) -> None:
    doc = {"format": 2, "next_drive": 8, "enclosure": {"psus": ["ok", "ok"], "fans": ["ok", "ok"],
                                                         "temperature_c": 22.0},
           "config": {"serial": "S1", "generation": 3,
                      "arrays": [{"name": "A", "members": ["D1", "D2"], "home_bays": [1, 2],
                                  "member_bytes": 1 << 26}],
                      "lds": [{"lun": 1, "name": "x", "array": "A", "raid": "1", "stripe_kib": 128,
                               "base_offset": 0, "num_blocks": 1024}]},
           "battery": {"charge": 100.0}, "rso": {"timeout_s": 30.0},
           "access": {"connections": [{"name": "web", "iqn": "iqn.2026-12.lab:web", "port": 1}],
                      "port_access": {"1": "connections", "2": "all"}, "acl": {"1": ["web"]}}}
    check_nvram(doc)  # the document as written is fine
    *path, last = key.split(".")
    node: object = doc
    for k in path:
        node = node[int(k)] if isinstance(node, list) else node[k]  # type: ignore[index]
    node[int(last) if isinstance(node, list) else last] = value  # type: ignore[index]
    with pytest.raises(NvramError) as exc:
        check_nvram(doc)
    assert str(exc.value).startswith(said)


# -------------------------------------------------------------------- one emulator per state dir
def test_state_dir_lock_names_the_holder(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(StateDirBusy) as exc:
            StateDirLock(tmp_path).acquire()  # flock locks per open file: a second open conflicts
        assert exc.value.pid == os.getpid() and f"PID {os.getpid()}" in str(exc.value)
    finally:
        first.release()
    second = StateDirLock(tmp_path)
    second.acquire()  # free again once released (or its process ended)
    second.release()
