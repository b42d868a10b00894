"""The login phase (RFC 7143 section 6.3): security and operational negotiation, sans-I/O."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field

from .chap import ChapConfig, ChapError, ChapResponder
from .constants import LoginStatus, Op, Stage
from .node import PortalInfo, Session, TargetNode
from .params import (
    DECLARATIVE_LOGIN_KEYS,
    KEYS,
    SECURITY_KEYS,
    NegotiationError,
    SessionParams,
    answer,
)
from .pdu import Pdu, u32
from .text import TextError, encode_text, parse_text

log = logging.getLogger("msa500_emu.iscsi")

LOGIN_MAX_DATA = 8192


class LoginFailed(Exception):
    """`silent`: no answer at all, the connection is just closed (a path fault)."""

    def __init__(self, status: LoginStatus, why: str, silent: bool = False) -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.silent = silent


@dataclass
class LoginResult:
    """What the connection must send, and whether the login reached full feature phase."""

    bhs: bytearray
    data: bytes
    failed: bool = False
    complete: bool = False
    session: Session | None = None
    silent: bool = False  # failed with no answer: close the connection only


@dataclass
class LoginState:
    node: TargetNode
    portal: PortalInfo
    stage: int = -1
    isid: bytes = b""
    tsih: int = 0
    itt: int = 0
    cid: int = 0
    cmd_sn: int = 0
    initiator: str | None = None
    target: str | None = None
    discovery: bool = False
    auth_method: str | None = None
    chap: ChapResponder | None = None
    params: SessionParams = field(default_factory=SessionParams)
    pending_text: bytearray = field(default_factory=bytearray)
    stat_sn: int = 0
    first: bool = True
    tpgt_sent: bool = False
    existing: Session | None = None

    # -- entry point --------------------------------------------------------------
    def handle(self, pdu: Pdu, stat_sn: int) -> LoginResult:
        self.stat_sn = stat_sn
        try:
            return self._handle(pdu)
        except LoginFailed as exc:
            if exc.silent:
                log.warning("login from %s on port %d dropped: %s", self.initiator or "?", self.portal.port, exc.why)
                return LoginResult(bytearray(), b"", failed=True, silent=True)
            return LoginResult(self.refuse(pdu, stat_sn, exc.status, exc.why), b"", failed=True)

    def refuse(self, pdu: Pdu, stat_sn: int, status: LoginStatus, why: str) -> bytearray:
        """The login response refusing `pdu` (also one too long to read: only its header is there)."""
        self.stat_sn = stat_sn
        log.warning("login from %s on port %d refused (0x%04x): %s",
                    self.initiator or "?", self.portal.port, int(status), why)
        return self._response(pdu, transit=False, status=status)

    def _handle(self, pdu: Pdu) -> LoginResult:
        if pdu.opcode != Op.LOGIN_REQ:
            raise LoginFailed(LoginStatus.INVALID_DURING_LOGIN, f"opcode 0x{pdu.opcode:02x} during login")
        flags = pdu.flags
        transit, cont = bool(flags & 0x80), bool(flags & 0x40)
        csg, nsg = (flags >> 2) & 3, flags & 3
        if transit and cont:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "T and C both set")
        vmax, vmin = pdu.bhs[2], pdu.bhs[3]
        if vmin > 0:
            raise LoginFailed(LoginStatus.UNSUPPORTED_VERSION, f"version {vmin}..{vmax}")
        isid, tsih = pdu.bhs[8:14], struct.unpack_from(">H", pdu.bhs, 14)[0]
        if self.first:
            self.isid, self.tsih = isid, tsih
            self.itt = pdu.itt
            self.cid = struct.unpack_from(">H", pdu.bhs, 20)[0]
            self.cmd_sn = u32(pdu.bhs, 24)
        elif isid != self.isid or tsih != self.tsih:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "ISID/TSIH changed during login")
        if csg == 2 or (transit and (nsg == 2 or nsg <= csg)):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"bad stage transition {csg}->{nsg}")
        if self.stage >= 0 and csg != self.stage:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"stage {csg} while in stage {self.stage}")
        self.stage = csg
        self.pending_text += pdu.data
        if len(self.pending_text) > 65536:
            raise LoginFailed(LoginStatus.OUT_OF_RESOURCES, "login text too long")
        if cont:  # more text follows: acknowledge with an empty response
            bhs = self._response(pdu, transit=False, status=LoginStatus.SUCCESS)
            return LoginResult(bhs, b"")
        try:
            pairs = parse_text(bytes(self.pending_text))
        except TextError as exc:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, str(exc)) from exc
        self.pending_text.clear()
        keys: dict[str, str] = {}
        for k, v in pairs:
            if k in keys:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"key {k} sent twice")
            keys[k] = v
        log.debug("login stage %d keys from port %d: %s", csg, self.portal.port,
                  ", ".join(f"{k}={'***' if k.startswith('CHAP_') else v}" for k, v in pairs))
        reply: list[tuple[str, str]] = []
        if self.first:
            self._leading_checks(keys, reply)
            self.first = False
        auth_done = self._security(csg, keys, reply)
        self._operational(csg, keys, reply)
        # Decide the transition.
        go = transit
        if csg == Stage.SECURITY and not auth_done:
            go = False
        if go:
            bhs = self._response(pdu, transit=True, status=LoginStatus.SUCCESS, nsg=nsg)
            if nsg == Stage.FULL_FEATURE:
                session = self._establish()
                struct.pack_into(">H", bhs, 14, session.tsih)
                return LoginResult(bhs, encode_text(reply), complete=True, session=session)
            self.stage = nsg
            return LoginResult(bhs, encode_text(reply))
        return LoginResult(self._response(pdu, transit=False, status=LoginStatus.SUCCESS), encode_text(reply))

    # -- checks -------------------------------------------------------------------
    def _leading_checks(self, keys: dict[str, str], reply: list[tuple[str, str]]) -> None:
        self.initiator = keys.get("InitiatorName")
        if not self.initiator:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        stype = keys.get("SessionType", "Normal")
        if stype not in ("Normal", "Discovery"):
            raise LoginFailed(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType={stype}")
        self.discovery = stype == "Discovery"
        self.target = keys.get("TargetName")
        if not self.discovery:
            if not self.target:
                raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")
            if self.target != self.node.config.target_name:
                raise LoginFailed(LoginStatus.NOT_FOUND, f"no target {self.target}")
            if not self.node.may_login(self.initiator, self.portal.port):
                raise LoginFailed(LoginStatus.AUTHORIZATION_FAILURE,
                                  f"{self.initiator} has no host connection on port {self.portal.port}")
        if self.tsih:
            existing = self.node.find_session(self.initiator, self.isid, self.portal.port)
            if existing is None or existing.tsih != self.tsih:
                raise LoginFailed(LoginStatus.SESSION_DOES_NOT_EXIST, f"no session with TSIH {self.tsih}")
            self.existing = existing
        gate = self.node.login_gate
        verdict = gate(self.initiator, self.isid, self.portal.port) if gate is not None else None
        if verdict is not None:
            status, why = verdict
            raise LoginFailed(LoginStatus(status) if status is not None else LoginStatus.TARGET_ERROR, why,
                              silent=status is None)
        if not self.discovery:
            reply.append(("TargetPortalGroupTag", str(self.portal.tpgt)))
            if self.node.config.alias:
                reply.append(("TargetAlias", self.node.config.alias))

    def _chap_config(self) -> ChapConfig:
        return self.node.config.discovery_chap if self.discovery else self.node.config.chap

    def _security(self, csg: int, keys: dict[str, str], reply: list[tuple[str, str]]) -> bool:
        """Handle security keys; True once authentication is complete (or not required)."""
        chap_cfg = self._chap_config()
        sec = {k: v for k, v in keys.items() if k in SECURITY_KEYS}
        if csg != Stage.SECURITY:
            if sec:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, "security keys outside security stage")
            if chap_cfg.required and not (self.chap and self.chap.done):
                raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, "authentication required (CHAP)")
            return True
        if "AuthMethod" in sec:
            offered = sec["AuthMethod"].split(",")
            supported = ["CHAP"] if chap_cfg.required else ["None", "CHAP"] if chap_cfg.users else ["None"]
            choice = next((m for m in offered if m in supported), None)
            if choice is None:
                reply.append(("AuthMethod", "Reject"))
                raise LoginFailed(
                    LoginStatus.AUTHENTICATION_FAILURE,
                    f"AuthMethod {sec['AuthMethod']} not acceptable (need {','.join(supported)})",
                )
            self.auth_method = choice
            reply.append(("AuthMethod", choice))
            if choice == "CHAP":
                self.chap = ChapResponder(chap_cfg, recent=self.node.chap_challenges)
        if self.auth_method == "CHAP" and self.chap is not None:
            try:
                reply.extend(self.chap.step(sec))
            except ChapError as exc:
                raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, str(exc)) from exc
            return self.chap.done
        if chap_cfg.required:
            if self.auth_method is None and not sec:
                raise LoginFailed(LoginStatus.AUTHENTICATION_FAILURE, "authentication required (CHAP)")
            return False
        return True

    def _operational(self, csg: int, keys: dict[str, str], reply: list[tuple[str, str]]) -> None:
        for k, v in keys.items():
            if k in SECURITY_KEYS or k in DECLARATIVE_LOGIN_KEYS:
                if k == "TargetAddress" or k == "TargetPortalGroupTag":
                    raise LoginFailed(LoginStatus.INITIATOR_ERROR, f"{k} is sent by targets only")
                continue
            spec = KEYS.get(k)
            if spec is not None and spec.phase == "leading" and self.tsih:
                reply.append((k, "Irrelevant"))
                continue
            if self.discovery and k in ("MaxBurstLength", "FirstBurstLength", "InitialR2T",
                                        "ImmediateData", "MaxOutstandingR2T", "DataPDUInOrder",
                                        "DataSequenceInOrder", "DefaultTime2Wait",
                                        "DefaultTime2Retain", "MaxConnections"):
                reply.append((k, "Irrelevant"))
                continue
            try:
                value, in_force = answer(k, v)
            except NegotiationError as exc:
                raise LoginFailed(LoginStatus.INITIATOR_ERROR, str(exc)) from exc
            reply.append((k, value))
            if in_force is not None:
                self.params.apply(k, in_force)
        self.params.fix_up()

    # -- establishing ---------------------------------------------------------------
    def _establish(self) -> Session:
        assert self.initiator is not None
        node = self.node
        if self.existing is not None:  # connection reinstatement (same session, same CID)
            session = self.existing
            if self.cid != session.cid:
                raise LoginFailed(LoginStatus.TOO_MANY_CONNECTIONS, "MaxConnections is 1")
            old = session.connection
            if old is not None:
                old.request_close("connection reinstated")
            session.params = self.params
            return session
        old_session = node.find_session(self.initiator, self.isid, self.portal.port)
        if old_session is not None:  # session reinstatement: the old one is gone
            node.end_session(old_session, "session reinstated by a new login")
        session = Session(
            node, self.initiator, self.isid, node.allocate_tsih(), self.discovery, self.portal, self.params
        )
        session.exp_cmd_sn = self.cmd_sn
        session.cid = self.cid
        node.add_session(session)
        p = self.params
        log.info(
            "%s session: %s on port %d (tsih %d, HeaderDigest=%s, DataDigest=%s, MaxBurstLength=%d)",
            "discovery" if self.discovery else "normal", self.initiator, self.portal.port, session.tsih,
            "CRC32C" if p.header_digest else "None", "CRC32C" if p.data_digest else "None",
            p.max_burst_length,
        )
        return session

    def _response(self, pdu: Pdu, *, transit: bool, status: LoginStatus, nsg: int = 0) -> bytearray:
        bhs = bytearray(48)
        bhs[0] = Op.LOGIN_RSP
        csg = self.stage if self.stage >= 0 else (pdu.flags >> 2) & 3
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        bhs[2] = 0x00  # version max
        bhs[3] = 0x00  # version active
        bhs[8:14] = pdu.bhs[8:14]
        bhs[14:16] = pdu.bhs[14:16] if status == LoginStatus.SUCCESS else b"\0\0"
        bhs[16:20] = pdu.bhs[16:20]
        exp = self.cmd_sn if not self.first else u32(pdu.bhs, 24)
        window = self.node.config.cmd_window
        struct.pack_into(">III", bhs, 24, self.stat_sn, exp, (exp + window - 1) & 0xFFFFFFFF)
        bhs[36] = int(status) >> 8
        bhs[37] = int(status) & 0xFF
        return bhs
