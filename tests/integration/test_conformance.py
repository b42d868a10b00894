"""libiscsi's conformance suite (iscsi-test-cu -t ALL) against this target and tgt, same run.

Port 2 is the suite's second URL (`--second`), so MultipathIO and the persistent-reservation and
Reserve6 tests run across two I_T nexuses on two target ports (tgt gets its one portal twice).

The bar: on LUN 1, no more failing tests than tgt and at least as many passing
(not skipped) tests. The per-test lists land in the test log for the closing note.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ..conftest import SHARED_TOOLS, need, start_array

pytestmark = [pytest.mark.slow, pytest.mark.conformance]


def _summary(text: str, who: str) -> dict[str, int]:
    m = re.search(rf"^{who}:\s+tests=(\d+) pass=(\d+) skip=(\d+) fail=(\d+)", text, re.M)
    assert m, f"no summary for {who} in:\n{text}"
    return dict(zip(("tests", "pass", "skip", "fail"), map(int, m.groups()), strict=True))


LAYOUTS = {
    # a logical drive on a single drive (RAID 0 of one)
    "single-drive": '[[shelf.logical_drives]]\nlun = 1\nbay = 1\nsize = "1GiB"\n',
    # the product's real data path: RAID 5 over four drives
    "raid5": ('[shelf]\ndrive_size = "2GiB"\n[[shelf.arrays]]\nname = "A"\nbays = [1, 2, 3, 4]\n'
              '[[shelf.logical_drives]]\nlun = 1\narray = "A"\nraid = "5"\nsize = "1GiB"\n'),
}


def _tool() -> Path:
    need("iscsi-test-cu")
    need("tgtd")
    tool = SHARED_TOOLS / "conformance"
    if not tool.exists():
        pytest.fail(f"{tool} missing (shared/tools is laid beside the checkout)")
    return tool


@pytest.fixture(scope="module")
def tgt_summary() -> dict[str, int]:
    """tgt's result, run once for every layout (its LUN, a 1 GiB file, is the same for all of them):
    what `conformance URL --second URL2 --vs-tgt` runs against tgt, in this same pytest run."""
    tool = _tool()
    url = subprocess.run([str(SHARED_TOOLS / "peer-tgt"), "start", "3270", "1G"], capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    try:
        out = subprocess.run(["bash", str(tool), url, "--second", url], capture_output=True, text=True,
                             timeout=1500, check=False)
    finally:
        subprocess.run([str(SHARED_TOOLS / "peer-tgt"), "stop", "3270"], capture_output=True, timeout=60,
                       check=False)
    print("tgt:  " + out.stdout.removeprefix("this: "))
    return _summary(out.stdout, "this")


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_conformance_vs_tgt(tmp_path: Path, layout: str, tgt_summary: dict[str, int]) -> None:
    tool = _tool()
    cfg = tmp_path / "conf.toml"
    cfg.write_text(LAYOUTS[layout])
    arr = start_array(tmp_path / "state", cfg)
    ours_log = tmp_path / "ours.log"
    try:
        out = subprocess.run(
            ["bash", str(tool), arr.url(1, 1), "--second", arr.url(2, 1), "--keep", str(ours_log)],
            capture_output=True, text=True, timeout=1500, check=False,
        )
    finally:
        assert arr.stop() == 0, arr.log.read_text()[-3000:]
    print(out.stdout)
    print(out.stderr[-2000:])
    listing = subprocess.run([str(SHARED_TOOLS / "testcu-summary"), str(ours_log), "--list", "fail"],
                             capture_output=True, text=True, check=False)
    print("our failures:\n" + listing.stdout)
    ours, tgt = _summary(out.stdout, "this"), tgt_summary
    assert ours["fail"] <= tgt["fail"], f"ours {ours} vs tgt {tgt}"
    assert ours["pass"] >= tgt["pass"], f"ours {ours} vs tgt {tgt}"
