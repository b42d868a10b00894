"""Names the controller answers to: target IQN, serial, vendor strings, NAA world wide names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

COMPAQ_OUI = 0x00508B  # IEEE company id of Compaq, whose name the MSA500 carries


def naa5(seed: str, oui: int = COMPAQ_OUI) -> int:
    """A stable NAA 5 (IEEE Registered) 64-bit name: 4-bit NAA, 24-bit OUI, 36-bit id from `seed`."""
    vendor_id = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:5], "big") & ((1 << 36) - 1)
    return (0x5 << 60) | ((oui & 0xFFFFFF) << 36) | vendor_id


@dataclass
class TargetIdentity:
    """What INQUIRY and VPD 0x83 say about the target device and its two ports."""

    target_name: str
    serial: str
    vendor: str = "COMPAQ"
    product: str = "MSA500"
    revision: str = "2.10"
    wwn: int = 0  # NAA 5 name of the controller; derived from the serial when 0
    port_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.wwn:
            self.wwn = naa5(self.serial)
        for port in (1, 2):
            self.port_names.setdefault(port, f"{self.target_name},t,0x{port:04x}")

    def port_name(self, port: int) -> str:
        return self.port_names.get(port) or f"{self.target_name},t,0x{port:04x}"
