"""Writing the lazily read values of a compressed file without reading them whole.

The oracle is the same value read in full: writing ``open(...).root`` (``LazyArray`` and
``LazyStorage`` leaves) must give exactly the bytes that writing ``materialize(root, whole=True)``
gives, in every format and mode, while storages are streamed from the file a chunk at a time.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import CASES, Case, packed

import streamser
from streamser import Storage, TorchObject
from streamser.cli.main import main
from streamser.graph.loading import read_buffer
from streamser.io.arrays import iter_chunks
from streamser.spec.limits import Limits
from streamser.values.lazy import LazyArray, materialize

MiB = 1 << 20
BINARY_CASES = [case for case in CASES if case.load_mode != "ascii"]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"format": "ascii"},
    {"format": "b32"},
    {"compact": True},
    {"cast": "float64"},
    {"cast": {"torch.FloatTensor": "torch.ByteTensor"}, "format": "ascii"},
    {"serial": "light"},
    {"referenced": False},
]


def _written_both_ways(path: Path, **options: Any) -> tuple[bytes, bytes]:
    fmt = options.pop("format", "binary")
    referenced = options.pop("referenced", True)
    with streamser.open(path) as f:
        assert f.lazy
        lazy = streamser.serialize(f.root, fmt, referenced, **options)
        whole = streamser.serialize(materialize(f.root, whole=True), fmt, referenced, **options)
    return lazy, whole


def _sample() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    base = rng.standard_normal((40, 30)).astype(np.float32)
    layer = TorchObject("nn.Linear", {"weight": base, "gradWeight": base * 2, "output": base[0]})
    return {
        "layer": layer,
        "views": [base[3:7, ::2], base.T, base[5], base[:, 4:5], base[3:3], base[None, 2]],
        "storage": Storage(base.reshape(-1)),
        "longs": np.arange(5000, dtype=np.int64) - 2500,
        "half": np.linspace(-2, 2, 9).astype(np.float16),
        "bytes": np.frombuffer(b"lazy bytes", np.uint8),
        "empty": np.empty((0,), np.float64),
        "zero_d": np.float64(2.5),
    }


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(map(str, o.items())) or "-")
def test_lazy_values_are_written_as_their_arrays(tmp_path: Path, options: dict[str, Any]) -> None:
    path = tmp_path / "sample.t7"
    path.write_bytes(packed(streamser.serialize(_sample()), frame_size=999))
    lazy, whole = _written_both_ways(path, **options)
    assert lazy == whole


@pytest.mark.parametrize("case", [pytest.param(c, id=c.file) for c in BINARY_CASES])
def test_corpus_files_rewrite_byte_for_byte_from_lazy_values(case: Case, tmp_path: Path) -> None:
    original = case.path.read_bytes()
    path = tmp_path / "f.t7"
    path.write_bytes(packed(original, frame_size=61))
    with streamser.open(path, case.load_mode, case.referenced) as f:
        assert f.lazy
        assert streamser.serialize(f.root, case.load_mode, case.referenced) == original


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    steps=st.lists(st.integers(1, 3), min_size=4, max_size=4),
    transpose=st.booleans(),
    max_bytes=st.sampled_from([1, 8, 40, 1000]),
)
def test_chunks_are_the_elements_in_order(
    shape: list[int], steps: list[int], transpose: bool, max_bytes: int
) -> None:
    base = np.arange(np.prod(shape) * 8, dtype=np.float64).reshape(-1)
    full = base[: np.prod(shape)].reshape(shape)
    view = full[tuple(slice(None, None, s) for s in steps[: len(shape)])]
    view = view.T if transpose else view
    data = packed(streamser.serialize({"base": base, "view": view}), frame_size=64)
    opened = read_buffer(data, 0, None, referenced=True, limits=Limits(), lazy=True)
    assert opened.source is not None
    lazy = opened.value["view"]
    assert isinstance(lazy, LazyArray)
    pieces = list(lazy.chunks(max_bytes))
    assert all(p.flags.c_contiguous and p.ndim == 1 for p in pieces)
    assert all(p.nbytes <= max(max_bytes, 8) for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), view.reshape(-1))


def test_iter_chunks_takes_arrays_and_lazy_tensors(tmp_path: Path) -> None:
    array = np.arange(100, dtype=np.int32).reshape(10, 10)[:, ::3]
    path = tmp_path / "a.t7"
    path.write_bytes(packed(streamser.serialize(array), frame_size=50))
    with streamser.open(path) as f:
        lazy_pieces = list(iter_chunks(f.root, 16))
    np.testing.assert_array_equal(np.concatenate(lazy_pieces), array.reshape(-1))
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(array, 16))), array.reshape(-1))


def test_converting_a_compressed_file_reads_a_chunk_at_a_time(tmp_path: Path) -> None:
    """Storages of 48 MiB are rewritten with less than one in memory at once."""
    value = {f"w{i}": np.full(12 * MiB, i, np.float32) for i in range(2)}  # 48 MiB each
    source = tmp_path / "big.t7"
    streamser.save(source, value, compress="zstd", level=1)
    target = tmp_path / "out.t7"
    with streamser.open(source) as f:
        tracemalloc.start()
        try:
            streamser.save(target, f.root, compress="zstd", level=1, threads=1)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 32 * MiB  # a chunk of 16 MiB, the frames being decompressed and compressed
    assert streamser.load(target, mmap=False).keys() == value.keys()
    assert streamser.serialize(streamser.load(target)) == streamser.serialize(value)


def test_convert_command_streams_and_matches_the_plain_file(tmp_path: Path) -> None:
    value = _sample()
    plain, compressed = tmp_path / "plain.t7", tmp_path / "packed.t7"
    streamser.save(plain, value)
    streamser.save(compressed, value, compress="zstd")
    for source in (plain, compressed):
        for extra in ([], ["--format", "ascii"], ["--serial", "medium", "--cast", "float64"]):
            out = tmp_path / f"{source.stem}-{len(extra)}.t7"
            assert main(["convert", str(source), str(out), "--quiet", *extra]) == 0
    for extra in range(0, 5, 2):
        assert (tmp_path / f"plain-{extra}.t7").read_bytes() == (
            tmp_path / f"packed-{extra}.t7"
        ).read_bytes()


def test_ascii_casts_to_bytes_write_the_new_type() -> None:
    values = np.array([1.5, 2.5, 300.0], np.float32)
    cast = {"torch.FloatTensor": "torch.ByteTensor"}
    binary = streamser.deserialize(streamser.serialize(values, "binary", cast=cast))
    text = streamser.deserialize(streamser.serialize(values, "ascii", cast=cast))
    assert text.dtype == np.uint8
    assert text.tolist() == binary.tolist() == [1, 2, 44]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_exporting_a_compressed_file_reads_a_chunk_at_a_time(tmp_path: Path, suffix: str) -> None:
    """A 96 MiB tensor of a seekable zstd file is exported with at most two 16 MiB chunks and
    a few frames in memory (about 40 MiB, whatever the tensor's size)."""
    from streamser.tools.export import export

    value = {"w": np.arange(24 * MiB, dtype=np.float32)}  # 96 MiB
    source = tmp_path / "big.t7"
    streamser.save(source, value, compress="zstd", level=1)
    target = tmp_path / f"out{suffix}"
    tracemalloc.start()
    try:
        report = export(source, target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 48 * MiB
    assert report.arrays == 1
    if suffix == ".npz":
        with np.load(target) as archive:
            np.testing.assert_array_equal(archive["w.npy".removesuffix(".npy")], value["w"])
    else:
        from safetensors.numpy import load_file

        np.testing.assert_array_equal(load_file(target)["w"], value["w"])
