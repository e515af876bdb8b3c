"""Atomic writes of files and folders: a reader sees the old version or the new one, never half of one.

One discipline everywhere (checkpoints, pairs, results, embedding chunks, exports, converted
models): write under a temporary name in the destination's own folder (a rename across file
systems would be a copy, not atomic), fsync the data, rename it over the destination, then fsync
the folder so the rename itself survives a crash. The temporary name comes from ``mkstemp`` /
``mkdtemp`` (unique even with several writers), and the result gets the mode a plain ``open``
would give (0644 files, 0755 folders) instead of their private 0600 / 0700, so shared caches and
results stay readable.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE, DIR_MODE = 0o644, 0o755


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file or a folder by name (no-op where the platform cannot open or sync it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(path: str | os.PathLike[str]) -> None:
    """Delete the temporary files a killed writer of ``path`` left beside it (one writer per path)."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    suffix: str = ".tmp",
    previous: str | os.PathLike[str] | None = None,
) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then fsync and rename it over ``path``.

    ``write`` receives the path of an existing empty file and may reopen or replace it (``suffix``
    is for writers that read the format from the name). With ``previous``, the file being replaced
    is first linked (or, where links fail, copied) there, atomically too. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_path(tmp)
        os.chmod(tmp, FILE_MODE)
        if previous is not None and path.is_file():
            _keep_copy(path, Path(previous))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def _keep_copy(path: Path, keep: Path) -> None:
    """Put ``path``'s current content at ``keep`` atomically: a hard link, or a copy where links fail."""
    remove_stale_temps(keep)
    fd, name = tempfile.mkstemp(dir=keep.parent, prefix=f".{keep.name}.", suffix=".tmp")
    os.close(fd)
    staged = Path(name)
    try:
        staged.unlink()
        try:
            os.link(path, staged)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, staged)
            fsync_path(staged)
        os.replace(staged, keep)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text (``\\n`` line ends on every platform)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def atomic_write_dir(
    out: str | os.PathLike[str], write: Callable[[Path], object], *, replace: bool = True
) -> Path:
    """Fill a temporary folder beside ``out`` with ``write(tmp)``, fsync it, and rename it to ``out``.

    With ``replace`` an existing ``out`` is moved aside only once the new folder is complete, and
    put back if the rename fails. Without it, an ``out`` that appeared meanwhile (another process
    finished the same work first) is kept and the new folder dropped. Returns ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(DIR_MODE)
        write(tmp)
        for folder, _, files in os.walk(tmp):
            for name in files:
                fsync_path(Path(folder) / name)
            fsync_path(folder)
        if not out.exists():
            try:
                os.rename(tmp, out)
            except OSError:
                if replace or not out.exists():
                    raise
        elif replace:
            _swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a successful rename
    fsync_path(out.parent)
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` to ``out``; the old ``out`` is kept until the rename succeeded."""
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    out.replace(trash / out.name)
    try:
        tmp.replace(out)
    except OSError:
        (trash / out.name).replace(out)
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def check_output(
    path: str | os.PathLike[str],
    *,
    folder: bool,
    overwrite: bool = True,
    ours: Callable[[Path], bool] | None = None,
    what: str = "--out",
) -> Path:
    """Check an output path before any model loads; returns it (``~`` expanded).

    The target must be the right kind (a file path is not a folder, a folder path not a file); an
    existing one is replaced only with ``overwrite`` and, when ``ours`` is given, only if
    ``ours(path)`` says llm-embed wrote it; the parent folder is created and must take a file.
    Raises UserError (one line naming the path and the fix).
    """
    from llm_embed.errors import UserError

    path = Path(path).expanduser()
    kind = "folder" if folder else "file"
    if path.exists():
        if folder != path.is_dir():
            other = "a folder" if path.is_dir() else "a file"
            raise UserError(f"{what} {path} is {other}, not a {kind}: give a {kind} path")
        if not overwrite:
            raise UserError(f"{path} already exists: pick another {what} or pass --overwrite")
        if ours is not None and not ours(path):
            raise UserError(
                f"{path} exists and was not written by llm-embed: refusing to replace it; "
                f"pick another {what}"
            )
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(
            f"{what} {path} cannot be written ({err.strerror or type(err).__name__}: "
            f"{err.filename or parent}): choose a folder you can write to"
        ) from None
    return path


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (a hidden ``.<name>.lock`` beside it) or fail at once.

    Two processes writing the same output would interleave their chunks; the second one stops
    with one line instead. The lock file is removed when the holder finishes.
    """
    import fcntl

    from llm_embed.errors import UserError

    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"another {what} is writing {path}: wait for it to finish or pick another --out"
        ) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def wait_lock(path: Path) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock beside ``path`` (``.<name>.lock``, kept afterwards).

    For read-merge-write of a shared file (a results table, the score cache): concurrent writers
    take turns, so none loses another's entries. The lock file stays, since removing it would let
    a waiter and a newcomer lock two different files at once.
    """
    import fcntl

    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
