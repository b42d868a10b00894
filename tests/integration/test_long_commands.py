"""Long commands run in steps (firmware_model/scsi/stepped.py, msa500_emu/iscsi/stepping.py), over
iSCSI against a real emulator process: another session is served while a 32 MiB WRITE SAME runs;
the writer's own next command still waits for it (its session's order holds); a PREEMPT AND ABORT
that lands mid-command ends it there and nothing more is written after the fence; ABORT TASK ends
it; SYNCHRONIZE CACHE after megabytes of cached writes leaves every byte on the drive images."""

from __future__ import annotations

import hashlib
import select
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msa500_emu.iscsi.constants import Op
from msa500_emu.iscsi.initiator import Initiator
from msa500_emu.iscsi.pdu import Pdu
from msa500_emu.testing.launch import RunningArray

from ..conftest import start_array
from .test_aptpl_iscsi import prout

pytestmark = pytest.mark.slow

WS_BLOCKS = 0x10000  # 32 MiB: the unit's MAXIMUM WRITE SAME LENGTH
PATTERN = bytes(range(256)) * 2
SHELF = ('[shelf]\ndrive_size = "1GiB"\n[[shelf.arrays]]\nname = "A"\nbays = [1, 2, 3, 4]\n'
         '[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "5"\nsize = "256MiB"\n')


@pytest.fixture(scope="module")
def arr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningArray]:
    d: Path = tmp_path_factory.mktemp("long")
    (d / "shelf.toml").write_text(SHELF)
    running = start_array(d / "state", d / "shelf.toml")
    yield running
    assert running.stop() == 0, running.log_tail()


def send_ws(ini: Initiator, lba: int, blocks: int = WS_BLOCKS) -> int:
    """WRITE SAME(16) sent without waiting for its answer; its ITT."""
    itt = next(ini.itt)
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD
    bhs[1] = 0x80 | 0x20 | 0x01  # F, W, simple
    bhs[9] = 1  # LUN 1
    struct.pack_into(">IIII", bhs, 16, itt, len(PATTERN), ini._next_cmd_sn(False), ini.exp_stat_sn)
    bhs[32:48] = struct.pack(">BBQIBB", 0x93, 0, lba, blocks, 0, 0)
    ini.send_pdu(bhs, PATTERN)
    return itt


def response(ini: Initiator, timeout: float = 60) -> Pdu:
    ini.sock.settimeout(timeout)
    while True:
        pdu = ini.recv_pdu()
        if pdu.opcode == Op.SCSI_RSP:
            return pdu


def answered(ini: Initiator) -> bool:
    return bool(select.select([ini.sock], [], [], 0)[0])


def digest(ini: Initiator, lba: int, blocks: int) -> str:
    h = hashlib.sha256()
    for o in range(0, blocks, 2048):
        h.update(ini.read(1, lba + o, min(2048, blocks - o)))
    return h.hexdigest()


def dirty_bytes(tree: object) -> list[int]:
    """Every "dirty_bytes" figure in SHOW GLOBALS' answer (the cache's)."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == "dirty_bytes"] + [x for v in tree.values() for x in dirty_bytes(v)]
    if isinstance(tree, list):
        return [x for v in tree for x in dirty_bytes(v)]
    return []


def test_another_session_is_served_while_a_write_same_runs(arr: RunningArray) -> None:
    a, b = arr.initiator(1, "iqn.2026-12.test:ws-a"), arr.initiator(2, "iqn.2026-12.test:ws-b")
    served_meanwhile = 0
    send_ws(a, 0)
    time.sleep(0.02)  # it has begun (a 32 MiB WRITE SAME on RAID 5 takes about 0.1 s here)
    for _ in range(10_000):  # bounded: a 32 MiB WRITE SAME is a few hundred 4 KiB reads long here
        b.read(1, 400_000, 8)
        if answered(a):
            break
        served_meanwhile += 1
    rsp = response(a)
    assert rsp.bhs[3] == 0, "WRITE SAME failed"
    assert served_meanwhile > 0, "the other session's reads waited for the whole WRITE SAME"
    assert digest(b, 0, WS_BLOCKS) == hashlib.sha256(PATTERN * WS_BLOCKS).hexdigest()


def test_the_writers_next_command_waits_for_it(arr: RunningArray) -> None:
    """CmdSN order within the session: a READ sent right behind the WRITE SAME sees all of it."""
    a = arr.initiator(1, "iqn.2026-12.test:order")
    send_ws(a, WS_BLOCKS)
    itt = next(a.itt)
    bhs = bytearray(48)
    bhs[0] = Op.SCSI_CMD
    bhs[1] = 0x80 | 0x40 | 0x01
    bhs[9] = 1
    last = 2 * WS_BLOCKS - 8
    struct.pack_into(">IIII", bhs, 16, itt, 4096, a._next_cmd_sn(False), a.exp_stat_sn)
    bhs[32:48] = struct.pack(">BBQIBB", 0x88, 0, last, 8, 0, 0)
    a.send_pdu(bhs)
    order: list[str] = []
    data = b""
    a.sock.settimeout(60)
    while len(order) < 2:
        pdu = a.recv_pdu()
        if pdu.opcode == Op.DATA_IN:
            data += bytes(pdu.data)
            if pdu.flags & 0x01:
                order.append("read")
        elif pdu.opcode == Op.SCSI_RSP:
            order.append("write same" if pdu.itt != itt else "read")
    assert order == ["write same", "read"]
    assert data == PATTERN * 8


def test_a_preempt_mid_write_same_ends_it_and_nothing_is_written_after(arr: RunningArray) -> None:
    a, b = arr.initiator(1, "iqn.2026-12.test:fence-a"), arr.initiator(2, "iqn.2026-12.test:fence-b")
    start = 2 * WS_BLOCKS
    assert prout(a, 0, 0, 0xA) == 0 and prout(b, 0, 0, 0xB) == 0  # REGISTER
    assert prout(a, 1, 0xA, pr_type=5) == 0  # RESERVE, WRITE EXCLUSIVE - REGISTRANTS ONLY
    send_ws(a, start)
    time.sleep(0.02)  # the WRITE SAME has begun
    assert prout(b, 5, 0xB, 0xA, pr_type=5) == 0  # PREEMPT AND ABORT: A is fenced
    fenced = digest(b, start, WS_BLOCKS)
    status = response(a).bhs[3]
    time.sleep(0.3)
    assert digest(b, start, WS_BLOCKS) == fenced, "blocks changed after the fence"
    if status == 0:  # it ended before the preempt: all of it is there
        assert fenced == hashlib.sha256(PATTERN * WS_BLOCKS).hexdigest()
    else:
        assert status == 0x18, f"status {status:#x}"  # RESERVATION CONFLICT at the step after the fence
    assert prout(b, 0, 0xB, 0) == 0  # unregister: the next test starts clean


def test_abort_task_ends_a_write_same_and_the_session_goes_on(arr: RunningArray) -> None:
    a = arr.initiator(1, "iqn.2026-12.test:abort")
    itt = send_ws(a, 3 * WS_BLOCKS)
    time.sleep(0.01)
    result = a.task_mgmt(1, lun=1, rtt=itt, ref_cmd_sn=a.cmd_sn - 1)  # ABORT TASK
    assert result in (0, 1), result  # done, or it had finished already ("task does not exist")
    assert a.read(1, 0, 8) == PATTERN * 8  # the session takes commands again


def test_synchronize_cache_puts_cached_writes_on_the_drives(arr: RunningArray) -> None:
    a = arr.initiator(1, "iqn.2026-12.test:sync")
    blob = (bytes(range(251)) * 4200)[: 1 << 20]
    base = 4 * WS_BLOCKS
    for i in range(16):
        a.write(1, base + i * 2048, blob)
    r = a.scsi(1, bytes([0x35]) + bytes(9))
    assert r.status == 0
    assert dirty_bytes(arr.describe()) == [0], "SYNCHRONIZE CACHE left unwritten data in the cache"
    assert a.read(1, base + 15 * 2048, 2048) == blob


def test_a_snapshot_restore_mid_write_same_ends_it_with_a_reset_unit_attention(arr: RunningArray) -> None:
    """A controller reset (RESTORE reopens the controller) ends the command in progress: its answer is
    the reset's unit attention (or GOOD if it ended first), the session goes on, the data is the snapshot's."""
    a = arr.initiator(1, "iqn.2026-12.test:restore")
    start = 5 * WS_BLOCKS
    before = digest(a, start, WS_BLOCKS)
    arr.ctl("SNAPSHOT", "SAVE", "mid")
    a.clear_unit_attentions(1)
    send_ws(a, start)
    time.sleep(0.02)
    arr.ctl("SNAPSHOT", "RESTORE", "mid")
    rsp = response(a)
    if rsp.bhs[3] != 0:
        sense = bytes(rsp.data[2:])
        assert rsp.bhs[3] == 0x02 and sense[2] & 0x0F == 0x06 and sense[12] == 0x29, sense.hex()
    a.clear_unit_attentions(1)
    assert digest(a, start, WS_BLOCKS) == before  # the snapshot's data, none of the WRITE SAME's
    arr.ctl("SNAPSHOT", "DELETE", "mid")
