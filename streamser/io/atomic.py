"""Replacing a file atomically: a temporary beside it, fsync, rename, and cleanup of leftovers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .writeback import WriteBehindFile

TEMP_SUFFIX = ".streamser-tmp"


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of earlier saves to ``path`` whose process died (a kill mid-save).

    Temporaries are named ``.<name>.<pid>-<random>.streamser-tmp``; one whose process is alive
    belongs to a save still running and is left alone.
    """
    import glob

    removed = []
    prefix = f".{path.name}."
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*{TEMP_SUFFIX}"):
        pid_text = candidate.name[len(prefix) : -len(TEMP_SUFFIX)].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: keep its file
    return True


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


@contextmanager
def replacing(path: Path) -> Iterator[WriteBehindFile]:
    """A new file to write in place of ``path``; it replaces ``path`` only if the block ends
    without an error, and is removed otherwise (the old file is never touched until then)."""
    import secrets  # on first use: it imports random, hashlib and more

    temp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with WriteBehindFile(fd) as raw:
            yield raw
            os.fsync(raw.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    remove_stale_temporaries(path)
