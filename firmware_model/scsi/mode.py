"""Mode pages of a logical unit: current/changeable/default/saved values and MODE SELECT.

Each page is held whole (page code byte, length byte, parameters) so MODE SENSE copies
bytes out and MODE SELECT compares bytes in against the changeable mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware_model.scsi.catalog import ModeSense6
from firmware_model.scsi.constants import ModePage, PageControl
from firmware_model.scsi.errors import invalid_field_in_parameter_list, parameter_list_length_error


@dataclass
class _Page:
    default: bytes
    changeable: bytes
    current: bytearray = field(init=False)
    saved: bytearray = field(init=False)

    def __post_init__(self) -> None:
        self.current = bytearray(self.default)
        self.saved = bytearray(self.default)


def caching_page() -> tuple[bytes, bytes]:
    """Caching page 0x08: WCE on (battery-backed cache); WCE and RCD changeable."""
    page = bytearray(20)
    page[0], page[1] = ModePage.CACHING, 18
    page[2] = 0x04  # WCE
    page[4:6] = b"\xff\xff"  # disable pre-fetch transfer length
    page[8:10] = b"\xff\xff"  # maximum pre-fetch
    page[10:12] = b"\xff\xff"  # maximum pre-fetch ceiling
    page[13] = 16  # number of cache segments
    mask = bytearray(20)
    mask[2] = 0x05  # WCE, RCD
    return bytes(page), bytes(mask)


def control_page() -> tuple[bytes, bytes]:
    """Control page 0x0A: one task set, unrestricted reordering; D_SENSE and SWP changeable."""
    page = bytearray(12)
    page[0], page[1] = ModePage.CONTROL, 10
    page[2] = 0x00  # TST 000b, D_SENSE 0
    page[3] = 0x10  # QUEUE ALGORITHM MODIFIER 1, QERR 00b
    page[8:10] = b"\xff\xff"  # busy timeout period: unlimited
    mask = bytearray(12)
    mask[2] = 0x04  # D_SENSE
    mask[4] = 0x08  # SWP
    return bytes(page), bytes(mask)


def informational_exceptions_page() -> tuple[bytes, bytes]:
    """Informational exceptions control 0x1C: reporting disabled (DEXCPT); settings kept only."""
    page = bytearray(12)
    page[0], page[1] = ModePage.INFORMATIONAL_EXCEPTIONS, 10
    page[2] = 0x08  # DEXCPT
    mask = bytearray(12)
    mask[2] = 0x08
    mask[3] = 0x0F  # MRIE
    mask[4:12] = b"\xff" * 8  # interval timer, report count
    return bytes(page), bytes(mask)


class ModePages:
    """The mode pages of one logical unit, in page-code order."""

    def __init__(self, pages: list[tuple[bytes, bytes]]) -> None:
        self._pages: dict[int, _Page] = {}
        for default, mask in sorted(pages, key=lambda p: p[0][0]):
            self._pages[default[0] & 0x3F] = _Page(default, mask)
        self.d_sense = False
        self.swp = False
        self.wce = True
        # The controller's cache can take write-back away (battery not ok, cache disabled):
        # then WCE reads 0 and is not changeable, and the host's own choice waits in _host_wce.
        self.write_cache_available = True
        self._host_wce = True
        self._refresh()

    def _refresh(self) -> None:
        """Cache the bits the hot path reads."""
        ctl = self._pages.get(ModePage.CONTROL)
        self.d_sense = bool(ctl and ctl.current[2] & 0x04)
        self.swp = bool(ctl and ctl.current[4] & 0x08)
        cache = self._pages.get(ModePage.CACHING)
        self.wce = bool(cache and cache.current[2] & 0x04)

    def set_write_cache_available(self, available: bool) -> bool:
        """The controller's cache went write-back (True) or write-through (False).

        While it is write-through the caching page's WCE reads 0 and is not changeable
        (MODE SELECT of WCE=1 is refused); the host's own WCE choice comes back with
        write-back. Returns whether the current WCE value changed (the caller raises
        MODE PARAMETERS CHANGED).
        """
        page = self._pages.get(ModePage.CACHING)
        if page is None or available == self.write_cache_available:
            self.write_cache_available = available
            return False
        before = bool(page.current[2] & 0x04)
        self.write_cache_available = available
        mask = bytearray(page.changeable)
        if available:
            mask[2] |= 0x04
            if self._host_wce:
                page.current[2] |= 0x04
        else:
            self._host_wce = before
            mask[2] &= ~0x04
            page.current[2] &= ~0x04
        page.changeable = bytes(mask)
        self._refresh()
        return before != bool(page.current[2] & 0x04)

    def codes(self) -> list[int]:
        return list(self._pages)

    def sense(self, page_code: int, subpage: int, pc: int) -> bytes:
        """Page data for MODE SENSE (page 0x3F = all); errors point at the CDB's page code or
        subpage field (the same places in MODE SENSE(6) and (10))."""
        if page_code == ModePage.ALL:
            if subpage not in (0x00, 0xFF):
                raise ModeSense6.subpage.invalid()
            pages = list(self._pages.values())
        else:
            page = self._pages.get(page_code)
            if page is None:
                raise ModeSense6.page_code.invalid()
            if subpage != 0:
                raise ModeSense6.subpage.invalid()
            pages = [page]
        out = bytearray()
        for p in pages:
            body: bytes | bytearray
            if pc == PageControl.CURRENT:
                body = p.current
            elif pc == PageControl.CHANGEABLE:
                body = p.changeable
            elif pc == PageControl.DEFAULT:
                body = p.default
            else:
                body = p.saved
            # PS=1: every page here can be saved.
            out += bytes((p.default[0] | 0x80, p.default[1])) + body[2:]
        return bytes(out)

    def select(self, data: bytes, start: int, save: bool) -> bool:
        """Apply the pages in `data` (parameter list offset `start` onward); True if anything changed.

        Everything is validated before anything is applied, so a bad page changes nothing.
        """
        staged: list[tuple[_Page, bytes]] = []
        pos = start
        end = len(data)
        while pos < end:
            if end - pos < 2:
                raise parameter_list_length_error()
            hdr = data[pos]
            if hdr & 0x80:
                raise invalid_field_in_parameter_list(pos, 7)  # PS is reserved in MODE SELECT
            if hdr & 0x40:
                raise invalid_field_in_parameter_list(pos, 6)  # no subpages here
            page = self._pages.get(hdr & 0x3F)
            if page is None:
                raise invalid_field_in_parameter_list(pos, 5)
            length = data[pos + 1]
            if length != page.default[1]:
                raise invalid_field_in_parameter_list(pos + 1)
            if pos + 2 + length > end:
                raise parameter_list_length_error()
            new = data[pos : pos + 2 + length]
            for i in range(2, 2 + length):
                if (new[i] ^ page.current[i]) & ~page.changeable[i] & 0xFF:
                    diff = (new[i] ^ page.current[i]) & ~page.changeable[i] & 0xFF
                    raise invalid_field_in_parameter_list(pos + i, diff.bit_length() - 1)
            staged.append((page, bytes(new)))
            pos += 2 + length
        changed = False
        for page, new in staged:
            body = bytes(new[2:])
            if page.current[2:] != body:
                changed = True
                page.current[2:] = body
            if save:
                page.saved[:] = page.current
                if page is self._pages.get(ModePage.CACHING) and not self.write_cache_available:
                    page.saved[2] = (page.saved[2] & ~0x04) | (0x04 if self._host_wce else 0)
        self._refresh()
        return changed

    def restore_saved(self) -> None:
        """Power on: current values come back from the saved ones."""
        for page in self._pages.values():
            page.current[:] = page.saved
        cache = self._pages.get(ModePage.CACHING)
        if cache is not None and not self.write_cache_available:
            self._host_wce = bool(cache.current[2] & 0x04)
            cache.current[2] &= ~0x04
        self._refresh()
