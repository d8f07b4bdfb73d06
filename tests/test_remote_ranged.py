"""Ranged reads: the byte source behind file objects and URLs, and ``open``/``load`` through it.

No server here: file objects (``BytesIO``, a seekable wrapper without a descriptor) and fsspec's
``memory://`` filesystem. The mapped path is the oracle: a file object must give the same values,
the same index and the same errors, while fetching only what the parse and the reads need.
"""

from __future__ import annotations

import io
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CASES, Case, check_value

import streamser
from streamser import StreamserError, TruncatedError
from streamser.io.inputs import is_url, local_path
from streamser.io.ranged import FileFetcher, RangedSource, RangeOptions
from streamser.values.lazy import LazyArray

KiB = 1 << 10
MiB = 1 << 20


class Recorder:
    """A fetcher over bytes that records each request; optionally slow, to overlap them."""

    def __init__(self, data: bytes, *, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.data = data
        self.delay = delay
        self.fail_at = fail_at
        self.concurrent = True
        self.calls: list[tuple[int, int]] = []
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    def fetch_into(self, offset: int, out: memoryview) -> None:
        with self._lock:
            self.calls.append((offset, out.nbytes))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            time.sleep(self.delay)
            if self.fail_at is not None and offset <= self.fail_at < offset + out.nbytes:
                raise OSError("connection reset")
            out[:] = self.data[offset : offset + out.nbytes]
        finally:
            with self._lock:
                self.active -= 1


class Unmappable(io.RawIOBase):
    """A readable, seekable file object without a descriptor (as a wrapper or a socket file
    would be), counting the bytes read through it."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def readinto(self, buffer: Any) -> int:
        count = self._inner.readinto(buffer)
        self.bytes_read += count
        return count


class Stream(io.RawIOBase):
    """A stream that cannot seek (a pipe, an HTTP response)."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._inner.readinto(buffer)


def _source(data: bytes, **options: int) -> tuple[RangedSource, Recorder]:
    recorder = Recorder(data)
    merged = {"block_size": 4 * KiB, "first_window": 1 * KiB, **options}
    return RangedSource(recorder, len(data), RangeOptions(**merged)), recorder


def _checkpoint(count: int = 6, rows: int = 256, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    value: dict[str, Any] = {
        f"w{i}": rng.standard_normal((rows, 64)).astype(np.float32) for i in range(count)
    }
    value["bias"] = np.arange(10, dtype=np.float64)
    value["names"] = ["encoder", "decoder"]
    return value


# --- the byte source ----------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    size=st.integers(1, 40_000),
    spans=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12),
    concurrency=st.integers(1, 4),
)
def test_any_spans_read_what_slicing_gives(
    size: int, spans: list[tuple[float, float]], concurrency: int
) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    source, _ = _source(data, max_concurrency=concurrency)
    requests = []
    for a, b in spans:
        start = int(a * size)
        end = start + int(b * (size - start))
        requests.append((start, memoryview(bytearray(end - start))))
    source.read_spans(requests)
    for start, view in requests:
        assert view.tobytes() == data[start : start + view.nbytes]
    start, count = int(spans[0][0] * size), int(spans[0][1] * 100)
    count = min(count, size - start)
    assert bytes(source.read(start, count)) == data[start : start + count]


def test_near_spans_share_one_request_and_far_ones_do_not() -> None:
    data = bytes(range(256)) * 400  # 100 KiB
    source, recorder = _source(data)
    near = [(1000, memoryview(bytearray(10))), (1200, memoryview(bytearray(10)))]
    far = [(50_000, memoryview(bytearray(10)))]
    source.read_spans(near + far)
    assert recorder.calls == [(1000, 210), (50_000, 10)]  # gap of 190 < block / 4
    assert source.requests == 2


def test_big_read_is_parallel_pieces_straight_into_the_buffer() -> None:
    data = bytes(np.random.default_rng(1).integers(0, 256, 64 * KiB, dtype=np.uint8))
    recorder = Recorder(data, delay=0.02)
    source = RangedSource(recorder, len(data), RangeOptions(block_size=4 * KiB, max_concurrency=4))
    out = bytearray(60 * KiB)
    source.read_into(2 * KiB, memoryview(out))
    assert out == data[2 * KiB : 62 * KiB]
    # 60 KiB over 4 threads: 15 KiB pieces (between two blocks and four), all in flight at once
    assert sorted(recorder.calls) == [(2 * KiB + i * 15 * KiB, 15 * KiB) for i in range(4)]
    assert recorder.most_active == 4
    source.close()


def test_pieces_in_flight_stay_bounded() -> None:
    data = bytes(400 * KiB)
    recorder = Recorder(data, delay=0.002)
    source = RangedSource(recorder, len(data), RangeOptions(block_size=4 * KiB, max_concurrency=2))
    source.read_all()
    assert len(recorder.calls) == 400 // 16  # pieces of at most four blocks
    assert recorder.most_active <= 2


def test_a_failed_piece_fails_the_read() -> None:
    data = bytes(64 * KiB)
    recorder = Recorder(data, delay=0.01, fail_at=40 * KiB)
    source = RangedSource(recorder, len(data), RangeOptions(block_size=4 * KiB, max_concurrency=4))
    with pytest.raises(OSError, match="connection reset"):
        source.read_all()
    assert recorder.active == 0  # nothing left running behind the error


def test_small_reads_share_cached_blocks() -> None:
    data = bytes(range(256)) * 256  # 64 KiB, 16 blocks
    source, recorder = _source(data)
    for row in range(0, 8 * KiB, 100):  # reading 100-byte rows one after another
        assert bytes(source.read(row, 100)) == data[row : row + 100]
    assert recorder.calls == [(0, 4 * KiB), (4 * KiB, 4 * KiB), (8 * KiB, 4 * KiB)]
    source.read(4 * KiB - 10, 20)  # straddles two cached blocks: no request
    assert len(recorder.calls) == 3
    source.read(32 * KiB - 10, 20)  # straddles two missing blocks: one request for both
    assert recorder.calls[3:] == [(28 * KiB, 8 * KiB)]


def test_block_cache_is_bounded() -> None:
    data = bytes(256 * KiB)
    source, _ = _source(data, cache_bytes=16 * KiB)
    for offset in range(0, len(data), 4 * KiB):
        source.read(offset, 10)
    assert len(source._blocks) == 4


def test_parse_windows_start_small_and_grow_when_sequential() -> None:
    data = bytes(64 * KiB)
    source, recorder = _source(data)
    assert source.window(0, 4)[1].nbytes == 1 * KiB  # first read: the small window
    assert source.window(0, 1)[0] == 0  # served from the kept window
    assert source.window(1 * KiB, 1 * KiB + 4) == (1 * KiB, source.window(1 * KiB, 1)[1])
    assert recorder.calls[-1] == (1 * KiB, 4 * KiB)  # ran off the end: a whole block
    source.window(40 * KiB, 40 * KiB + 8)  # a jump over a big payload: small again
    assert recorder.calls[-1] == (40 * KiB, 1 * KiB)
    source.window(42 * KiB, 42 * KiB + 8)  # over 3 KiB, not a quarter block: small again
    assert recorder.calls[-1] == (42 * KiB, 1 * KiB)
    source.window(43 * KiB + 512, 43 * KiB + 520)  # over less than a quarter block: a block
    assert recorder.calls[-1] == (43 * KiB + 512, 4 * KiB)
    before = len(recorder.calls)
    source.window(50 * KiB, 50 * KiB + 6 * KiB)  # a record longer than the window
    assert recorder.calls[before:] == [(50 * KiB, 6 * KiB)]
    lo, data_at_end = source.window(64 * KiB - 3, 64 * KiB + 10)  # clipped at the end
    assert lo + data_at_end.nbytes == 64 * KiB


def test_reads_past_the_end_are_truncation_errors() -> None:
    source, _ = _source(bytes(100))
    with pytest.raises(TruncatedError) as caught:
        source.read(90, 20)
    assert caught.value.offset == 90
    assert source.window(100, 104)[1].nbytes == 0


def test_a_file_shorter_than_its_size_is_a_truncation_error() -> None:
    fileobj = io.BytesIO(bytes(100))
    source = RangedSource(FileFetcher(fileobj), 200, RangeOptions(block_size=4096))
    with pytest.raises(TruncatedError, match="short"):
        source.read_exact(50, 100)


def test_source_pickles_without_its_cache() -> None:
    data = bytes(range(256)) * 64
    source = RangedSource(FileFetcher(io.BytesIO(data)), len(data), RangeOptions(block_size=4096))
    source.read(0, 10)
    copy = pickle.loads(pickle.dumps(source))
    assert not copy._blocks
    assert copy.requests == 0
    assert bytes(copy.read(5000, 300)) == data[5000:5300]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="block_size"):
        RangeOptions(block_size=100)
    with pytest.raises(ValueError, match="max_concurrency"):
        RangeOptions(max_concurrency=0)
    assert RangeOptions.of(None, None) == RangeOptions()
    assert RangeOptions.of(8192, 2).first_window == 8192


def test_urls_are_told_from_paths() -> None:
    assert all(map(is_url, ["s3://bucket/key.t7", "https://host/x", "memory://a"]))
    assert not any(map(is_url, ["model.t7", "C:\\models\\x.t7", b"s3://x", "a/b://c"]))
    assert local_path("file:///tmp/a%20b.t7") == "/tmp/a b.t7"
    assert local_path("file://localhost/tmp/x") == "/tmp/x"
    assert local_path("s3://bucket/x") is None
    assert local_path("file://otherhost/x") is None


# --- open and load of file objects ----------------------------------------------------------


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in CASES])
def test_corpus_through_a_file_object(case: Case) -> None:
    """The same values (byte for byte once written again), index and end as the mapped file;
    small files are also checked against their oracle (big ones are, mapped, in test_corpus)."""
    data = case.path.read_bytes()
    mapped = streamser.deserialize(data, case.load_mode, case.referenced)
    expected = streamser.serialize(mapped, case.load_mode, case.referenced)
    with streamser.open(Unmappable(data), case.load_mode, case.referenced) as f:
        value = f.load()
        assert streamser.serialize(value, case.load_mode, case.referenced) == expected
        assert f.lazy == (case.load_mode != "ascii")  # ascii is read whole, as load does
        with streamser.open(Path(case.path), case.load_mode, case.referenced) as g:
            assert _index(f) == _index(g)
            assert f.end == g.end
    if len(data) < 1 << 20:
        check_value(case, value)
    if case.load_mode != "ascii":  # (ascii's load is the same whole read as its open)
        loaded = streamser.load(Unmappable(data), case.load_mode, case.referenced)
        assert streamser.serialize(loaded, case.load_mode, case.referenced) == expected


def _index(f: streamser.T7File) -> list[tuple[Any, ...]]:
    return [(i.path, i.typename, i.shape, i.dtype, i.offset, i.storage_offset) for i in f.tensors()]


def test_open_fetches_records_and_only_touched_tensors() -> None:
    value = _checkpoint(count=8, rows=2048)  # 512 KiB a tensor
    data = streamser.serialize(value)
    fileobj = Unmappable(data)
    with streamser.open(fileobj, block_size=64 * KiB) as f:
        assert f.lazy
        assert not f.compressed
        opened = fileobj.bytes_read
        assert opened <= 9 * 32 * KiB  # a small window after each storage, no tensor data
        w5 = f["w5"]
        assert np.array_equal(w5, value["w5"])
        assert fileobj.bytes_read - opened == value["w5"].nbytes  # exactly that tensor
        before = fileobj.bytes_read
        rows = f.get_slice("w2")[100:110]
        assert np.array_equal(rows, value["w2"][100:110])
        assert fileobj.bytes_read - before <= 2 * f._source.options.block_size  # type: ignore[union-attr]
        info = {i.path: i for i in f.tensors()}
        assert info["w2"].offset == data.index(value["w2"].tobytes())
        assert isinstance(f.get_slice("w3")._array, LazyArray)
        everything = f.load()
    for name in ("w0", "w7", "bias"):
        assert np.array_equal(everything[name], value[name])
    assert everything["names"].to_list() == ["encoder", "decoder"]


def _records(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(count)
    return [
        {
            "name": f"r{i}",
            "w": rng.random((4, 4), dtype=np.float32),
            "b": rng.random(4, dtype=np.float32),
        }
        for i in range(count)
    ]


def test_records_all_the_way_are_read_whole_once(tmp_path: Path) -> None:
    """A file of many small tensors gains nothing from a parse by windows (every byte is
    fetched anyway, and that parse runs in Python): after its first MiB it is read whole,
    without fetching again what the windows hold, and parsed at C speed."""
    from streamser.graph import loading

    value = _records(8000)  # 3 MB, little of it tensor data
    data = streamser.serialize(value)
    assert len(data) > 2 * loading.DENSE_PROBE
    path = tmp_path / "records.t7"
    path.write_bytes(data)
    fileobj = Unmappable(data)
    with streamser.open(fileobj) as f, streamser.open(path) as mapped:
        assert not f.lazy
        assert fileobj.bytes_read == len(data)  # each byte once
        assert f.tensors() == mapped.tensors()
        assert streamser.serialize(f.load()) == data
        assert np.array_equal(f["[8000].w"], value[7999]["w"])  # Lua counts from 1


def test_records_viewing_one_storage_are_read_whole() -> None:
    """Records whose tensors are views of two shared storages written at the front (3.2 MB,
    less than a read-ahead block, so fetched with the records anyway) still count as records
    all the way: the shared storage must not make the parse look like one of big tensors."""
    count = 50_000
    rng = np.random.default_rng(3)
    w = rng.random((count, 4, 4), dtype=np.float32)
    b = rng.random((count, 4), dtype=np.float32)
    value = [{"name": f"encoder.block{i}.proj", "w": w[i], "b": b[i]} for i in range(count)]
    data = streamser.serialize(value)
    fileobj = Unmappable(data)
    with streamser.open(fileobj) as f:
        assert not f.lazy
        assert fileobj.bytes_read <= len(data) + 64 * KiB  # what the kept windows no longer hold
        assert np.array_equal(f[f"[{count}].w"], w[-1])


def test_records_in_a_class_codec_are_read_whole() -> None:
    """The switch to a whole read can come in the middle of a class codec's payload (a long
    in ``tds.Vec``'s head): it must not be taken for damage there."""
    from streamser.graph.loading import DENSE_PROBE
    from streamser.values.classes import TdsVec

    value = {"p": "x" * 35, "v": TdsVec([TdsVec([float(i), "ab"]) for i in range(60_000)])}
    data = streamser.serialize(value)
    for block in (64 * KiB, 1228800 + 37, 4 * MiB):
        fileobj = Unmappable(data)
        with streamser.open(fileobj, block_size=block) as f:
            assert not f.lazy
            assert streamser.serialize(f.load()) == data
        # the windows still kept are not fetched again (with small blocks, older ones are gone)
        assert fileobj.bytes_read <= len(data) + (DENSE_PROBE if block < MiB else 0)


def test_records_then_one_big_tensor_are_not_fetched_whole() -> None:
    """A MiB of records and a big tensor after it: the parse steps over the tensor, whether it
    starts just before or just after the first look, and fetches nothing of it."""
    records = _records(2700)  # about 1 MiB
    size = len(streamser.serialize(records))
    for padding in (0, 40 * KiB):
        value = {"records": records, "pad": "y" * padding, "big": np.ones(4 << 20, np.float32)}
        data = streamser.serialize(value)
        fileobj = Unmappable(data)
        with streamser.open(fileobj, block_size=64 * KiB) as f:
            assert f.lazy
            assert fileobj.bytes_read < size + padding + 256 * KiB


def test_a_checkpoint_of_layers_stays_lazy() -> None:
    """Convolutions of 0.1-2.3 MiB with their batch-norm vectors (a ResNet's shape): tensor
    data, not records, even where the read-ahead fetched it; the handle stays lazy and the
    open fetches a fraction of the file."""
    rng = np.random.default_rng(5)
    value: dict[str, Any] = {}
    for i, channels in enumerate([64, 64, 128, 128, 256, 256, 256, 256]):
        value[f"conv{i}.weight"] = rng.standard_normal((channels, channels, 3, 3), np.float32)
        value[f"conv{i}.weight"] = np.repeat(value[f"conv{i}.weight"], 4, axis=1)
        for name in ("weight", "bias", "running_mean", "running_var"):
            value[f"bn{i}.{name}"] = rng.standard_normal(channels, np.float32)
    data = streamser.serialize(value)
    fileobj = Unmappable(data)
    with streamser.open(fileobj) as f:
        assert f.lazy
        assert fileobj.bytes_read < len(data) // 2
        assert np.array_equal(f[("conv7.weight",)], value["conv7.weight"])


def test_records_beyond_the_whole_read_limit_stay_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamser.graph import loading

    data = streamser.serialize(_records(4000))
    monkeypatch.setattr(loading, "WHOLE_RECORDS_MAX", len(data) - 1)
    with streamser.open(Unmappable(data)) as f:
        assert f.lazy
        assert np.array_equal(f["[4000].b"], _records(4000)[3999]["b"])


def test_damaged_records_read_whole_fail_at_the_same_offset(tmp_path: Path) -> None:
    """Truncated or corrupted past the first MiB: the error of the whole read is the mapped
    file's (same class, offset and message)."""
    data = streamser.serialize(_records(6000))
    middle = len(data) * 3 // 4
    broken = bytearray(data)
    broken[middle : middle + 8] = b"\xff" * 8
    for bad in (data[: len(data) - 7], bytes(broken)):
        _assert_fails_as_when_mapped(bad, tmp_path)


def test_empty_row_selections_allocate_nothing_of_the_tensor() -> None:
    """``get_slice(path)[5:5]`` is an empty array of the right shape, made without an array of
    the whole tensor's shape (under a tight RLIMIT_AS that was a MemoryError)."""
    import tracemalloc

    value = {"w": np.ones((2048, 1024), np.float32)}  # 8 MiB
    with streamser.open(Unmappable(streamser.serialize(value))) as f:
        tracemalloc.start()
        try:
            empty = f.get_slice("w")[5:5, 3:7]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert empty.shape == (0, 4)
    assert empty.dtype == np.float32
    assert peak < 1 << 20


def test_memory_errors_while_slicing_are_limit_errors_at_the_tensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = _checkpoint(count=2, rows=64)
    data = streamser.serialize(value)

    def no_memory(self: LazyArray, index: object) -> object:
        raise MemoryError

    monkeypatch.setattr(LazyArray, "_select", no_memory)
    with streamser.open(Unmappable(data)) as f:
        with pytest.raises(streamser.LimitError, match="out of memory") as caught:
            f.get_slice("w1")[3:9]
        assert caught.value.offset == data.index(value["w1"].tobytes())


def test_zstd_allocation_failures_are_limit_errors() -> None:
    """zstd's own "Allocation error" (no memory for its window) is a LimitError, not damage."""
    import zstandard

    from streamser.io.compression import zstd_error

    refused = zstd_error(zstandard.ZstdError("Allocation error : not enough memory"), 7)
    assert isinstance(refused, streamser.LimitError)
    assert refused.offset == 7
    damaged = zstd_error(zstandard.ZstdError("Corrupted block detected"), 9)
    assert not isinstance(damaged, streamser.LimitError)
    assert "damaged zstd frame" in str(damaged)


def test_open_from_the_current_position() -> None:
    data = streamser.serialize({"x": np.arange(5, dtype=np.int64)})
    fileobj = io.BytesIO(b"HEADER" + data + b"trailing")
    fileobj.seek(6)
    with streamser.open(fileobj) as f:
        assert np.array_equal(f["x"], np.arange(5))
        assert f.end == len(data)


def test_compressed_file_object_reads_only_its_frames() -> None:
    value = _checkpoint(count=6, rows=8192)  # 2 MiB a tensor
    data = streamser.serialize(value, compress="zstd", level=1)
    fileobj = Unmappable(data)
    with streamser.open(fileobj, block_size=64 * KiB) as f:
        assert f.lazy
        assert f.compressed
        assert fileobj.bytes_read < 6 * 2 * 64 * KiB  # records' frames (and a window each)
        before = fileobj.bytes_read
        assert np.array_equal(f["w4"], value["w4"])
        assert fileobj.bytes_read - before < 1.2 * value["w4"].nbytes
        assert np.array_equal(f.get_slice("w1")[5:9], value["w1"][5:9])


def test_file_object_with_a_descriptor_is_mapped(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, {"x": np.ones(4, np.float32)})
    with path.open("rb") as fileobj, streamser.open(fileobj) as f:
        assert not f.lazy
        assert f.tensors()[0].offset is not None
        assert isinstance(f["x"], np.ndarray)


def test_load_reads_a_file_object_once_into_one_buffer() -> None:
    value = _checkpoint(count=4, rows=4096)
    data = streamser.serialize(value)
    fileobj = Unmappable(data)
    loaded = streamser.load(fileobj)
    assert fileobj.bytes_read == len(data)
    assert np.array_equal(loaded["w3"], value["w3"])
    assert loaded["w3"].flags.writeable
    assert np.array_equal(streamser.load(Stream(data))["w1"], value["w1"])
    assert np.array_equal(streamser.load(io.BytesIO(data))["w2"], value["w2"])


def test_damage_through_a_file_object_is_reported_at_the_same_offset(tmp_path: Path) -> None:
    data = streamser.serialize(_checkpoint(count=2, rows=64))
    _assert_fails_as_when_mapped(data[: len(data) - 100], tmp_path)


def _assert_fails_as_when_mapped(bad: bytes, tmp_path: Path) -> None:
    """``open`` through a file object raises what ``open`` of the same bytes mapped raises:
    the same class, message and offset."""
    path = tmp_path / "bad.t7"
    path.write_bytes(bad)
    with pytest.raises(StreamserError) as mapped:
        streamser.open(path)
    with pytest.raises(StreamserError) as ranged:
        streamser.open(Unmappable(bad))
    assert type(ranged.value) is type(mapped.value)
    assert str(ranged.value) == str(mapped.value)


def test_storage_options_need_a_url() -> None:
    with pytest.raises(TypeError, match="storage_options"):
        streamser.open(io.BytesIO(b""), storage_options={"anon": True})
    with pytest.raises(TypeError, match="file object"):
        streamser.open(12)  # type: ignore[arg-type]


# --- URLs without a server: memory:// and file:// -------------------------------------------


def test_memory_urls_open_load_and_save() -> None:
    value = _checkpoint(count=3, rows=512)
    url = "memory://streamser-tests/ranged/model.t7"
    streamser.save(url, value)
    loaded = streamser.load(url)
    assert np.array_equal(loaded["w1"], value["w1"])
    with streamser.open(url, block_size=8 * KiB) as f:
        assert f.lazy
        assert np.array_equal(f["w2"], value["w2"])
        assert repr(f).startswith("<streamser.T7File 'memory://")
    streamser.save(url, value, compress="zstd")
    with streamser.open(url) as f:
        assert f.compressed
        assert np.array_equal(f["w0"], value["w0"])


def test_failed_save_to_memory_url_keeps_the_old_object() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    folder = "/streamser-tests/failed"
    streamser.save(f"memory://{folder}/kept.t7", {"version": 1})
    with pytest.raises(streamser.UnsupportedValueError):
        streamser.save(f"memory://{folder}/kept.t7", {"a": np.zeros(100_000), "b": object()})
    assert streamser.load(f"memory://{folder}/kept.t7")["version"] == 1
    assert fs.ls(folder, detail=False) == [f"{folder}/kept.t7"]  # no temporary left


def test_file_urls_are_local_paths(tmp_path: Path) -> None:
    url = (tmp_path / "local file.t7").as_uri()
    streamser.save(url, {"x": np.arange(3)})
    assert (tmp_path / "local file.t7").exists()
    with streamser.open(url) as f:
        assert not f.lazy  # mapped, as a path is
    assert np.array_equal(streamser.load(url)["x"], np.arange(3))
