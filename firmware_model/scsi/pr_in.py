"""PERSISTENT RESERVE IN parameter data (SPC-4 6.15): READ KEYS, READ RESERVATION,
REPORT CAPABILITIES and READ FULL STATUS, built from a unit's reservation state."""

from __future__ import annotations

from firmware_model.scsi.catalog import PersistentReserveIn
from firmware_model.scsi.constants import PrInAction
from firmware_model.scsi.pr_state import PrState, PrType
from firmware_model.scsi.transport_id import encode_transport_id

# PERSISTENT RESERVATION TYPE MASK bits of REPORT CAPABILITIES (SPC-4 table 186).
_TYPE_MASK_BITS: dict[PrType, int] = {
    PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS: 1 << 15,
    PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 1 << 14,
    PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 1 << 13,
    PrType.EXCLUSIVE_ACCESS: 1 << 11,
    PrType.WRITE_EXCLUSIVE: 1 << 9,
    PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 1 << 0,
}


def persistent_reserve_in_data(state: PrState, cdb: bytes) -> bytes:
    """The whole parameter data the service action in `cdb` asks for."""
    sa = PersistentReserveIn.sa(cdb) if len(cdb) > 1 else 0
    if sa == PrInAction.READ_KEYS:
        return read_keys(state)
    if sa == PrInAction.READ_RESERVATION:
        return read_reservation(state)
    if sa == PrInAction.REPORT_CAPABILITIES:
        return report_capabilities(state)
    if sa == PrInAction.READ_FULL_STATUS:
        return read_full_status(state)
    raise PersistentReserveIn.sa.invalid()


def _header(state: PrState, additional: int) -> bytes:
    return state.generation.to_bytes(4, "big") + additional.to_bytes(4, "big")


def read_keys(state: PrState) -> bytes:
    keys = b"".join(reg.key.to_bytes(8, "big") for reg in state.registrations.values())
    return _header(state, len(keys)) + keys


def read_reservation(state: PrState) -> bytes:
    res = state.reservation
    if res is None:
        return _header(state, 0)
    body = bytearray(16)
    body[0:8] = state.reservation_key().to_bytes(8, "big")
    body[13] = (res.scope << 4) | int(res.type)
    return _header(state, len(body)) + bytes(body)


def report_capabilities(state: PrState) -> bytes:
    data = bytearray(8)
    data[0:2] = (8).to_bytes(2, "big")
    # CRH=1 (5.13.3 handling), SIP_C=0, ATP_C=1, PTPL_C=1.
    data[2] = 0x10 | 0x04 | 0x01
    # TMV=1, ALLOW COMMANDS=011b (TUR through WE/EA; read-like commands through WE).
    data[3] = 0x80 | (0b011 << 4) | (0x01 if state.aptpl else 0x00)
    mask = 0
    for t in PrType:
        mask |= _TYPE_MASK_BITS[t]
    data[4:6] = mask.to_bytes(2, "big")
    return bytes(data)


def read_full_status(state: PrState) -> bytes:
    res = state.reservation
    body = bytearray()
    for n, reg in state.registrations.items():
        tid = encode_transport_id(n.initiator)
        desc = bytearray(24)
        desc[0:8] = reg.key.to_bytes(8, "big")
        if res is not None and state.is_holder(n):
            desc[12] = 0x01  # R_HOLDER
            desc[13] = (res.scope << 4) | int(res.type)
        # One descriptor per I_T nexus, so ALL_TG_PT stays 0 and the port is exact.
        desc[18:20] = (n.port & 0xFFFF).to_bytes(2, "big")
        desc[20:24] = len(tid).to_bytes(4, "big")
        body += desc + tid
    return _header(state, len(body)) + bytes(body)
