"""iscsi://HOST[:PORT]/TARGET-IQN[/LUN] URLs, as libiscsi and QEMU write them (standard library only)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

DEFAULT_PORT = 3260


@dataclass(frozen=True)
class IscsiUrl:
    host: str
    port: int
    target: str
    lun: int

    @classmethod
    def parse(cls, url: str, default_lun: int | None = None) -> IscsiUrl:
        """`default_lun` None: the URL must name its LUN."""
        m = re.fullmatch(r"iscsi://(\[[^\]]+\]|[^/:\[\]]+)(?::(\d+))?/([^/]+)(?:/(\d+))?/?", url)
        if not m or (m.group(4) is None and default_lun is None):
            lun = "/LUN" if default_lun is None else "[/LUN]"
            raise ValueError(f"{url!r}: expected iscsi://HOST[:PORT]/TARGET-IQN{lun}")
        lun_text = m.group(4)
        return cls(m.group(1).strip("[]"), int(m.group(2) or DEFAULT_PORT), unquote(m.group(3)),
                   int(lun_text) if lun_text is not None else int(default_lun or 0))

    @property
    def portal(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"iscsi://{self.portal}/{self.target}/{self.lun}"
