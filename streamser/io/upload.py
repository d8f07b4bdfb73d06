"""Saving to a URL: a streamed upload that replaces the object only once it is complete.

What each kind of storage guarantees (the old object is never touched before the new one is
whole, and a failed save leaves nothing behind when the storage lets us remove it):

========================  =====================================================================
``s3://`` (S3 and its     A multipart upload, streamed: parts of ``part_size`` bytes (8 MiB by
compatibles)              default, growing after every 1,000 parts so that S3's 10,000-part
                          limit is never reached), at most ``max_concurrency`` (4) of them in
                          flight, so memory stays near ``(max_concurrency + 1) * part_size``.
                          The object appears, whole, when the upload is completed; any error
                          (or an interrupt) aborts the upload instead, and the old object stays.
                          A save smaller than one part is one ``PutObject``, atomic as well.
                          A process killed mid-save cannot abort its upload: its parts stay
                          until the bucket's lifecycle rule (``AbortIncompleteMultipartUpload``)
                          removes them.
``file://``               The local atomic save: temporary file beside the target, fsync,
                          rename (:mod:`.atomic`).
anything else             Written under a temporary name beside the target
(``memory://``, ``gs://``, (``.<name>.<pid>-<random>.streamser-tmp``) through the filesystem's
``sftp://``...)           own writer, then moved over it: atomic where the filesystem's move is
                          a rename (memory, local, sftp, hdfs), a server-side copy then a
                          delete where it is not (gcs: readers still see the old object or the
                          new one, never a part). On error the temporary is discarded.
``http(s)://``            Read-only in fsspec: saving raises ``NotImplementedError``.
========================  =====================================================================
"""

from __future__ import annotations

import io
import os
import posixpath
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

from .atomic import TEMP_SUFFIX, replacing
from .inputs import local_path
from .remote import filesystem, protocol_of

DEFAULT_PART_SIZE = 8 << 20
DEFAULT_UPLOAD_CONCURRENCY = 4
MIN_PART_SIZE = 5 << 20  # S3: every part but the last is at least 5 MiB
MAX_PARTS = 10_000  # S3: parts in one upload
PARTS_PER_DOUBLING = 1_000  # part size doubles after this many parts


@contextmanager
def uploading(
    url: str,
    storage_options: dict[str, Any] | None,
    *,
    part_size: int | None = None,
    max_concurrency: int | None = None,
) -> Iterator[Any]:
    """A write target for ``url``; the object is replaced only if the block ends without an
    error (see the module for what each storage guarantees)."""
    found = local_path(url)
    if found is not None:
        with replacing(Path(found)) as raw:
            yield raw
        return
    fs, path = filesystem(url, storage_options)
    strategy = _STRATEGIES.get(protocol_of(fs), _temporary_then_moved)
    size = DEFAULT_PART_SIZE if part_size is None else part_size
    concurrency = DEFAULT_UPLOAD_CONCURRENCY if max_concurrency is None else max_concurrency
    if concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {concurrency}")
    with strategy(fs, path, size, concurrency) as target:
        yield target


class MultipartUpload:
    """An S3 object written as a multipart upload: a write target, then :meth:`complete` or
    :meth:`abort`. Parts are uploaded on a thread pool while the next one fills."""

    def __init__(self, fs: Any, path: str, part_size: int, max_concurrency: int) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE:,} bytes (S3's minimum)")
        self._fs = fs
        self._bucket, self._key = _bucket_and_key(fs, path)
        self._path = path
        self._part_size = part_size
        self._base_part_size = part_size
        self._concurrency = max_concurrency
        self._part = _part_buffer(part_size)
        self._filled = 0
        self._upload_id: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._in_flight: deque[Future[dict[str, Any]]] = deque()
        self.bytes_written = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        count = view.nbytes
        while view.nbytes:
            take = min(view.nbytes, self._part_size - self._filled)
            self._part.write(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._send_part()
        self.bytes_written += count
        return count

    def _send_part(self) -> None:
        """Hand the full part over and start the next (bigger after every 1,000 parts)."""
        part, self._filled = self._part, 0
        self._submit(part)
        self._part_size = self._base_part_size << (len(self._parts) // PARTS_PER_DOUBLING)
        self._part = _part_buffer(self._part_size)

    def _submit(self, part: io.BytesIO) -> None:
        """Upload ``part`` on the pool; wait while ``max_concurrency`` parts are in flight."""
        if self._upload_id is None:
            self._upload_id = self._call("create_multipart_upload")["UploadId"]
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="streamser-up")
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise OSError(f"{self._path}: an upload of more than {MAX_PARTS:,} parts")
        assert self._pool is not None
        part.seek(0)
        future = self._pool.submit(self._upload_part, number, part)
        self._parts.append(future)
        self._in_flight.append(future)
        while self._in_flight and (
            len(self._in_flight) > self._concurrency or self._in_flight[0].done()
        ):
            self._in_flight.popleft().result()  # raises the part's error, if any

    def _upload_part(self, number: int, body: io.BytesIO) -> dict[str, Any]:
        response = self._call("upload_part", PartNumber=number, UploadId=self._upload_id, Body=body)
        return {"PartNumber": number, "ETag": response["ETag"]}

    def complete(self) -> None:
        """Make the object appear: the last part and the completion, or one ``PutObject``."""
        self._part.truncate(self._filled)
        if self._upload_id is None:
            self._part.seek(0)
            self._call("put_object", Body=self._part)
        else:
            if self._filled:
                self._submit(self._part)
            parts = [future.result() for future in self._parts]
            self._call(
                "complete_multipart_upload",
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
            )
            self._upload_id = None
        self._close_pool()
        self._fs.invalidate_cache(self._path)

    def abort(self) -> None:
        """Stop, and remove the parts already uploaded; the old object is left as it was."""
        for future in self._parts:
            future.cancel()
        self._close_pool()  # waits for the parts being sent: an abort must come after them
        if self._upload_id is not None:
            self._call("abort_multipart_upload", UploadId=self._upload_id)
            self._upload_id = None

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 call; any failure (the server's, which s3fs makes an OSError, or the client's
        own) becomes an OSError that names the call and the object."""
        try:
            result: dict[str, Any] = self._fs.call_s3(
                method, Bucket=self._bucket, Key=self._key, **kwargs
            )
        except Exception as exc:
            errno = exc.errno if isinstance(exc, OSError) else None
            where = f"{method} of s3://{self._bucket}/{self._key} failed: {exc}"
            raise OSError(errno, where) if errno else OSError(where) from exc
        return result


def _part_buffer(size: int) -> io.BytesIO:
    """A part's buffer, allocated once at its full size: writes then fill it in place. Bodies
    go to the HTTP client as file objects, which it streams (big ``bytes`` bodies make aiohttp
    warn that they block its event loop)."""
    part = io.BytesIO()
    part.seek(size - 1)
    part.write(b"\0")
    part.seek(0)
    return part


def _bucket_and_key(fs: Any, path: str) -> tuple[str, str]:
    bucket, key, _version = fs.split_path(path)
    if not key:
        raise ValueError(f"s3://{path} names a bucket, not an object")
    return str(bucket), str(key)


@contextmanager
def _multipart(fs: Any, path: str, part_size: int, max_concurrency: int) -> Iterator[Any]:
    upload = MultipartUpload(fs, path, part_size, max_concurrency)
    try:
        yield upload
        upload.complete()
    except BaseException as exc:
        try:
            upload.abort()
        except Exception as cleanup:  # the first error is the one to report
            exc.add_note(f"the multipart upload could not be aborted either: {cleanup!r}")
        raise


@contextmanager
def _temporary_then_moved(
    fs: Any, path: str, part_size: int, max_concurrency: int
) -> Iterator[Any]:
    """Write under a temporary name beside ``path`` with the filesystem's own writer, then
    move it over ``path``; on error discard it (and never let the writer commit it later)."""
    temp = _temporary_name(fs, path)
    try:
        fileobj = fs.open(temp, "wb", block_size=part_size)
    except NotImplementedError:
        raise NotImplementedError(f"{protocol_of(fs)}:// URLs cannot be written") from None
    try:
        yield fileobj
        fileobj.close()
        fs.mv(temp, path)
    except BaseException:
        _discard(fileobj)
        _quietly(fs.rm, temp)
        raise


def _temporary_name(fs: Any, path: str) -> str:
    parent, name = posixpath.split(path)
    temp = f".{name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
    return posixpath.join(parent, temp) if parent else temp


def _discard(fileobj: Any) -> None:
    """Drop an unfinished upload: fsspec files commit on close, even from ``__del__``."""
    _quietly(getattr(fileobj, "discard", lambda: None))
    try:
        fileobj.closed = True
    except AttributeError:
        _quietly(fileobj.close)


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Clean up after a failure; the failure, not the cleanup, is what gets reported."""
    with suppress(Exception):
        action(*args)


_STRATEGIES: dict[str, Callable[[Any, str, int, int], AbstractContextManager[Any]]] = {
    "s3": _multipart,
    "s3a": _multipart,
}

__all__ = ["DEFAULT_PART_SIZE", "MultipartUpload", "uploading"]
