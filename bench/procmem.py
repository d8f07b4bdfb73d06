"""Memory of a process as the kernel counts it, read cheaply enough to sample every 5 ms.

On Linux ``/proc/PID/status`` gives RSS (``VmRSS``), its anonymous part (``RssAnon``: heap,
copies, copy-on-write pages that were written) and the RSS high-water mark (``VmHWM``, which a
process can reset for itself through ``/proc/self/clear_refs``). File pages of a memory-mapped
file count in RSS but not in ``RssAnon``, which is why budgets are set on the anonymous part.
Elsewhere psutil's USS (private memory) stands in for ``RssAnon``; it is slower to read.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

DROP_CACHES = "/proc/sys/vm/drop_caches"


class Memory(NamedTuple):
    """One reading, in bytes; ``hwm`` is the peak RSS since the last reset (None if unknown)."""

    rss: int
    anon: int
    hwm: int | None = None


def parse_status(text: str) -> Memory:
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            fields[key] = int(rest.split()[0]) * 1024  # the kernel reports kB
    return Memory(fields.get("VmRSS", 0), fields.get("RssAnon", 0), fields.get("VmHWM"))


def has_proc_status() -> bool:
    """True where /proc/PID/status has ``RssAnon`` (Linux 4.5 and later)."""
    try:
        with open("/proc/self/status") as status:
            return "RssAnon:" in status.read()
    except OSError:
        return False


def sampler(pid: int) -> Callable[[], Memory | None]:
    """A function reading the memory of process ``pid`` (None once it has gone)."""
    if has_proc_status():
        path = f"/proc/{pid}/status"

        def read_proc() -> Memory | None:
            try:
                with open(path) as status:
                    return parse_status(status.read())
            except (OSError, ValueError, IndexError):
                return None

        return read_proc
    psutil = importlib.import_module("psutil")  # untyped; only where /proc is missing
    process = psutil.Process(pid)

    def read_psutil() -> Memory | None:
        try:
            info = process.memory_full_info()
        except (psutil.Error, OSError):
            return None
        return Memory(info.rss, getattr(info, "uss", info.rss))

    return read_psutil


def own_memory() -> Memory:
    """This process's memory now (zeros where it cannot be read)."""
    return sampler(os.getpid())() or Memory(0, 0)


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def drop_page_cache() -> str | None:
    """Write back dirty pages and drop the page cache; None on success, else why not."""
    if not sys.platform.startswith("linux"):
        return f"dropping the page cache is not supported on {sys.platform}"
    os.sync()
    try:
        with open(DROP_CACHES, "w") as control:
            control.write("3\n")
    except OSError as exc:
        return f"cannot drop the page cache ({exc.strerror or exc}); needs root"
    return None
