"""The SCSI command table (firmware_model.scsi.catalog): one row per command, every fact on it."""

from __future__ import annotations

import pytest

from firmware_model.scsi import catalog
from firmware_model.scsi.commands import Access, CommandSet
from firmware_model.scsi.constants import Opcode
from firmware_model.scsi.sbc import BlockUnit
from firmware_model.scsi.units import ControllerUnit, LogicalUnit

ROWS = list(catalog.COMMANDS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_with_a_handler_names_a_method_of_the_units_that_run_it(row: catalog.Command) -> None:
    if row.on is CommandSet.NONE:
        assert row.handler is None
        return
    classes: list[type[LogicalUnit]] = [BlockUnit] if row.on is CommandSet.SBC else [ControllerUnit, BlockUnit]
    for cls in classes:
        assert callable(getattr(cls, str(row.handler), None)), f"{row.name}: {cls.__name__}.{row.handler} missing"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_every_row_declares_its_reservation_class(row: catalog.Command) -> None:
    assert isinstance(row.access, Access) or callable(row.access), row.name


def _cdb_for(op: int) -> bytes:
    return bytes([op]) + bytes(15)


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
def test_every_opcode_the_firmware_names_has_a_row(op: Opcode) -> None:
    """No command is left to a default: a named opcode has a row (for its service actions at least)."""
    has_row = catalog.row_for(_cdb_for(op)) is not None
    has_service_action_rows = any(r.opcode == op for r in ROWS)
    assert has_row or has_service_action_rows, f"{op.name} has no row in the catalog"


def test_an_opcode_without_a_row_has_no_row() -> None:
    """0xEE is in no standard's table here: row_for says so, it is never guessed into a class."""
    assert catalog.row_for(_cdb_for(0xEE)) is None
