"""The PDU reader fed arbitrary byte chunks: it frames PDUs or raises FramingError, nothing else."""

from __future__ import annotations

from msa500_emu.iscsi.pdu import BHS_LEN, FramingError, PduReader, extended_cdb

MAX_LEN = 16384  # the longest input libFuzzer tries (scripts/fuzz -max_len)

MAX_PDUS = 4096


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    head, body = data[0], data[1:]
    reader = PduReader(max_data=1 << 16)
    reader.header_digest, reader.data_digest = bool(head & 1), bool(head & 2)
    chunk = 1 + (head >> 2) * 7  # 1..442 bytes per feed
    fed = taken = 0
    for start in range(0, max(len(body), 1), chunk):
        piece = body[start : start + chunk]
        reader.feed(piece)
        fed += len(piece)
        for _ in range(MAX_PDUS):
            before = reader.buffered
            try:
                pdu = reader.next_pdu()
            except FramingError:
                return
            if pdu is None:
                assert reader.buffered == before, "a PDU-less call consumed input"
                break
            taken += before - reader.buffered
            assert len(pdu.bhs) == BHS_LEN and pdu.data_digest_ok in (True, False)
            _ = (pdu.opcode, pdu.immediate, pdu.flags, pdu.final, pdu.lun, pdu.itt)
            for offset in range(20, BHS_LEN, 4):
                pdu.u32(offset)
            if pdu.ahs:
                extended_cdb(pdu.ahs, pdu.bhs[32:48])
    assert fed == taken + reader.buffered, "bytes lost between feed and next_pdu"
