"""iSCSI TransportIDs (SPC-4 7.6.4.6) and initiator port names, for persistent reservations.

REGISTER AND MOVE names its destination and READ FULL STATUS names each registrant by
TransportID; registrations belong to initiator ports spelled "name,i,0xISID".
"""

from __future__ import annotations

from firmware_model.scsi.constants import PROTOCOL_ISCSI

_ISID_SEPARATOR = ",i,0x"


def split_port_name(initiator: str) -> tuple[str, str | None]:
    """Split an iSCSI initiator port name "name,i,0xISID" into (name, ISID hex or None)."""
    idx = initiator.lower().find(_ISID_SEPARATOR)
    if idx < 0:
        return initiator, None
    return initiator[:idx], initiator[idx + len(_ISID_SEPARATOR) :]


def normalize_port_name(initiator: str) -> str:
    """Case-fold for comparisons: iSCSI names are lowercase after normalisation, ISIDs are hex."""
    name, isid = split_port_name(initiator)
    if isid is None:
        return name.lower()
    return f"{name.lower()}{_ISID_SEPARATOR}{isid.lower()}"


def encode_transport_id(initiator: str) -> bytes:
    """iSCSI TransportID: format 01b (name + ",i,0x" + ISID) if the port name has an ISID,
    otherwise format 00b (name only); null terminated, padded to a multiple of 4, >= 24 bytes."""
    name, isid = split_port_name(initiator)
    fmt = 0x00 if isid is None else 0x01
    text = name if isid is None else f"{name}{_ISID_SEPARATOR}{isid}"
    body = text.encode("utf-8") + b"\x00"
    body += b"\x00" * (-len(body) % 4)
    if len(body) < 20:
        body += b"\x00" * (20 - len(body))
    return bytes([(fmt << 6) | PROTOCOL_ISCSI, 0]) + len(body).to_bytes(2, "big") + body


def decode_transport_id(data: bytes) -> tuple[str, int]:
    """Parse an iSCSI TransportID; returns (initiator port or device name, bytes consumed).

    Raises ValueError for anything but a well-formed iSCSI TransportID.
    """
    if len(data) < 4:
        raise ValueError("short TransportID")
    fmt = data[0] >> 6
    if data[0] & 0x0F != PROTOCOL_ISCSI or fmt not in (0, 1):
        raise ValueError("not an iSCSI TransportID")
    length = int.from_bytes(data[2:4], "big")
    if length < 4 or length % 4 or 4 + length > len(data):
        raise ValueError("bad TransportID length")
    raw = data[4 : 4 + length]
    end = raw.find(b"\x00")
    if end <= 0:
        raise ValueError("TransportID name not null terminated")
    try:
        text = raw[:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("TransportID name not UTF-8") from exc
    name, isid = split_port_name(text)
    if fmt == 1 and (isid is None or not name):
        raise ValueError("format 01b TransportID without ISID")
    if fmt == 0 and isid is not None:
        raise ValueError("format 00b TransportID with ISID")
    return text, 4 + length
