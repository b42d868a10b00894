"""The iSCSI target node: name, portals, sessions (sans-I/O; shared by all portals)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from firmware_model.scsi.stats import TargetStats
from firmware_model.scsi.stepped import Stepped, Wait
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult

from .chap import ChapConfig, RecentChallenges
from .params import SessionParams

log = logging.getLogger("msa500_emu.iscsi")
SERIAL_HALF = 1 << 31


def sn_lt(a: int, b: int) -> bool:
    """Serial number arithmetic (RFC 1982, 32 bits): a < b."""
    return a != b and ((a < b and b - a < SERIAL_HALF) or (a > b and a - b > SERIAL_HALF))


class ScsiExecutor(Protocol):
    """What the transport needs from the firmware (firmware_model.scsi.target.ScsiTarget)."""

    def execute(self, req: ScsiRequest) -> ScsiResult: ...

    def resume(self, req: ScsiRequest, stepped: Stepped) -> ScsiResult | Wait:
        """The next step of a command whose answer was Stepped (firmware_model/scsi/stepped.py)."""
        ...

    def check_data_out(self, req: ScsiRequest) -> ScsiResult | None:
        """CHECK CONDITION for an expected data-out no unit could take, before any is buffered."""
        ...

    def nexus_loss(self, nexus: Nexus) -> None: ...

    def lun_reset(self, lun: int, by: Nexus) -> None: ...

    def target_reset(self, cold: bool, by: Nexus) -> None: ...

    @property
    def luns(self) -> Mapping[int, object]: ...


class LoginAccess(Protocol):
    """Who may log in on which port (firmware_model.controller.access.Access): a port limited to
    its host connections refuses other initiators' logins and lists them no targets."""

    def may_login(self, initiator_iqn: str, port: int) -> bool: ...


class LoginGate(Protocol):
    """Asked at each login once the initiator's name is known (path faults,
    msa500_emu.iscsi.path_faults): None lets it go on; (None, why) closes the connection without
    an answer; (status, why) refuses it with that login status (an int of LoginStatus)."""

    def __call__(self, initiator: str, isid: bytes, port: int) -> tuple[int | None, str] | None: ...


class SessionConnection(Protocol):
    """What a session and the node need from the connection that carries the session."""

    @property
    def busy(self) -> int:
        """Commands received but not finished (they hold CmdSN window slots)."""
        ...

    def request_close(self, reason: str) -> None:
        """Stop taking PDUs and let the shell close (reinstatement, reset, session end)."""
        ...

    def abort_tasks(self, lun: int | None) -> None:
        """Forget the tasks of `lun` (None: every LUN) waiting for data-out, without a response."""
        ...


@dataclass
class PortalInfo:
    """One controller port presented as an iSCSI portal (its own TPGT)."""

    port: int  # controller port 1 or 2
    host: str
    tcp_port: int

    @property
    def tpgt(self) -> int:
        return self.port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.tcp_port},{self.tpgt}"


@dataclass
class NodeConfig:
    target_name: str
    alias: str = "MSA500"
    chap: ChapConfig = field(default_factory=ChapConfig)
    discovery_chap: ChapConfig = field(default_factory=ChapConfig)
    cmd_window: int = 128
    nop_interval: float = 10.0  # ping an idle initiator after this many seconds
    nop_timeout: float = 30.0  # drop a connection silent for this long after a ping
    login_timeout: float = 15.0  # close a TCP connection that has not completed login by then
    max_connections: int = 1024  # TCP connections per portal; more are closed at accept
    max_connections_per_address: int = 64  # per source IP and portal, not yet logged in


class Session:
    """An iSCSI session (one connection: MaxConnections is 1)."""

    def __init__(
        self, node: TargetNode, initiator: str, isid: bytes, tsih: int, discovery: bool,
        portal: PortalInfo, params: SessionParams,
    ) -> None:
        self.node = node
        self.initiator = initiator
        self.isid = isid
        self.tsih = tsih
        self.discovery = discovery
        self.portal = portal
        self.params = params
        self.nexus = Nexus(f"{initiator},i,0x{isid.hex()}", portal.port)
        self.connection: SessionConnection | None = None
        self.exp_cmd_sn = 0
        self.cid = 0
        self.closed = False
        self._max_cmd_sn: int | None = None  # the highest MaxCmdSN advertised so far

    @property
    def max_cmd_sn(self) -> int:
        """ExpCmdSN + window - 1, less the commands still in progress, never moved back.

        A command leaves the CmdSN window when it is received (ExpCmdSN passes it), but it
        still holds memory while its data-out arrives or its response waits: counting those
        as occupied slots makes `cmd_window` the bound on a session's tasks, not only on the
        commands in flight (RFC 7143 3.2.2.1: the target closes the window by not advancing
        MaxCmdSN; the initiator ignores a MaxCmdSN that goes back).
        """
        conn = self.connection
        busy = conn.busy if conn is not None else 0
        want = (self.exp_cmd_sn + max(0, self.node.config.cmd_window - busy) - 1) & 0xFFFFFFFF
        if self._max_cmd_sn is None or sn_lt(self._max_cmd_sn, want):
            self._max_cmd_sn = want
        return self._max_cmd_sn

    def describe(self) -> dict[str, object]:
        return {
            "initiator": self.initiator,
            "isid": self.isid.hex(),
            "tsih": self.tsih,
            "port": self.portal.port,
            "type": "Discovery" if self.discovery else "Normal",
            "header_digest": "CRC32C" if self.params.header_digest else "None",
            "data_digest": "CRC32C" if self.params.data_digest else "None",
        }


class TargetNode:
    """Everything the portals share: the target's identity, its sessions, the firmware."""

    def __init__(self, config: NodeConfig, scsi: ScsiExecutor, portals: list[PortalInfo]) -> None:
        self.config = config
        self.scsi = scsi
        self.portals = {p.port: p for p in portals}
        self.sessions: dict[tuple[str, bytes, int], Session] = {}
        self._next_tsih = 1
        self.chap_challenges = RecentChallenges()  # CHAP challenges of all portals, against reflection
        # Injected drive latency (fault injection), seconds per command, by LUN; the
        # connection holds a response back this long. Kept current by the process.
        self.lun_delay: dict[int, float] = {}
        # Host connections (None: anyone may log in anywhere). Set by the process.
        self.access: LoginAccess | None = None
        # Path faults refusing or dropping some logins (None: none). Set by the process.
        self.login_gate: LoginGate | None = None
        # Where connections observe each command's latency (the firmware's counters; None for
        # an executor that keeps none).
        self.stats: TargetStats | None = getattr(scsi, "stats", None)

    def may_login(self, initiator: str, port: int) -> bool:
        return self.access is None or self.access.may_login(initiator, port)

    def enforce_access(self) -> int:
        """End the sessions whose initiator may no longer log in where it is (its port narrowed to
        host connections, its connection deleted or moved); how many. Its next login is refused."""
        gone = [x for x in self.sessions.values() if not self.may_login(x.initiator, x.portal.port)]
        for session in gone:
            log.warning("ending the session of %s on port %d: the port's access no longer admits it",
                        session.initiator, session.portal.port)
            self.end_session(session, "access revoked")
        return len(gone)

    def allocate_tsih(self) -> int:
        used = {s.tsih for s in self.sessions.values()}
        while True:
            tsih = self._next_tsih
            self._next_tsih = self._next_tsih % 0xFFFF + 1
            if tsih not in used:
                return tsih

    def find_session(self, initiator: str, isid: bytes, port: int) -> Session | None:
        return self.sessions.get((initiator, isid, port))

    def add_session(self, session: Session) -> None:
        self.sessions[(session.initiator, session.isid, session.portal.port)] = session

    def end_session(self, session: Session, reason: str) -> None:
        """Tear a session down: drop its nexus state in the firmware, close its connection."""
        if session.closed:
            return
        session.closed = True
        key = (session.initiator, session.isid, session.portal.port)
        if self.sessions.get(key) is session:
            del self.sessions[key]
        if not session.discovery:
            self.scsi.nexus_loss(session.nexus)
        conn = session.connection
        if conn is not None:
            conn.request_close(reason)
        log.info(
            "session ended: %s on port %d (tsih %d): %s",
            session.initiator, session.portal.port, session.tsih, reason,
        )

    def send_targets(self, portal: PortalInfo, which: str, initiator: str | None = None) -> list[tuple[str, str]]:
        """SendTargets answer. Each portal advertises itself only: a port is one cable; an initiator
        that may not log in there is told of nothing."""
        name = self.config.target_name
        if which not in ("All", "", name):
            return []
        if initiator is not None and not self.may_login(initiator, portal.port):
            return []
        return [("TargetName", name), ("TargetAddress", portal.address)]

    def abort_tasks(self, lun: int | None, except_: object = None) -> None:
        """Abort the tasks of `lun` (None: every LUN) in every session but the one on `except_`.

        CLEAR TASK SET, LOGICAL UNIT RESET and TARGET WARM RESET act on all I_T nexuses; the
        connection that received the request clears its own tasks itself.
        """
        for session in self.sessions.values():
            conn = session.connection
            if conn is not None and conn is not except_:
                conn.abort_tasks(lun)

    def cold_reset(self, by: Session) -> None:
        for s in list(self.sessions.values()):
            self.end_session(s, "target cold reset")
