"""INQUIRY data: standard page and the VPD pages every unit shares (SPC-4 6.6, 7.8)."""

from __future__ import annotations

from firmware_model.scsi.constants import (
    PROTOCOL_ISCSI,
    Association,
    CodeSet,
    DesignatorType,
)


def ascii_field(text: str, width: int) -> bytes:
    """Left-aligned, space-padded printable ASCII (SPC-4 4.4.1)."""
    raw = "".join(c if " " <= c <= "~" else "?" for c in text)
    return raw.encode("ascii")[:width].ljust(width, b" ")


def standard_inquiry(
    peripheral: int,
    vendor: str,
    product: str,
    revision: str,
    versions: list[int],
    *,
    tpgs: int = 0,
    multip: bool = True,
    serial: str = "",
) -> bytes:
    """Standard INQUIRY data: SPC-4 (version 6), HiSup, response format 2, CmdQue."""
    buf = bytearray(74)
    buf[0] = peripheral
    buf[1] = 0x00  # RMB=0: a logical drive is not removable
    buf[2] = 0x06  # SPC-4
    buf[3] = 0x10 | 0x02  # HiSup, response data format 2
    buf[5] = (tpgs & 3) << 4
    buf[6] = 0x10 if multip else 0x00
    buf[7] = 0x02  # CmdQue
    buf[8:16] = ascii_field(vendor, 8)
    buf[16:32] = ascii_field(product, 16)
    buf[32:36] = ascii_field(revision, 4)
    buf[36:56] = ascii_field(serial, 20)
    for i, v in enumerate(versions[:8]):
        buf[58 + 2 * i : 60 + 2 * i] = v.to_bytes(2, "big")
    buf[4] = len(buf) - 5
    return bytes(buf)


def vpd_page(peripheral: int, code: int, body: bytes) -> bytes:
    return bytes((peripheral, code)) + len(body).to_bytes(2, "big") + body


def designator(
    dtype: int, value: bytes, *, code_set: int = CodeSet.BINARY, assoc: int = 0, piv: bool = False
) -> bytes:
    """One identification descriptor; PIV carries the iSCSI protocol identifier."""
    b0 = ((PROTOCOL_ISCSI << 4) if piv else 0) | code_set
    b1 = (0x80 if piv else 0) | (assoc << 4) | dtype
    return bytes((b0, b1, 0, len(value))) + value


def name_string(name: str) -> bytes:
    """SCSI name string: UTF-8, NUL-terminated, padded to a multiple of 4."""
    raw = name.encode("utf-8") + b"\x00"
    return raw + bytes(-len(raw) % 4)


def port_designators(target_name: str, port_name: str, port: int) -> bytes:
    """Designators of the port the command came through and of the target device."""
    return (
        designator(
            DesignatorType.RELATIVE_TARGET_PORT,
            (port & 0xFFFF).to_bytes(4, "big"),
            assoc=Association.TARGET_PORT,
            piv=True,
        )
        + designator(
            DesignatorType.TARGET_PORT_GROUP,
            (port & 0xFFFF).to_bytes(4, "big"),
            assoc=Association.TARGET_PORT,
            piv=True,
        )
        + designator(
            DesignatorType.SCSI_NAME_STRING,
            name_string(port_name),
            code_set=CodeSet.UTF8,
            assoc=Association.TARGET_PORT,
            piv=True,
        )
        + designator(
            DesignatorType.SCSI_NAME_STRING,
            name_string(target_name),
            code_set=CodeSet.UTF8,
            assoc=Association.TARGET_DEVICE,
            piv=True,
        )
    )


def lu_designators(wwn: int, vendor: str, product: str, serial: str) -> bytes:
    """The logical unit's NAA name and a T10 vendor id designator."""
    return designator(DesignatorType.NAA, wwn.to_bytes(8, "big")) + designator(
        DesignatorType.T10_VENDOR_ID,
        ascii_field(vendor, 8) + (product + " " + serial).encode("ascii", "replace"),
        code_set=CodeSet.ASCII,
    )
