"""The SCSI target device: LUN map, I_T nexuses, unit attentions, and the dispatcher.

The transport calls `execute` with one command and gets status, data and sense back;
it never sees an exception. Unit attentions are queued per (I_T nexus, LUN) and
reported in SAM-5 priority order (resets first). Whether a command passes a unit
attention or an inaccessible port's gate is read from its row (catalog.py), looked up
once per command in the unit's table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware_model.clock import Clock
from firmware_model.scsi.alua import PortGroups
from firmware_model.scsi.constants import AluaState, Asc, SenseKey
from firmware_model.scsi.errors import ScsiError, illegal, internal_target_failure, invalid_opcode, scsi_error
from firmware_model.scsi.identity import TargetIdentity
from firmware_model.scsi.injection import Injections
from firmware_model.scsi.sense import build_sense, sense_for
from firmware_model.scsi.stats import TargetStats
from firmware_model.scsi.stepped import Stepped, Wait, run_to_end
from firmware_model.scsi.types import Nexus, ScsiRequest, ScsiResult, Status
from firmware_model.scsi.units import LogicalUnit, NoUnit

__all__ = ["ScsiTarget", "TargetIdentity"]

log = logging.getLogger(__name__)

_RESET_CLASS = Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET >> 8
# The answer of a logical drive through a port in each inaccessible state, to the commands
# whose row does not list that state (SPC-4 5.15.2.4).
_GATE_SENSE: dict[int, Asc] = {
    AluaState.STANDBY: Asc.NOT_ACCESSIBLE_TARGET_PORT_IN_STANDBY,
    AluaState.UNAVAILABLE: Asc.NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE,
    AluaState.OFFLINE: Asc.NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE,  # what reaches an offline port anyway
    AluaState.TRANSITIONING: Asc.NOT_ACCESSIBLE_ASYMMETRIC_TRANSITION,
}


class ScsiTarget:
    """One MSA500 controller as a SCSI target device with LUN 0 and logical drives."""

    def __init__(self, identity: TargetIdentity, clock: Clock) -> None:
        self.identity = identity
        self.clock = clock
        self.luns: dict[int, LogicalUnit] = {}
        self._nexuses: set[Nexus] = set()
        self._lost: set[Nexus] = set()
        self._ua: dict[tuple[Nexus, int], list[int]] = {}
        self._first_code: int | None = None  # UA a newly seen nexus gets (after power on)
        self._nounit = NoUnit()
        self._nounit.attach(self, -1)
        self._logged: set[tuple[str, int]] = set()
        # ALUA: one target port group per port (alua.py). `_gate` holds the state and NOT READY answer
        # of each port whose logical drives are not accessible; it is empty (one falsy check) when all are.
        self.alua = PortGroups((1, 2))
        self._gate: dict[int, tuple[int, ScsiError]] = {}
        # Told of every nexus the target starts or stops knowing (RSO's restore rule).
        self.nexus_observer: Callable[[Nexus, bool], None] | None = None
        # Selective Storage Presentation: whether a nexus sees a logical drive; None (one check
        # on the hot path) while every host sees every unit. LUN 0 is never asked about.
        self.visibility: Callable[[Nexus, int], bool] | None = None
        self.stats = TargetStats()  # per-LUN and per-port command counters (/metrics reads them)
        # Told of every command and its answer while a recording runs (msa500_emu/recording); None otherwise.
        self.observer: Callable[[ScsiRequest, ScsiResult], None] | None = None
        self.injections = Injections(clock)  # INJECT UNIT: per-command errors (memory only)

    # ------------------------------------------------------------ LUN map
    def add_lun(self, lun: int, unit: LogicalUnit) -> None:
        if not 0 <= lun < 16384:
            raise ValueError(f"LUN {lun} outside 0..16383")
        if lun in self.luns:
            raise ValueError(f"LUN {lun} already in use")
        unit.attach(self, lun)
        self._attach_reservations(unit)
        self.luns[lun] = unit
        self.stats.add_lun(lun)
        self._luns_changed(lun)

    def remove_lun(self, lun: int) -> None:
        self.luns.pop(lun)
        self.stats.remove_lun(lun)
        for key in [k for k in self._ua if k[1] == lun]:
            del self._ua[key]
        self._luns_changed(lun)

    def lun_list(self, nexus: Nexus | None = None) -> list[int]:
        """The LUNs; with `nexus`, those it sees (REPORT LUNS)."""
        seen = self.visibility
        if nexus is None or seen is None:
            return sorted(self.luns)
        return [lun for lun in sorted(self.luns) if not lun or seen(nexus, lun)]

    def set_visibility(self, visibility: Callable[[Nexus, int], bool] | None, changed_lun: int = 0) -> None:
        """A new presentation of the units; each nexus whose view of `changed_lun` changed gets
        REPORTED LUNS DATA HAS CHANGED (3F/0E) on the other LUNs it sees (SPC-4 6.33)."""
        def sees(pred: Callable[[Nexus, int], bool] | None, n: Nexus) -> bool:
            return pred is None or pred(n, changed_lun)

        before = {n: sees(self.visibility, n) for n in self._nexuses} if changed_lun else {}
        self.visibility = visibility
        for n, was in before.items():
            if was != sees(visibility, n):
                self._ua.pop((n, changed_lun), None)
                for lun in self.lun_list(n):
                    if lun != changed_lun:
                        self._queue_ua(n, lun, Asc.REPORTED_LUNS_DATA_HAS_CHANGED)

    def _luns_changed(self, changed: int) -> None:
        for lun in self.luns:
            if lun != changed:
                self.establish_unit_attention(lun, Asc.REPORTED_LUNS_DATA_HAS_CHANGED)

    def _attach_reservations(self, unit: LogicalUnit) -> None:
        """Tell a unit's reservations object the port names PR data reports."""
        res = unit.reservations
        if res is not None and hasattr(res, "port_names"):
            res.port_names = dict(self.identity.port_names)

    # ---------------------------------------------------- unit attentions
    def known_nexuses(self) -> list[Nexus]:
        return list(self._nexuses)

    def establish_unit_attention(
        self, lun: int, code: int, *, exclude: Nexus | None = None, nexus: Nexus | None = None
    ) -> None:
        """Queue UA `code` (ASC<<8|ASCQ) on `lun` for one nexus or all known ones."""
        targets = [nexus] if nexus is not None else list(self._nexuses)
        for n in targets:
            if n != exclude:
                self._queue_ua(n, lun, code)

    def _queue_ua(self, nexus: Nexus, lun: int, code: int) -> None:
        q = self._ua.setdefault((nexus, lun), [])
        if code >> 8 == _RESET_CLASS:
            # A reset supersedes older resets and is reported before anything else.
            q[:] = [c for c in q if c >> 8 != _RESET_CLASS]
            q.insert(0, code)
        elif code not in q:
            q.append(code)

    def pop_unit_attention(self, nexus: Nexus, lun: int) -> int | None:
        q = self._ua.get((nexus, lun))
        if not q:
            return None
        code = q.pop(0)
        if not q:
            del self._ua[(nexus, lun)]
        return code

    def clear_unit_attention(self, nexus: Nexus, lun: int, code: int) -> None:
        q = self._ua.get((nexus, lun))
        if q and code in q:
            q.remove(code)
            if not q:
                del self._ua[(nexus, lun)]

    def pending_unit_attentions(self, nexus: Nexus, lun: int) -> list[int]:
        return list(self._ua.get((nexus, lun), ()))

    # ---------------------------------------------------------------- ALUA
    def port_states(self) -> dict[int, int]:
        """Asymmetric access state of each port's target port group (group id = port)."""
        return dict(self.alua.shown)

    def alua_changed(self, port: int) -> bool:
        return port in self.alua.implicit

    def implicit_transition_time(self) -> int:
        return self.alua.transition_seconds

    def gate_error(self, port: int) -> ScsiError | None:
        gate = self._gate.get(port)
        return gate[1] if gate is not None else None

    def set_port_states(self, states: dict[int, int]) -> list[int]:
        """The owner's (RSO's) states for the ports, applied to every logical drive at once;
        returns the ports whose reported state changed."""
        self.alua.base.update(states)
        return self._alua_applied(self.alua.update(self.clock.now()))

    def set_port_fault(self, port: int, state: int | None) -> list[int]:
        """A port fault imposes `state` (unavailable, offline) on a port; None lifts it."""
        if state is None:
            self.alua.fault.pop(port, None)
        else:
            self.alua.fault[port] = state
        return self._alua_applied(self.alua.update(self.clock.now()))

    def alua_deadline(self) -> float | None:
        return self.alua.next_deadline()

    def advance_alua(self, now: float) -> list[int]:
        """End the transitions due by `now` (the controller's clock)."""
        return self._alua_applied(self.alua.advance(now))

    def _alua_applied(self, changed: list[int]) -> list[int]:
        """Rebuild the gate; a change is ASYMMETRIC ACCESS STATE CHANGED (2A/06) for every I_T
        nexus, on both ports, of every logical drive (SPC-4 5.15.2.6, implicit transitions)."""
        self._gate = {p: (st, scsi_error(SenseKey.NOT_READY, _GATE_SENSE[st]))
                      for p, st in self.alua.inaccessible().items() if st in _GATE_SENSE}
        if changed:
            for n in self._nexuses:
                for lun in self.luns:
                    if lun:  # LUN 0 answers on every port whatever the state
                        self._queue_ua(n, lun, Asc.ASYMMETRIC_ACCESS_STATE_CHANGED)
        return changed

    def _first_seen(self, nexus: Nexus) -> None:
        self._nexuses.add(nexus)
        if self.nexus_observer is not None:
            self.nexus_observer(nexus, True)
        if nexus in self._lost:
            self._lost.discard(nexus)
            code: int | None = Asc.I_T_NEXUS_LOSS_OCCURRED
        else:
            code = self._first_code
        if code is not None:
            for lun in self.luns:
                self._queue_ua(nexus, lun, code)

    # ------------------------------------------------------------ execute
    def execute(self, req: ScsiRequest) -> ScsiResult:
        result = self._execute(req)
        if isinstance(result, Stepped):  # a long command (stepped.py): recorded when it ends
            if req.may_step:
                return result
            assert result.work is not None
            result = run_to_end(result.work)
        return self._done(req, result)

    def _done(self, req: ScsiRequest, result: ScsiResult) -> ScsiResult:
        self.stats.record(req, result)  # once per command, whatever the answer
        if self.observer is not None:  # a recording: one test on the fast path when there is none
            self.observer(req, result)
        return result

    def resume(self, req: ScsiRequest, stepped: Stepped) -> ScsiResult | Wait:
        """The next step of a Stepped command: its final result, or what to wait for first (stepped.py).

        Admitted again first, as a new command would be: a reservation conflict, or a port the
        RSO or ALUA state now fences, ends it here (what earlier steps wrote stays)."""
        work = stepped.work
        assert work is not None
        unit = self.luns.get(req.lun) or self._nounit
        if self.visibility is not None and req.lun and not self.visibility(req.nexus, req.lun):
            unit = self._nounit  # no longer presented to this host (its ACL changed meanwhile)
        if stepped.unit is not None and stepped.unit is not unit:  # a restore or reset in between
            work.close()
            return self._done(req, ScsiResult(Status.CHECK_CONDITION, b"", sense_for(
                SenseKey.UNIT_ATTENTION, Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET, unit.d_sense)))
        try:
            entry = unit.lookup(req.cdb) if unit.present else None
            if entry is None:
                raise illegal(Asc.LOGICAL_UNIT_NOT_SUPPORTED)
            gate = self._gate.get(req.nexus.port) if self._gate else None
            if gate is not None and gate[0] not in entry.alua:
                raise gate[1]
            res = unit.reservations
            if res is not None and res.conflict(req.nexus, req.cdb, entry.access):
                work.close()
                return self._done(req, ScsiResult(Status.RESERVATION_CONFLICT))
            try:
                return next(work)
            except StopIteration as end:
                return self._done(req, end.value)
        except Exception as exc:
            work.close()
            return self._done(req, self._failed(req, unit, exc))

    def _execute(self, req: ScsiRequest) -> ScsiResult:
        unit = self.luns.get(req.lun) or self._nounit
        if self.visibility is not None and req.lun and not self.visibility(req.nexus, req.lun):
            unit = self._nounit  # a unit this host is not presented: as if there were none
        try:
            nexus = req.nexus
            if nexus not in self._nexuses:
                self._first_seen(nexus)
            cdb = req.cdb
            if not cdb:
                raise invalid_opcode()
            # The command's entry, looked up once (None: the unit answers the unknown command).
            entry = unit.table.get(cdb[0])
            if isinstance(entry, dict):
                entry = unit.lookup(cdb)
            if self._ua and unit.present and (entry is None or not entry.ua_exempt):
                code = self.pop_unit_attention(nexus, req.lun)
                if code is not None:
                    return ScsiResult(
                        Status.CHECK_CONDITION,
                        b"",
                        sense_for(SenseKey.UNIT_ATTENTION, code, unit.d_sense),
                    )
            if self._gate and req.lun and unit.present:
                gate = self._gate.get(nexus.port)
                if gate is not None and (entry is None or gate[0] not in entry.alua):
                    raise gate[1]
            if self.injections.active and req.lun and unit.present:
                injected = self.injections.answer(req, unit.d_sense, lambda: unit.dispatch(req, entry))
                if injected is not None:
                    return injected
            result = unit.dispatch(req, entry)
            if isinstance(result, Stepped):
                result.unit = unit  # resume() ends it if a controller reset replaced the unit meanwhile
            return result
        except Exception as exc:
            return self._failed(req, unit, exc)

    def _failed(self, req: ScsiRequest, unit: LogicalUnit, exc: Exception) -> ScsiResult:
        """The answer to a command that raised: its sense, or INTERNAL TARGET FAILURE (logged once)."""
        if isinstance(exc, ScsiError):
            return ScsiResult(Status.CHECK_CONDITION, b"", build_sense(exc, unit.d_sense))
        op = req.cdb[0] if req.cdb else -1
        if isinstance(exc, OSError):
            # The emulator's own storage refused (ENOSPC, EIO on a drive image): INTERNAL TARGET
            # FAILURE as for any fault of the target, logged once per kind, without a traceback.
            key = (f"{type(unit).__name__} errno {exc.errno}", op)
            if key not in self._logged:
                self._logged.add(key)
                log.error("opcode %#x on LUN %d failed: %s", op, req.lun, exc)
        else:
            key = (type(unit).__name__, op)
            if key not in self._logged:
                self._logged.add(key)
                log.error("internal error executing opcode %#x on LUN %d", op, req.lun, exc_info=exc)
        return ScsiResult(Status.CHECK_CONDITION, b"", build_sense(internal_target_failure(), unit.d_sense))

    def check_data_out(self, req: ScsiRequest) -> ScsiResult | None:
        """The answer to a command whose expected data-out no unit could take, or None to go on.

        Asked by the transport before it solicits or buffers any data-out, so an expected
        length of 4 GiB costs nothing: beyond the unit's maximum transfer length (the Block
        Limits VPD page's, in bytes) it is ILLEGAL REQUEST, INVALID FIELD IN CDB (SBC-3 for a
        transfer length above the maximum; LIO answers a WRITE whose EDTL disagrees with its
        CDB the same way); on a LUN with nothing behind it, LOGICAL UNIT NOT SUPPORTED.
        """
        unit = self.luns.get(req.lun) or self._nounit
        if self.visibility is not None and req.lun and not self.visibility(req.nexus, req.lun):
            unit = self._nounit
        if req.expected_length <= unit.max_data_out:
            return None
        err = illegal(Asc.INVALID_FIELD_IN_CDB if unit.present else Asc.LOGICAL_UNIT_NOT_SUPPORTED)
        return ScsiResult(Status.CHECK_CONDITION, b"", build_sense(err, unit.d_sense))

    # ------------------------------------------------- resets and nexuses
    def nexus_loss(self, nexus: Nexus) -> None:
        """The session behind `nexus` is gone: drop its state everywhere."""
        for unit in self.luns.values():
            unit.nexus_loss(nexus)
        for key in [k for k in self._ua if k[0] == nexus]:
            del self._ua[key]
        if nexus in self._nexuses:
            self._nexuses.discard(nexus)
            if self.nexus_observer is not None:
                self.nexus_observer(nexus, False)
            if self._first_code != Asc.POWER_ON_OCCURRED:
                self._lost.add(nexus)

    def lun_reset(self, lun: int, by: Nexus) -> None:
        """LOGICAL UNIT RESET: 29/03 for every nexus on that LUN; saved mode values stay."""
        unit = self.luns.get(lun)
        if unit is None:
            return
        unit.reset()
        for nexus in self._nexuses:
            self._queue_ua(nexus, lun, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED)

    def target_reset(self, cold: bool, by: Nexus) -> None:
        """TARGET WARM RESET (29/03) or TARGET COLD RESET (29/01, like power on) on all LUNs."""
        code = Asc.POWER_ON_OCCURRED if cold else Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED
        if cold:
            # The transport drops every session; whoever logs in next sees the power on.
            self._first_code = Asc.POWER_ON_OCCURRED
            self._lost.clear()
        for lun, unit in self.luns.items():
            if cold:
                unit.power_on()
            else:
                unit.reset()
            for nexus in self._nexuses:
                self._queue_ua(nexus, lun, code)

    def power_on(self) -> None:
        """Power cycle: forget every nexus; each one seen next gets 29/00 once per LUN."""
        for unit in self.luns.values():
            for nexus in self._nexuses:
                unit.nexus_loss(nexus)
            unit.power_on()
        if self.nexus_observer is not None:
            for nexus in self._nexuses:
                self.nexus_observer(nexus, False)
        self._nexuses.clear()
        self._lost.clear()
        self._ua.clear()
        self._first_code = Asc.POWER_ON_RESET_OR_BUS_DEVICE_RESET
