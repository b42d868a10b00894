"""The RSO wire format (firmware_model/rso_wire.py): what the firmware encodes, the agents and the
plugin decode to the same values, every field round-trips, and the module reaches the lab's guests."""

from __future__ import annotations

import ast
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import firmware_model.rso_wire as wire
from firmware_model.rso import STATE_CODES as MODEL_STATE_CODES
from firmware_model.rso import RsoState
from firmware_model.rso_wire import (
    UNKNOWN_AGE,
    ConfigureParams,
    HostEvent,
    RsoOpcode,
    RsoStatus,
    StatusBlock,
    StatusFlag,
    age_ms,
    cdb,
    cdb_length,
    cdb_usage,
)

ROOT = Path(__file__).resolve().parents[2]
u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
ages = st.none() | st.integers(0, UNKNOWN_AGE - 1)

block_fields = st.fixed_dictionaries({
    "code": u8, "enabled": st.booleans(), "act_alone": st.booleans(), "ack_recent": st.booleans(),
    "take_over": st.booleans(), "failed_over": st.booleans(), "secondary_joined": st.booleans(),
    "awaiting_primary": st.booleans(), "active_port": u8, "fenced_port": u8, "heartbeat_age_ms": ages,
    "ack_age_ms": ages, "timeout_ms": u32,
})
status_tail = st.fixed_dictionaries({
    "heartbeats": u32, "acks": u32, "failovers": u32, "link1_up": st.booleans(), "link2_up": st.booleans(),
    "port2_sessions": u8,
})


# ------------------------------------------------------------------ round trips
@given(block_fields)
def test_status_block_round_trips_through_its_16_bytes(fields: dict[str, object]) -> None:
    blk = StatusBlock(**fields)  # type: ignore[arg-type]
    raw = blk.to_bytes()
    assert len(raw) == wire.STATUS_BLOCK_LEN
    assert StatusBlock.from_bytes(raw) == blk and StatusBlock.decode(raw) == blk


@given(st.tuples(u8, st.integers(0, 0x7F), u8, u8, u32, u32, u32))
def test_every_status_block_with_reserved_bits_clear_decodes_and_encodes_back(values: tuple[int, ...]) -> None:
    raw = struct.pack(">BBBBIII", *values)
    assert StatusBlock.from_bytes(raw).to_bytes() == raw


@given(block_fields, status_tail)
def test_rso_status_data_round_trips_through_its_32_bytes(fields: dict[str, object], tail: dict[str, object]) -> None:
    status = RsoStatus(**fields, **tail)  # type: ignore[arg-type]
    raw = status.to_bytes()
    assert len(raw) == wire.RSO_STATUS_LEN and raw[:16] == StatusBlock(**fields).to_bytes()  # type: ignore[arg-type]
    assert RsoStatus.from_bytes(raw) == status
    assert StatusBlock.decode(raw) == status  # the 32-byte answer decodes whole


@given(st.binary(min_size=16, max_size=16), st.tuples(u32, u32, u32, st.integers(0, 3), u8))
def test_rso_status_bytes_with_reserved_fields_clear_encode_back(block: bytes, tail: tuple[int, ...]) -> None:
    block = block[:1] + bytes((block[1] & 0x7F,)) + block[2:]
    raw = block + struct.pack(">IIIBBH", *tail, 0)
    assert RsoStatus.from_bytes(raw).to_bytes() == raw


@given(st.booleans(), st.booleans(), u32)
def test_configure_parameters_round_trip(enable: bool, act_alone: bool, timeout_ms: int) -> None:
    params = ConfigureParams(enable=enable, act_alone=act_alone, timeout_ms=timeout_ms)
    raw = params.to_bytes()
    assert len(raw) == wire.CONFIGURE_LEN and ConfigureParams.reserved_field(raw) is None
    assert ConfigureParams.from_bytes(raw) == params


@given(st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=40),
       st.text(max_size=200).map(str.strip))
def test_host_events_round_trip(code: str, message: str) -> None:
    event = HostEvent(code, message)
    raw = event.to_bytes()
    assert len(raw) <= wire.MAX_HOST_EVENT and HostEvent.from_bytes(raw) == event


@given(st.sampled_from(list(RsoOpcode)), u16)
def test_cdb_carries_opcode_and_length_and_nothing_else(opcode: RsoOpcode, length: int) -> None:
    raw = cdb(opcode, length)
    assert len(raw) == wire.CDB_LEN and raw[0] == opcode and cdb_length(raw) == length
    assert raw[1:7] == bytes(6) and raw[9] == 0


# ------------------------------------------------------------------ the layout of docs/rso-commands.md
def test_the_usage_masks_leave_only_the_documented_fields() -> None:
    for op in RsoOpcode:
        length = b"\x00\x00" if op == RsoOpcode.FORCE_FAILOVER else b"\xff\xff"
        assert cdb_usage(op) == bytes((op,)) + bytes(6) + length + b"\x00"


def test_status_block_fields_sit_where_the_docs_say() -> None:
    blk = StatusBlock(code=8, take_over=True, ack_recent=True, active_port=1, fenced_port=0,
                      heartbeat_age_ms=5001, ack_age_ms=None, timeout_ms=5000)
    raw = blk.to_bytes()
    assert raw == bytes((8, 0x0C, 1, 0)) + struct.pack(">III", 5001, UNKNOWN_AGE, 5000)
    assert blk.flags == StatusFlag.TAKE_OVER | StatusFlag.ACK_RECENT and blk.state == "timeoutError"
    st32 = RsoStatus(code=1, heartbeats=3, acks=2, failovers=1, link1_up=True, link2_up=False, port2_sessions=300)
    assert st32.to_bytes()[16:] == struct.pack(">IIIBBH", 3, 2, 1, 0x01, 255, 0)  # sessions saturate


def test_reserved_bits_are_ignored_by_the_decoder_and_found_by_reserved_field() -> None:
    assert StatusBlock.from_bytes(bytes((1, 0x80)) + bytes(14)).flags == StatusFlag(0)
    assert ConfigureParams.reserved_field(bytes((0x01 | 0x10 | 0x40, 0, 0, 0)) + bytes(4)) == (0, 6)
    assert ConfigureParams.reserved_field(bytes((0x01, 0, 7, 1)) + bytes(4)) == (2, None)
    assert ConfigureParams.from_bytes(bytes((0xFF, 1, 1, 1)) + struct.pack(">I", 250)) == ConfigureParams(
        enable=True, act_alone=True, timeout_ms=250)


def test_ages_saturate_below_none_yet_and_out_of_range_values_are_refused() -> None:
    assert age_ms(None) is None and age_ms(1.2345) == 1234 and age_ms(1e12) == UNKNOWN_AGE - 1
    with pytest.raises(ValueError, match="heartbeat age"):
        StatusBlock(code=1, heartbeat_age_ms=UNKNOWN_AGE).to_bytes()
    with pytest.raises(ValueError, match="out of range"):
        StatusBlock(code=256).to_bytes()
    with pytest.raises(ValueError, match="16 expected"):
        StatusBlock.from_bytes(bytes(15))
    with pytest.raises(ValueError, match="32 expected"):
        RsoStatus.from_bytes(bytes(31))


def test_host_event_message_is_cut_to_fit_at_a_character() -> None:
    raw = HostEvent("HOST_FENCED", "é" * 400).to_bytes()
    assert len(raw) <= wire.MAX_HOST_EVENT and raw.decode("utf-8").endswith("é")
    with pytest.raises(ValueError):
        HostEvent("HÖST", "x").to_bytes()
    with pytest.raises(ValueError):
        HostEvent.from_bytes(b"HOST_\xff\0message")


def test_state_codes_are_the_models_states() -> None:
    assert {state.value: code for state, code in MODEL_STATE_CODES.items()} == wire.STATE_CODES
    assert [wire.STATES[c] for c in sorted(wire.STATES)] == [s.value for s in RsoState]


# ------------------------------------------------------------------ one definition, shared
def test_the_agents_and_the_plugin_use_the_wire_module_itself() -> None:
    from firmware_model import rso_scsi
    from msa500_emu.agents import scsi as agents
    from msa500_emu.testing import RSO_STATES, RsoBlock, vendor_cdb
    from msa500_emu.testing import array as plugin_array

    assert agents.StatusBlock is StatusBlock and RsoBlock is StatusBlock and rso_scsi.RsoOpcode is RsoOpcode
    assert agents.STATES is wire.STATES and RSO_STATES is wire.STATES and vendor_cdb is cdb
    assert (agents.HEARTBEAT, agents.ACKNOWLEDGE, agents.STATUS, agents.FORCE_FAILOVER, agents.CONFIGURE,
            agents.LOG_HOST_EVENT) == tuple(RsoOpcode)
    assert (plugin_array.HEARTBEAT, plugin_array.ACKNOWLEDGE, plugin_array.RSO_STATUS, plugin_array.FORCE_FAILOVER,
            plugin_array.CONFIGURE) == tuple(RsoOpcode)[:5]


def test_the_wire_module_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(wire.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports: the module travels alone"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def _guest_file_list(agents_dir: Path) -> list[tuple[str, str]]:
    """The project files scripts/lab/build-guest puts into the guest (its own modulefinder step)."""
    script = (ROOT / "scripts" / "lab" / "build-guest").read_text()
    m = re.search(r'>"\$src_list" <<\'EOF\'\n(.*?)\nEOF\n', script, re.S)
    assert m, "build-guest no longer lists the agent's files the way this test reads them"
    out = subprocess.run([sys.executable, "-", str(ROOT), str(agents_dir)], input=m.group(1), text=True,
                         capture_output=True, check=True, timeout=60)
    return [tuple(line.split("\t", 1)) for line in out.stdout.splitlines()]  # type: ignore[misc]


def test_the_guest_carries_the_wire_module_and_the_agents_run_from_what_it_carries(tmp_path: Path) -> None:
    files = _guest_file_list(ROOT / "msa500_emu" / "agents")
    rels = {rel for rel, _ in files}
    assert {"firmware_model/__init__.py", "firmware_model/rso_wire.py"} <= rels
    for rel, src in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp_path / rel)
    import pyscsi

    shutil.copytree(Path(pyscsi.__file__).parent, tmp_path / "pyscsi",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    # -S: no site-packages (where the project is installed), only what the guest carries.
    check = ("import msa500_emu.agents.scsi as s, firmware_model.rso_wire as w; "
             f"assert s.StatusBlock is w.StatusBlock and w.__file__.startswith({str(tmp_path)!r})")
    subprocess.run([sys.executable, "-S", "-c", check], env=env, cwd=tmp_path, check=True, timeout=60)
    helped = subprocess.run([sys.executable, "-S", "-m", "msa500_emu.agents", "--help"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0, helped.stderr
