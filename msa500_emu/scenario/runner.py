"""Running a scenario: its steps in order on a target's clock, one timeline row per thing that happened.

One loop drives both clocks: it plays the RSO hosts at their interval, asks the target to let time
pass towards the next thing due, and checks what a step waits for after each move. On the virtual
clock a move is a jump to the next timer of the controller, so an hour of heartbeats, timeouts
and rebuild steps takes milliseconds; on the wall clock it is a short sleep and one more poll of
the API. A step that cannot start (its event never came, its command was refused) ends the run:
the steps after it were written for a state that did not happen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..management import watch
from ..management.grammar import CommandError
from .format import DEFAULT_AFTER_WITHIN_S, HOST_ROLES, Scenario, ScenarioError, Step, load
from .targets import ApiTarget, HostError, Target, VirtualTarget

MAX_MOVES = 5_000_000  # a bound on the loop: timers that never settle are a bug, not a long scenario
WHAT_WIDTH = 72
TIME_WIDTH = 9
HOST_WORDS = {("primary", "up"): "primary host up: heartbeats from port 1",
              ("primary", "down"): "primary host down: no more heartbeats",
              ("recovery", "up"): "recovery host up: acknowledges from port 2, takes over when told",
              ("recovery", "down"): "recovery host down: no more acknowledgments"}


@dataclass(frozen=True)
class Row:
    time: float  # seconds since the scenario started
    step: str
    what: str
    ok: bool | None  # None: a note (a host's state, a host that lost the array)

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else "OK" if self.ok else "FAIL"


@dataclass
class Result:
    scenario: Scenario
    virtual: bool
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok is not False for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def text(self) -> str:
        """The whole timeline, columns aligned to the widest cell."""
        step_w = max([len("STEP"), *(len(r.step) for r in self.rows)])
        what_w = max([len("WHAT HAPPENED"), *(len(r.what) for r in self.rows)])
        lines = [_line("TIME", "STEP", "WHAT HAPPENED", "RESULT", step_w, what_w)]
        lines += [_line(_time(r.time), r.step, r.what, r.verdict, step_w, what_w) for r in self.rows]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        clock = "virtual clock" if self.virtual else "wall clock"
        end = self.rows[-1].time if self.rows else 0.0
        verdict = "passed" if self.ok else f"FAILED ({len(self.failures)} of {self._checks()} checks)"
        return f"scenario {self.scenario.name}: {verdict}, {_time(end).strip()} on the {clock}"

    def _checks(self) -> int:
        return sum(1 for r in self.rows if r.ok is not None)


def _time(t: float) -> str:
    return f"{t:.3f}s".rjust(TIME_WIDTH)


def _line(t: str, step: str, what: str, verdict: str, step_w: int, what_w: int) -> str:
    return f"{t.rjust(TIME_WIDTH)}  {step.ljust(step_w)}  {what.ljust(what_w)}  {verdict}".rstrip()


class _Stop(Exception):
    """A step could not start: the run ends here."""


class Run:
    """One run of one scenario on one target (`run()` is the way in)."""

    def __init__(self, scenario: Scenario, target: Target, out: TextIO | None = None) -> None:
        self.sc = scenario
        self.t = target
        self.out = out
        self.result = Result(scenario, target.virtual)
        self.up = dict.fromkeys(HOST_ROLES, False)
        self.due = dict.fromkeys(HOST_ROLES, 0.0)
        self.host_error: dict[str, str | None] = dict.fromkeys(HOST_ROLES)
        self.step_w = max(len(s.label) for s in scenario.steps)
        self.moves = 0
        self.label = "start"

    # -- the timeline ----------------------------------------------------------------------
    def row(self, what: str, ok: bool | None) -> None:
        r = Row(self.t.now(), self.label, what, ok)
        self.result.rows.append(r)
        if self.out is not None:
            print(_line(_time(r.time), r.step, r.what, r.verdict, self.step_w, WHAT_WIDTH), file=self.out, flush=True)

    # -- time --------------------------------------------------------------------------------
    def tick_hosts(self) -> None:
        now = self.t.now()
        for role in HOST_ROLES:
            if not self.up[role] or now < self.due[role]:
                continue
            self.due[role] = max(self.due[role] + self.sc.interval, now)
            try:
                note = self.t.host(role)
            except HostError as exc:
                if self.host_error[role] != str(exc):
                    self.host_error[role] = str(exc)
                    self.row(f"{role} host cannot reach the array: {exc}", None)
                continue
            if self.host_error[role] is not None:
                self.host_error[role] = None
                self.row(f"{role} host reaches the array again", None)
            if note:
                self.row(note, None)

    def until(self, deadline: float, done: Callable[[], bool] | None = None) -> bool:
        """Let time pass until `done()` holds (True) or the deadline passes (False; True without done)."""
        while True:
            self.moves += 1
            if self.moves > MAX_MOVES:
                raise ScenarioError(f"{self.label}: more than {MAX_MOVES} moves of the clock (a long wait with a "
                                    f"short [hosts] interval, or timers that never settle)")
            self.tick_hosts()
            if done is not None and done():
                return True
            now = self.t.now()
            if now >= deadline - 1e-9:
                return done is None
            nxt = min([deadline, *(self.due[r] for r in HOST_ROLES if self.up[r])])
            self.t.wait(max(nxt, now))

    # -- the steps ---------------------------------------------------------------------------
    def last_id(self) -> int:
        events = self.t.events()
        return int(events[-1]["id"]) if events else 0

    def go(self) -> Result:
        if self.out is not None:
            print(_line("TIME", "STEP", "WHAT HAPPENED", "RESULT", self.step_w, WHAT_WIDTH), file=self.out, flush=True)
        start = self.last_id()  # what the array logged before the scenario is not the scenario's
        previous = start
        try:
            for step in self.sc.steps:
                self.label = step.label
                began = self.last_id()
                deadline = self.trigger(step, previous)
                self.act(step)
                if step.expects:
                    self.expect(step, start, deadline)
                previous = began
        except _Stop:
            pass
        finally:
            self.up = dict.fromkeys(HOST_ROLES, False)
        return self.result

    def trigger(self, step: Step, since: int) -> float | None:
        """Wait for the step's time or event; with `after`, the step's deadline (its expectations share it)."""
        if step.at is not None:
            self.until(step.at)
            return None
        if step.after is None:
            return None
        within = DEFAULT_AFTER_WITHIN_S if step.within is None else step.within
        deadline = self.t.now() + within
        found: list[dict[str, Any]] = []

        def logged() -> bool:
            found[:] = [e for e in self.t.events(since) if e.get("code") == step.after]
            return bool(found)

        if self.until(deadline, logged):
            self.row(f"after {step.after}: {_clip(found[0].get('message', ''))}", True)
            return deadline
        else:
            self.row(f"after {step.after}: not logged within {within:g}s", False)
            raise _Stop

    def act(self, step: Step) -> None:
        for line in step.commands:
            try:
                text = self.t.command(line)
            except CommandError as exc:
                self.row(f"{line}: refused: {exc}", False)
                raise _Stop from None
            first = text.strip().splitlines()[0] if text.strip() else "done"
            self.row(f"{line}: {_clip(first)}", True)
        for role, action in step.hosts:
            self.up[role] = action == "up"
            self.due[role] = self.t.now()
            self.host_error[role] = None
            self.row(HOST_WORDS[(role, action)], None)
        self.tick_hosts()

    def expect(self, step: Step, since: int, deadline: float | None) -> None:
        if deadline is None:
            deadline = self.t.now() + (step.within or 0.0)
        checks: list[tuple[str, bool]] = []

        def holds() -> bool:
            checks[:] = self.checks(step, since)
            return all(ok for _, ok in checks)

        self.until(deadline, holds)
        for what, ok in checks:
            self.row(what, ok)

    def checks(self, step: Step, since: int) -> list[tuple[str, bool]]:
        out: list[tuple[str, bool]] = []
        if step.expect_unit:
            units = self.t.units()
            for want in step.expect_unit:
                u = watch.find(units, want.lun)
                state = "absent" if u is None else watch.unit_state(u)
                out.append((f"unit {want.lun} is {state}" + ("" if state == want.state else f", not {want.state}"),
                            state == want.state))
        if step.expect_rso:
            st = self.t.rso()
            for key, value in step.expect_rso:
                if key not in st:
                    out.append((f"RSO STATUS has no field {key} (fields: {', '.join(st)})", False))
                    continue
                have = st[key]
                ok = have == value and isinstance(have, bool) == isinstance(value, bool)
                out.append((f"RSO {key} is {_word(have)}" + ("" if ok else f", not {_word(value)}"), ok))
        if step.expect_event or step.expect_no_event:
            logged = {str(e.get("code")) for e in self.t.events(since)}
            out += [(f"event {c} logged" if c in logged else f"event {c} not logged", c in logged)
                    for c in step.expect_event]
            out += [(f"event {c} logged" if c in logged else f"no event {c}", c not in logged)
                    for c in step.expect_no_event]
        return out


def _word(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _clip(text: Any, width: int = 48) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= width else s[: width - 3] + "..."


def run(scenario: Scenario | str | Path, target: Target, out: TextIO | None = None) -> Result:
    """Run a scenario on a target; the timeline (printed row by row to `out` when given)."""
    sc = scenario if isinstance(scenario, Scenario) else load(scenario)
    return Run(sc, target, out).go()


@contextlib.contextmanager
def virtual_target(scenario: Scenario) -> Iterator[VirtualTarget]:
    target = VirtualTarget(scenario.shelf)
    try:
        yield target
    finally:
        target.close()


def run_virtual(scenario: Scenario | str | Path, out: TextIO | None = None) -> Result:
    """Run a scenario in-process on the virtual clock, on a new shelf built from its `shelf` config."""
    sc = scenario if isinstance(scenario, Scenario) else load(scenario)
    with virtual_target(sc) as target:
        return run(sc, target, out)


def run_on(array: Any, scenario: Scenario | str | Path, out: TextIO | None = None) -> Result:
    """Run a scenario against a running array's handle (msa500_emu.testing.MSA500) on the wall clock."""
    target = ApiTarget(array)
    try:
        return run(scenario, target, out)
    finally:
        target.close()
