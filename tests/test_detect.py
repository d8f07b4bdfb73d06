"""spec/detect: ascii or binary, and files of other formats named by their first bytes."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import CORPUS, real_world

import streamser
from streamser import FormatError, TruncatedError
from streamser.spec.detect import ForeignFormatError, foreign_format, sniff_ascii


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:  # what torch.save writes since PyTorch 1.6
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return out.getvalue()


def _npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.ones(3))
    return out.getvalue()


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(8)


FOREIGN = {
    "zip": (_zip(), "zip archive", "torch.load"),
    "npy": (_npy(), ".npy array", "numpy.load"),
    "pickle": (pickle.dumps({"a": 1}, protocol=4), "pickle", "torch.load"),
    "hdf5": (b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5", "h5py"),
    "safetensors": (_safetensors(), "safetensors", "safe_open"),
    "gzip": (gzip.compress(b"anything"), "gzip", "decompress it first"),
    "text": (b"# a README\nnot a checkpoint\n", "plain text", "starts with a number"),
    "json": (b'{"weights": [1, 2]}', "plain text", "starts with a number"),
}


@pytest.mark.parametrize("name", FOREIGN)
def test_foreign_formats_are_named_with_what_reads_them(name: str, tmp_path: Path) -> None:
    data, what, instead = FOREIGN[name]
    found = foreign_format(data[:256], len(data))
    assert found is not None
    assert what in found[0]
    assert instead in found[1]
    path = tmp_path / f"model.{name}"
    path.write_bytes(data)
    for read in (lambda: streamser.deserialize(data), lambda: streamser.load(path)):
        with pytest.raises(ForeignFormatError) as info:
            read()
        assert info.value.offset == 0
        assert str(info.value) == f"this is {found[0]}, not a Torch7 file: {found[1]} (at byte 0)"
    with pytest.raises(ForeignFormatError):
        streamser.open(path)
    zstd = pytest.importorskip("zstandard")
    with pytest.raises(ForeignFormatError, match=what):  # inside zstd too
        streamser.deserialize(zstd.ZstdCompressor().compress(data))


@pytest.mark.parametrize(
    "path",
    [*sorted(CORPUS.glob("*.t7")), *real_world("torchfile"), *real_world("opencv-nets")],
    ids=lambda p: p.name,
)
def test_torch7_files_are_never_taken_for_foreign_ones(path: Path) -> None:
    data = path.read_bytes()
    assert foreign_format(data[:256], len(data)) is None


def test_sniffing_ascii() -> None:
    assert sniff_ascii(b"4\n1\n", 0)
    assert sniff_ascii(b" 3", 0)
    assert not sniff_ascii(b"\x04\x00\x00\x00", 0)
    with pytest.raises(TruncatedError, match="empty"):
        sniff_ascii(b"", 0)
    assert foreign_format(b"", 0) is None
    assert foreign_format(b"\x03\x00\x00\x00\x01\x00\x00\x00{", 20) is None  # a table, not JSON
    assert issubclass(ForeignFormatError, FormatError)
