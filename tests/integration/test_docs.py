"""The docs cannot lie: every command shown in README.md and docs/*.md runs here, or is mapped to the
test that runs it, and a command nothing covers fails the suite.

What is extracted, from each Markdown file:
- every fenced code block: TOML (loaded with the project's config loader, and built), Python
  (compiled, its imports run, and run whole when it needs nothing the page does not define),
  YAML (its `run:` lines are commands), output shown as `msa500-emu serve` prints it (each line
  must be in the real banner), and command blocks: each line a command, `\\` and indented lines
  continue it, `# ...` is a comment, a `label: [--options]` line adds options to the block's
  commands; a command-language line may hold several commands in columns, `(...)` a comment;
- every inline code span that starts like a command: a program we ship or use (`msa500-emu`,
  `ctl`, `lab`, `scripts/...`, `python3 -m msa500_emu.agents`, `iscsi-ls`, `qemu-*`, `docker`,
  `pip`, `pytest`, `iscsiadm`, `iscsi-test-cu`) with at least one argument, a `scripts/` path, or
  a command-language verb followed by an upper-case word.

How each one is checked (KINDS below, first match wins):
- command language in a block: the whole block runs top to bottom through `msa500-emu ctl` on a
  fresh emulator with the built-in default shelf, expanded by the usage notation
  (tests/integration/notation.py); each command must succeed (a command that cannot work as
  written is a docs bug). Before each command, a running expansion is waited for, as an operator
  waits for "Expansion ... started" to end. Inline language commands must parse (by the real
  grammar) and get a sensible answer from a real emulator; templates (`FAULT DISKm ...`) must name
  a command of the grammar.
- `iscsi-ls`, `qemu-img`, `qemu-io` lines and the `ctl` inside `docker exec`: really run against
  `msa500-emu serve` (the docs' addresses and placeholders such as URL, PORTAL, IQN become its
  own), as is the `file=iscsi://...` drive of a `qemu-system-x86_64` line (`qemu-img info`).
- our programs' options (`--flag`, `-d`) must exist: in `--help` of `msa500-emu serve / ctl /
  agent primary / agent recovery / lab SUB` and `python3 -m msa500_emu.agents`, in the source of
  a `scripts/` program (some of which have no `--help` that does not run them), and in the source
  that builds a QEMU command line for the lines COVERED maps there.
- commands that need machinery other tests already run are mapped in COVERED to that test, which
  must exist and contain the given evidence; EXEMPT lists what is deliberately not run, with why.
  An entry that matches no docs command fails too, so the maps cannot rot either.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from msa500_emu import cli
from msa500_emu.config import load
from msa500_emu.management.commands import COMMANDS, CommandError, run
from msa500_emu.management.grammar import NoViews
from msa500_emu.testing import InProcessArray, start_array

from ..conftest import ROOT, need
from .notation import columns, expand

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VERBS = {key.split()[0] for key in COMMANDS}
PROGRAMS = ("msa500-emu", "ctl", "lab", "python3", "iscsi-ls", "qemu-img", "qemu-io", "qemu-system-x86_64",
            "docker", "pip", "pytest", "iscsiadm", "iscsi-test-cu")
DOCS_PORT1, DOCS_PORT2, DOCS_API = "127.0.0.1:3260", "127.0.0.1:3261", "127.0.0.1:8500"
DOCS_TARGET = "iqn.2003-04.com.hp:msa500.e03kmn5w2t"  # the built-in default shelf's, serial E03KMN5W2T

# (pattern, the test that runs such commands, a string that test must contain, sources that must hold
# every option the docs show for them). A docs command matching one is covered there.
COVERED: list[tuple[str, str, str, tuple[str, ...]]] = [
    (r"^msa500-emu scenario ", "tests/integration/test_scenarios.py", "scenario_cli(", ()),
    (r"^msa500-emu fleet ", "tests/integration/test_many_arrays.py", '"fleet", "up"', ()),
    (r"^(msa500-emu agent|python3 -m msa500_emu\.agents) \S+ .*--device", "tests/integration/test_lab.py",
     "lab_cmd", ()),  # /dev/sgN exists in the lab's VMs only
    (r"^msa500-emu agent ", "tests/integration/test_rso_agents.py", '"agent", role', ()),
    (r"^python3 -m msa500_emu\.agents$", "tests/integration/test_lab.py", "lab_cmd", ()),  # the guest's monitor
    (r"^(msa500-emu )?lab ", "tests/integration/test_lab.py", "lab_cmd", ()),
    (r"^qemu-system-x86_64 ", "tests/integration/test_lab.py", "lab_cmd",
     ("msa500_emu/lab/guest.py", "msa500_emu/server.py")),
    (r"^qemu-img convert ", "tests/integration/test_lab.py", "lab_cmd", ("msa500_emu/lab/guest.py",)),
    (r"^scripts/lab/", "tests/integration/test_lab.py", "lab_cmd", ()),  # `lab up` builds and boots them
    # docs/containers.md: the plugin's container mode runs the example test in scripts/docker-smoke (step 8).
    (r"^pytest .*--msa500-mode container", "scripts/docker-smoke",
     "--msa500-mode container examples/test_failover_example.py", ()),
    # docs/containers.md's lab: docker-smoke's step 10 brings compose.yaml up, asks ps, logs, exec, downs it.
    (r"^docker compose (up|ps|logs|exec|down)\b", "scripts/docker-smoke", "compose lab: nodea and nodeb logged in", ()),
    (r"^(docker |pip install \.$|scripts/docker-smoke)", "tests/integration/test_docker.py", "docker-smoke", ()),
    (r"^msa500-emu replay ", "tests/integration/test_record_replay.py", '"replay"', ("msa500_emu/recording/cli.py",)),
    (r"^iscsi-test-cu ", "tests/integration/test_conformance.py", "iscsi-test-cu", ()),
    (r"^(pip install msa500-emu|pytest)", "tests/integration/test_plugin.py", "--msa500-mode", ()),
    # The suite's own runner: this test runs under it.
    (r"^scripts/test$", "scripts/test", "pytest", ()),
    # scripts/setup, then `msa500-emu serve`: test_serve_prints_the_banner_the_readme_shows runs the latter.
    (r"^scripts/serve$", "tests/integration/test_docs.py", "def test_serve_prints_the_banner", ()),
    (r"^scripts/check-model", "tests/model/test_checker.py", "check-model", ()),
    (r"^scripts/soak", "tests/integration/test_soak.py", '"scripts" / "soak"', ()),  # a short run
    (r"^scripts/fuzz", "tests/fuzz/test_fuzz_short.py", '"scripts" / "fuzz"', ()),
    # Benchmarks assert nothing (they print numbers beside a peer); their options are checked here.
    (r"^scripts/bench", "tests/integration/test_docs.py", "def test_options_shown_exist", ()),
]
EXEMPT = {
    r"^iscsiadm ": "open-iscsi needs root and the kernel initiator; no test may change the host's iSCSI state",
}


# ------------------------------------------------------------------------------------ extraction
@dataclass
class Block:
    path: Path
    line: int  # of the opening fence
    info: str
    lines: list[tuple[int, str]]


@dataclass
class DocCommand:
    path: Path
    line: int
    text: str
    inline: bool
    block: int = -1  # index into BLOCKS for block commands
    shared: list[str] = field(default_factory=list)  # options a `label: [...]` line adds

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> tuple[list[Block], str]:
    """The page's fenced blocks, and its text with them blanked out (line numbers kept)."""
    blocks: list[Block] = []
    rest: list[str] = []
    current: Block | None = None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fence = line.strip().startswith("```")
        if current is None and fence:
            current = Block(path, n, line.strip()[3:].strip(), [])
        elif current is not None and fence:
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append((n, line))
        rest.append("" if current is not None or fence else line)
    return blocks, "\n".join(rest)


def _logical_lines(block: Block) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    joining = False
    base = min((len(t) - len(t.lstrip()) for _, t in block.lines if t.strip()), default=0)  # a block in a list
    for n, whole in block.lines:
        raw = whole[base:]
        line = re.sub(r"\s+#(\s.*)?$", "", raw).rstrip()
        if not line.strip():
            joining = False
            continue
        if out and (joining or raw[:1] in (" ", "\t")):
            out[-1] = (out[-1][0], f"{out[-1][1]} {line.strip()}")
        else:
            out.append((n, line.strip()))
        joining = out[-1][1].endswith("\\")
        if joining:
            out[-1] = (out[-1][0], out[-1][1][:-1].rstrip())
    return out


def block_kind(block: Block) -> str:
    if block.info in ("toml", "python", "yaml"):
        return block.info
    first = next((t.strip() for _, t in block.lines if t.strip()), "")
    return "output" if first.startswith("msa500-emu: ") else "commands"


def looks_like_command(text: str) -> bool:
    words = text.split()
    if not words:
        return False
    if words[0].startswith("scripts/"):
        return True
    if words[0] in PROGRAMS:
        return len(words) > 1 and not (words[0] == "python3" and words[1:3] != ["-m", "msa500_emu.agents"])
    return words[0] in VERBS and len(words) > 1 and words[1][:1].isupper()


def extract() -> tuple[list[Block], list[DocCommand]]:
    blocks: list[Block] = []
    commands: list[DocCommand] = []
    for path in DOCS:
        page_blocks, prose = fenced_blocks(path)
        for block in page_blocks:
            index = len(blocks)
            blocks.append(block)
            kind = block_kind(block)
            if kind == "yaml":
                for n, line in block.lines:
                    m = re.match(r"\s*-\s*run:\s*(.+?)(\s+#.*)?$", line)
                    if m:
                        commands.append(DocCommand(path, n, m.group(1).strip(), False, index))
            elif kind == "commands":
                shared: list[str] = []
                mine: list[DocCommand] = []
                for n, line in _logical_lines(block):
                    label = re.match(r"^[a-z]+:\s+(\[.*)$", line)
                    if label:
                        shared.append(label.group(1))
                        continue
                    parts = columns(line) if line.split()[0] in VERBS else [line]
                    mine += [DocCommand(path, n, part, False, index) for part in parts]
                for c in mine:
                    c.shared = shared
                commands += mine
        for m in re.finditer(r"`([^`]+)`", prose):
            text = " ".join(m.group(1).split())
            if looks_like_command(text):
                commands.append(DocCommand(path, prose.count("\n", 0, m.start()) + 1, text, True))
    return blocks, commands


BLOCKS, DOC_COMMANDS = extract()


# -------------------------------------------------------------------------------- classification
def language_part(text: str) -> str | None:
    """The command-language words of a docs command (`ctl` and its options removed), if any."""
    words = text.split()
    if words[:2] == ["msa500-emu", "ctl"]:
        words = words[2:]
    elif words[:1] == ["ctl"]:
        words = words[1:]
    elif words and words[0] in VERBS:
        return text
    else:
        return None
    while words and words[0] in ("--api", "--json"):
        words = words[2:] if words[0] == "--api" else words[1:]
    return " ".join(words) if words and words[0].upper() in VERBS else None


def is_template(language: str) -> bool:
    return bool(re.search(r"[a-z]|\.\.\.|\s/\s|\[", re.sub(r'NAME=\S+|"[^"]*"', "", language)))


def covered_by(text: str) -> tuple[str, str, str, tuple[str, ...]] | None:
    return next((entry for entry in COVERED if re.search(entry[0], text)), None)


def kind_of(c: DocCommand) -> str:
    """How a docs command is checked; "" for a command nothing covers."""
    text = c.text
    if any(re.search(p, text) for p in EXEMPT):
        return "exempt"
    if language_part(text) is not None:
        lang = language_part(text) or ""
        if not c.inline and not text.startswith(("msa500-emu", "ctl")):
            return "language-block"
        return "language-template" if is_template(lang) else "language"
    if text.startswith("docker exec ") and " msa500-emu ctl " in text:
        return "docker-ctl"
    if text == "python3 -m msa500_emu.agents --help":
        return "run-help"
    if covered_by(text):
        return "covered"
    if text.split()[0] in ("iscsi-ls", "qemu-img", "qemu-io"):
        return "tool"
    if text.startswith(("msa500-emu serve", "msa500-emu ctl")):
        return "options"
    if text.startswith("scripts/") and text.endswith("/") and (ROOT / text).is_dir():
        return "path"
    return ""


def test_every_docs_command_is_run_or_covered() -> None:
    assert DOC_COMMANDS, "nothing extracted from the docs"
    loose = [f"{c.where}: {c.text}" for c in DOC_COMMANDS if not kind_of(c)]
    assert not loose, ("docs commands nothing runs or covers (run them here, or map them in COVERED to the "
                       "test that runs them):\n" + "\n".join(loose))


def test_the_coverage_map_points_at_real_tests_and_matches_docs_commands() -> None:
    for pattern, test, evidence, sources in COVERED:
        path = ROOT / test
        assert path.exists(), f"COVERED {pattern!r}: {test} does not exist"
        assert evidence in path.read_text(), f"COVERED {pattern!r}: {test} does not contain {evidence!r}"
        for source in sources:
            assert (ROOT / source).exists(), source
        assert any(re.search(pattern, c.text) for c in DOC_COMMANDS), f"COVERED {pattern!r} matches no docs command"
    for pattern in EXEMPT:
        assert any(re.search(pattern, c.text) for c in DOC_COMMANDS), f"EXEMPT {pattern!r} matches no docs command"


def test_the_readme_keeps_its_two_set_up_commands() -> None:
    blocks = [b for b in BLOCKS if b.path.name == "README.md" and b.info == "sh"]
    assert [line.split("#")[0].strip() for _, line in blocks[0].lines] == ["scripts/serve", "scripts/test"]


# --------------------------------------------------------------------------------------- options
@cache
def help_of(*argv: str) -> str:
    out = subprocess.run([sys.executable, *argv, "--help"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, check=False)
    assert out.returncode == 0, f"{' '.join(argv)} --help failed: {out.stderr}"
    return out.stdout


def flags(text: str) -> list[str]:
    return re.findall(r"(?<![\w=/.:-])(--?[A-Za-z][\w-]*)", text)


def option_sources(c: DocCommand) -> list[tuple[str, str]]:
    """(what, text) pairs: every option of c must appear in one of the texts; [] when nothing to check."""
    words = c.text.split()
    if words[:2] in (["msa500-emu", "serve"], ["msa500-emu", "ctl"]):
        return [(f"msa500-emu {words[1]} --help", help_of("-m", "msa500_emu", words[1]))]
    if words[:1] == ["ctl"]:
        return [("msa500-emu ctl --help", help_of("-m", "msa500_emu", "ctl"))]
    if words[:2] == ["msa500-emu", "agent"]:
        roles = words[2].split("|")
        return [(f"agent {' / '.join(roles)} --help", "\n".join(help_of("-m", "msa500_emu", "agent", r)
                                                                for r in roles))]
    if words[:3] == ["python3", "-m", "msa500_emu.agents"]:
        sub = words[3:4] if len(words) > 3 and not words[3].startswith("-") else []
        return [("python3 -m msa500_emu.agents --help", help_of("-m", "msa500_emu.agents", *sub))]
    lab = words[2:] if words[:2] == ["msa500-emu", "lab"] else words[1:] if words[:1] == ["lab"] else None
    if lab is not None:
        assert re.search(rf"^\s+{re.escape(lab[0])}\s", help_of("-m", "msa500_emu", "lab"), re.MULTILINE), \
            f"{c.where}: `lab {lab[0]}` is not a lab command"
        return [(f"lab {lab[0]} --help", help_of("-m", "msa500_emu", "lab", lab[0]))]
    if words[0].startswith("scripts/"):
        path = ROOT / words[0]
        assert path.exists(), f"{c.where}: {words[0]} does not exist"
        return [(words[0], path.read_text())] if path.is_file() else []
    entry = covered_by(c.text)
    if entry and entry[3]:
        return [(", ".join(entry[3]), "\n".join((ROOT / s).read_text() for s in entry[3]))]
    return []


def test_options_shown_exist() -> None:
    """Every option the docs show for our programs is one they have (and every scripts/ path exists)."""
    wrong = []
    for c in DOC_COMMANDS:
        sources = option_sources(c)
        text = " ".join([re.sub(r"^python3 -m \S+", "", c.text), *c.shared])
        for flag in flags(text) if sources else []:
            if not any(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", src) for _, src in sources):
                wrong.append(f"{c.where}: {flag} is not in {sources[0][0]}  ({c.text})")
    assert not wrong, "\n".join(wrong)


def test_agents_module_help_runs() -> None:
    for c in DOC_COMMANDS:
        if kind_of(c) == "run-help":
            assert "usage" in help_of("-m", "msa500_emu.agents").lower(), c.where


# ----------------------------------------------------------------------------- the command language
def ctl(arr: InProcessArray, line: str) -> tuple[int, str]:
    """`msa500-emu ctl --api URL <line>` as a shell would split it, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["ctl", "--api", arr.api, *shlex.split(line)])
    return rc, (out.getvalue() + err.getvalue()).strip()


def wait_for_expansion(arr: InProcessArray, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(u.get("expand_percent") is not None for u in arr.units()):
        assert time.monotonic() < deadline, "an expansion did not finish"
        time.sleep(0.2)


@pytest.fixture
def default_shelf(tmp_path: Path) -> Iterator[InProcessArray]:
    arr = start_array(tmp_path / "shelf", mode="inprocess")
    yield arr
    assert arr.stop() == 0, arr.log_tail()


def test_command_blocks_run_top_to_bottom_on_the_default_shelf(default_shelf: InProcessArray) -> None:
    by_block: dict[int, list[DocCommand]] = {}
    for c in DOC_COMMANDS:
        if kind_of(c) == "language-block":
            by_block.setdefault(c.block, []).append(c)
    assert by_block, "no command-language block in the docs"
    for index, cmds in by_block.items():
        arr = default_shelf if index == min(by_block) else start_array(default_shelf.state_dir.parent / f"b{index}",
                                                                      mode="inprocess")
        try:
            for c in cmds:
                for line in expand(c.text):
                    wait_for_expansion(arr)
                    rc, out = ctl(arr, line)
                    print(f"{c.where}: {line}\n    {out.splitlines()[0] if out else ''}")
                    assert rc == 0, f"{c.where}: `{line}` (from `{c.text}`) fails as written: {out}"
        finally:
            if arr is not default_shelf:
                assert arr.stop() == 0
    log = default_shelf.log.read_text()
    assert "Traceback" not in log, log[-4000:]


class Recorder(NoViews):
    """An array that accepts every operation: what the grammar alone makes of a command."""

    def __init__(self) -> None:
        self.ops: list[str] = []

    def operate(self, op: str, /, *args: Any, **kwargs: Any) -> Any:
        self.ops.append(op)
        return {}


def test_inline_commands_parse_and_get_a_sensible_answer(default_shelf: InProcessArray) -> None:
    for c in DOC_COMMANDS:
        kind = kind_of(c)
        lang = language_part(c.text)
        if kind == "language-template":
            assert lang is not None
            words = lang.upper().split()
            assert " ".join(words[:2]) in COMMANDS or words[0] in COMMANDS, f"{c.where}: {c.text} names no command"
        elif kind == "language":
            assert lang is not None
            try:
                run(Recorder(), lang)
            except CommandError as exc:
                pytest.fail(f"{c.where}: `{c.text}` is not a command of the language: {exc}")
            rc, out = ctl(default_shelf, lang)
            if rc:  # a refusal in this shelf's state is a sensible answer: one line naming the problem
                assert rc == 1 and out and "\n" not in out, f"{c.where}: {out}"
            assert "internal error" not in out and "Traceback" not in out, f"{c.where}: {out}"
            print(f"{c.where}: {lang}\n    {out.splitlines()[0]}")


# --------------------------------------------------------------------- msa500-emu serve, as the docs show it
@dataclass
class Served:
    proc: subprocess.Popen[str]
    banner: str
    port1: str
    port2: str
    api: str
    target: str

    def local(self, text: str) -> str:
        """A docs command with the docs' addresses and placeholders made this emulator's."""
        for docs, real in ((DOCS_PORT1, self.port1), (DOCS_PORT2, self.port2), (DOCS_API, self.api),
                           ("iscsi://PORTAL", f"iscsi://{self.port1}"), ("HOST:PORT", self.port1),
                           (" URL", f" iscsi://{self.port1}/{self.target}/1"), ("/IQN/", f"/{self.target}/"),
                           ("/TARGET/", f"/{self.target}/"), ("/LUN", "/1")):
            text = text.replace(docs, real)
        return text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`msa500-emu serve` on the built-in default shelf, as scripts/serve runs it (free ports)."""
    d = tmp_path_factory.mktemp("serve")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for var in ("MSA500_PORT1", "MSA500_PORT2", "MSA500_API", "MSA500_STATE_DIR"):
        env.pop(var, None)
    log = open(d / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "msa500_emu", "serve", "--state-dir", str(d / "state"),
                             "--port1", "127.0.0.1:0", "--port2", "127.0.0.1:0", "--api", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
    lines: list[str] = []
    done = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.append(line)
            if "msa500-emu ctl" in line:
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert done.wait(60), "msa500-emu serve printed no banner"
        banner = "".join(lines)
        ports = dict(re.findall(r"port (\d): iSCSI portal (127\.0\.0\.1:\d+)", banner))
        api = re.search(r"management API: http://(\S+)/api/health", banner)
        target = re.search(r"serving (\S+)", banner)
        assert ports and api and target, banner
        yield Served(proc, banner, ports["1"], ports["2"], api.group(1), target.group(1))
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "stopped cleanly" in rest, (proc.returncode, rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def test_serve_prints_the_banner_the_readme_shows(served: Served) -> None:
    """Each line of an output block is in the real banner (addresses made the docs' own), in order."""
    real = served.banner
    for docs, mine in ((DOCS_PORT1, served.port1), (DOCS_PORT2, served.port2), (DOCS_API, served.api)):
        real = real.replace(mine, docs)
    real_lines = [line.rstrip() for line in real.splitlines()]
    shown = [b for b in BLOCKS if block_kind(b) == "output"]
    assert shown, "no output block in the docs"
    assert served.target == DOCS_TARGET
    for block in shown:
        at = 0
        for n, line in block.lines:
            if not line.strip():
                continue
            assert line.rstrip() in real_lines[at:], f"{block.path.name}:{n}: {line!r} is not in the banner:\n{real}"
            at = real_lines.index(line.rstrip(), at) + 1


def _run(argv: list[str], what: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{what}: `{' '.join(argv)}` exit {out.returncode}:\n{out.stdout}{out.stderr}"
    return out.stdout


def docs_tool_lines() -> list[tuple[str, str]]:
    """(where, command) for the tool lines that really run, and the ones inside output blocks."""
    found = [(c.where, c.text) for c in DOC_COMMANDS if kind_of(c) == "tool"]
    for block in BLOCKS:
        if block_kind(block) == "output":
            for n, line in block.lines:
                if line.split()[:1] and line.split()[0] in ("iscsi-ls", "qemu-img", "qemu-io"):
                    found.append((f"{block.path.relative_to(ROOT)}:{n}", line.strip()))
    return found


def test_tool_lines_run_against_the_emulator(served: Served) -> None:
    lines = docs_tool_lines()
    assert any(text.startswith("iscsi-ls") for _, text in lines), lines
    for where, text in lines:
        argv = shlex.split(served.local(text))
        need(argv[0])
        out = _run(argv, where)
        if argv[0] == "iscsi-ls":
            assert f"Target:{served.target}" in out, f"{where}: {out}"
        print(f"{where}: {' '.join(argv)}\n    {out.splitlines()[0] if out else ''}")


def test_qemu_drives_shown_open(served: Served) -> None:
    """The `file=iscsi://...` drive of each qemu-system-x86_64 line is one QEMU opens (LUN 1 up)."""
    texts = [(c.where, c.text) for c in DOC_COMMANDS if c.text.startswith("qemu-system-x86_64")]
    for block in BLOCKS:
        if block_kind(block) == "output":
            texts += [(f"{block.path.relative_to(ROOT)}:{n}", t.strip()) for n, t in block.lines
                      if t.strip().startswith("qemu-system-x86_64")]
    urls = [(w, u) for w, t in texts for u in re.findall(r"file=(iscsi://[^,\s]+)", served.local(t))]
    assert urls, texts
    qemu_img = need("qemu-img")
    for where, url in urls:
        if url.endswith("/0"):
            continue  # the controller LUN: QEMU opens it as scsi-generic only, in a VM (test_lab)
        info = json.loads(_run([qemu_img, "info", "--output=json", url], where))
        assert info["virtual-size"] > 0, (where, info)


def test_ctl_inside_docker_exec_runs(served: Served) -> None:
    found = [c for c in DOC_COMMANDS if kind_of(c) == "docker-ctl"]
    assert found
    for c in found:
        inner = c.text[c.text.index("msa500-emu ctl ") + len("msa500-emu ctl "):]
        argv = [sys.executable, "-m", "msa500_emu", "ctl", *shlex.split(served.local(inner))]
        out = _run(argv, c.where)
        assert out.strip(), c.where


# ------------------------------------------------------------------------------------ TOML and Python
def test_toml_examples_load_and_build_their_shelf(tmp_path: Path) -> None:
    tomls = [b for b in BLOCKS if block_kind(b) == "toml"]
    assert tomls
    for i, block in enumerate(tomls):
        text = "\n".join(line for _, line in block.lines)
        path = tmp_path / f"example{i}.toml"
        path.write_text(text)
        raw = tomllib.loads(text)
        settings = load(path, {})
        for key in ("port1", "port2", "api"):
            if key in raw:
                assert str(getattr(settings, key)) == raw[key], key
        if "state_dir" in raw:
            assert settings.state_dir == Path(raw["state_dir"])
        arr = start_array(tmp_path / f"shelf{i}", path, mode="inprocess")
        try:
            units = {u["lun"]: u for u in arr.units()}
            for ld in raw.get("shelf", {}).get("logical_drives", []):
                unit = units[ld["lun"]]
                assert unit["name"] == ld.get("name", unit["name"]) and unit["raid"] == str(ld["raid"]).upper()
        finally:
            assert arr.stop() == 0


class _TopLevelNames(ast.NodeVisitor):
    """Names the block's own top-level code loads and binds (function bodies run only when called)."""

    def __init__(self) -> None:
        self.loads: set[str] = set()
        self.bound: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        (self.loads if isinstance(node.ctx, ast.Load) else self.bound).add(node.id)

    def visit_alias(self, node: ast.alias) -> None:
        self.bound.add((node.asname or node.name).split(".")[0])

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.bound.add(node.name)
        for d in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
            if d is not None:
                self.visit(d)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        pass


def _free_names(tree: ast.AST, defined: set[str]) -> tuple[set[str], set[str]]:
    """(names the top-level code needs and nobody defined, names the block defines)."""
    names = _TopLevelNames()
    names.visit(tree)
    return names.loads - names.bound - defined - set(dir(builtins)), names.bound


class _TmpPaths(ast.NodeTransformer):
    def __init__(self, into: Path) -> None:
        self.into = into

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        if isinstance(node.value, str) and node.value.startswith("/tmp/"):
            return ast.copy_location(ast.Constant(str(self.into / node.value[5:])), node)
        return node


def test_python_examples_compile_import_and_run_when_self_contained(tmp_path: Path) -> None:
    ran = 0
    for path in DOCS:
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        defined: set[str] = set()
        for block in [b for b in BLOCKS if b.path == path and block_kind(b) == "python"]:
            where = f"{path.relative_to(ROOT)}:{block.line}"
            source = "\n".join(line for _, line in block.lines)
            tree = ast.parse(source, where)
            imports = ast.Module([n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], [])
            exec(compile(imports, where, "exec"), namespace)
            free, binds = _free_names(tree, defined)
            if not free:
                runnable = ast.fix_missing_locations(_TmpPaths(tmp_path).visit(tree))
                exec(compile(runnable, where, "exec"), namespace)
                ran += 1
                defined |= binds
            print(f"{where}: {'ran' if not free else 'compiled, imports ran; needs ' + ', '.join(sorted(free))}")
    assert ran, "no docs Python example ran"
