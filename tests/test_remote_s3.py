"""Checkpoints on S3: a real SeaweedFS server on loopback, reached with s3fs as a user would.

Every request goes through a counting proxy, so the tests check what crosses the network: the
parse fetches records, not tensors; a tensor is fetched once, exactly, in parallel pieces when
big; a save is a multipart upload that either completes or leaves nothing behind.
"""

from __future__ import annotations

import itertools
import re
import threading
from typing import Any

import numpy as np
import pytest
from conftest import S3Server

import streamser
from bench.loopback import CountingProxy, Request
from streamser.io.upload import MultipartUpload

KiB = 1 << 10
MiB = 1 << 20


def _checkpoint(count: int, rows: int, columns: int = 256, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    value: dict[str, Any] = {
        f"layer{i:02d}": rng.standard_normal((rows, columns)).astype(np.float32)
        for i in range(count)
    }
    value["step"] = 1000
    return value


def _ranges(requests: list[Request]) -> list[tuple[int, int]]:
    """(start, end) of each ranged GET, end exclusive."""
    found = []
    for request in requests:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", request.range or "")
        assert match is not None, request
        found.append((int(match.group(1)), int(match.group(2)) + 1))
    return sorted(found)


def _record_bytes(data: bytes, value: dict[str, Any]) -> int:
    return len(data) - sum(v.nbytes for v in value.values() if isinstance(v, np.ndarray))


def test_save_then_open_load_and_slice(s3: S3Server, traffic: CountingProxy) -> None:
    value = _checkpoint(count=12, rows=64)  # 12 tensors of 64 KiB
    url = s3.url("model.t7")
    streamser.save(url, value, storage_options=s3.options)
    assert s3.filesystem().cat_file(url) == streamser.serialize(value)
    traffic.reset()
    block = 16 * KiB
    with streamser.open(url, storage_options=s3.options, block_size=block) as f:
        opened = traffic.reset()
        data = streamser.serialize(value)
        records = _record_bytes(data, value)
        gets = opened.methods("GET")
        # one request per payload bigger than a block, plus the records' blocks, plus two
        assert len(opened.requests) <= 12 + -(-records // block) + 2
        assert len(opened.methods("HEAD")) == 1
        assert sum(end - start for start, end in _ranges(gets)) <= 1.5 * records + 1 * MiB
        # never a tensor's data beyond the small window after each storage header
        assert all(end - start <= 32 * KiB for start, end in _ranges(gets))

        layer = f["layer07"]
        assert np.array_equal(layer, value["layer07"])
        start = data.index(value["layer07"].tobytes())
        read = traffic.reset()
        assert _ranges(read.requests) == _cover(start, start + 64 * KiB, read)  # exactly it
        assert len(read.requests) == 2  # 64 KiB in parallel pieces of two blocks
        rows = f.get_slice("layer03")[10:20]
        assert np.array_equal(rows, value["layer03"][10:20])
        sliced = traffic.reset()
        assert sum(e - s for s, e in _ranges(sliced.requests)) <= 2 * block
        assert f.get("step") == 1000
        assert not traffic.reset().requests  # records are parsed once
    loaded = streamser.load(url, storage_options=s3.options)
    assert all(np.array_equal(loaded[k], value[k]) for k in value if k != "step")


def _cover(start: int, end: int, traffic: Any) -> list[tuple[int, int]]:
    """The pieces as requested, checked to tile ``start:end`` exactly."""
    pieces = _ranges(traffic.requests)
    assert (pieces[0][0], pieces[-1][1]) == (start, end)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    return pieces


def test_many_small_records_cost_one_request_per_block(
    s3: S3Server, traffic: CountingProxy
) -> None:
    records = [{"name": f"block{i}.proj", "w": np.full((4, 4), i, np.float32)} for i in range(3000)]
    url = s3.url("records.t7")
    streamser.save(url, records, storage_options=s3.options)
    size = len(streamser.serialize(records))
    traffic.reset()
    block = 64 * KiB
    with streamser.open(url, storage_options=s3.options, block_size=block) as f:
        opened = traffic.reset()
        assert len(opened.requests) <= -(-size // block) + 2
        assert np.array_equal(f["3000.w"], records[-1]["w"])
        loaded = f.load()
    assert [r["name"] for r in loaded.to_list()] == [r["name"] for r in records]


def test_compressed_checkpoint_fetches_only_the_frames_it_needs(
    s3: S3Server, traffic: CountingProxy
) -> None:
    value = _checkpoint(count=3, rows=5 * 1024)  # 5 MiB a tensor: two frames each
    url = s3.url("model.t7.zst")
    streamser.save(url, value, compress="zstd", level=1, storage_options=s3.options)
    size = s3.filesystem().size(url)
    traffic.reset()
    with streamser.open(url, storage_options=s3.options) as f:
        assert f.compressed
        assert f.lazy
        opened = traffic.reset()
        assert sum(e - s for s, e in _ranges(opened.methods("GET"))) < 3 * 64 * KiB + 128 * KiB
        assert np.array_equal(f["layer02"], value["layer02"])
        read = traffic.reset()
        fetched = sum(e - s for s, e in _ranges(read.requests))
        assert value["layer02"].nbytes * 0.8 < fetched < size / 3  # its frames, not the rest


def test_big_save_is_a_multipart_upload(s3: S3Server, traffic: CountingProxy) -> None:
    value = _checkpoint(count=2, rows=5 * 1024 + 512)  # 11 MiB
    url = s3.url("multipart.t7")
    streamser.save(url, value, storage_options=s3.options, part_size=5 * MiB, max_concurrency=2)
    saved = traffic.reset()
    parts = [r.body for r in saved.requests if "partNumber=" in r.target]
    assert parts == [5 * MiB] * 2 + [len(streamser.serialize(value)) - 10 * MiB]
    assert len(saved.methods("POST")) == 2  # create, complete
    assert s3.filesystem().cat_file(url) == streamser.serialize(value)
    small = s3.url("small.t7")
    streamser.save(small, {"x": 1}, storage_options=s3.options)
    assert [r.method for r in traffic.reset().requests] == ["PUT"]  # one PutObject


def _open_uploads(s3: S3Server, url: str) -> list[Any]:
    fs = s3.filesystem()
    bucket, key, _ = fs.split_path(url)
    found = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    return list(found.get("Uploads", []))


def test_cut_connection_mid_upload_keeps_the_old_object(
    s3: S3Server, traffic: CountingProxy
) -> None:
    url = s3.url("kept.t7")
    streamser.save(url, {"version": 1}, storage_options=s3.options)
    old = s3.filesystem().cat_file(url)
    # every upload of a part is cut after 1 MiB of its body, retries included
    traffic.cut_when = lambda r: 1 * MiB if "partNumber=" in r.target else None
    options = {**s3.options, "config_kwargs": {"retries": {"max_attempts": 1}}}
    value = _checkpoint(count=2, rows=5 * 1024 + 512)  # 11 MiB: parts of 5 MiB
    # The cut part fails (upload_part), or, when the server kept a cut part, the upload's
    # completion does: either way the save fails and names the object.
    with pytest.raises(OSError, match=r"(upload_part|complete_multipart_upload) of s3://"):
        streamser.save(url, value, storage_options=options, part_size=5 * MiB)
    assert traffic.traffic.cut >= 1
    traffic.cut_when = lambda r: None
    assert s3.filesystem().cat_file(url) == old
    assert _open_uploads(s3, url) == []
    assert streamser.load(url, storage_options=s3.options)["version"] == 1


def test_error_while_writing_aborts_the_upload(s3: S3Server, traffic: CountingProxy) -> None:
    url = s3.url("aborted.t7")
    streamser.save(url, {"version": 1}, storage_options=s3.options)
    value = {**_checkpoint(count=2, rows=5 * 1024 + 512), "zz": object()}  # fails after 11 MiB
    with pytest.raises(streamser.UnsupportedValueError):
        streamser.save(url, value, storage_options=s3.options, part_size=5 * MiB)
    saved = traffic.reset()
    assert [r for r in saved.requests if "partNumber=" in r.target]  # parts went up...
    assert saved.methods("DELETE")  # ...and were aborted
    assert _open_uploads(s3, url) == []
    assert streamser.load(url, storage_options=s3.options)["version"] == 1


def test_upload_memory_is_bounded_by_parts_in_flight(s3: S3Server) -> None:
    """At most ``max_concurrency`` parts upload at once, and no more wait: with the part being
    filled, ``max_concurrency + 1`` part buffers exist at any time."""
    fs = s3.filesystem()
    path = s3.url("bounded.t7").removeprefix("s3://")
    upload = MultipartUpload(fs, path, part_size=5 * MiB, max_concurrency=2)
    active, most_active, lock = [0], [0], threading.Lock()
    original = upload._upload_part

    def counted(number: int, body: Any) -> dict[str, Any]:
        with lock:
            active[0] += 1
            most_active[0] = max(most_active[0], active[0])
        try:
            return original(number, body)
        finally:
            with lock:
                active[0] -= 1

    upload._upload_part = counted  # type: ignore[method-assign]
    chunk = bytes(1 * MiB)
    for _ in range(16):
        upload.write(chunk)
        assert sum(1 for future in upload._parts if not future.done()) <= 2
    upload.complete()
    assert len(upload._parts) == 4
    assert most_active[0] <= 2
    assert fs.size(path) == 16 * MiB


def test_fsspec_file_objects_read_through_their_filesystem(
    s3: S3Server, traffic: CountingProxy
) -> None:
    import s3fs

    value = _checkpoint(count=4, rows=4096)  # 4 MiB tensors: stepped over, so read lazily
    url = s3.url("fileobj.t7")
    streamser.save(url, value, storage_options=s3.options)
    fs = s3fs.S3FileSystem(**s3.options)
    with fs.open(url, "rb") as fileobj, streamser.open(fileobj) as f:
        assert f.lazy
        traffic.reset()
        assert np.array_equal(f["layer01"], value["layer01"])
        start = streamser.serialize(value).index(value["layer01"].tobytes())
        read = traffic.reset()  # a ranged GET of the filesystem, not the file's own buffering
        assert _ranges(read.requests) == [(start, start + value["layer01"].nbytes)]
    with fs.open(url, "rb") as fileobj:
        assert np.array_equal(streamser.load(fileobj)["layer03"], value["layer03"])


def test_missing_object_is_file_not_found(s3: S3Server) -> None:
    with pytest.raises(FileNotFoundError):
        streamser.open(s3.url("missing.t7"), storage_options=s3.options)
    with pytest.raises(FileNotFoundError):
        streamser.load(s3.url("missing.t7"), storage_options=s3.options)
