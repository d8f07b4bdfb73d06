"""URLs through fsspec: the filesystem of a URL, and ranged reads of one object.

Imported only when a URL or an fsspec file object is used: fsspec (and s3fs, gcsfs, aiohttp for
the protocols that need them) are the optional ``remote`` extra, never a core dependency.
``storage_options`` go to the filesystem as they are (credentials, ``endpoint_url``...).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import TruncatedError
from .ranged import RangedSource, RangeOptions

try:
    import fsspec
    from fsspec.asyn import sync
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "reading or writing URLs needs fsspec (and the filesystem for the protocol, e.g. s3fs "
        "for s3://): pip install 'streamser[remote]'"
    ) from exc


async def _retrying(attempt: Callable[[], Awaitable[int]], *, retries: int) -> int:
    """``attempt()``, retried as s3fs retries its calls (its error wrapper, which also turns
    S3's errors into ``FileNotFoundError``, ``PermissionError``...)."""
    from s3fs.core import _error_wrapper  # only S3 fetchers call this: s3fs is there

    result: int = await _error_wrapper(attempt, retries=retries)
    return result


def filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the object's path within it."""
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path


def protocol_of(fs: Any) -> str:
    """The filesystem's main protocol name (``"s3"``, ``"memory"``, ``"file"``...)."""
    protocol = fs.protocol
    return str(protocol if isinstance(protocol, str) else protocol[0])


class FsspecFetcher:
    """Ranges of one object, one ranged GET (``cat_file``) per call; safe from many threads.

    It pickles as the filesystem (fsspec filesystems pickle as their options) and the path.
    """

    concurrent = True

    def __init__(self, fs: Any, path: str, base: int = 0) -> None:
        self.fs = fs
        self.path = path
        self.base = base

    def __repr__(self) -> str:
        return f"<FsspecFetcher {protocol_of(self.fs)}://{self.path}>"

    def fetch_into(self, offset: int, out: memoryview) -> None:
        start = self.base + offset
        data = self.fs.cat_file(self.path, start=start, end=start + out.nbytes)
        if len(data) != out.nbytes:
            raise TruncatedError(
                f"{self.path}: asked for {out.nbytes:,} bytes at {start:,}, got {len(data):,} "
                "(did the object change while it was read?)",
                offset + len(data),
            )
        out[:] = data


class S3Fetcher(FsspecFetcher):
    """Ranges of one S3 object, each GET's body streamed straight into the caller's buffer
    (``cat_file`` would join it into ``bytes`` first: a copy of every byte read). A failed
    request is retried as s3fs retries its own."""

    def fetch_into(self, offset: int, out: memoryview) -> None:
        start = self.base + offset
        count = sync(self.fs.loop, self._fetch, start, out)
        if count != out.nbytes:
            raise TruncatedError(
                f"{self.path}: asked for {out.nbytes:,} bytes at {start:,}, got {count:,} "
                "(did the object change while it was read?)",
                offset + count,
            )

    async def _fetch(self, start: int, out: memoryview) -> int:
        bucket, key, version = self.fs.split_path(self.path)
        extra = {"VersionId": version} if version else {}
        span = f"bytes={start}-{start + out.nbytes - 1}"

        async def attempt() -> int:
            response = await self.fs._call_s3(
                "get_object", Bucket=bucket, Key=key, Range=span, **extra
            )
            body = response["Body"]
            read = _chunk_reader(body, out.nbytes)
            try:
                done = 0
                while done < out.nbytes:
                    chunk = await read()
                    if not chunk:
                        break
                    take = min(len(chunk), out.nbytes - done)
                    out[done : done + take] = memoryview(chunk)[:take]
                    done += take
                return done
            finally:
                body.close()

        return await _retrying(attempt, retries=self.fs.retries)


_CHUNK = 1 << 20  # bytes taken from the HTTP stream at a time


def _chunk_reader(body: Any, count: int) -> Callable[[], Awaitable[bytes]]:
    """The cheapest way to take a response body's bytes as they arrive: aiohttp's own
    buffers as they are (``readany``: no joining), else ``read`` by the MiB."""
    content = getattr(body, "content", None)
    readany = getattr(content, "readany", None)
    if readany is not None:
        return readany  # type: ignore[no-any-return]

    async def read() -> bytes:
        chunk: bytes = await body.read(min(_CHUNK, count))
        return chunk

    return read


_FETCHERS: dict[str, type[FsspecFetcher]] = {"s3": S3Fetcher, "s3a": S3Fetcher}


def fetcher_for(fs: Any, path: str, base: int = 0) -> FsspecFetcher:
    """The fastest fetcher for the filesystem: streaming where we know its client, else
    ``cat_file``."""
    return _FETCHERS.get(protocol_of(fs), FsspecFetcher)(fs, path, base)


def open_url(
    url: str, storage_options: dict[str, Any] | None, options: RangeOptions
) -> RangedSource:
    """The object at ``url``, read by range (its size asked for once, here)."""
    fs, path = filesystem(url, storage_options)
    size = fs.size(path)
    if size is None:
        raise OSError(
            f"{url}: the server does not tell the object's size, so it cannot be read by range"
        )
    return RangedSource(fetcher_for(fs, path), int(size), options, name=url)


def open_fsspec_file(fileobj: Any, options: RangeOptions) -> RangedSource:
    """An open fsspec file read by range through its filesystem (so in parallel), from its
    current position; its own read buffer is left alone."""
    base = int(fileobj.tell())
    size = int(fileobj.size) - base
    name = f"{protocol_of(fileobj.fs)}://{fileobj.path}"
    return RangedSource(fetcher_for(fileobj.fs, fileobj.path, base), size, options, name=name)


def is_fsspec_file(fileobj: Any) -> bool:
    """Whether ``fileobj`` is an fsspec file opened for reading (has its filesystem and path)."""
    return (
        isinstance(fileobj, fsspec.spec.AbstractBufferedFile)
        and "r" in str(getattr(fileobj, "mode", ""))
        and getattr(fileobj, "size", None) is not None
    )


__all__ = [
    "FsspecFetcher",
    "S3Fetcher",
    "fetcher_for",
    "filesystem",
    "is_fsspec_file",
    "open_fsspec_file",
    "open_url",
    "protocol_of",
]
