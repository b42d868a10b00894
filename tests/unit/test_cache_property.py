"""Property: whatever the mix of writes, reads, flushes, destage steps and crashes (between
commands or at any store inside one), every acknowledged write reads back after the replay,
and no block ever holds data that was never written."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmware_model.cache import CacheSettings
from firmware_model.controller import Controller
from firmware_model.scsi.types import Status
from tests.unit.shelf_helpers import Clocked, execute, pattern, read, release_opened, small_spec, write
from tests.unit.test_cache import _DyingMap, _Killed

SPAN = 640  # blocks of each logical drive the test uses: lines collide often
LUNS = (1, 2)
HOT = (0, 3, 8, 12, 96, 100)  # LBAs most operations pick, so writes land on lines still dirty
lbas = st.one_of(st.sampled_from(HOT), st.integers(0, SPAN - 1))

ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.sampled_from(LUNS), lbas, st.integers(1, 40),
                  st.booleans()),
        st.tuples(st.just("read"), st.sampled_from(LUNS), lbas, st.integers(1, 64)),
        st.tuples(st.just("sync"), st.sampled_from(LUNS)),
        st.tuples(st.just("step"), st.floats(0.0, 0.2)),
        st.tuples(st.just("crash")),
        st.tuples(st.just("kill"), st.sampled_from(LUNS), lbas, st.integers(1, 24), st.integers(1, 8)),
        st.tuples(st.just("battery"), st.sampled_from(("fail", "restore"))),
        st.tuples(st.just("ratio"), st.sampled_from((0, 25, 50, 75))),
    ),
    min_size=1,
    max_size=40,
)


def _spec() -> Any:
    spec = small_spec()
    spec.cache = CacheSettings(size_mb=1, ratio_read_percent=75, charge_s=1.0)  # 256 lines, ~48 dirty
    return spec


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
@example([("write", 1, 0, 8, False), ("kill", 1, 4, 8, 1)])  # dies copying onto a dirty line
@example([("write", 2, 3, 9, False), ("step", 0.01), ("kill", 2, 0, 24, 5), ("crash",)])
def test_acknowledged_writes_survive_any_crash(script: list[tuple[Any, ...]]) -> None:
    env = Clocked()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp)
        c: Controller = env.open(path, _spec())
        shadow = {lun: bytearray(read(c, lun, 0, SPAN + 64).data) for lun in LUNS}
        seed = 0

        def check_all(ctl: Controller) -> None:
            for lun in LUNS:
                assert read(ctl, lun, 0, SPAN + 64).data == bytes(shadow[lun])

        for op in script:
            seed += 1
            kind = op[0]
            if kind == "write":
                _, lun, lba, n, fua = op
                data = pattern(seed, n * 512)
                cdb = struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, n, 0)
                assert execute(c, lun, cdb, data).status == Status.GOOD
                shadow[lun][lba * 512 : (lba + n) * 512] = data
            elif kind == "read":
                _, lun, lba, n = op
                assert read(c, lun, lba, n).data == bytes(shadow[lun][lba * 512 : (lba + n) * 512])
            elif kind == "sync":
                assert execute(c, op[1], bytes((0x35,)) + bytes(9)).status == Status.GOOD
            elif kind == "step":
                env.clock.advance(op[1])
                c.advance(env.clock.now())
            elif kind == "crash":
                del c
                c = env.open(path, _spec())
                check_all(c)
            elif kind == "kill":
                _, lun, lba, n, at = op
                data = pattern(seed, n * 512)
                old = bytes(shadow[lun][lba * 512 : (lba + n) * 512])
                c.cache._mm = _DyingMap(c.cache._mm, at)  # type: ignore[arg-type, assignment]
                try:
                    write(c, lun, lba, data)
                    c.advance(env.clock.now() + 1)
                    c.cache._mm = c.cache._mm.real  # type: ignore[attr-defined]
                    shadow[lun][lba * 512 : (lba + n) * 512] = data
                    continue  # it finished before store `at`
                except _Killed:
                    pass
                del c
                c = env.open(path, _spec())
                got = read(c, lun, lba, n).data
                for b in range(n):  # the write in flight: old or new per block, nothing else
                    blk = got[b * 512 : (b + 1) * 512]
                    assert blk in (old[b * 512 : (b + 1) * 512], data[b * 512 : (b + 1) * 512])
                shadow[lun][lba * 512 : (lba + n) * 512] = got
                check_all(c)
            elif kind == "battery":
                try:
                    c.fault_battery(op[1])
                except Exception:
                    pass  # restore of a healthy pack, fail of a failed one
            elif kind == "ratio":
                c.set_cache(ratio_read_percent=op[1])
            assert c.cache.dirty_lines <= max(c.cache.max_dirty, 0) or not c.cache.write_back
        del c
        c = env.open(path, _spec())
        check_all(c)
        for lun in LUNS:  # and it is on the drive images, not only in the cache
            view = c.lds[lun].view
            assert view is not None and view.read(0, SPAN + 64) == bytes(shadow[lun])
        c.close()
        release_opened()  # the controllers each crash of this example left open
