"""Bounds on what one read may build, and the error that names the keyword to raise them.

The default bound on decompression follows the memory this process can really use, not a
constant: a zstd bomb must fail with a :class:`LimitError` before it makes the machine swap or
the kernel kill the process, and a limit of 64 GiB on a machine of 24 GiB protects nothing.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import LimitError

MIN_DECOMPRESSED = 64 << 20  # the default never goes below this, however busy the machine
_FALLBACK_MEMORY = 4 << 30  # where nothing tells how much memory there is (not POSIX)
_UNLIMITED = 1 << 62  # cgroup v1 writes "no limit" as about 2**63, v2 as "max"
_PROC = Path("/proc")
_CGROUP = Path("/sys/fs/cgroup")


def memory_room() -> int:
    """Bytes this process can still allocate: the smallest of the machine's available memory
    (``MemAvailable``), the room left in its cgroup (``memory.max`` less what it uses, page
    cache that can be reclaimed not counted) and the room left under ``RLIMIT_AS``."""
    rooms = [_available_memory(), _cgroup_room(), _address_space_room()]
    return min(room for room in rooms if room is not None)


def default_max_decompressed() -> int:
    """Half of :func:`memory_room`, and at least ``MIN_DECOMPRESSED``.

    Half, because what is decompressed is then read into values (a string is copied once
    more), and the rest of the program needs memory too. Measured again after a second, or
    at once when ``RLIMIT_AS`` changed, so that it follows the machine without costing every
    small read a look at /proc.
    """
    global _measured
    now, cap = time.monotonic(), _address_space_limit()
    if now - _measured[0] > 1.0 or cap != _measured[1]:
        _measured = (now, cap, max(MIN_DECOMPRESSED, memory_room() // 2))
    return _measured[2]


_measured: tuple[float, int, int] = (-1e9, -1, 0)  # (when, RLIMIT_AS, the default)


def _address_space_limit() -> int:
    """The soft ``RLIMIT_AS`` in bytes; -1 when there is none."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return -1 if soft == resource.RLIM_INFINITY else soft


def _read_number(path: Path, key: str | None = None) -> int | None:
    """A number from a /proc or cgroup file: the whole file, or the line ``key value``."""
    try:
        text = path.read_text()
    except OSError:
        return None
    if key is None:
        word = text.strip()
        return _UNLIMITED if word == "max" else int(word) if word.isdigit() else None
    for line in text.splitlines():
        words = line.split()  # "MemAvailable:  23252944 kB" or "inactive_file 4096"
        if len(words) >= 2 and words[0].rstrip(":") == key and words[1].isdigit():
            return int(words[1]) * (1024 if words[2:] == ["kB"] else 1)
    return None


def _available_memory() -> int | None:
    found = _read_number(_PROC / "meminfo", "MemAvailable")
    if found is not None:
        return found
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY


def _cgroup_room() -> int | None:
    """The least room any memory cgroup above this process leaves (v2 or v1)."""
    rooms = []
    for folder, limit_file, usage_file, cache_key in _cgroup_folders():
        limit = _read_number(folder / limit_file)
        usage = _read_number(folder / usage_file)
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        reclaimable = _read_number(folder / "memory.stat", cache_key) or 0
        rooms.append(max(0, limit - max(0, usage - reclaimable)))
    return min(rooms, default=None)


def _cgroup_folders() -> Iterator[tuple[Path, str, str, str]]:
    """The memory cgroup folders of this process, from its own up to the root."""
    try:
        lines = (_PROC / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, files = _CGROUP, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = (
                _CGROUP / "memory",
                ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
            )
        else:
            continue
        parts = Path(path.lstrip("/")).parts
        for depth in range(len(parts), -1, -1):  # a container sees its own cgroup as the root
            yield (base.joinpath(*parts[:depth]), *files)


def _address_space_room() -> int | None:
    soft = _address_space_limit()
    if soft < 0:  # RLIM_INFINITY, or not POSIX
        return None
    try:
        pages = int((_PROC / "self" / "statm").read_text().split()[0])
        used = pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        used = 0
    return max(0, soft - used)


@dataclass(frozen=True)
class Limits:
    """Bounds on what one read may build, each overridable by its keyword in ``load``,
    ``deserialize``, ``open`` and ``Reader``; the error for a limit names its keyword.

    Every length is also checked against the bytes that exist before anything is allocated;
    these bounds are for inputs that are long *and* hostile. Real checkpoints (the corpus, a
    model of 100,000 modules) stay far inside them. ``max_decompressed`` defaults to half of
    what the process can still allocate (:func:`default_max_decompressed`).
    """

    max_depth: int = 100_000  # nested tables / objects / functions
    max_string: int = 1 << 30  # bytes in one Lua string
    max_table: int = 1 << 26  # entries in one table
    max_objects: int = 1 << 26  # tables, torch objects and functions in one value
    # bytes a zstd-compressed input may expand to
    max_decompressed: int = field(default_factory=default_max_decompressed)

    @classmethod
    def from_keywords(cls, **values: int) -> Limits:
        """Limits from keyword arguments, refusing names that are not limits."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(
                f"unknown limit {unknown[0]!r}; the limits are {', '.join(sorted(known))}"
            )
        for name, value in values.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        return cls(**values)


def limit_error(what: str, keyword: str, limit: int, at: int) -> LimitError:
    return LimitError(
        f"{what} is over {keyword}={limit:,}; pass a larger {keyword}= if the file is trusted", at
    )


def depth_error(limit: int, at: int) -> LimitError:
    return LimitError(
        f"values nest deeper than max_depth={limit}; pass a larger max_depth= if the file is "
        "trusted",
        at,
    )


class MemoryExhausted(Exception):
    """Internal: memory ran out while the record at byte ``at`` was read. Not a FormatError, so
    that format detection stops at once instead of trying the other long size; whoever reads
    turns it into :func:`out_of_memory`'s LimitError."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


def refused_memory(exc: BaseException) -> bool:
    """Is ``exc`` the system refusing memory: a ``MemoryError``, or ``ENOMEM`` from ``mmap`` or
    ``mremap`` (which Python reports as an OSError)?"""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM)


def out_of_memory(what: str, at: int | None = None) -> LimitError:
    """The error for a ``MemoryError``: the input asked for more than the process can have."""
    return LimitError(
        f"out of memory while {what}: the input needs more memory than this process can "
        f"allocate (RAM, cgroup memory.max or RLIMIT_AS)",
        at,
    )


@contextmanager
def memory_errors_as_limits(what: str, at: int | None = None) -> Iterator[None]:
    """Turn a ``MemoryError`` inside the block into a :class:`LimitError` saying so, at byte
    ``at`` of the input when the block knows where it reads."""
    try:
        yield
    except MemoryError:
        raise out_of_memory(what, at) from None
    except MemoryExhausted as exc:
        raise out_of_memory(what, exc.at) from None
