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
  atomic; so is another user's file in a sticky folder (mode 1777), which only its owner or
  the folder's may rename over. A link ``open`` would not follow (``fs.protected_symlinks``:
  another user's link in a sticky world-writable folder) is refused with its ``EACCES``.
  Devices and FIFOs (``/dev/null``) are written through, as ``open`` would.
* **The temporary is never more open than the file it replaces**: it is created with that
  file's permission bits (less the umask); its owner and exact mode are set before the rename.
* **Every error names the file**: the path the caller gave, never the temporary file.

Temporary files are named ``.<name>.<pid>-<random>.streamser-tmp`` and a save holds an
advisory lock (``flock``) on its own while it writes and renames. Leftovers of saves that were
killed are removed by the next save of the same file: only those whose lock can be taken, so a
save still running in another process, another PID namespace (a container sharing the volume)
or on another host (NFS emulates ``flock`` with a lock of the whole file, which is why a
leftover is opened for writing where allowed) is never touched. A name too long for the
suffix gives its temporaries a shortened name with a checksum (:func:`temporary_prefix`).
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
        if target != path:
            _follow_as_open_would(path)
        existing = _stat(target)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with _write_through(path, target, existing) as raw:
            yield raw
        return
    with _named(path):
        _refuse_as_open_would(target, existing)
        _refuse_unreplaceable(target, existing)
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


def _follow_as_open_would(path: Path) -> None:
    """Raise what following the link at ``path`` raises for ``open``: the kernel refuses
    (EACCES) a link another user planted in a sticky world-writable folder such as /tmp
    (``fs.protected_symlinks``), which :func:`resolve_links`, reading links, would not see."""
    with suppress(FileNotFoundError):  # a dangling link: open creates its target
        os.stat(path)


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


def _refuse_unreplaceable(target: Path, existing: os.stat_result | None) -> None:
    """Refuse, before writing anything, a file the rename could not replace although
    ``open`` could rewrite it: another user's file in a sticky folder (mode 1777, as /tmp),
    where only the file's or the folder's owner may rename over it."""
    if existing is None or not hasattr(os, "geteuid"):
        return
    folder = os.stat(target.parent)
    user = os.geteuid()
    if folder.st_mode & stat.S_ISVTX and user not in (0, existing.st_uid, folder.st_uid):
        raise PermissionError(
            errno.EPERM,
            f"{os.strerror(errno.EPERM)}: its folder {str(target.parent)!r} is sticky and "
            "the file is another user's, so it cannot be replaced atomically (save to an open "
            "file object to rewrite it in place)",
        )


def _temporary_for(target: Path, existing: os.stat_result | None) -> tuple[int, Path]:
    """:func:`_locked_temporary`, its errors those ``open`` would give for ``path``; a file
    that may be written in a folder that may not is refused with a reason."""
    # Created no more open than the file it replaces: a private checkpoint is never readable
    # by others while it is written (its exact mode and owner are set before the rename).
    mode = 0o666 if existing is None else stat.S_IMODE(existing.st_mode) & 0o666
    try:
        return _locked_temporary(target, mode)
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


def temporary_prefix(name: str) -> str:
    """The start of the names of ``name``'s temporaries: ``.<name>.``, or for a name too
    long to take the suffix within the 255 bytes of a file name, its start and a checksum."""
    if len(os.fsencode(name)) <= _MAX_NAME - _TEMP_EXTRA:
        return f".{name}."
    import zlib

    encoded = os.fsencode(name)
    short = os.fsdecode(encoded[: _MAX_NAME - _TEMP_EXTRA - 10])
    while len(os.fsencode(short)) > _MAX_NAME - _TEMP_EXTRA - 10:  # a cut character widened
        short = short[:-1]
    return f".{short}~{zlib.crc32(encoded):08x}."


_MAX_NAME = 255  # bytes in one file name (Linux, macOS; NAME_MAX)
_TEMP_EXTRA = 48  # the dots, a PID, 8 hex digits and the suffix, with room to spare


def _locked_temporary(target: Path, mode: int) -> tuple[int, Path]:
    """A new temporary file beside ``target``, created (with ``mode``, less the umask) and
    locked by this save."""
    import secrets  # on first use: it imports random, hashlib and more

    prefix = temporary_prefix(target.name)
    while True:
        temp = target.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(temp, flags | getattr(os, "O_CLOEXEC", 0), mode)
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
            except OSError:  # not permitted; EINVAL for an owner unmapped in a user namespace
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
    prefix = temporary_prefix(path.name)
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        fd = _open_leftover(candidate)
        if fd is None:
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


def _open_leftover(candidate: Path) -> int | None:
    """A descriptor to lock ``candidate`` through: for writing where allowed (NFS emulates
    ``flock`` with POSIX locks, whose exclusive kind needs one), else for reading."""
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for access in (os.O_RDWR, os.O_RDONLY):
        try:
            return os.open(candidate, access | flags)
        except OSError:
            continue
    return None


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
