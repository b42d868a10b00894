"""Random and mutated PDUs: the protocol layer answers with a reject or a clean close, never raises."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msa500_emu.iscsi.constants import Op
from msa500_emu.iscsi.pdu import PduReader, encode

from .iscsi_harness import TARGET, connect, make_node

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(conn) -> None:  # type: ignore[no-untyped-def]
    assert conn.close_reason != "internal error"
    out = b"".join(bytes(c) for c in conn.take_output())
    reader = PduReader()
    reader.header_digest, reader.data_digest = conn.hd, conn.dd
    reader.feed(out)
    while (pdu := reader.next_pdu()) is not None:  # everything we sent is well-framed
        assert pdu.opcode in {int(o) for o in Op}


@FUZZ
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_before_login(data: bytes) -> None:
    node = make_node()
    _, conn = connect(node)
    conn.receive(data)
    _check(conn)
    assert not node.sessions


def _valid_pdus(itt: int, cmd_sn: int, stat_sn: int) -> list[bytes]:
    pdus = []
    for op, flags, cdb, data in [
        (Op.SCSI_CMD, 0xC1, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), b""),
        (Op.SCSI_CMD, 0xA1, bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), bytes(512)),
        (Op.NOP_OUT, 0x80, b"", b"ping"),
        (Op.TEXT_REQ, 0x80, b"", b"SendTargets=All\0"),
        (Op.TASK_MGMT_REQ, 0x81, b"", b""),
        (Op.DATA_OUT, 0x80, b"", bytes(512)),
        (Op.LOGOUT_REQ, 0x80, b"", b""),
    ]:
        bhs = bytearray(48)
        bhs[0], bhs[1] = op, flags
        bhs[9] = 1
        struct.pack_into(">IIII", bhs, 16, itt, 512 if op == Op.SCSI_CMD else 0xFFFFFFFF, cmd_sn, stat_sn)
        bhs[32 : 32 + len(cdb)] = cdb
        pdus.append(b"".join(bytes(c) for c in encode(bhs, data)))
    return pdus


@FUZZ
@given(
    which=st.integers(0, 6),
    flips=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 255)), min_size=1, max_size=6),
    tail=st.binary(max_size=64),
)
def test_mutated_pdus_in_full_feature_phase(which: int, flips: list[tuple[int, int]], tail: bytes) -> None:
    node = make_node()
    ini, conn = connect(node)
    ini.login(TARGET)
    raw = bytearray(_valid_pdus(0x1000, ini.cmd_sn, ini.exp_stat_sn)[which])
    for pos, mask in flips:
        if pos < len(raw):
            raw[pos] ^= mask
    conn.receive(bytes(raw) + tail)
    _check(conn)
    if not conn.close_after_flush and conn.reader.buffered == 0:  # the session still works
        assert conn.session is not None
        ini.cmd_sn = conn.session.exp_cmd_sn
        r = ini.scsi(1, bytes(6))
        assert r.status in (0, 2)


@FUZZ
@given(st.lists(st.binary(min_size=48, max_size=120), min_size=1, max_size=5))
def test_random_pdus_after_login(chunks: list[bytes]) -> None:
    node = make_node()
    ini, conn = connect(node)
    ini.login(TARGET)
    for chunk in chunks:
        b = bytearray(chunk)
        b[5:8] = bytes(3)  # no data segment: keep the framing honest so each chunk is one PDU
        b[4] = 0
        conn.receive(bytes(b[:48]))
        _check(conn)
        if conn.close_after_flush:
            break
