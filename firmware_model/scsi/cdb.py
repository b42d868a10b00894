"""CDB layouts declared field by field, in the style of python-scsi's `_cdb_bits` tables.

A layout is a class listing its `Field`s (byte offset and bit mask, as in the standards'
CDB tables). From that one declaration come the decoding a handler does, the field
pointer an error carries, and the CDB usage data REPORT SUPPORTED OPERATION CODES
returns and the dispatcher checks every CDB against. For hot paths `unpacker` compiles
byte-aligned fields into one precompiled struct.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection
from typing import Any, ClassVar

from firmware_model.scsi.errors import ScsiError, invalid_field_in_cdb

_STRUCT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


class Field:
    """One CDB field: the bits `mask` covers in the big-endian bytes from `byte` on.

    The field is as many bytes wide as its mask; its value is shifted down to bit 0.
    `feature` names a unit feature (e.g. "thin") without which the field is not in use,
    so a CDB that sets it is refused.
    """

    __slots__ = ("_start", "_unpack", "byte", "feature", "mask", "name", "shift", "width")

    def __init__(self, byte: int, mask: int = 0xFF, *, feature: str | None = None) -> None:
        if mask <= 0:
            raise ValueError("a field needs a non-zero mask")
        self.name = ""
        self.byte = byte
        self.mask = mask
        self.width = (mask.bit_length() + 7) // 8
        self.shift = (mask & -mask).bit_length() - 1
        self.feature = feature
        # Read the smallest struct integer that ends on the field's last byte.
        size = next(n for n in (1, 2, 4, 8) if n >= self.width)
        self._start = byte + self.width - size
        self._unpack: Callable[..., tuple[int]] | None = None
        if self._start >= 0:
            self._unpack = struct.Struct(">" + _STRUCT_CODES[size]).unpack_from

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __call__(self, cdb: bytes | bytearray | memoryview) -> int:
        """The field's value in `cdb` (which the dispatcher has checked is long enough)."""
        if self._unpack is not None:
            return (self._unpack(cdb, self._start)[0] & self.mask) >> self.shift
        raw = int.from_bytes(cdb[self.byte : self.byte + self.width], "big")
        return (raw & self.mask) >> self.shift

    @property
    def bit(self) -> int | None:
        """The bit pointer of the field (its most significant bit), None for whole bytes."""
        if self.shift == 0 and self.mask == (1 << 8 * self.width) - 1:
            return None
        return (self.mask.bit_length() - 1) % 8

    def invalid(self) -> ScsiError:
        """INVALID FIELD IN CDB pointing at this field."""
        return invalid_field_in_cdb(self.byte, self.bit)

    def __repr__(self) -> str:
        return f"Field({self.name!r}, byte={self.byte}, mask={self.mask:#x})"


class Cdb:
    """Base of CDB layouts: subclasses give `size=` and declare Field class attributes.

    Layouts are never instantiated; fields are read as `Layout.field(cdb)`. A subclass
    inherits its base's fields, so commands sharing a shape share a base layout.
    """

    size: ClassVar[int] = 0
    fields: ClassVar[tuple[Field, ...]] = ()

    def __init_subclass__(cls, size: int = 0, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if size:
            cls.size = size
        by_name: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):  # bases first, so a subclass can redeclare a field
            by_name.update((k, v) for k, v in vars(klass).items() if isinstance(v, Field))
        cls.fields = tuple(by_name.values())
        for f in cls.fields:
            if cls.size and not 1 <= f.byte <= cls.size - f.width:
                raise ValueError(f"{cls.__name__}.{f.name} lies outside CDB bytes 1..{cls.size - 1}")

    @classmethod
    def usage(cls, opcode: int, features: Collection[str] = ()) -> bytes:
        """CDB usage data: the opcode, then 1 bits for every bit a field uses (SPC-4 6.35.3)."""
        bits = 0
        for f in cls.fields:
            if f.feature is None or f.feature in features:
                bits |= f.mask << 8 * (cls.size - f.byte - f.width)
        mask = bytearray(bits.to_bytes(cls.size, "big"))
        mask[0] = opcode
        return bytes(mask)

    @classmethod
    def unpacker(cls, *fields: Field) -> Callable[[bytes | bytearray | memoryview], tuple[int, ...]]:
        """One precompiled struct reading whole-byte `fields` (in the order given) at once."""
        fmt = ">"
        pos = 0
        for f in sorted(fields, key=lambda f: f.byte):
            if f.bit is not None or f.width not in _STRUCT_CODES or f.byte < pos:
                raise ValueError(f"{f!r} is not a whole-byte struct field")
            fmt += "x" * (f.byte - pos) + _STRUCT_CODES[f.width]
            pos = f.byte + f.width
        if [f.byte for f in fields] != sorted(f.byte for f in fields):
            raise ValueError("give the fields in CDB order")
        return struct.Struct(fmt).unpack_from
