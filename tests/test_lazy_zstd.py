"""Lazy reading of seekable zstd files: ``open`` decompresses only the frames it needs.

The plain stream is the oracle: a compressed file opened lazily must give the same values,
the same tensor index (offsets in the plain stream) and the same errors at the same offsets as
the plain file, while decompressing only record frames on open and only a tensor's own frames
when it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CASES, CRAFTED, Case, check_value, packed

import streamser
from streamser import FormatError, LimitError, StreamserError
from streamser.graph.loading import read_buffer
from streamser.io.seekable import DEFAULT_CACHE_BYTES, FrameDecoder, FrameSource
from streamser.spec.limits import Limits
from streamser.values.lazy import LazyArray

MiB = 1 << 20


def _info_rows(handle: streamser.T7File) -> list[tuple[Any, ...]]:
    return [
        (i.path, i.typename, i.shape, i.dtype, i.nbytes, i.offset, i.storage_offset)
        for i in handle.tensors()
    ]


BINARY_CASES = [case for case in CASES if case.load_mode != "ascii"]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in BINARY_CASES])
def test_corpus_through_lazy_open(case: Case, tmp_path: Path) -> None:
    """Tiny frames (61 bytes) make records straddle frame boundaries everywhere."""
    original = case.path.read_bytes()
    path = tmp_path / "f.t7.zst"
    path.write_bytes(packed(original, frame_size=61))
    plain_path = tmp_path / "f.t7"
    plain_path.write_bytes(original)
    with streamser.open(path, case.load_mode, case.referenced) as f:
        assert f.lazy
        assert f.compressed
        value = f.load()
        check_value(case, value)
        rewritten = streamser.serialize(value, case.load_mode, case.referenced)
        assert rewritten == original
        with streamser.open(plain_path, case.load_mode, case.referenced) as g:
            assert _info_rows(f) == _info_rows(g)
            assert f.end == g.end
    with streamser.open(path, referenced=case.referenced) as f:  # format detection
        check_value(case, f.load())


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Eight tensors of 5 MiB, each with a small one beside it, compressed."""
    rng = np.random.default_rng(7)
    value: dict[str, Any] = {}
    for i in range(8):
        value[f"w{i}"] = rng.normal(0, 0.02, (1280, 1024)).astype(np.float32)
        value[f"b{i}"] = rng.normal(size=16).astype(np.float32)
    path = tmp_path_factory.mktemp("lazy") / "big.t7.zst"
    streamser.save(path, value, compress="zstd", level=1)
    return path, value


def test_open_reads_record_frames_only(big: tuple[Path, dict[str, Any]]) -> None:
    path, value = big
    with streamser.open(path) as f:
        source = f._source
        assert source is not None
        opened = source.frames_decompressed
        # one small frame of records between consecutive storages, nothing of the 5 MiB ones
        assert opened <= 9 < source.frame_count
        w3 = f["w3"]
        assert np.array_equal(w3, value["w3"])
        assert source.frames_decompressed - opened == 2  # 5 MiB: one frame of 4 and one of 1
        before = source.frames_decompressed
        rows = f.get_slice("w5")[100:110]
        assert np.array_equal(rows, value["w5"][100:110])
        assert source.frames_decompressed - before == 1  # 40 KiB of rows inside one frame
        info = {i.path: i for i in f.tensors()}
        assert info["w5"].shape == (1280, 1024)
        assert source.frames_decompressed - before == 1  # the index reads nothing


def test_tensor_read_is_a_new_array(big: tuple[Path, dict[str, Any]]) -> None:
    path, value = big
    with streamser.open(path) as f:
        w0 = f["w0"]
        assert isinstance(w0, np.ndarray)
        assert w0.flags.writeable
        w0[0, 0] = 5.0  # a copy of its own: the file and later reads are unchanged
        assert f["w0"][0, 0] == value["w0"][0, 0]
        whole = f.load()
    assert np.array_equal(whole["b7"], value["b7"])


def test_frame_cache_stays_bounded(big: tuple[Path, dict[str, Any]]) -> None:
    path, value = big
    with streamser.open(path) as f:
        source = f._source
        assert source is not None
        for name in value:
            if name.startswith("w"):
                tensor = f.get_slice(name)
                for row in range(0, 1280, 97):
                    assert np.array_equal(tensor[row], value[name][row])
        assert source._cached <= DEFAULT_CACHE_BYTES
        assert source._cached == sum(len(frame) for frame in source._cache.values())


def test_parsing_releases_frames_behind_it() -> None:
    """The sparse mapping holds only the frames under the current record."""
    value = {f"t{i}": np.full(300_000, i, np.float32) for i in range(40)}  # 1.2 MB apart
    data = packed(streamser.serialize(value), frame_size=256 << 10)
    from streamser.io.compression import read_seek_table

    entries = read_seek_table(data)
    assert entries is not None
    source = FrameSource(data, entries, max_size=1 << 30)
    decoder = FrameDecoder(source)
    high_water = 0
    original = decoder._ready

    def watched(start: int, end: int) -> None:
        nonlocal high_water
        original(start, end)
        high_water = max(high_water, len(decoder._filled))

    decoder._ready = watched  # type: ignore[method-assign]
    loaded = streamser.graph.reader.GraphReader(decoder).read_object()
    decoder.close()
    assert high_water <= 2
    assert source.frames_decompressed <= 2 * 40 + 1
    assert source.frames_decompressed < len(entries)
    assert isinstance(loaded["t39"], LazyArray)
    assert np.array_equal(np.asarray(loaded["t39"]), value["t39"])


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    head=st.one_of(
        st.integers(-40, 39),
        st.builds(
            slice,
            st.none() | st.integers(-45, 45),
            st.none() | st.integers(-45, 45),
            st.none() | st.integers(-4, 4).filter(bool),
        ),
    ),
    second=st.none() | st.integers(-3, 2) | st.just(slice(None, None, 2)),
    transposed=st.booleans(),
)
def test_slices_match_numpy(rows: int, head: Any, second: Any, transposed: bool) -> None:
    array = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3)
    if transposed:
        array = np.asfortranarray(array.T).T  # a strided view in the file
    data = packed(streamser.serialize({"x": array}), frame_size=50)
    index = head if second is None else (head, second)
    try:
        expected = array[index]
    except IndexError:
        expected = None
    reading, _ = _lazy(data)
    tensor = reading.value["x"]
    assert isinstance(tensor, LazyArray)
    if expected is None:
        with pytest.raises(IndexError):
            tensor[index]
        return
    got = tensor[index]
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def _lazy(data: bytes, format: str | None = None) -> tuple[Any, FrameSource]:
    reading = read_buffer(data, 0, format, referenced=True, limits=Limits(), lazy=True)
    assert reading.source is not None
    return reading, reading.source


# Every crafted input but the empty one and the one that is zstd already (nothing to wrap).
COMPRESSIBLE_CRAFTED = [
    param for param in CRAFTED if param.values[0] and not param.values[0].startswith(b"\x28\xb5")
]


@pytest.mark.parametrize(("data", "expected", "fragment"), COMPRESSIBLE_CRAFTED)
def test_crafted_input_fails_as_the_plain_file_does(
    data: bytes, expected: type[StreamserError], fragment: str
) -> None:
    with pytest.raises(StreamserError) as plain:
        streamser.deserialize(data, format="binary")
    with pytest.raises(StreamserError) as lazy:
        _lazy(packed(data, frame_size=7), "binary")
    assert type(lazy.value) is type(plain.value)
    assert getattr(lazy.value, "offset", None) == getattr(plain.value, "offset", None)


def test_crafted_inputs_left_out_are_only_the_uncompressible_ones() -> None:
    assert len(CRAFTED) - len(COMPRESSIBLE_CRAFTED) == 2


def test_damaged_tensor_frame_fails_on_reading_only(big: tuple[Path, dict[str, Any]]) -> None:
    path, _ = big
    data = bytearray(path.read_bytes())
    with streamser.open(path) as f:
        info = {i.path: i for i in f.tensors()}
    source = FrameSource(data, _entries(data), max_size=1 << 40)
    frame = source.frame_of(info["w2"].offset + MiB)
    where = source._packed[frame] + 1000
    data[where] ^= 0x40
    damaged = path.with_name("damaged.t7.zst")
    damaged.write_bytes(data)
    with streamser.open(damaged) as f:
        assert np.array_equal(f["w1"], big[1]["w1"])
        with pytest.raises(FormatError) as info_error:
            _ = f["w2"]
    assert info_error.value.offset == source._packed[frame]


def test_lying_seek_table_is_caught() -> None:
    data = bytearray(packed(streamser.serialize({"a": np.arange(1000.0)}), frame_size=100))
    # The footer's frame count is kept; the first entry's decompressed size is raised.
    entries = _entries(data)
    start = len(data) - 9 - 8 * len(entries)
    data[start + 4 : start + 8] = (entries[0][1] + 1).to_bytes(4, "little")
    with pytest.raises(FormatError):
        _lazy(bytes(data))


def test_declared_size_over_the_limit_fails_before_reading() -> None:
    data = packed(streamser.serialize({"a": np.zeros(1 << 20)}))
    with pytest.raises(LimitError, match="max_decompressed"):
        read_buffer(
            data, 0, None, referenced=True, limits=Limits(max_decompressed=1 << 20), lazy=True
        )


def test_plain_zstd_and_ascii_inside_are_read_whole(tmp_path: Path) -> None:
    import zstandard

    value = {"a": np.arange(5.0), "s": "x"}
    path = tmp_path / "plain.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(streamser.serialize(value)))
    with streamser.open(path) as f:
        assert not f.lazy
        assert np.array_equal(f["a"], value["a"])
    path.write_bytes(packed(streamser.serialize(value, "ascii")))
    with streamser.open(path) as f:
        assert not f.lazy
        assert f.format.name == "ascii"
        assert np.array_equal(f["a"], value["a"])


def _entries(data: Any) -> list[tuple[int, int]]:
    from streamser.io.compression import read_seek_table

    entries = read_seek_table(data)
    assert entries is not None
    return entries


def test_command_line_on_a_lazy_file(
    big: tuple[Path, dict[str, Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamser.cli.main import main

    path, value = big
    assert main(["verify", str(path)]) == 0
    total = sum(array.nbytes for array in value.values())
    assert f"{total:,} bytes of data read" in capsys.readouterr().out
    assert main(["export", str(path), str(tmp_path / "x.npz")]) == 0
    with np.load(tmp_path / "x.npz") as exported:
        assert sorted(exported.files) == sorted(value)
        assert np.array_equal(exported["w6"], value["w6"])
    assert main(["convert", str(path), str(tmp_path / "plain.t7"), "--quiet"]) == 0
    assert (tmp_path / "plain.t7").read_bytes() == streamser.serialize(value)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10  # inside some tensor's frames: found only by reading
    (tmp_path / "damaged.zst").write_bytes(damaged)
    assert main(["verify", str(tmp_path / "damaged.zst")]) == 2
