"""Snapshot files on disk: sparse copies keep holes (and the cache file's zeros) out, only the shelf's
files are taken and put back, a taken name is refused, an interrupted SAVE leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from msa500_emu.snapshot import files
from msa500_emu.snapshot.store import START, SnapshotError, SnapshotStore, check_name

MIB = 1 << 20


def sparse_file(path: Path, size: int, runs: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in runs:
            f.seek(off)
            f.write(data)


def test_a_sparse_image_is_copied_with_its_holes(tmp_path: Path) -> None:
    src, dst = tmp_path / "bay01.img", tmp_path / "copy.img"
    runs = [(0, os.urandom(MIB)), (512 * MIB, os.urandom(4096)), (1023 * MIB, bytes(64 * 1024))]  # zeros written
    sparse_file(src, 1 << 30, runs)
    got = files.copy_file(src, dst)
    st, sst = dst.stat(), src.stat()
    assert got.size == st.st_size == 1 << 30 and got.stored == st.st_blocks * 512
    assert got.method in ("reflink", "sparse")
    assert st.st_blocks <= sst.st_blocks and st.st_blocks * 512 < 4 * MIB
    with open(src, "rb") as a, open(dst, "rb") as b:
        for off, data in runs:
            a.seek(off)
            b.seek(off)
            assert b.read(len(data)) == a.read(len(data)) == data
    # written zeros are data in the original: the copy keeps them mapped (GET LBA STATUS tells)
    fd = os.open(dst, os.O_RDONLY)
    try:
        extents = files.data_extents(fd, st.st_size)
    finally:
        os.close(fd)
    assert any(start <= 1023 * MIB < end for start, end in extents)


def test_the_cache_file_is_copied_without_its_zeros(tmp_path: Path) -> None:
    src = tmp_path / "cache.nvram"
    with open(src, "wb") as f:
        f.write(bytes(32 * MIB))  # dense, as the running array reserves it
        f.seek(8 * MIB)
        f.write(b"\x01" * 4096)
    got = files.copy_file(src, tmp_path / "c2")
    assert got.size == 32 * MIB and got.stored < MIB and got.method == "sparse"
    assert (tmp_path / "c2").read_bytes() == src.read_bytes()


def test_only_the_shelf_files_are_the_shelf(tmp_path: Path) -> None:
    for name in ("bay01.img", "bay14.img", "pulled-03-ABC123.img", "controller-nvram.json", "cache.nvram",
                 "events.jsonl", "write-intent.bin", "member-journal.bin", "persistent-reservations.json",
                 "alerts.json", "api.token", "msa500-emu.lock", "notes.txt", "bay1.img", ".restore-bay01.img"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "snapshots").mkdir()
    got = [p.name for p in files.shelf_files(tmp_path)]
    assert got == sorted(["bay01.img", "bay14.img", "pulled-03-ABC123.img", "controller-nvram.json", "cache.nvram",
                          "events.jsonl", "write-intent.bin", "member-journal.bin", "persistent-reservations.json",
                          "alerts.json"])


def test_save_list_put_back_delete(tmp_path: Path) -> None:
    state = tmp_path / "st"
    state.mkdir()
    sparse_file(state / "bay01.img", 64 * MIB, [(MIB, b"old" * 100)])
    (state / "controller-nvram.json").write_text("{}")
    (state / "api.token").write_text("secret")
    store = SnapshotStore(state)
    man = store.save("one", "SERIAL")
    assert [m.name for m in store.list()] == ["one"] and man.serial == "SERIAL" and len(man.files) == 2
    with pytest.raises(SnapshotError, match=r"exists .*SAVE does not overwrite"):
        store.save("one", "SERIAL")
    store.save(START, "SERIAL", replace=True)
    assert [m.name for m in store.list()] == ["one"]  # the automatic one is not listed
    # the state moves on: new data, a pulled drive, reservations; the token changes
    sparse_file(state / "bay01.img", 64 * MIB, [(MIB, b"new" * 100)])
    (state / "pulled-02-XYZ.img").write_bytes(b"p")
    (state / "persistent-reservations.json").write_text("[]")
    (state / "api.token").write_text("other")
    store.put_back(store.manifest("one"))
    with open(state / "bay01.img", "rb") as f:
        f.seek(MIB)
        assert f.read(300) == b"old" * 100
    assert not (state / "pulled-02-XYZ.img").exists() and not (state / "persistent-reservations.json").exists()
    assert (state / "api.token").read_text() == "other"  # not the shelf's: never touched
    store.delete("one")
    with pytest.raises(SnapshotError, match="no snapshot 'one' \\(snapshots: none\\)"):
        store.manifest("one")


def test_an_interrupted_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "st"
    state.mkdir()
    (state / "controller-nvram.json").write_text("{}")
    (state / "events.jsonl").write_text("")
    store = SnapshotStore(state)

    def full(src: Path, dst: Path) -> files.Copied:
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr("msa500_emu.snapshot.store.copy_file", full)
    with pytest.raises(SnapshotError, match="not taken: No space left on device"):
        store.save("x", "S")
    assert list((state / "snapshots").iterdir()) == [] and store.list() == []


@pytest.mark.parametrize("name", ["", ".start", "-x", "a/b", "..", "x" * 33, "a b", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(SnapshotError, match="letters, digits"):
        check_name(name)


def test_good_names() -> None:
    for name in ("a", "before-test", "v1.2_rc", "X" * 32):
        assert check_name(name) == name
