"""compose.yaml's node entry point (msa500_emu.lab.node) before it boots anything: it names what is
missing in one line and waits for the array's API only as long as told (the boot itself runs in
`MSA500_SMOKE_COMPOSE_UP=1 scripts/docker-smoke`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msa500_emu.lab import node
from msa500_emu.lab.rso_lab import LabError
from msa500_emu.testing.containers import free_ports
from msa500_emu.testing.launch import start_array


def test_an_api_nobody_serves_is_a_lab_error_after_the_timeout() -> None:
    (port,) = free_ports(1)
    with pytest.raises(LabError, match=f"127.0.0.1:{port} did not answer ok within 1 s"):
        node.wait_for_api(f"http://127.0.0.1:{port}", 1.0)


def test_no_guest_image_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert node.main(["nodea", "--cache", str(tmp_path / "empty"), "--api-timeout", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("msa500-emu lab node nodea: no complete cluster guest image in ") and "\n" not in err


def test_it_finds_the_array_and_its_token_before_booting(tmp_path: Path) -> None:
    """What the node learns from a real array: its API answers, the token in the state dir opens it."""
    arr = start_array(tmp_path / "state", mode="inprocess")
    try:
        node.wait_for_api(arr.api, 10)
        assert arr.token_file is not None
        assert node._token(arr.api, arr.token_file, 5) == arr.token
    finally:
        assert arr.stop() == 0
