"""Operational parameter negotiation (RFC 7143 sections 6.2 and 13).

The target answers each offered key by the key's rule: list keys pick the first value
of the offerer's list it supports, numbers take the minimum or maximum of both sides,
booleans combine with AND or OR, declarations are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Rule(Enum):
    LIST = "list"
    MIN = "min"
    MAX = "max"
    AND = "and"
    OR = "or"
    DECLARE = "declare"


@dataclass(frozen=True)
class KeySpec:
    rule: Rule
    default: str
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()
    phase: str = "any"  # "security", "operational" or "any" (login); "leading" = leading login only


KEYS: dict[str, KeySpec] = {
    "HeaderDigest": KeySpec(Rule.LIST, "None", choices=("CRC32C", "None"), phase="operational"),
    "DataDigest": KeySpec(Rule.LIST, "None", choices=("CRC32C", "None"), phase="operational"),
    "MaxConnections": KeySpec(Rule.MIN, "1", 1, 65535, phase="leading"),
    "InitialR2T": KeySpec(Rule.OR, "Yes", phase="leading"),
    "ImmediateData": KeySpec(Rule.AND, "Yes", phase="leading"),
    "MaxRecvDataSegmentLength": KeySpec(Rule.DECLARE, "8192", 512, (1 << 24) - 1),
    "MaxBurstLength": KeySpec(Rule.MIN, "262144", 512, (1 << 24) - 1, phase="leading"),
    "FirstBurstLength": KeySpec(Rule.MIN, "65536", 512, (1 << 24) - 1, phase="leading"),
    "DefaultTime2Wait": KeySpec(Rule.MAX, "2", 0, 3600, phase="leading"),
    "DefaultTime2Retain": KeySpec(Rule.MIN, "20", 0, 3600, phase="leading"),
    "MaxOutstandingR2T": KeySpec(Rule.MIN, "1", 1, 65535, phase="leading"),
    "DataPDUInOrder": KeySpec(Rule.OR, "Yes", phase="leading"),
    "DataSequenceInOrder": KeySpec(Rule.OR, "Yes", phase="leading"),
    "ErrorRecoveryLevel": KeySpec(Rule.MIN, "0", 0, 2, phase="leading"),
    "IFMarker": KeySpec(Rule.AND, "No"),
    "OFMarker": KeySpec(Rule.AND, "No"),
    "iSCSIProtocolLevel": KeySpec(Rule.MIN, "0", 0, 31, phase="leading"),
}

# What this target wants (its side of each negotiation).
TARGET_OFFER: dict[str, str] = {
    "HeaderDigest": "CRC32C,None",
    "DataDigest": "CRC32C,None",
    "MaxConnections": "1",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "MaxBurstLength": str(1 << 20),
    "FirstBurstLength": str(1 << 18),
    "DefaultTime2Wait": "2",
    "DefaultTime2Retain": "0",
    "MaxOutstandingR2T": "16",
    "DataPDUInOrder": "Yes",
    "DataSequenceInOrder": "Yes",
    "ErrorRecoveryLevel": "0",
    "IFMarker": "No",
    "OFMarker": "No",
    "iSCSIProtocolLevel": "1",
}

TARGET_MAX_RECV_DSL = 262144

DECLARATIVE_LOGIN_KEYS = {
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "TargetAlias",
    "SessionType",
    "TargetAddress",
    "TargetPortalGroupTag",
}
IRRELEVANT_KEYS = {"IFMarkInt", "OFMarkInt"}
SECURITY_KEYS = {"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"}


class NegotiationError(Exception):
    """An offer no rule can answer: the login fails with an initiator error."""


@dataclass
class SessionParams:
    """The values in force for a session (after login)."""

    header_digest: bool = False
    data_digest: bool = False
    max_connections: int = 1
    initial_r2t: bool = True
    immediate_data: bool = True
    max_burst_length: int = 262144
    first_burst_length: int = 65536
    default_time2wait: int = 2
    default_time2retain: int = 20
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    # what the initiator can receive from us (it declared it)
    initiator_max_recv_dsl: int = 8192
    negotiated: dict[str, str] = field(default_factory=dict)

    def apply(self, key: str, value: str) -> None:
        self.negotiated[key] = value
        if key == "HeaderDigest":
            self.header_digest = value == "CRC32C"
        elif key == "DataDigest":
            self.data_digest = value == "CRC32C"
        elif key == "MaxConnections":
            self.max_connections = int(value)
        elif key == "InitialR2T":
            self.initial_r2t = value == "Yes"
        elif key == "ImmediateData":
            self.immediate_data = value == "Yes"
        elif key == "MaxBurstLength":
            self.max_burst_length = int(value)
        elif key == "FirstBurstLength":
            self.first_burst_length = int(value)
        elif key == "DefaultTime2Wait":
            self.default_time2wait = int(value)
        elif key == "DefaultTime2Retain":
            self.default_time2retain = int(value)
        elif key == "MaxOutstandingR2T":
            self.max_outstanding_r2t = int(value)
        elif key == "DataPDUInOrder":
            self.data_pdu_in_order = value == "Yes"
        elif key == "DataSequenceInOrder":
            self.data_sequence_in_order = value == "Yes"
        elif key == "ErrorRecoveryLevel":
            self.error_recovery_level = int(value)
        elif key == "MaxRecvDataSegmentLength":
            self.initiator_max_recv_dsl = int(value)

    def fix_up(self) -> None:
        """FirstBurstLength never exceeds MaxBurstLength (RFC 7143 13.14)."""
        if self.first_burst_length > self.max_burst_length:
            self.first_burst_length = self.max_burst_length


def _number(key: str, value: str, spec: KeySpec) -> int:
    try:
        n = int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError as exc:
        raise NegotiationError(f"{key}={value!r} is not a number") from exc
    if not spec.lo <= n <= spec.hi:
        raise NegotiationError(f"{key}={value} outside {spec.lo}..{spec.hi}")
    return n


def _boolean(key: str, value: str) -> bool:
    if value not in ("Yes", "No"):
        raise NegotiationError(f"{key}={value!r} is not Yes or No")
    return value == "Yes"


def answer(key: str, value: str, offer: dict[str, str] | None = None) -> tuple[str, str | None]:
    """Negotiate one operational key offered by the initiator.

    Returns (reply value, value in force or None when the key's outcome is not a session
    value). Raises NegotiationError for a value no rule accepts.
    """
    ours = (offer or TARGET_OFFER).get(key)
    if key in IRRELEVANT_KEYS:
        return "Irrelevant", None
    spec = KEYS.get(key)
    if spec is None:
        return "NotUnderstood", None
    if ours is None:
        ours = spec.default
    if spec.rule is Rule.LIST:
        supported = ours.split(",")
        for candidate in value.split(","):
            if candidate in supported:
                return candidate, candidate
        return "Reject", None
    if spec.rule is Rule.DECLARE:
        n = _number(key, value, spec)
        return str(TARGET_MAX_RECV_DSL), str(n)
    if spec.rule in (Rule.MIN, Rule.MAX):
        n = _number(key, value, spec)
        mine = int(ours)
        result = min(n, mine) if spec.rule is Rule.MIN else max(n, mine)
        return str(result), str(result)
    theirs = _boolean(key, value)
    mine_b = ours == "Yes"
    result_b = (theirs and mine_b) if spec.rule is Rule.AND else (theirs or mine_b)
    text = "Yes" if result_b else "No"
    return text, text
