"""Replacing a file atomically, the way ``open(path, "wb")`` would have changed it.

``save(path, ...)`` writes a temporary file beside the file it replaces, fsyncs it and renames
it over that file, so a failure at any point leaves the old file whole, and views of the old
file mapped by an earlier ``load`` keep their bytes (a rename never touches the old inode).
Around that core it behaves as the file it replaces:

* **Symbolic links are followed**, as ``open`` follows them: the link's final target is
  replaced (the temporary file is made in the target's folder, so the rename stays atomic)
  and the link stays a link. A dangling link creates its target; a loop is ``ELOOP``.
* **Permission bits, owner and group are kept.** The temporary file gets the replaced file's
  mode, and its owner and group where the process may set them (root; or a group the user
  belongs to). A new file gets ``0o666 & ~umask``, as ``open`` gives.
* **What ``open(path, "wb")`` refuses is refused**, with the same error and before anything is
  written: a file the process may not write (mode 0444 for a non-root user), a directory, a
  new file in a folder it may not write. A file that may be written but whose folder may not
  (no room for a temporary) is refused too: it could only be rewritten in place, which is not
  atomic. Devices and FIFOs (``/dev/null``) are written through, as ``open`` would.
* **Every error names the file**: the path the caller gave, never the temporary file.

Temporary files are named ``.<name>.<pid>-<random>.streamser-tmp`` and a save holds an
advisory lock (``flock``) on its own while it writes and renames. Leftovers of saves that were
killed are removed by the next save of the same file: only those whose lock can be taken, so a
save still running in another process, another PID namespace (a container sharing the volume)
or on another host (NFS forwards ``flock`` as a lock of the whole file) is never touched.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from .writeback import WriteBehindFile

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; leftovers are then never removed
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".streamser-tmp"
MAX_SYMLINKS = 40  # as Linux's ELOOP limit


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A file to write in place of ``path``; it replaces ``path`` (or the file a symbolic link
    at ``path`` leads to) only if the block ends without an error, and is removed otherwise."""
    target = resolve_links(path)
    with _named(path):
        existing = _stat(target)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with _write_through(path, target, existing) as raw:
            yield raw
        return
    with _named(path):
        _refuse_as_open_would(target, existing)
        fd, temp = _temporary_for(target, existing)
    try:
        _copy_ownership(fd, existing)
        with WriteBehindFile(os.dup(fd), name=str(path)) as raw:
            yield raw
            with _named(path):
                os.fsync(raw.fileno())
        with _named(path):
            os.replace(temp, target)
    except BaseException:
        _remove_if_same(temp, fd)
        raise
    finally:
        os.close(fd)  # releases the lock, after the rename
    _fsync_directory(target.parent)
    remove_stale_temporaries(target)


def resolve_links(path: Path) -> Path:
    """The file ``open(path)`` would reach: symbolic links followed, even dangling ones."""
    target = path
    for _ in range(MAX_SYMLINKS):
        try:
            link = os.readlink(target)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return target  # not a link (or nothing there yet): this is the file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        target = target.parent / link
    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))


def _stat(target: Path) -> os.stat_result | None:
    try:
        return os.stat(target)
    except FileNotFoundError:
        return None


def _refuse_as_open_would(target: Path, existing: os.stat_result | None) -> None:
    """Raise what ``open(path, "wb")`` would raise for a file it may not write (EACCES,
    EROFS, EPERM for an immutable file), from a write open that changes nothing."""
    if existing is not None and not _may(target, os.W_OK):
        os.close(os.open(target, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)))


def _temporary_for(target: Path, existing: os.stat_result | None) -> tuple[int, Path]:
    """:func:`_locked_temporary`, its errors those ``open`` would give for ``path``; a file
    that may be written in a folder that may not is refused with a reason."""
    try:
        return _locked_temporary(target)
    except PermissionError as exc:
        if existing is None:
            raise  # open would fail just so: no file may be created there
        raise PermissionError(
            exc.errno,
            f"{exc.strerror}: its folder {str(target.parent)!r} is not writable, so it cannot "
            "be replaced atomically (save to an open file object to rewrite it in place)",
        ) from None


def _may(path: Path, mode: int) -> bool:
    """``os.access`` with the effective user and group, as ``open`` checks them."""
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


@contextmanager
def _write_through(path: Path, target: Path, existing: os.stat_result) -> Iterator[BinaryIO]:
    """A device or FIFO is written to as ``open(path, "wb")`` would; a folder is refused."""
    if stat.S_ISDIR(existing.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    with _named(path):
        raw = open(target, "wb", buffering=0)  # noqa: SIM115  # closed below, after the block
    with raw:
        yield raw


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """Give an ``OSError`` raised in the block the caller's path as its file name."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def _locked_temporary(target: Path) -> tuple[int, Path]:
    """A new temporary file beside ``target``, created and locked by this save."""
    import secrets  # on first use: it imports random, hashlib and more

    while True:
        temp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
        if _try_lock(fd) and _is_same(temp, fd):
            return fd, temp
        # Between its creation and the lock, a cleanup took it for a leftover: start again.
        os.close(fd)


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _is_same(path: Path, fd: int) -> bool:
    """True while ``path`` still names the file open as ``fd``."""
    try:
        named, opened = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _remove_if_same(temp: Path, fd: int) -> None:
    if _is_same(temp, fd):
        with suppress(OSError):
            temp.unlink()


def _copy_ownership(fd: int, existing: os.stat_result | None) -> None:
    """Give the new file the replaced file's owner and group where permitted (root may; a
    user may set a group of theirs), then its mode: after, as a change of owner clears the
    set-user-ID bit."""
    if existing is None:
        return
    mine = os.fstat(fd)
    if hasattr(os, "fchown") and (mine.st_uid, mine.st_gid) != (existing.st_uid, existing.st_gid):
        for uid in (existing.st_uid, -1):
            try:
                os.fchown(fd, uid, existing.st_gid)
                break
            except PermissionError:
                continue
    with suppress(OSError, AttributeError):  # no modes: FAT, some shares, Windows
        os.fchmod(fd, stat.S_IMODE(existing.st_mode))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of earlier saves to ``path`` that nobody holds: their lock is free,
    so the save that made them died. Temporaries of saves still running are left alone."""
    if fcntl is None:
        return []
    import glob  # on first use

    removed = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue  # gone already, a link, or not ours to read
        try:
            if _try_lock(fd) and _is_same(candidate, fd):
                candidate.unlink()
                removed.append(candidate)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
