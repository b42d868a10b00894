"""Parity arithmetic: XOR (RAID 5, ADG's P) and GF(2^8) Reed-Solomon Q (ADG).

XOR of whole chunks runs in numpy over 64-bit words (about 17 us for three 64 KiB chunks here, 15
times faster than the big-integer way, which was a fifth of a RAID 5 streaming write's time); the
Q arithmetic turns buffers into one big integer each (`int.from_bytes`) and multiplies by a field
constant with `bytes.translate` through a cached 256-byte table. The field is GF(2^8) with
polynomial 0x11D and generator 2, and Q = sum(g^i * D_i) over the data blocks in stripe order,
exactly as Linux md raid6.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

Buffer = bytes | bytearray | memoryview

POLY = 0x11D
GENERATOR = 2

# exp/log tables; _EXP is doubled so _EXP[log a + log b] needs no modulo.
_EXP = [0] * 510
_LOG = [0] * 256


def _init_tables() -> None:
    x = 1
    for i in range(255):
        _EXP[i] = x
        _LOG[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLY
    for i in range(255, 510):
        _EXP[i] = _EXP[i - 255]


_init_tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two field elements."""
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse (a != 0)."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return _EXP[255 - _LOG[a]]


def gf_exp(i: int) -> int:
    """g**i: the Q coefficient of data block i."""
    return _EXP[i % 255]


@lru_cache(maxsize=256)
def mul_table(c: int) -> bytes:
    """The translate table of x -> c*x, built once per constant."""
    return bytes(gf_mul(c, x) for x in range(256))


def _as_bytes(buf: Buffer) -> bytes:
    return buf if isinstance(buf, bytes) else bytes(buf)


def gf_mul_block(buf: Buffer, c: int) -> bytes:
    """Every byte of `buf` multiplied by the constant `c`."""
    if c == 1:
        return _as_bytes(buf)
    if c == 0:
        return bytes(len(buf))
    return _as_bytes(buf).translate(mul_table(c))


def _int(buf: Buffer) -> int:
    return int.from_bytes(buf, "little")


def xor_blocks(blocks: Sequence[Buffer]) -> bytes:
    """XOR of equal-length buffers (at least one)."""
    n = len(blocks[0])
    if n % 8 == 0:
        acc = np.frombuffer(blocks[0], dtype=np.uint64).copy()
        for b in blocks[1:]:
            np.bitwise_xor(acc, np.frombuffer(b, dtype=np.uint64), out=acc)
        return acc.tobytes()
    iacc = 0
    for b in blocks:
        iacc ^= int.from_bytes(b, "little")
    return iacc.to_bytes(n, "little")


def xor_into(a: Buffer, b: Buffer) -> bytes:
    """a XOR b."""
    return xor_blocks((a, b))


def _q_int(blocks: Sequence[Buffer | None], coeffs: Sequence[int] | None = None) -> int:
    """sum g^i * D_i as an integer, skipping None blocks (coefficients default to g^i)."""
    acc = 0
    for i, d in enumerate(blocks):
        if d is None:
            continue
        c = _EXP[i] if coeffs is None else coeffs[i]
        acc ^= _int(d) if c == 1 else _int(_as_bytes(d).translate(mul_table(c)))
    return acc


def q_syndrome(data: Sequence[Buffer]) -> bytes:
    """Q = sum g^i * D_i."""
    return _q_int(data).to_bytes(len(data[0]), "little")


def pq_syndromes(data: Sequence[Buffer]) -> tuple[bytes, bytes]:
    """(P, Q) of a stripe's data blocks, computed in one pass."""
    n = len(data[0])
    p = 0
    q = 0
    for i, d in enumerate(data):
        v = _int(d)
        p ^= v
        q ^= v if i == 0 else _int(_as_bytes(d).translate(mul_table(_EXP[i])))
    return p.to_bytes(n, "little"), q.to_bytes(n, "little")


def q_delta(delta: Buffer, index: int) -> bytes:
    """The change to Q when data block `index` changes by `delta` (old XOR new)."""
    return gf_mul_block(delta, _EXP[index])


class Unsolvable(ValueError):
    """More blocks are missing than the available parity can rebuild."""


def recover(data: Sequence[Buffer | None], p: Buffer | None, q: Buffer | None) -> list[bytes]:
    """The complete data blocks of a stripe, rebuilding up to two `None` entries from P and/or Q.

    Solvable cases: no data missing; one data block missing with P or Q present; two missing
    with both P and Q (P and Q themselves are recomputed from data by the caller if needed).
    """
    missing = [i for i, d in enumerate(data) if d is None]
    if not missing:
        return [_as_bytes(d) for d in data if d is not None]
    present = [d for d in data if d is not None]
    if present:
        n = len(present[0])
    elif p is not None:
        n = len(p)
    elif q is not None:
        n = len(q)
    else:
        raise Unsolvable("nothing to rebuild from")
    out: list[bytes] = [b"" if d is None else _as_bytes(d) for d in data]
    if len(missing) == 1:
        x = missing[0]
        if p is not None:
            out[x] = xor_blocks([p, *present])
        elif q is not None:
            qx = (_int(q) ^ _q_int(data)).to_bytes(n, "little")  # = g^x * D_x
            out[x] = gf_mul_block(qx, gf_inv(_EXP[x]))
        else:
            raise Unsolvable("one data block missing and no parity")
        return out
    if len(missing) == 2 and p is not None and q is not None:
        x, y = missing
        pxy_i = _int(p)
        for d in present:
            pxy_i ^= _int(d)
        pxy = pxy_i.to_bytes(n, "little")  # D_x ^ D_y
        qxy = (_int(q) ^ _q_int(data)).to_bytes(n, "little")  # g^x D_x ^ g^y D_y
        gx, gy = _EXP[x], _EXP[y]
        inv = gf_inv(gx ^ gy)
        # (g^y * Pxy ^ Qxy) = (g^x ^ g^y) * D_x
        dx_i = _int(gf_mul_block(pxy, gf_mul(gy, inv))) ^ _int(gf_mul_block(qxy, inv))
        out[x] = dx_i.to_bytes(n, "little")
        out[y] = (pxy_i ^ dx_i).to_bytes(n, "little")
        return out
    raise Unsolvable(f"{len(missing)} data blocks missing, P {'present' if p is not None else 'missing'}, "
                     f"Q {'present' if q is not None else 'missing'}")
