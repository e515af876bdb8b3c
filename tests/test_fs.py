"""The one atomic-write discipline (llm_embed._fs): old or new, never half; shared-readable modes; no temp left."""

from __future__ import annotations

import stat

import pytest

from llm_embed._fs import atomic_write, atomic_write_dir, atomic_write_text, remove_stale_temps


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_file_is_replaced_whole_and_readable_by_others(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and _mode(path) == 0o644  # not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")

    def half_then_fail(tmp):
        tmp.write_text("ha")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_stale_temps_of_a_killed_writer_are_removed(tmp_path):
    path = tmp_path / "last.ckpt"
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"torn")
    (tmp_path / ".other.abc.tmp").write_bytes(b"not ours")
    remove_stale_temps(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc.tmp"]


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    atomic_write_dir(out, lambda tmp: (tmp / "a.txt").write_text("1"))
    assert (out / "a.txt").read_text() == "1" and _mode(out) == 0o755

    def fail(tmp):
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_dir(out, fail)
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old folder, untouched
    atomic_write_dir(out, lambda tmp: (tmp / "c.txt").write_text("3"))  # replace
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temp or trash left


def test_without_replace_a_folder_that_appeared_meanwhile_is_kept(tmp_path):
    out = tmp_path / "model"

    def racing_writer(tmp):
        (tmp / "ours").write_text("x")
        out.mkdir()  # another process finished first
        (out / "theirs").write_text("y")

    atomic_write_dir(out, racing_writer, replace=False)
    assert sorted(p.name for p in out.iterdir()) == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_stale_temps_of_live_writers_are_kept(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    path = tmp_path / "out.npy"
    (tmp_path / f".out.npy.{dead}-abc_123.npy").write_bytes(b"killed writer")
    (tmp_path / f".out.npy.{dead}-abc_124.tmp").mkdir()  # a killed folder writer
    live = tmp_path / f".out.npy.{os.getppid()}-abc_125.npy"  # a writer still running
    live.write_bytes(b"in progress")
    remove_stale_temps(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_modes_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
        atomic_write_dir(tmp_path / "folder", lambda tmp: (tmp / "w.bin").write_bytes(b"1"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "private.txt") == 0o600
    assert _mode(tmp_path / "folder") == 0o700 and _mode(tmp_path / "folder" / "w.bin") == 0o600


def test_a_librarys_full_disk_error_becomes_an_oserror(tmp_path):
    import errno

    def safetensors_full(tmp):
        raise RuntimeError(
            "Error while serializing: IoError(No space left on device (os error 28))"
        )

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "w.safetensors", safetensors_full)
    assert caught.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []
