"""The sans-I/O iSCSI target: login, negotiation, commands, data transfer, TMF, NOP, logout."""

from __future__ import annotations

import struct

import pytest

from msa500_emu.iscsi.chap import ChapConfig
from msa500_emu.iscsi.constants import LoginStatus, Op, RejectReason, TmfFunction, TmfResponse
from msa500_emu.iscsi.initiator import InitiatorConfig, LoginError
from msa500_emu.iscsi.params import answer
from msa500_emu.iscsi.pdu import PduReader, digest_bytes, encode
from msa500_emu.iscsi.text import parse_text

from .iscsi_harness import TARGET, Clock, FakeDisk, connect, make_node


def test_crc32c_known_answer() -> None:
    # RFC 3720 B.4: 32 bytes of zeros -> CRC aa 36 91 8a (sent little-endian)
    assert digest_bytes(bytes(32)) == bytes.fromhex("aa36918a")
    assert digest_bytes(b"\xff" * 32) == bytes.fromhex("43aba862")


def test_pdu_roundtrip_with_digests_and_padding() -> None:
    bhs = bytearray(48)
    bhs[0] = Op.NOP_OUT
    chunks = encode(bhs, b"abcde", header_digest=True, data_digest=True)
    reader = PduReader()
    reader.header_digest = reader.data_digest = True
    raw = b"".join(bytes(c) for c in chunks)
    reader.feed(raw[:30])
    assert reader.next_pdu() is None
    reader.feed(raw[30:])
    pdu = reader.next_pdu()
    assert pdu is not None and pdu.data == b"abcde" and pdu.data_digest_ok


@pytest.mark.parametrize(
    ("key", "offer", "reply"),
    [
        ("HeaderDigest", "None,CRC32C", "None"),
        ("HeaderDigest", "CRC32C,None", "CRC32C"),
        ("HeaderDigest", "MD5", "Reject"),
        ("MaxBurstLength", "16776192", str(1 << 20)),
        ("FirstBurstLength", "4096", "4096"),
        ("InitialR2T", "No", "No"),
        ("InitialR2T", "Yes", "Yes"),
        ("ImmediateData", "No", "No"),
        ("ErrorRecoveryLevel", "2", "0"),
        ("MaxConnections", "8", "1"),
        ("DefaultTime2Wait", "0", "2"),
        ("X-com.example.Foo", "bar", "NotUnderstood"),
        ("OFMarkInt", "2048~8192", "Irrelevant"),
    ],
)
def test_negotiation_rules(key: str, offer: str, reply: str) -> None:
    assert answer(key, offer)[0] == reply


def test_login_read_write_logout() -> None:
    disk = FakeDisk()
    node = make_node(disk)
    ini, conn = connect(node)
    params = ini.login(TARGET)
    assert params["TargetPortalGroupTag"] == "1"
    assert conn.session is not None and conn.session.tsih == ini.tsih != 0
    data = bytes(range(256)) * 2 * 300  # 300 blocks: immediate + unsolicited + R2T
    ini.write(1, 10, data)
    assert bytes(disk.data[10 * 512 : 310 * 512]) == data
    assert ini.read(1, 10, 300) == data
    assert ini.logout() == 0
    assert disk.lost == [conn.session.nexus] if conn.session else True


@pytest.mark.parametrize("digest", ["CRC32C", "None"])
@pytest.mark.parametrize(("initial_r2t", "immediate"), [("Yes", "No"), ("No", "Yes"), ("Yes", "Yes")])
def test_data_out_paths(digest: str, initial_r2t: str, immediate: str) -> None:
    disk = FakeDisk()
    cfg = InitiatorConfig(header_digest=digest, data_digest=digest, initial_r2t=initial_r2t,
                          immediate_data=immediate, first_burst=8192, max_burst=16384, max_recv_dsl=4096)
    ini, _ = connect(make_node(disk), config=cfg)
    params = ini.login(TARGET)
    assert params["HeaderDigest"] == digest
    data = bytes((i * 7) & 0xFF for i in range(100 * 512))
    ini.write(1, 0, data)
    assert bytes(disk.data[: len(data)]) == data
    assert ini.read(1, 0, 100) == data  # Data-In split at the initiator's 4096-byte limit


def test_residual_underflow_and_overflow() -> None:
    ini, _ = connect(make_node())
    ini.login(TARGET)
    cdb = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 1, 0)
    r = ini.scsi(1, cdb, read_len=1024)
    assert r.status == 0 and r.underflow and r.residual == 512 and len(r.data) == 512
    cdb = struct.pack(">BBIBHB", 0x28, 0, 0, 0, 4, 0)
    r = ini.scsi(1, cdb, read_len=512)
    assert r.status == 0 and r.overflow and r.residual == 1536 and len(r.data) == 512


def test_chap_required_and_mutual() -> None:
    chap = ChapConfig(users={"alice": "secret-123456"}, target_user="msa", target_secret="target-secret-99")
    node = make_node(chap=chap)
    ini, _ = connect(node, config=InitiatorConfig(chap_user="alice", chap_secret="secret-123456",
                                                   mutual_secret="target-secret-99"))
    ini.login(TARGET)
    assert ini.test_unit_ready(1).status == 0
    bad, conn = connect(node, config=InitiatorConfig(chap_user="alice", chap_secret="wrong-secret-00",
                                                      isid=b"\x80\0\0\0\0\x02"))
    with pytest.raises(LoginError) as exc:
        bad.login(TARGET)
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE
    assert conn.close_after_flush
    none, _ = connect(node, config=InitiatorConfig(isid=b"\x80\0\0\0\0\x03"))
    with pytest.raises(LoginError) as exc:
        none.login(TARGET)
    assert exc.value.status == LoginStatus.AUTHENTICATION_FAILURE


def test_login_errors() -> None:
    node = make_node()
    ini, _ = connect(node)
    with pytest.raises(LoginError) as exc:
        ini.login("iqn.2000-01.com.example:nope")
    assert exc.value.status == LoginStatus.NOT_FOUND
    ini, _ = connect(node)
    with pytest.raises(LoginError) as exc:
        ini.login(None)
    assert exc.value.status == LoginStatus.MISSING_PARAMETER


def test_discovery_sendtargets_lists_only_this_portal() -> None:
    node = make_node()
    ini, _ = connect(node, port=2)
    ini.login(None, discovery=True)
    pairs = ini.text([("SendTargets", "All")])
    assert pairs == [("TargetName", TARGET), ("TargetAddress", "127.0.0.1:3261,2")]


def test_session_reinstatement_drops_old_session() -> None:
    disk = FakeDisk()
    node = make_node(disk)
    a, conn_a = connect(node)
    a.login(TARGET)
    b, conn_b = connect(node)
    b.login(TARGET)  # same initiator name and ISID
    assert conn_a.close_after_flush and not conn_b.close_after_flush
    assert len(node.sessions) == 1
    assert b.test_unit_ready(1).status == 0


def test_nop_ping_and_dead_initiator() -> None:
    clock = Clock()
    node = make_node()
    ini, conn = connect(node, clock=clock)
    ini.login(TARGET)
    pong = ini.nop(b"hello")
    assert pong.opcode == Op.NOP_IN and pong.data == b"hello"
    clock.t = 6.0
    conn.on_timer(clock.t)  # the target pings; the initiator answers it
    assert ini.test_unit_ready(1).status == 0
    assert ini.pings_answered == 1
    clock.t = 12.0
    conn.on_timer(clock.t)  # pings again; this time nobody answers
    conn.take_output()
    clock.t = 40.0
    conn.on_timer(clock.t)
    assert conn.close_after_flush and conn.close_reason == "NOP-In timeout"


def test_cmdsn_out_of_order_is_held_and_outside_window_dropped() -> None:
    disk = FakeDisk()
    ini, conn = connect(make_node(disk))
    ini.login(TARGET)
    sn = ini.cmd_sn

    def tur(cmd_sn: int, itt: int) -> bytes:
        bhs = bytearray(48)
        bhs[0], bhs[1] = Op.SCSI_CMD, 0x81
        bhs[9] = 1
        struct.pack_into(">IIII", bhs, 16, itt, 0, cmd_sn, ini.exp_stat_sn)
        return b"".join(bytes(c) for c in encode(bhs))

    conn.receive(tur(sn + 1, 101))
    assert conn.take_output() == []  # waits for sn
    conn.receive(tur(sn + 5000, 102))  # beyond MaxCmdSN: ignored
    conn.receive(tur(sn, 100))
    out = b"".join(bytes(c) for c in conn.take_output())
    itts = [struct.unpack_from(">I", out, off + 16)[0] for off in range(0, len(out), 48)]
    assert itts == [100, 101]


def test_abort_task_waiting_for_data() -> None:
    disk = FakeDisk()
    ini, conn = connect(make_node(disk), config=InitiatorConfig(initial_r2t="Yes", immediate_data="No"))
    ini.login(TARGET)
    bhs = bytearray(48)
    bhs[0], bhs[1] = Op.SCSI_CMD, 0xA1
    bhs[9] = 1
    struct.pack_into(">IIII", bhs, 16, 0x55, 4096, ini.cmd_sn, ini.exp_stat_sn)
    bhs[32:42] = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 8, 0)
    ini.cmd_sn += 1
    ini.send_pdu(bhs)
    r2t = ini.recv_pdu()
    assert r2t.opcode == Op.R2T
    sn = ini.cmd_sn
    assert ini.task_mgmt(TmfFunction.ABORT_TASK, 1, rtt=0x55, ref_cmd_sn=sn - 1) == TmfResponse.COMPLETE
    assert 0x55 not in conn.tasks
    long_done = (sn - 9) & 0xFFFFFFFF  # before the window: completed long ago
    assert ini.task_mgmt(TmfFunction.ABORT_TASK, 1, rtt=0x99, ref_cmd_sn=long_done) == TmfResponse.NO_TASK
    assert ini.task_mgmt(TmfFunction.LOGICAL_UNIT_RESET, 1) == TmfResponse.COMPLETE
    assert ini.task_mgmt(TmfFunction.LOGICAL_UNIT_RESET, 9) == TmfResponse.NO_LUN
    assert disk.resets == [("lun", 1)]
    assert ini.test_unit_ready(1).status == 0


def test_unknown_opcode_is_rejected_and_session_survives() -> None:
    ini, _ = connect(make_node())
    ini.login(TARGET)
    bhs = bytearray(48)
    bhs[0] = 0x1C
    bhs[1] = 0x80
    ini.send_pdu(bhs)
    rej = ini.recv_pdu()
    assert rej.opcode == Op.REJECT and rej.bhs[2] == RejectReason.COMMAND_NOT_SUPPORTED
    assert rej.data[:48] == bytes(bhs)
    assert ini.test_unit_ready(1).status == 0


def test_data_digest_error_on_immediate_data_is_rejected() -> None:
    ini, conn = connect(make_node(), config=InitiatorConfig(header_digest="CRC32C", data_digest="CRC32C"))
    ini.login(TARGET)
    bhs = bytearray(48)
    bhs[0], bhs[1] = Op.SCSI_CMD, 0xA1
    bhs[9] = 1
    struct.pack_into(">IIII", bhs, 16, 7, 512, ini.cmd_sn, ini.exp_stat_sn)
    bhs[32:42] = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0)
    raw = bytearray(b"".join(bytes(c) for c in encode(bhs, bytes(512), header_digest=True, data_digest=True)))
    raw[-1] ^= 0xFF
    conn.receive(bytes(raw))
    rej = ini.recv_pdu()
    assert rej.opcode == Op.REJECT and rej.bhs[2] == RejectReason.DATA_DIGEST_ERROR
    assert not conn.close_after_flush


def test_text_keys_parse() -> None:
    assert parse_text(b"a=b\0c=\0") == [("a", "b"), ("c", "")]


def test_connection_reinstatement_and_max_connections() -> None:
    node = make_node()
    a, conn_a = connect(node)
    a.login(TARGET)
    b, conn_b = connect(node)
    b.tsih, b.cid = a.tsih, 1  # a second connection: MaxConnections is 1
    with pytest.raises(LoginError) as exc:
        b.login(TARGET)
    assert exc.value.status == LoginStatus.TOO_MANY_CONNECTIONS
    c, conn_c = connect(node)
    c.tsih, c.cid = a.tsih, 0  # same CID: the old connection is replaced
    c.login(TARGET)
    assert conn_a.close_after_flush and not conn_c.close_after_flush
    assert c.test_unit_ready(1).status == 0
    d, _ = connect(node)
    d.tsih = 0x7777
    with pytest.raises(LoginError) as exc:
        d.login(TARGET)
    assert exc.value.status == LoginStatus.SESSION_DOES_NOT_EXIST
    del conn_b


def test_injected_latency_holds_the_response_back() -> None:
    clock = Clock()
    node = make_node()
    ini, conn = connect(node, clock=clock)
    ini.login(TARGET)
    node.lun_delay[1] = 0.5
    bhs = bytearray(48)
    bhs[0], bhs[1] = Op.SCSI_CMD, 0x81
    bhs[9] = 1
    struct.pack_into(">IIII", bhs, 16, 9, 0, ini.cmd_sn, ini.exp_stat_sn)
    conn.receive(b"".join(bytes(c) for c in encode(bhs)))
    assert conn.take_output() == [] and conn.next_deadline() == 0.5
    clock.t = 0.5
    conn.on_timer(clock.t)
    rsp = ini.recv_pdu()
    assert rsp.opcode == Op.SCSI_RSP and rsp.itt == 9
    ini.cmd_sn += 1
    node.lun_delay.clear()
    assert ini.test_unit_ready(1).status == 0
