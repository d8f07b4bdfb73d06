"""io/seekable: any byte range of a seekable zstd stream, decompressing only its frames; the
decoder that parses records through it asks for exactly the bytes the grammar reads."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import streamser
from streamser import FormatError, TruncatedError
from streamser.graph.reader import GraphReader
from streamser.io.compression import MAX_FRAME_SIZE, SeekableZstdWriter, read_seek_table
from streamser.io.seekable import FrameDecoder, FrameSource
from streamser.spec.format import ELEMENTS
from streamser.spec.grammar import iter_records
from streamser.values.lazy import LazyStorage

PLAIN = bytes(range(256)) * 64  # 16 KiB


def packed(data: bytes, frame_size: int) -> bytes:
    pieces: list[bytes] = []
    writer = SeekableZstdWriter(pieces.append, frame_size=frame_size)
    writer.write(data)
    writer.close()
    return b"".join(pieces)


def source_of(data: bytes, frame_size: int = 1000, **options: Any) -> FrameSource:
    compressed = packed(data, frame_size)
    entries = read_seek_table(compressed)
    assert entries is not None
    return FrameSource(compressed, entries, max_size=1 << 30, **options)


def test_any_range_reads_back_the_plain_bytes() -> None:
    source = source_of(PLAIN)
    assert source.size == len(PLAIN)
    assert source.frame_count == 17
    for start, count in ((0, 1), (999, 2), (1500, 3000), (0, len(PLAIN)), (len(PLAIN) - 5, 5)):
        assert bytes(source.read(start, count)) == PLAIN[start : start + count]
    assert source.frame_of(999) == 0
    assert source.frame_of(1000) == 1
    assert source.frame_span(1) == (1000, 2000)
    with pytest.raises(TruncatedError, match="past the end"):
        source.read(len(PLAIN) - 2, 5)


def test_the_cache_is_bounded_and_big_reads_bypass_it() -> None:
    source = source_of(PLAIN, cache_bytes=2500)
    for frame in range(6):
        source.read(frame * 1000 + 10, 1)  # partial: through the cache
    assert source._cached <= 2500
    before = source.frames_decompressed
    source.read(5010, 1)  # still cached
    assert source.frames_decompressed == before
    source.read(7000, 3000)  # whole frames: straight through, not cached
    assert 7 not in source._cache


def test_a_damaged_frame_is_reported_at_its_compressed_offset() -> None:
    compressed = bytearray(packed(PLAIN, 4000))
    entries = read_seek_table(compressed)
    assert entries is not None
    second = entries[0][0]
    compressed[second + 12] ^= 0xFF
    source = FrameSource(bytes(compressed), entries, max_size=1 << 30)
    assert bytes(source.read(0, 10)) == PLAIN[:10]
    with pytest.raises(FormatError) as info:
        source.read(4000, 10)
    assert info.value.offset == second
    with pytest.raises(FormatError, match="seek table claims a frame over"):
        FrameSource(bytes(compressed), [(1, MAX_FRAME_SIZE + 1)], max_size=1 << 30)


def test_the_decoder_reads_primitives_and_skips_storages() -> None:
    value = {"w": np.arange(4000, dtype=np.float32), "name": "x" * 3000, "n": 2}
    data = streamser.serialize(value)
    source = source_of(data, frame_size=1024)
    decoder = FrameDecoder(source)
    loaded = GraphReader(decoder).read_object()
    assert decoder.pos == len(data)
    decoder.close()
    assert isinstance(loaded["w"].storage, LazyStorage)
    assert loaded["name"] == "x" * 3000
    # the 16 KB storage sits in frames the parse never decompressed
    assert source.frames_decompressed <= source.frame_count - 14
    np.testing.assert_array_equal(np.asarray(loaded["w"]), value["w"])


def test_the_decoder_follows_the_records_and_releases_what_is_behind() -> None:
    value = [np.full(2000, i, np.float64) for i in range(12)]
    data = streamser.serialize(value)
    source = source_of(data, frame_size=2048)
    decoder = FrameDecoder(source)
    held = 0
    summaries = []
    for record in iter_records(decoder):
        summaries.append(record.summary)
        held = max(held, len(decoder._filled))
    decoder.close()
    assert held <= 2
    assert summaries[0] == "table of 12 entries"
    assert len(summaries) == 1 + 12 * 3
    lazy = FrameDecoder(source)
    assert isinstance(lazy.read_array(ELEMENTS["Double"], 0), np.ndarray)  # nothing to defer
    with pytest.raises(TruncatedError):
        lazy.read_array(ELEMENTS["Double"], 10**9)
    lazy.close()
