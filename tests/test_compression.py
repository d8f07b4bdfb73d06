"""zstd around .t7 files: seekable layout, byte-exact content, plain zstd, damage and bombs."""

from __future__ import annotations

import csv
import itertools
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zstandard

import streamser
from streamser.cli.main import main
from streamser.io.compression import (
    SEEK_TABLE_MAGIC,
    SEEKABLE_MAGIC,
    SeekableZstdWriter,
    decompress,
    read_seek_table,
)

CORPUS = Path(__file__).parent / "corpus"
ROWS = list(csv.DictReader((CORPUS / "MANIFEST.tsv").read_text().splitlines(), delimiter="\t"))


def _plain(data: bytes) -> bytes:
    """What any zstd decoder makes of ``data`` (skippable frames dropped)."""
    reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    return reader.read()


@pytest.mark.parametrize("row", ROWS, ids=[row["file"] for row in ROWS])
def test_corpus_round_trips_through_compression(row: dict[str, str]) -> None:
    original = (CORPUS / row["file"]).read_bytes()
    mode, referenced = row["load_mode"], row["referenced"] == "true"
    value = streamser.deserialize(original, mode, referenced)
    packed = streamser.serialize(value, mode, referenced, compress="zstd")
    assert _plain(packed) == original  # the exact bytes of the uncompressed format
    again = streamser.deserialize(packed, mode, referenced)
    assert streamser.serialize(again, mode, referenced) == original


def _frames(data: bytes) -> list[bytes]:
    entries = read_seek_table(data)
    assert entries is not None
    frames, pos = [], 0
    for compressed, _ in entries:
        frames.append(data[pos : pos + compressed])
        pos += compressed
    return frames


def test_seekable_layout_follows_the_spec() -> None:
    payload = np.random.default_rng(0).integers(0, 50, 3_000_000, dtype=np.int64)
    data = streamser.serialize({"x": payload}, compress="zstd", level=1)
    plain = streamser.serialize({"x": payload})
    count, descriptor, magic = struct.unpack_from("<IBI", data, len(data) - 9)
    assert magic == SEEKABLE_MAGIC
    assert descriptor == 0  # no checksum flag: each frame carries its own content checksum
    entries = read_seek_table(data)
    assert entries is not None
    assert len(entries) == count
    table_start = sum(c for c, _ in entries)
    assert struct.unpack_from("<II", data, table_start) == (SEEK_TABLE_MAGIC, 8 * count + 9)
    sizes = [d for _, d in entries]
    assert sum(sizes) == len(plain)
    assert all(0 < size <= 4 << 20 for size in sizes)
    # The storage's elements start and end on frame boundaries; the records around them sit in
    # small frames of their own; and the payload is cut in whole 4 MiB frames.
    starts = {0, *itertools.accumulate(sizes)}
    header = plain.index(b"torch.LongStorage") + len(b"torch.LongStorage") + 8
    assert header in starts
    assert header + payload.nbytes in starts
    assert sizes[0] == header
    whole, rest = divmod(payload.nbytes, 4 << 20)
    assert sizes[1:] == [4 << 20] * whole + [rest]  # the value ends with the payload
    pos = 0
    for frame, (compressed, size) in zip(_frames(data), entries, strict=True):
        params = zstandard.get_frame_parameters(frame)
        assert params.has_checksum
        assert params.content_size == size
        assert zstandard.ZstdDecompressor().decompress(frame) == plain[pos : pos + size]
        assert len(frame) == compressed
        pos += size


def test_threads_give_the_same_bytes() -> None:
    value = {"w": np.linspace(0, 1, 3_000_000)}
    one = streamser.serialize(value, compress="zstd")
    two = streamser.serialize(value, compress="zstd", threads=2)
    assert one == two


def test_zstd_command_line_tool_restores_the_plain_file(tmp_path: Path) -> None:
    zstd = shutil.which("zstd")
    if zstd is None:  # pragma: no cover - Debian's zstd is on the project's machines
        pytest.fail("the zstd command line tool is missing: apt-get install zstd")
    packed = tmp_path / "m.t7.zst"
    streamser.save(packed, streamser.load(CORPUS / "nn_seq.binary.t7"), compress="zstd")
    subprocess.run([zstd, "-q", "-d", str(packed), "-o", str(tmp_path / "m.t7")], check=True)
    assert (tmp_path / "m.t7").read_bytes() == (CORPUS / "nn_seq.binary.t7").read_bytes()
    # ...and the tool's own output, with no seek table, loads too.
    subprocess.run(
        [zstd, "-q", "-19", str(tmp_path / "m.t7"), "-o", str(tmp_path / "p.zst")], check=True
    )
    loaded = streamser.load(tmp_path / "p.zst")
    assert loaded.typename == "nn.Sequential"


def test_plain_and_multi_frame_zstd_load() -> None:
    original = (CORPUS / "nn_linear.ascii.t7").read_bytes()
    one = zstandard.ZstdCompressor().compress(original)
    halves = b"".join(
        zstandard.ZstdCompressor().compress(part) for part in (original[:100], original[100:])
    )
    for data in (one, halves):
        assert streamser.serialize(streamser.deserialize(data), "ascii") == original


def test_compressed_files_load_and_open(tmp_path: Path) -> None:
    value = {"w": np.arange(1_000_000, dtype=np.float32) % 7, "name": "x"}
    path = tmp_path / "c.t7"
    streamser.save(path, value, compress="zstd", level=1)
    assert path.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    assert path.stat().st_size < 4_000_000 / 2
    assert streamser.load(path)["w"].sum() == value["w"].sum()
    with streamser.open(path) as f:
        assert f.compressed
        info = {t.path: t for t in f.tensors()}["w"]
        plain = streamser.serialize(value)
        stored = np.frombuffer(plain, np.float32, count=5, offset=info.offset)
        assert stored.tolist() == [0, 1, 2, 3, 4]  # offsets are in the plain stream
        assert f.get_slice("w")[10:12].tolist() == [3, 4]


@pytest.mark.parametrize("cut", [1, 5, 100, 1000, -9, -1])
def test_truncated_compressed_input(cut: int) -> None:
    data = streamser.serialize({"w": np.arange(100_000.0)}, compress="zstd")
    with pytest.raises(streamser.FormatError):
        streamser.deserialize(data[:cut])


def test_corrupted_frames_are_caught() -> None:
    data = bytearray(streamser.serialize({"w": np.arange(100_000.0)}, compress="zstd"))
    for position in range(8, len(data) - 40, 997):
        damaged = bytearray(data)
        damaged[position] ^= 0x55
        with pytest.raises(streamser.StreamserError):
            streamser.deserialize(bytes(damaged))


def test_decompression_bombs_stop_at_the_limit() -> None:
    zeros = zstandard.ZstdCompressor(level=19).compress(bytes(50_000_000))
    assert len(zeros) < 10_000
    with pytest.raises(streamser.LimitError, match="max_decompressed"):
        streamser.deserialize(zeros, max_decompressed=1 << 20)
    seekable = streamser.serialize({"z": np.zeros(10_000_000)}, compress="zstd")
    with pytest.raises(streamser.LimitError, match="max_decompressed"):
        streamser.deserialize(seekable, max_decompressed=1 << 20)  # refused before allocating


def test_a_failed_compressed_save_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, [1, 2], compress="zstd")
    before = path.read_bytes()
    with pytest.raises(streamser.UnsupportedValueError):
        streamser.save(path, [np.zeros(3_000_000), object()], compress="zstd", threads=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.t7"]


def test_writer_pieces_respect_frame_size() -> None:
    chunks: list[Any] = []
    writer = SeekableZstdWriter(chunks.append, frame_size=1000)
    writer.write(bytes(2500))
    writer.close()
    entries = read_seek_table(b"".join(chunks))
    assert entries is not None
    assert [d for _, d in entries] == [1000, 1000, 500]
    assert bytes(decompress(b"".join(chunks))) == bytes(2500)


def test_convert_compresses(tmp_path: Path) -> None:
    out = tmp_path / "c.t7"
    args = ["convert", str(CORPUS / "nn_seq.ascii.t7"), str(out), "--format", "ascii"]
    assert main([*args, "--compress", "zstd", "--level", "9"]) == 0
    assert _plain(out.read_bytes()) == (CORPUS / "nn_seq.ascii.t7").read_bytes()
