"""`ctl WAIT` and `--watch` logic on scripted unit views and a virtual clock (no network, no sleeping)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from msa500_emu.management import watch
from msa500_emu.management.grammar import CommandError


def unit(state: str = "ok", pct: int | None = None, powered: bool = True, lun: int = 1) -> dict[str, Any]:
    return {"lun": lun, "state": state, "rebuild_percent": pct, "expand_percent": None, "powered": powered}


class Scripted(watch.Api):
    """Answers GET /api/units from a script, one view per poll (the last one repeats)."""

    def __init__(self, views: list[list[dict[str, Any]]]) -> None:
        super().__init__("http://127.0.0.1:1", "t")
        self.views = views
        self.polls = 0

    def get(self, path: str) -> Any:
        assert path == "/api/units"
        view = self.views[min(self.polls, len(self.views) - 1)]
        self.polls += 1
        return view


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def run(views: list[list[dict[str, Any]]], spec: watch.WaitSpec, tty: bool = False) -> tuple[int, str, str]:
    clock, out = Clock(), io.StringIO()
    status, line, _ = watch.wait_unit(Scripted(views), spec, watch.Output(out, tty), interval=1.0,
                                      clock=clock, sleep=clock.sleep)
    return status, line, out.getvalue()


def test_plain_lines_one_per_ten_percent_step_then_reached() -> None:
    views = [[unit("interim recovery")], *([unit("rebuilding", p)] for p in (3, 7, 12, 18, 25, 60, 99)), [unit()]]
    status, line, out = run(views, watch.WaitSpec(1))
    assert status == 0 and line.startswith("unit 1: OK, reached after")
    states = [text.split("  ", 1)[1] for text in out.splitlines()]
    assert states == ["unit 1: INTERIM RECOVERY", "unit 1: REBUILDING 3%", "unit 1: REBUILDING 12%",
                      "unit 1: REBUILDING 25%", "unit 1: REBUILDING 60%", "unit 1: REBUILDING 99%", line]


def test_a_terminal_gets_a_bar_redrawn_in_place() -> None:
    status, _, out = run([[unit("rebuilding", 50)], [unit()]], watch.WaitSpec(1), tty=True)
    assert status == 0
    assert out.startswith("\r\x1b[Kunit 1  REBUILDING 50%") and "[" + "#" * 15 + "-" * 15 + "]  50%" in out
    assert out.endswith("\nunit 1: OK, reached after 1 s\n")


def test_impossible_and_timed_out_waits() -> None:
    status, line, _ = run([[unit("rebuilding", 10)], [unit("failed")]], watch.WaitSpec(1))
    assert status == watch.EXIT_REFUSED and line.startswith("unit 1 is FAILED: it cannot become OK")
    status, line, _ = run([[]], watch.WaitSpec(1))
    assert status == watch.EXIT_REFUSED and "does not exist" in line
    status, line, _ = run([[unit(powered=False)]], watch.WaitSpec(1, timeout=3))
    assert status == watch.EXIT_TIMEOUT and line == "unit 1 not OK within 3 s (still POWERED OFF)"
    status, _, _ = run([[unit("failed")]], watch.WaitSpec(1, "failed"))
    assert status == 0


def test_wait_words() -> None:
    assert watch.parse_wait("WAIT UNIT 2".split()) == watch.WaitSpec(2, "ok", watch.DEFAULT_TIMEOUT_S)
    assert watch.parse_wait(["wait", "unit", "1", "STATE=interim-recovery", "TIMEOUT=30s"]) == \
        watch.WaitSpec(1, "interim recovery", 30.0)
    assert watch.parse_state("POWERED_OFF") == watch.POWERED_OFF
    for words, error in (("WAIT UNIT", "unit number missing"), ("WAIT UNIT 1 2", "unexpected '2'"),
                         ("WAIT UNIT 1 STATE=nope", "STATE=nope not one of"), ("WAIT UNIT x", "not a number"),
                         ("WAIT UNIT 1 TIMEOUT=0", "outside"), ("WAIT UNIT 1 COLOR=red", "unknown option")):
        with pytest.raises(CommandError, match=error):
            watch.parse_wait(words.split())


def test_watch_prints_the_table_then_changed_units() -> None:
    views = [[unit(), unit(lun=2)], [unit("rebuilding", 5), unit(lun=2)], [unit("rebuilding", 8), unit(lun=2)],
             [unit("rebuilding", 15)]]
    out = io.StringIO()
    clock = Clock()
    assert watch.watch_units(Scripted(views), watch.Output(out, False), count=4, interval=1, sleep=clock.sleep) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Unit") and clock.now == 3  # no sleep after the last poll
    tail = [line.split("  ", 1)[1] for line in lines[3:]]
    assert tail == ["unit 1: REBUILDING 5%", "unit 1: REBUILDING 15%", "unit 2: deleted"]


def test_bar() -> None:
    assert watch.bar(None, 10) == "[----------]" and watch.bar(100, 10) == "[##########]"
    assert watch.bar(33, 10) == "[###-------]"
