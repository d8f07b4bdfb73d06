"""Servers for the remote tests: started once per session on loopback, stopped at its end.

Only the tests that ask for them start them: a run of other test modules costs nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import streamser.io.sink
from bench.loopback import CountingProxy, RangeHTTPServer, SeaweedFS


@dataclass
class S3Server:
    """A SeaweedFS S3 gateway reached through a counting proxy, and one bucket on it."""

    server: SeaweedFS
    proxy: CountingProxy
    bucket: str

    def url(self, name: str) -> str:
        """A fresh URL in the test bucket (names are made unique)."""
        return f"s3://{self.bucket}/{secrets.token_hex(4)}-{name}"

    @property
    def options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs through the proxy, which counts the traffic."""
        return self._options(self.proxy.url)

    @property
    def direct_options(self) -> dict[str, Any]:
        """``storage_options`` for s3fs straight to the server (for checks after a cut)."""
        return self._options(self.server.endpoint)

    def _options(self, endpoint: str) -> dict[str, Any]:
        options = dict(self.server.storage_options)
        options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": endpoint}
        options["skip_instance_cache"] = True
        return options

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.direct_options)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3(seaweedfs: SeaweedFS) -> Iterator[S3Server]:
    with CountingProxy(seaweedfs.endpoint) as proxy:
        found = S3Server(seaweedfs, proxy, "streamser-tests")
        found.filesystem().mkdir(found.bucket)
        yield found


@pytest.fixture
def traffic(s3: S3Server) -> CountingProxy:
    """The proxy, its counts reset for this test."""
    s3.proxy.reset()
    s3.proxy.cut_when = lambda request: None
    return s3.proxy


@pytest.fixture(scope="session")
def http_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http")


@pytest.fixture(scope="session")
def http_server(http_folder: Path) -> Iterator[RangeHTTPServer]:
    with RangeHTTPServer(http_folder) as server:
        yield server


@pytest.fixture
def server_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file counts as one on NFS or SMB, whose server performs ``copy_file_range``: the
    kernel-copy path streamser takes there, exercised on the local file system."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: True)
