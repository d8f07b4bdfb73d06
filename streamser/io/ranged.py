"""Random access to a file by byte range: read-ahead for parsing, a block cache, parallel pieces.

Object storage (S3, GCS, HTTP servers) answers any byte range, but each request costs a round
trip of tens of milliseconds and there is no multi-range GET, so the number of requests matters
more than their size. A :class:`RangedSource` reads one file through a *fetcher* (something that
fills a buffer from a byte offset: an fsspec filesystem, a file object) in the three ways its
readers need:

* :meth:`~RangedSource.window` serves the object-graph parse. Records are read in order but
  storage elements are stepped over, so a window starts exactly where the parse needs bytes.
  After a jump over a payload of a quarter block or more it is small (``first_window``: the
  records between two big payloads are a few hundred bytes, and every byte more is tensor data
  nobody asked for); when the parse ran off the end of the previous window, or stepped over
  less, it is a whole block, so that records and the small payloads among them cost one
  request per block (reading through a small payload costs less than a round trip). A jump of
  almost a block used to count as small: a checkpoint of 4 MiB tensors was then fetched
  almost whole, a block after each tensor, to parse a few hundred bytes of records. Recent
  windows are kept: the format sniff, the parse and a second parse (b32 detection) share them.
* :meth:`~RangedSource.read_into` serves tensor data. A read smaller than a block goes through a
  small cache of aligned blocks (reading rows one after another costs a request per block, not
  per row); a bigger one goes straight into the caller's buffer as pieces fetched in parallel.
* :meth:`~RangedSource.read_spans` serves many storages at once (a subtree, a whole load): the
  spans are sorted, neighbours closer than ``block_size / 4`` are merged into one request, and
  the requests run on a thread pool of ``max_concurrency`` threads, at most twice that many
  pieces in flight, so memory stays bounded whatever the total.

A source pickles as its fetcher, size and options (never its cache), so that a lazily read
tensor sent to another process reads from the same file there.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any, Protocol

import numpy as np

from ..errors import TruncatedError
from .arrays import byte_view

DEFAULT_BLOCK_SIZE = 4 << 20  # bytes of one cached block, one full read-ahead window
DEFAULT_MAX_CONCURRENCY = 8  # range requests in flight at once
DEFAULT_FIRST_WINDOW = 32 << 10  # the read-ahead window after a jump over a payload
DEFAULT_CACHE_BYTES = 32 << 20  # blocks kept for small reads
_KEPT_WINDOWS = 4  # recent parse windows kept for reuse


class ByteSource(Protocol):
    """The bytes of a stream, read by position: what lazy decoders and lazy tensors read from."""

    @property
    def size(self) -> int: ...

    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes from ``offset``."""

    def window(self, start: int, end: int) -> tuple[int, Any]:
        """``(lo, data)``: bytes from ``lo <= start`` on, for a parse that needs ``start:end``."""
        ...


class Fetcher(Protocol):
    """Fills buffers from byte offsets of one file: one call is one request."""

    concurrent: bool  # whether several threads may fetch at once

    def fetch_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the file's bytes from ``offset``; short data is an error."""


@dataclass(frozen=True)
class RangeOptions:
    """How a :class:`RangedSource` reads: ``block_size`` is the unit of caching and of the
    read-ahead while parsing, and the smallest piece a big read is cut into; at most
    ``max_concurrency`` requests run at once."""

    block_size: int = DEFAULT_BLOCK_SIZE
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    first_window: int = DEFAULT_FIRST_WINDOW
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        if self.block_size < 4096:
            raise ValueError(f"block_size must be at least 4096 bytes, not {self.block_size}")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, not {self.max_concurrency}")
        if self.first_window < 1:
            raise ValueError(f"first_window must be at least 1 byte, not {self.first_window}")
        if self.first_window > self.block_size:  # a window is never more than a block
            object.__setattr__(self, "first_window", self.block_size)

    @classmethod
    def of(cls, block_size: int | None = None, max_concurrency: int | None = None) -> RangeOptions:
        """Options from user keywords, None meaning the default."""
        return cls(
            block_size=DEFAULT_BLOCK_SIZE if block_size is None else block_size,
            max_concurrency=DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency,
        )

    @property
    def min_piece(self) -> int:
        """The smallest piece a big read is cut into."""
        return 2 * self.block_size

    @property
    def max_piece(self) -> int:
        """The largest single request of a big read (bounds the bytes in flight)."""
        return 4 * self.block_size

    @property
    def gap(self) -> int:
        """Spans closer than this are fetched by one request, gap included."""
        return self.block_size // 4


class _Piece:
    """One request: ``length`` bytes from ``offset``, and where they go (``(at, view)`` pairs:
    ``view`` receives the bytes from ``offset + at``)."""

    __slots__ = ("length", "offset", "targets")

    def __init__(self, offset: int, view: memoryview) -> None:
        self.offset = offset
        self.length = view.nbytes
        self.targets = [(0, view)]

    def add(self, offset: int, view: memoryview) -> None:
        self.targets.append((offset - self.offset, view))
        self.length = max(self.length, offset - self.offset + view.nbytes)

    def direct(self) -> memoryview | None:
        """The one buffer this piece fills exactly, when it can be fetched into it."""
        at, view = self.targets[0]
        return view if len(self.targets) == 1 and at == 0 and view.nbytes == self.length else None


class RangedSource:
    """The ``size`` bytes of one file, read by range through ``fetcher`` (see the module)."""

    def __init__(
        self, fetcher: Fetcher, size: int, options: RangeOptions | None = None, name: str = ""
    ) -> None:
        self.fetcher = fetcher
        self.size = size
        self.options = options or RangeOptions()
        self.name = name
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, memoryview] = OrderedDict()
        self._windows: deque[tuple[int, memoryview]] = deque(maxlen=_KEPT_WINDOWS)
        self._window_end: int | None = None  # where the last parse window ended
        self._pool: ThreadPoolExecutor | None = None
        self.requests = 0  # for tests and benchmarks: work actually done
        self.bytes_fetched = 0

    def __reduce__(self) -> tuple[Any, ...]:
        return (RangedSource, (self.fetcher, self.size, self.options, self.name))

    def __repr__(self) -> str:
        return f"<RangedSource {self.name or self.fetcher!r} ({self.size:,} bytes)>"

    def close(self) -> None:
        """Stop the thread pool and drop cached bytes (the source stays usable)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()
        with self._lock:
            self._blocks.clear()
            self._windows.clear()

    # --- reads --------------------------------------------------------------------------

    def read_into(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the bytes from ``offset``: small reads through the block cache,
        big ones in parallel pieces straight into ``out``."""
        out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
        self._check(offset, out.nbytes)
        if not out.nbytes:
            return
        if out.nbytes < self.options.block_size:
            self._read_cached(offset, out)
        else:
            self.read_spans([(offset, out)])

    def read(self, offset: int, count: int) -> memoryview:
        """``count`` bytes from ``offset``, in a new buffer."""
        out = _new_bytes(count)
        self.read_into(offset, out)
        return out

    def read_all(self) -> memoryview:
        """The whole file, in one new writable buffer (parallel pieces, no second copy); what
        the kept parse windows hold is copied from them, not fetched again."""
        out = _new_bytes(self.size)
        gaps = self._copy_windows(out)
        if gaps:
            self.read_spans(gaps)
        return out

    def _copy_windows(self, out: memoryview) -> list[tuple[int, memoryview]]:
        """Copy into ``out`` what the kept windows hold; the spans of ``out`` left to fetch."""
        with self._lock:
            windows = sorted(self._windows, key=lambda window: window[0])
        gaps = []
        done = 0
        for lo, data in windows:
            hi = lo + data.nbytes
            if hi <= done:
                continue
            if lo > done:
                gaps.append((done, out[done:lo]))
            out[max(lo, done) : hi] = data[max(lo, done) - lo :]
            done = hi
        if done < self.size:
            gaps.append((done, out[done:]))
        return gaps

    def read_spans(self, spans: Iterable[tuple[int, memoryview]]) -> None:
        """Fill every ``(offset, out)`` at once: near spans share a request, big ones are cut
        into pieces, and the requests run in parallel."""
        todo = []
        for offset, out in spans:
            self._check(offset, out.nbytes)
            if out.nbytes:
                todo.append((offset, out))
        todo.sort(key=lambda span: span[0])
        self._run(self._plan(todo))

    def window(self, start: int, end: int) -> tuple[int, memoryview]:
        """Bytes from ``start`` to at least ``end`` (clipped to the file) for a parse: a
        recent window when one holds them, else a new read-ahead window (see the module)."""
        end = min(max(end, start + 1), self.size)
        if start >= end:
            return start, memoryview(b"")
        with self._lock:
            for lo, data in self._windows:
                if lo <= start and end <= lo + data.nbytes:
                    return lo, data
            last = self._window_end
            near = last is not None and 0 <= start - last < self.options.gap
        ahead = self.options.block_size if near else self.options.first_window
        hi = min(self.size, max(start + ahead, end))
        data = _new_bytes(hi - start)
        self.read_spans([(start, data)])
        with self._lock:
            self._windows.append((start, data))
            self._window_end = hi
        return start, data

    def bytes_at(self, start: int, end: int) -> memoryview:
        """Bytes ``start:end`` (compressed frames): small ones through the read-ahead windows,
        since they are read while parsing, big ones fetched in parallel."""
        if end - start < self.options.block_size:
            lo, data = self.window(start, end)
            if lo + data.nbytes >= end:
                return data[start - lo : end - lo]
        return self.read(start, end - start)

    # --- the block cache ----------------------------------------------------------------

    def _read_cached(self, offset: int, out: memoryview) -> None:
        block = self.options.block_size
        first, last = offset // block, (offset + out.nbytes - 1) // block
        blocks = self._blocks_for(first, last)
        done = 0
        for index, data in zip(range(first, last + 1), blocks, strict=True):
            here = offset + done
            take = min(out.nbytes - done, (index + 1) * block - here)
            at = here - index * block
            out[done : done + take] = data[at : at + take]
            done += take

    def _blocks_for(self, first: int, last: int) -> list[memoryview]:
        """Blocks ``first..last`` from the cache; the missing ones fetched in one request."""
        found: dict[int, memoryview] = {}
        with self._lock:
            for index in range(first, last + 1):
                data = self._blocks.get(index)
                if data is not None:
                    self._blocks.move_to_end(index)
                    found[index] = data
        missing = [index for index in range(first, last + 1) if index not in found]
        if missing:
            block = self.options.block_size
            lo, hi = missing[0] * block, min(self.size, (missing[-1] + 1) * block)
            fetched = self.read_exact(lo, hi - lo)
            for index in missing:
                found[index] = fetched[index * block - lo :][:block]
            self._remember({index: found[index] for index in missing})
        return [found[index] for index in range(first, last + 1)]

    def _remember(self, blocks: dict[int, memoryview]) -> None:
        keep = max(2, self.options.cache_bytes // self.options.block_size)
        with self._lock:
            self._blocks.update(blocks)
            while len(self._blocks) > keep:
                self._blocks.popitem(last=False)

    def read_exact(self, offset: int, count: int) -> memoryview:
        """Exactly these bytes, fetched now (not cached), in parallel pieces when big."""
        out = _new_bytes(count)
        if count:
            self.read_spans([(offset, out)])
        return out

    # --- requests -------------------------------------------------------------------------

    def _check(self, offset: int, count: int) -> None:
        if offset < 0 or count < 0 or offset + count > self.size:
            raise TruncatedError(
                f"bytes {offset:,} to {offset + count:,} are past the end of "
                f"{self.name or 'the file'} ({self.size:,} bytes)",
                offset,
            )

    def _plan(self, spans: list[tuple[int, memoryview]]) -> Iterator[_Piece]:
        """Requests for sorted spans: a big span alone, cut into pieces; small neighbours
        (less than ``gap`` apart, at most ``max_piece`` together) in one request."""
        options = self.options
        current: _Piece | None = None
        for offset, out in spans:
            if out.nbytes >= options.block_size:
                yield from self._cut(offset, out)
                continue
            if (
                current is not None
                and offset - (current.offset + current.length) <= options.gap
                and offset + out.nbytes - current.offset <= options.max_piece
            ):
                current.add(offset, out)
                continue
            if current is not None:
                yield current
            current = _Piece(offset, out)
        if current is not None:
            yield current

    def _cut(self, offset: int, out: memoryview) -> Iterator[_Piece]:
        """One big span as pieces: as many as there are threads, each between two blocks and
        ``max_piece`` bytes (a smaller request costs more in its own overhead than it gains in
        parallelism)."""
        options = self.options
        share = -(-out.nbytes // options.max_concurrency)
        step = min(options.max_piece, max(options.min_piece, share))
        for start in range(0, out.nbytes, step):
            yield _Piece(offset + start, out[start : start + step])

    def _fetch(self, piece: _Piece) -> None:
        target = piece.direct()
        if target is not None:
            self.fetcher.fetch_into(piece.offset, target)
        else:
            data = _new_bytes(piece.length)
            self.fetcher.fetch_into(piece.offset, data)
            for at, view in piece.targets:
                view[:] = data[at : at + view.nbytes]
        with self._lock:
            self.requests += 1
            self.bytes_fetched += piece.length

    def _run(self, pieces: Iterable[_Piece]) -> None:
        """Fetch every piece; in parallel when the fetcher allows, at most twice as many
        pieces in flight as threads (their buffers are what bounds memory)."""
        concurrency = self.options.max_concurrency if self.fetcher.concurrent else 1
        iterator = iter(pieces)
        head = list(islice(iterator, 2))
        if len(head) < 2 or concurrency == 1:  # nothing to overlap
            for piece in chain(head, iterator):
                self._fetch(piece)
            return
        pool = self._executor()
        pending: set[Future[None]] = set()
        try:
            for piece in chain(head, iterator):
                pending.add(pool.submit(self._fetch, piece))
                if len(pending) >= 2 * concurrency:
                    pending = self._settle(pending, FIRST_COMPLETED)
            self._settle(pending, ALL_COMPLETED)
        except BaseException:
            for future in pending:
                future.cancel()
            wait(pending)
            raise

    @staticmethod
    def _settle(pending: set[Future[None]], when: str) -> set[Future[None]]:
        done, rest = wait(pending, return_when=when)
        for future in done:
            future.result()  # the first failure stops the read
        return rest

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.options.max_concurrency, thread_name_prefix="streamser-range"
                )
            return self._pool


def _new_bytes(count: int) -> memoryview:
    """A new buffer of ``count`` bytes, not zeroed (it is about to be filled)."""
    return byte_view(np.empty(count, dtype=np.uint8))


class FileFetcher:
    """Ranges of a readable, seekable binary file object, one at a time (seek, then read).

    ``base`` is the file position where the stream starts (a file may hold other data before).
    """

    concurrent = False

    def __init__(self, fileobj: Any, base: int = 0) -> None:
        self.fileobj = fileobj
        self.base = base
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"fileobj": self.fileobj, "base": self.base}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["fileobj"], state["base"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<FileFetcher {getattr(self.fileobj, 'name', self.fileobj)!r}>"

    def fetch_into(self, offset: int, out: memoryview) -> None:
        with self._lock:
            self.fileobj.seek(self.base + offset)
            done = 0
            while done < out.nbytes:
                count = read_some(self.fileobj, out[done:])
                if not count:
                    raise TruncatedError(
                        f"the file ends {out.nbytes - done:,} bytes short of a read of "
                        f"{out.nbytes:,} bytes",
                        offset + done,
                    )
                done += count


def read_some(fileobj: Any, out: memoryview) -> int:
    """Read what the file object gives (at most ``out``'s size) into ``out``; 0 at its end."""
    readinto = getattr(fileobj, "readinto", None)
    if readinto is not None:
        return int(readinto(out) or 0)
    data = fileobj.read(out.nbytes)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("expected a binary file object (opened with 'rb')")
    out[: len(data)] = data
    return len(data)


def file_size(fileobj: Any) -> int:
    """Bytes from the current position of a seekable file object to its end."""
    here = fileobj.tell()
    end = fileobj.seek(0, 2)
    fileobj.seek(here)
    return int(end) - int(here)


class BufferSource:
    """Bytes already in memory (a mapping of a compressed file), with the same access methods
    as :class:`RangedSource` has for reading compressed frames."""

    def __init__(self, buffer: Any) -> None:
        self._view = memoryview(buffer).cast("B")
        self.size = self._view.nbytes

    def bytes_at(self, start: int, end: int) -> memoryview:
        return self._view[start:end]


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_MAX_CONCURRENCY",
    "BufferSource",
    "ByteSource",
    "Fetcher",
    "FileFetcher",
    "RangeOptions",
    "RangedSource",
    "file_size",
    "read_some",
]
