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


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_conformance_vs_tgt(tmp_path: Path, layout: str) -> None:
    need("iscsi-test-cu")
    need("tgtd")
    tool = SHARED_TOOLS / "conformance"
    if not tool.exists():
        pytest.fail(f"{tool} missing (shared/tools is laid beside the checkout)")
    cfg = tmp_path / "conf.toml"
    cfg.write_text(LAYOUTS[layout])
    arr = start_array(tmp_path / "state", cfg)
    ours_log = tmp_path / "ours.log"
    try:
        out = subprocess.run(
            ["bash", str(tool), arr.url(1, 1), "--second", arr.url(2, 1), "--vs-tgt", "--keep", str(ours_log)],
            capture_output=True, text=True, timeout=1500, check=False,
        )
    finally:
        assert arr.stop() == 0, arr.log.read_text()[-3000:]
    print(out.stdout)
    print(out.stderr[-2000:])
    listing = subprocess.run([str(SHARED_TOOLS / "testcu-summary"), str(ours_log), "--list", "fail"],
                             capture_output=True, text=True, check=False)
    print("our failures:\n" + listing.stdout)
    ours, tgt = _summary(out.stdout, "this"), _summary(out.stdout, "tgt")
    assert ours["fail"] <= tgt["fail"], f"ours {ours} vs tgt {tgt}"
    assert ours["pass"] >= tgt["pass"], f"ours {ours} vs tgt {tgt}"
