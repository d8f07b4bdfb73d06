"""Checkpoints behind a plain HTTP server that answers ``Range`` requests (a CDN, a web server).

The server (standard library, loopback) records every request, so the tests see what crosses
the network: ``open`` fetches the records, ``f[path]`` one tensor's bytes, a slice a block.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from bench.loopback import RangeHTTPServer

KiB = 1 << 10


def _publish(folder: Path, server: RangeHTTPServer, name: str, value: Any, **save: Any) -> str:
    streamser.save(folder / name, value, **save)
    server.requests.clear()
    return f"{server.url}/{name}"


def _spans(requests: list[tuple[str, str, str | None]]) -> list[tuple[int, int]]:
    found = []
    for method, _path, header in requests:
        assert method == "GET"
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", header or "")
        assert match is not None, header
        found.append((int(match.group(1)), int(match.group(2)) + 1))
    return sorted(found)


@pytest.fixture
def checkpoint() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {f"conv{i}": rng.standard_normal((128, 3, 8, 8)).astype(np.float32) for i in range(6)}


def test_open_over_http_fetches_records_then_tensors(
    http_folder: Path, http_server: RangeHTTPServer, checkpoint: dict[str, Any]
) -> None:
    url = _publish(http_folder, http_server, "model.t7", checkpoint)
    data = (http_folder / "model.t7").read_bytes()
    with streamser.open(url, block_size=16 * KiB) as f:
        head, *gets = http_server.requests
        assert head[0] == "HEAD"
        assert len(gets) <= 6 + 2  # one after each 96 KiB storage, and the first
        assert sum(e - s for s, e in _spans(gets)) <= 7 * 16 * KiB
        http_server.requests.clear()
        assert np.array_equal(f["conv4"], checkpoint["conv4"])
        start = data.index(checkpoint["conv4"].tobytes())
        spans = _spans(http_server.requests)
        assert (spans[0][0], spans[-1][1]) == (start, start + checkpoint["conv4"].nbytes)
        assert len(spans) == 3  # 96 KiB in parallel pieces of two blocks
        http_server.requests.clear()
        assert np.array_equal(f.get_slice("conv2")[7:9], checkpoint["conv2"][7:9])
        assert sum(e - s for s, e in _spans(http_server.requests)) <= 2 * 16 * KiB


def test_load_and_compressed_files_over_http(
    http_folder: Path, http_server: RangeHTTPServer, checkpoint: dict[str, Any]
) -> None:
    url = _publish(http_folder, http_server, "model.t7.zst", checkpoint, compress="zstd")
    loaded = streamser.load(url)
    assert all(np.array_equal(loaded[k], v) for k, v in checkpoint.items())
    with streamser.open(url) as f:
        assert f.compressed
        assert np.array_equal(f["conv5"], checkpoint["conv5"])
    ascii_url = _publish(http_folder, http_server, "small.ascii.t7", {"a": [1, 2]}, format="ascii")
    with streamser.open(ascii_url) as f:
        assert not f.lazy  # ascii is read whole
        assert f["a"].to_list() == [1, 2]


def test_http_is_read_only(http_server: RangeHTTPServer) -> None:
    with pytest.raises(NotImplementedError, match="http:// URLs cannot be written"):
        streamser.save(f"{http_server.url}/new.t7", {"a": 1})


def test_missing_url_is_file_not_found(http_server: RangeHTTPServer) -> None:
    with pytest.raises(FileNotFoundError):
        streamser.open(f"{http_server.url}/missing.t7")
