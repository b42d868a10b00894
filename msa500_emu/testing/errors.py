"""What the test handle raises: one base class, `MSA500Error`, for everything it could not do."""

from __future__ import annotations

from ..iscsi.initiator import CommandResult


class MSA500Error(Exception):
    """Something the test harness could not do (the message says what and why)."""


class StartError(MSA500Error):
    """The emulator did not come up; the message carries the end of its log."""


class CtlError(MSA500Error):
    """A `ctl` command the array refused (`ok: false`): the array's one-line reason."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"ctl {command!r} refused: {error}")
        self.command = command
        self.error = error


class ScsiError(MSA500Error):
    """A SCSI command the test handle sent that did not end GOOD; `result` holds status and sense.

    The plugin's public error for a test to catch. Not the firmware's
    `firmware_model.scsi.errors.ScsiError` (raised inside the controller to become CHECK
    CONDITION) nor the agents' `CheckCondition`: this one is on the initiator's side of the wire.
    """

    def __init__(self, what: str, result: CommandResult) -> None:
        key = result.sense_key
        asc, ascq = result.asc_ascq
        detail = f"status 0x{result.status:02x}"
        if result.sense:
            detail += f", sense key {key:02X}h ASC/ASCQ {asc:02X}h/{ascq:02X}h"
        super().__init__(f"{what}: {detail}")
        self.result = result
        self.status = result.status
        self.sense_key = key
        self.asc_ascq = (asc, ascq)


class WaitTimeout(AssertionError, TimeoutError):
    """A wait that ran out of time (an AssertionError, so pytest reports it as a failed check)."""
