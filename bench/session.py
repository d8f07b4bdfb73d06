"""The parent's handle on a worker: start it, send it commands, sample its memory meanwhile.

While a command runs, the parent reads the worker's memory every ``interval`` seconds
(``/proc/PID/status`` on Linux: RSS and its anonymous part; psutil's USS elsewhere) and keeps
the samples with their times on the system-wide monotonic clock, on which the worker reports
each run's window.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from .procmem import sampler

ROOT = Path(__file__).resolve().parent.parent  # the directory `python -m bench.worker` runs in
Sample = tuple[float, int, int]  # monotonic time, rss, anon


class WorkerError(RuntimeError):
    """The worker died or answered nonsense; the message ends with its stderr."""


class Session:
    """One worker process for one case at one size."""

    def __init__(self, args: list[str], *, interval: float = 0.005) -> None:
        self.interval = interval
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.child = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=ROOT,
        )
        self._read_memory = sampler(self.child.pid)
        self._pending = b""
        try:
            self.ready, _ = self._reply()
        except BaseException:
            self.close(kill=True)
            raise

    def request(self, command: dict[str, Any]) -> tuple[dict[str, Any], list[Sample]]:
        """Send ``command``; return the reply and the memory samples taken while it ran."""
        stdin = self.child.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"the worker has exited{self._stderr_tail()}") from None
        return self._reply()

    def _reply(self) -> tuple[dict[str, Any], list[Sample]]:
        stdout = self.child.stdout
        assert stdout is not None
        samples: list[Sample] = []
        while b"\n" not in self._pending:
            memory = self._read_memory()
            if memory is not None and memory.rss:
                samples.append((time.monotonic(), memory.rss, memory.anon))
            ready, _, _ = select.select([stdout], [], [], self.interval)
            if ready:
                chunk = os.read(stdout.fileno(), 1 << 16)
                if not chunk:
                    raise WorkerError(f"the worker exited{self._stderr_tail()}")
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            reply: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            raise WorkerError(f"unreadable reply {line[:200]!r}{self._stderr_tail()}") from None
        return reply, samples

    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def _stderr_tail(self) -> str:
        tail = "\n".join(self.stderr().strip().splitlines()[-8:])
        return f": {tail}" if tail else ""

    def close(self, *, kill: bool = False) -> None:
        """Ask the worker to quit (or ``kill`` it); kill it if it does not quit within 10 s."""
        try:
            if kill:
                self.child.kill()
            elif self.child.stdin is not None and self.child.poll() is None:
                self.child.stdin.write(b'{"cmd": "quit"}\n')
                self.child.stdin.close()
            self.child.wait(timeout=10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.child.kill()
            self.child.wait()
        finally:
            for pipe in (self.child.stdin, self.child.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
            self._err.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=kind is not None)
