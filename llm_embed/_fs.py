"""Atomic writes of files and folders: a reader sees the old version or the new one, never half of one.

One discipline everywhere (checkpoints, pairs, results, embedding chunks, exports, converted
models): write under a temporary name in the destination's own folder (a rename across file
systems would be a copy, not atomic), fsync the data, rename it over the destination, then fsync
the folder so the rename itself survives a crash. The temporary name comes from ``mkstemp`` /
``mkdtemp`` (unique even with several writers) and carries the writer's pid, so the next writer
of the same path removes what a killed one left. Everything written gets the mode a plain
``open`` would give under the user's umask (0644 files and 0755 folders under umask 022) instead
of the private 0600 / 0700 of temp files and of some writers (safetensors), so shared exports,
caches and results stay readable. A full disk is one line: the space a large output needs is
checked before it is written, and a library's "no space left" error becomes an ``OSError``.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new folder: 0777 less the umask."""
    return 0o777 & ~_umask()


def make_readable(folder: str | os.PathLike[str]) -> None:
    """Give every file and folder under ``folder`` (itself included) the umask's plain modes."""
    files, dirs = file_mode(), dir_mode()
    for root, _, names in os.walk(folder):
        os.chmod(root, dirs)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, files)


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


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> None:
    """Delete the temporary files and folders that killed writers of ``path`` left beside it.

    A temp name carries its writer's pid (``.<name>.<pid>-XXXX.<suffix>``); one whose writer is still
    running is kept, so concurrent writers never delete each other's work. Names without a pid
    (from before pids were recorded) are stale by definition.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    ours = re.compile(
        rf"\.{re.escape(path.name)}\.(?:(\d+)-[a-z0-9_]+\.[A-Za-z0-9]+|[a-z0-9_]+\.tmp)"
    )
    for stale in path.parent.iterdir():
        match = ours.fullmatch(stale.name)
        if match is None or (match.group(1) and _alive(int(match.group(1)))):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def reserve(path: str | os.PathLike[str]) -> None:
    """Allocate every block of ``path`` (its current size) now, where the platform can: a full
    disk is then an ``OSError`` here, not a SIGBUS in a memory map that writes into a hole."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    finally:
        os.close(fd)


# Messages of libraries that report a full disk in their own exception types (safetensors'
# SafetensorError, torch's "PytorchStreamWriter failed writing file", OpenVINO's RuntimeError).
_DISK_FULL = (("No space left on device", errno.ENOSPC), ("os error 28", errno.ENOSPC),
              ("Disk quota exceeded", errno.EDQUOT), ("os error 122", errno.EDQUOT))  # fmt: skip


def disk_error(err: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """``err`` as the ``OSError`` of a full disk at ``path`` if that is what it says, else None."""
    if isinstance(err, OSError):
        return None
    text = str(err)
    for needle, code in _DISK_FULL:
        if needle in text:
            return OSError(code, os.strerror(code), str(path))
    return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    raise AssertionError


def ensure_space(path: str | os.PathLike[str], nbytes: int, what: str) -> None:
    """Raise ``OSError(ENOSPC)`` (one line through the CLIs) when the file system of ``path``
    has less than ``nbytes`` (plus a 1% margin) free: better refused than killed half-way."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < nbytes * 1.01:
        raise OSError(
            errno.ENOSPC,
            f"{what} needs {_size(nbytes)} but only {_size(free)} are free",
            str(path),
        )


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
    remove_stale_temps(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        fsync_path(tmp)
        os.chmod(tmp, file_mode())
        if previous is not None and path.is_file():
            _keep_copy(path, Path(previous))
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        full = disk_error(err, path)
        if full is not None:
            raise full from err
        raise
    fsync_path(path.parent)
    return path


def _keep_copy(path: Path, keep: Path) -> None:
    """Put ``path``'s current content at ``keep`` atomically: a hard link, or a copy where links fail."""
    remove_stale_temps(keep)
    fd, name = tempfile.mkstemp(dir=keep.parent, prefix=_temp_prefix(keep), suffix=".tmp")
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
    remove_stale_temps(out)  # a killed writer's temp folder, or a trash folder of a killed swap
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), suffix=".tmp", dir=out.parent))
    try:
        try:
            write(tmp)
        except Exception as err:
            full = disk_error(err, out)
            if full is not None:
                raise full from err
            raise
        make_readable(tmp)
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
    trash = Path(tempfile.mkdtemp(prefix=_temp_prefix(out), suffix=".old", dir=out.parent))
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
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666)
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
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
