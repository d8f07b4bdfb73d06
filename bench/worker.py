"""One case at one size in a worker process, driven run by run by the parent.

``python -m bench.worker MANIFEST CASE CONTENDERS SETTINGS`` imports every contender's library
first (so that every run sees the same process), then answers commands, one JSON object per
line on stdin, one reply per line on stdout (library output is sent to stderr):

* ``{"cmd": "phase", "op": "save", "files": {contender: path}}``: release the last phase,
  build the input (a save's value, prepared for each contender) and the contenders' buffers;
* ``{"cmd": "run", "contender": name, "warmup": bool, "check": bool, "inner": n}``: one
  run: after the preparation, ``n`` timings back to back (the best is the run's time);
* ``{"cmd": "quit"}``.

The objects alive once the libraries are imported, and again once a phase has built its input,
are frozen out of the garbage collector (``gc.freeze``): otherwise every full collection that a
run's allocations trigger would also scan torch's objects and the 150,000 objects of the
records input (and its copies for torch and safetensors), a cost a process of one library does
not pay, at moments that vary from run to run. What a run allocates is collected as usual.

Before each run, untimed, the same for every contender: garbage is collected and the C heap
trimmed, a save's old output deleted, dirty pages written back (``sync``; with ``--cold``
the page cache is dropped instead), the input and the contender's buffers touched (the memmap
case maps its input anew instead: see ``prepare_run``), and a scratch
region as large as the data written and freed (see ``warm``). The run notes its window on the
system-wide monotonic clock (the parent samples this process's memory meanwhile), its wall and
CPU time, its memory just before and after, and the kernel's RSS high-water mark. When asked,
the result is then checked against the checksums of the data.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from . import balloon, procmem, sched, warm
from .data import (
    Manifest,
    index_digest,
    make_records,
    map_tensors,
    read_tensors,
    records_digest,
    tensors_digest,
)
from .peers import Contender, Context, get


def make_input(ctx: Context) -> Any:
    """The value a save writes: in memory, or memory-mapped for the memmap case."""
    if ctx.is_records:
        return make_records(ctx.records.count, ctx.records.seed)
    if ctx.case == "memmap":
        return map_tensors(ctx.tensors)
    return read_tensors(ctx.tensors)


def remove(path: Path) -> None:
    """Delete a file or a folder of files, if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def io_counters() -> dict[str, int] | None:
    """This process's I/O counters (bytes through system calls and to storage), if known."""
    try:
        psutil = importlib.import_module("psutil")
        return dict(psutil.Process().io_counters()._asdict())
    except (ImportError, AttributeError, NotImplementedError, OSError):
        return None


def _delta(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {key: after[key] - before[key] for key in after}


@dataclass(frozen=True)
class Timing:
    """One timing: wall and CPU seconds, seconds spent waiting for a CPU, bytes the guest
    handed back to its host meanwhile (``balloon``), and the window on the system-wide
    monotonic clock."""

    wall: float
    cpu: float
    wait: float
    start: float
    end: float
    returned: int = 0


def time_once(operation: Callable[[], Any]) -> tuple[Timing, Any]:
    """Run ``operation`` once, timed; its result."""
    queued, given = sched.waited(), balloon.returned()
    cpu_start, start = time.process_time(), time.monotonic()
    result = operation()
    end, cpu_end = time.monotonic(), time.process_time()
    waited, returned = sched.waited() - queued, balloon.returned() - given
    return Timing(end - start, cpu_end - cpu_start, waited, start, end, returned), result


def summary(timings: list[Timing], before: procmem.Memory, after: procmem.Memory) -> dict[str, Any]:
    """A run's record: its best timing, every timing, and its memory before and after."""
    best = min(timings, key=lambda timing: timing.wall)
    return {
        "start": timings[0].start,
        "end": timings[-1].end,
        "seconds": best.wall,
        "cpu": min(timing.cpu for timing in timings),
        "wait": best.wait,
        "returned": best.returned,
        "batch": [timing.wall for timing in timings],
        "cpu_batch": [timing.cpu for timing in timings],
        "wait_batch": [timing.wait for timing in timings],
        "rss_before": before.rss,
        "anon_before": before.anon,
        "rss_after": after.rss,
        "anon_after": after.anon,
        "rss_peak": after.hwm,
    }


class Worker:
    """The state of one case: its data, the current phase, and each contender's input."""

    def __init__(self, manifest: Manifest, case: str, cold: bool) -> None:
        self.ctx = Context(case, manifest.tensors_of(case), manifest.records)
        self.cold = cold
        self.op = ""
        self.files: dict[str, Path] = {}
        self.value: Any = None
        self.prepared: dict[str, Any] = {}
        self.notes: list[str] = []

    @property
    def work_bytes(self) -> int:
        """The size of memory a run needs fresh: the scratch region written before it."""
        if self.op == "lazy":
            return self.ctx.tensors.touched
        if self.ctx.is_records:
            return self.ctx.records.footprint
        return self.ctx.tensors.nbytes

    def phase(self, op: str, files: dict[str, str]) -> dict[str, Any]:
        """Release the last phase and set up ``op`` for the contenders in ``files``."""
        for name in self.files:
            get(name).teardown()
        self.value, self.prepared = None, {}
        gc.unfreeze()
        gc.collect()
        self.op, self.files = op, {name: Path(path) for name, path in files.items()}
        errors: dict[str, str] = {}
        if op == "save":
            self.value = make_input(self.ctx)
        for name in self.files:
            try:
                contender = get(name)
                if op == "save":
                    self.prepared[name] = contender.prepare(self.value, self.ctx)
                contender.setup(op, self.ctx)
            except Exception as exc:  # reported; the parent skips this contender
                errors[name] = f"{type(exc).__name__}: {exc}"
        _freeze()
        return {"ok": True, "errors": errors}

    def operation(self, contender: Contender) -> Callable[[], Any]:
        path, ctx = self.files[contender.name], self.ctx
        if self.op == "save":
            value = self.prepared[contender.name]
            return lambda: contender.save(value, path, ctx)
        method: Callable[[Path, Context], Any] = getattr(contender, self.op)
        return lambda: method(path, ctx)

    def prepare_run(self, contender: Contender) -> None:
        """Untimed, the same for everyone: see the module's docstring."""
        gc.collect()
        if self.op == "save":
            remove(self.files[contender.name])
        reads_files = self.op != "save" or self.ctx.case == "memmap"
        if self.cold and reads_files:
            why_not = procmem.drop_page_cache()
            if why_not and why_not not in self.notes:
                self.notes.append(why_not)
        else:
            os.sync()
        if self.op == "save" and self.ctx.case == "memmap":
            # New mappings for every run, never read through: the file's pages are in the page
            # cache (the keeper's own mapping keeps them there), none is in this process's
            # page tables yet, as when a user maps a raw file and saves it.
            self.value = make_input(self.ctx)
            self.prepared[contender.name] = contender.prepare(self.value, self.ctx)
        else:
            warm.touch_value(self.value)
        for buffer in contender.buffers():
            warm.touch(buffer)
        warm.scratch(self.work_bytes)
        warm.malloc_trim()

    def run(self, name: str, warmup: bool, check: bool, inner: int = 1) -> dict[str, Any]:
        """One run: ``inner`` timings of the operation back to back (a batch, for operations
        of a few milliseconds), after one preparation; the best of the batch is the run's."""
        contender = get(name)
        self.prepare_run(contender)  # first: the memmap case makes the run's input here
        operation = self.operation(contender)
        before, io_before = procmem.own_memory(), io_counters()
        procmem.reset_peak()
        timings, result = self.batch(contender, operation, inner)
        after, io_after = procmem.own_memory(), io_counters()
        record = summary(timings, before, after)
        record.update(warmup=warmup, io=_delta(io_after, io_before))
        if check:
            record["check"] = self.check(contender, result)
        return record

    def batch(
        self, contender: Contender, operation: Callable[[], Any], inner: int
    ) -> tuple[list[Timing], Any]:
        """``inner`` timings of ``operation``; the last result."""
        timings: list[Timing] = []
        result: Any = None
        for iteration in range(max(1, inner)):
            if iteration:
                result = None  # released, and a save's output deleted, between timings
                self.between(contender)
            timing, result = time_once(operation)
            timings.append(timing)
        return timings, result

    def between(self, contender: Contender) -> None:
        """Between the timings of a batch: the last result collected, a save's output gone."""
        gc.collect()
        warm.malloc_trim()
        if self.op == "save":
            remove(self.files[contender.name])

    def check(self, contender: Contender, result: Any) -> str:
        """'ok', or what is wrong with a run's result."""
        ctx, path = self.ctx, self.files[contender.name]
        if self.op == "save" and contender.writes_file:
            checker = get(contender.verifier) if contender.verifier else contender
            return compare(checker, checker.open_for_check(path, ctx), ctx)
        if self.op == "lazy":
            opened, touched = result
            if touched != ctx.tensors.touch_value:
                return (
                    f"sum of {ctx.tensors.touch} is {touched}, expected {ctx.tensors.touch_value}"
                )
            return compare(contender, opened, ctx)
        if self.op == "index":
            expected = index_digest([(4, 4), (4,)] * ctx.records.count)
            got = index_digest(contender.index_shapes(result, path, ctx))
            return "ok" if got == expected else f"index lists {got}, expected {expected}"
        return compare(contender, result, ctx)


def _freeze() -> None:
    """Collect, then move every object alive to the collector's permanent generation."""
    gc.collect()
    gc.freeze()


def compare(contender: Contender, result: Any, ctx: Context) -> str:
    """'ok' when ``result`` holds exactly the data of the case, else the first differences."""
    if ctx.is_records:
        got = records_digest(contender.records(result, ctx))
        expected = ctx.records.digest
    else:
        got = tensors_digest(contender.tensors(result, ctx))
        expected = ctx.tensors.digest
    if got == expected:
        return "ok"
    wrong = sorted(key for key in expected.keys() | got.keys() if got.get(key) != expected.get(key))
    shown = ", ".join(f"{key}: {got.get(key)} != {expected.get(key)}" for key in wrong[:3])
    return f"checksum mismatch in {len(wrong)} of {len(expected)} ({shown})"


def answer(worker: Worker, command: dict[str, Any]) -> dict[str, Any]:
    """The reply to one command; an error is reported, never raised."""
    try:
        if command["cmd"] == "phase":
            return worker.phase(command["op"], command["files"])
        if command["cmd"] == "run":
            return worker.run(
                command["contender"], command["warmup"], command["check"], command["inner"]
            )
        return {"error": f"unknown command {command['cmd']!r}"}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(-6)}


def serve(worker: Worker, commands: TextIO, replies: TextIO) -> None:
    """Answer commands until ``quit`` or the end of input."""
    for line in commands:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        reply = answer(worker, command)
        reply["notes"] = worker.notes
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main(argv: list[str] | None = None) -> int:
    manifest_path, case, names, settings = sys.argv[1:] if argv is None else argv
    replies = os.fdopen(os.dup(1), "w")  # the protocol keeps the real stdout ...
    os.dup2(2, 1)  # ... and anything a library prints goes to stderr
    contenders = [get(name) for name in json.loads(names)]
    for contender in contenders:
        contender.import_all()
    warm.malloc_trim()  # finds the C library now, not before a run
    _freeze()
    worker = Worker(Manifest.read(manifest_path), case, json.loads(settings)["cold"])
    memory = procmem.own_memory()
    versions = {c.name: c.version() for c in contenders}
    ready = {"ready": True, "versions": versions, "rss": memory.rss, "anon": memory.anon}
    replies.write(json.dumps(ready) + "\n")
    replies.flush()
    serve(worker, sys.stdin, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
