"""Drive the sans-I/O target Connection with the project's initiator, no network."""

from __future__ import annotations

from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from msa500_emu.iscsi.chap import ChapConfig
from msa500_emu.iscsi.connection import Connection
from msa500_emu.iscsi.initiator import Initiator, InitiatorConfig
from msa500_emu.iscsi.node import NodeConfig, PortalInfo, TargetNode
from msa500_emu.iscsi.pdu import Pdu, PduReader

TARGET = "iqn.2003-04.com.hp:msa500.test"


def _sense(asc: int) -> bytes:
    """Fixed-format ILLEGAL REQUEST sense with the given ASC."""
    return bytes([0x70, 0, 5, 0, 0, 0, 0, 10]) + bytes(4) + bytes([asc, 0]) + bytes(4)


class FakeDisk:
    """A tiny firmware stand-in: LUN 0 and LUN 1, READ(10/16)/WRITE(10/16)/TUR."""

    def __init__(self, blocks: int = 2048) -> None:
        self.data = bytearray(blocks * 512)
        self.luns: dict[int, object] = {0: object(), 1: object()}
        self.lost: list[Nexus] = []
        self.resets: list[tuple[str, int]] = []
        self.seen: list[ScsiRequest] = []
        self.max_data_out = 1 << 25  # 65536 blocks, as the firmware's Block Limits page

    def execute(self, req: ScsiRequest) -> ScsiResult:
        self.seen.append(req)
        cdb = req.cdb
        op = cdb[0]
        if req.lun not in self.luns:
            return ScsiResult(Status.CHECK_CONDITION, b"", _sense(0x25))
        if op == 0x00:
            return ScsiResult()
        if op in (0x28, 0x2A):
            lba = int.from_bytes(cdb[2:6], "big")
            n = int.from_bytes(cdb[7:9], "big")
        elif op in (0x88, 0x8A):
            lba = int.from_bytes(cdb[2:10], "big")
            n = int.from_bytes(cdb[10:14], "big")
        else:
            return ScsiResult(Status.CHECK_CONDITION, b"", _sense(0x20))
        if op in (0x28, 0x88):
            return ScsiResult(Status.GOOD, bytes(self.data[lba * 512 : (lba + n) * 512]))
        self.data[lba * 512 : lba * 512 + len(req.data_out)] = req.data_out
        return ScsiResult()

    def check_data_out(self, req: ScsiRequest) -> ScsiResult | None:
        if req.expected_length > self.max_data_out:
            return ScsiResult(Status.CHECK_CONDITION, b"", _sense(0x24))
        return None

    def nexus_loss(self, nexus: Nexus) -> None:
        self.lost.append(nexus)

    def lun_reset(self, lun: int, by: Nexus) -> None:
        self.resets.append(("lun", lun))

    def target_reset(self, cold: bool, by: Nexus) -> None:
        self.resets.append(("cold" if cold else "warm", 0))


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class LoopSocket:
    """A socket whose peer is a sans-I/O Connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False

    def sendall(self, data: bytes) -> None:
        self.conn.receive(data)

    def recv(self, n: int) -> bytes:
        out = b"".join(bytes(c) for c in self.conn.take_output())
        if not out and self.conn.input_held:  # the output had backed up: the shell pumps on
            self.conn.pump()
            out = b"".join(bytes(c) for c in self.conn.take_output())
        if not out and self.conn.close_after_flush:
            return b""
        if not out:
            raise TimeoutError("target sent nothing")
        return out

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.connection_lost()


def make_node(disk: FakeDisk | None = None, chap: ChapConfig | None = None) -> TargetNode:
    cfg = NodeConfig(target_name=TARGET, chap=chap or ChapConfig(), nop_interval=5, nop_timeout=15)
    portals = [PortalInfo(1, "127.0.0.1", 3260), PortalInfo(2, "127.0.0.1", 3261)]
    return TargetNode(cfg, disk or FakeDisk(), portals)


def connect(node: TargetNode, port: int = 1, config: InitiatorConfig | None = None,
            clock: Clock | None = None) -> tuple[Initiator, Connection]:
    conn = Connection(node, node.portals[port], clock or Clock())
    return Initiator(config=config, sock=LoopSocket(conn)), conn


def replies(conn: Connection) -> list[Pdu]:
    """Every PDU the target has written so far."""
    reader = PduReader()
    reader.feed(b"".join(bytes(c) for c in conn.take_output()))
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out
