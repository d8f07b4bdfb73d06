"""A few threads for big copies: eager loads and pre-faulting mapped loads.

Copying a big tensor from the page cache into memory is bound by memory bandwidth, which one
core does not fill (on the project's VM ``np.fromfile`` reads cached files at about 8 GB/s while
``memcpy`` runs at about 16.7 GB/s). ``preadv`` and ``madvise`` release the GIL, so a small pool
can cut one big read or pre-fault into pieces that proceed at once. The calling thread takes
pieces too; jobs under :data:`MIN_PARALLEL_BYTES` stay on it, since a hand-off to a pool
thread costs more than it saves there.

Saves are not split: Linux serialises buffered writes to one file (ext4, xfs, btrfs and tmpfs
all hold the inode's lock across the copy into the page cache), so ranges written by two threads
take turns. Measured here (2 GiB, 20 tensors, to an open file, alternating with ``tofile``,
before saves claimed their blocks: :mod:`streamser.io.preallocate`): two threads writing ranges
with ``pwritev`` took 2.1x ``tofile`` (median of paired ratios), one thread 1.26x, on a machine
loaded at 4 on 2 cores; the second thread's write finishes one whole write-time after the
first's, and a shared mapping written by two threads (no inode lock) is slower still (1.35x
``write``, a fault per page).

Nor does one thread write the front of a payload while another copies its back into a shared
mapping of the file (ext4's faults do not take the inode's lock). Measured after claims
(Linux 6.18, ext4, 1 GiB, alternating with ``tofile``, median of 7-9 paired ratios): one
1 GiB array 0.79x ``tofile``, four of 256 MiB 0.89x, twenty of 51 MiB 1.8x; with the threads
taking 8 MiB pieces as they go, 0.93x for one 1 GiB array and 1.3-2.2x for twenty. Every
first touch of a mapped page is a fault that allocates and zeroes a page of the cache and runs
the file system's ``page_mkwrite``: ``MADV_POPULATE_WRITE`` over 20 MiB took 12 ms (1.7 GB/s),
where ``write`` copies at about 5 GB/s. It would also turn an I/O error, or a file truncated
by another process, into SIGBUS.

How many threads: the ``threads=`` argument of ``load`` (1 turns this off), else the
``STREAMSER_THREADS`` environment variable, else ``min(4, os.cpu_count())``. The pool is created
on first use (``import streamser`` starts no thread) and is replaced after a ``fork``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

ENVIRONMENT = "STREAMSER_THREADS"
MAX_THREADS = 16  # a bound on what the environment or an argument may ask for
MIN_PARALLEL_BYTES = 32 << 20  # smaller jobs run on the calling thread alone
PIECE_BYTES = 8 << 20  # the unit of work a thread takes: a slow thread delays the end by one
_ALIGN = 1 << 21  # ranges start on 2 MiB boundaries (huge pages, whole pages of the cache)

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0


def default_threads() -> int:
    """``STREAMSER_THREADS`` if set (at least 1), else ``min(4, os.cpu_count())``."""
    text = os.environ.get(ENVIRONMENT, "").strip()
    if text:
        try:
            return max(1, min(MAX_THREADS, int(text)))
        except ValueError:
            raise ValueError(f"{ENVIRONMENT} must be a whole number, not {text!r}") from None
    return max(1, min(4, os.cpu_count() or 1))


def resolve_threads(threads: int | None) -> int:
    """The number of threads to use for ``threads`` (None: :func:`default_threads`)."""
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive whole number or None, not {threads!r}")
    return min(MAX_THREADS, threads)


def ranges(total: int, threads: int) -> list[tuple[int, int]]:
    """``[0, total)`` cut into the pieces threads take one at a time: :data:`PIECE_BYTES`
    each, on :data:`_ALIGN` boundaries; one piece if the job is small or has one thread."""
    if threads <= 1 or total < MIN_PARALLEL_BYTES:
        return [(0, total)]
    step = max(_ALIGN, PIECE_BYTES // _ALIGN * _ALIGN)
    return [(start, min(total, start + step)) for start in range(0, total, step)]


def run_split(total: int, threads: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(start, end)`` over :func:`ranges` of ``[0, total)``, on this thread and up
    to ``threads - 1`` pool threads; returns when all are done, raising the first error.

    Each thread takes the next piece when it has finished one, so a thread that runs slowly
    (its vCPU shared on the host, or busy with interrupts) takes fewer pieces instead of
    holding back a fixed half: measured here, one thread of two often ran its fixed half at a
    third of the other's speed, making a 1 GiB read 2-4x slower than its fast runs.
    After an error no new piece is started.
    """
    pieces = ranges(total, threads)
    if len(pieces) == 1:
        work(0, total)
        return
    taken = itertools.count()  # next() on a count is atomic: each piece goes to one thread
    errors: list[BaseException] = []

    def take_pieces() -> None:
        while not errors:
            number = next(taken)
            if number >= len(pieces):
                return
            try:
                work(*pieces[number])
            except BaseException as exc:
                errors.append(exc)

    helpers = min(threads, len(pieces)) - 1
    pool = _executor(helpers)
    futures = [pool.submit(take_pieces) for _ in range(helpers)]
    take_pieces()
    for future in futures:  # every piece is finished (or failed) before returning
        future.result()
    if errors:
        raise errors[0]


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, with at least ``workers`` threads; a new one in a forked child."""
    global _pool, _pool_size, _pool_pid
    if _pool is None or _pool_size < workers or _pool_pid != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown(wait=False)
        _pool_size = max(workers, _pool_size if _pool_pid == os.getpid() else 0)
        _pool = ThreadPoolExecutor(_pool_size, thread_name_prefix="streamser-io")
        _pool_pid = os.getpid()
    return _pool
