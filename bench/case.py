"""One measurement, run in a fresh process: ``python -m bench.case '<job as JSON>'``.

The child builds its input outside the timing, runs the operation ``warmup`` times untimed (the
first touch of idle memory is several times slower on virtual machines, and every contender
should pay it the same way), then up to ``repeat`` timed times (fewer once ``time_cap`` seconds
have gone by, never none). Around each run it notes the time on the system-wide monotonic clock
(so the parent can pick its own memory samples of that window), its anonymous memory before and
after, its RSS high-water mark, and its I/O counters. Then it checks the result of the last run
against the checksums of the data, and prints one JSON object on stdout.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procmem
from .data import (
    Manifest,
    checkpoint_digest,
    make_records,
    map_checkpoint,
    read_checkpoint,
    records_digest,
)
from .peers import Contender, Context, get


@dataclass
class Job:
    """What the parent asks a child to measure."""

    case: str
    contender: str
    op: str  # save, load or lazy
    manifest: str
    input: str | None = None  # the file a load reads
    output: str | None = None  # the file a save writes
    warmup: int = 1
    repeat: int = 3
    time_cap: float = 10.0
    cold: bool = False
    verify: bool = True  # check a save's output (False when a later load step reads it)


def context_for(case: str, manifest: Manifest) -> Context:
    tensors = manifest.ascii if case == "ascii" else manifest.checkpoint
    return Context(case=case, tensors=tensors, records=manifest.records)


def make_input(ctx: Context) -> Any:
    """The value a save writes: in memory, or memory-mapped for the memmap case."""
    if ctx.is_records:
        return make_records(ctx.records.count, ctx.records.seed)
    if ctx.case == "memmap":
        return map_checkpoint(ctx.tensors)
    return read_checkpoint(ctx.tensors)


def remove(path: Path) -> None:
    """Delete a file or a folder of files, if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def disk_bytes(path: Path) -> int:
    """Size of a file, or of all files in a folder."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.iterdir())
    return path.stat().st_size if path.exists() else 0


def io_counters() -> dict[str, int] | None:
    """This process's I/O counters (bytes through system calls and to storage), if known."""
    try:
        import psutil

        return dict(psutil.Process().io_counters()._asdict())
    except (ImportError, AttributeError, NotImplementedError, OSError):
        return None


def _delta(after: dict[str, int] | None, before: dict[str, int] | None) -> dict[str, int] | None:
    if after is None or before is None:
        return None
    return {key: after[key] - before[key] for key in after}


class Runner:
    """Runs one job's operation repeatedly and records each run."""

    def __init__(self, job: Job, contender: Contender, ctx: Context) -> None:
        self.job, self.contender, self.ctx = job, contender, ctx
        self.notes: list[str] = []
        self.input: Any = None
        self.reads_files = job.op != "save" or ctx.case == "memmap"

    def operation(self) -> Callable[[], Any]:
        contender, ctx, job = self.contender, self.ctx, self.job
        if job.op == "save":
            value = contender.prepare(make_input(ctx), ctx)
            self.input = value
            output = Path(str(job.output))
            return lambda: contender.save(value, output, ctx)
        source = Path(str(job.input))
        if job.op == "load":
            return lambda: contender.load(source, ctx)
        if job.op == "lazy":
            return lambda: contender.lazy(source, ctx)
        raise ValueError(f"unknown operation {job.op!r}")

    def before_each(self) -> None:
        """Untimed: a fresh output path, no dirty pages left over, a cold cache if asked."""
        if self.job.output:
            remove(Path(self.job.output))
        if self.job.cold and self.reads_files:
            why_not = procmem.drop_page_cache()
            if why_not and why_not not in self.notes:
                self.notes.append(why_not)
        else:
            os.sync()

    def run(self) -> tuple[list[dict[str, Any]], Any]:
        operation = self.operation()
        iterations: list[dict[str, Any]] = []
        result: Any = None
        spent, timed = 0.0, 0
        while True:
            warm = len(iterations) < self.job.warmup
            if not warm and (timed >= self.job.repeat or (timed and spent > self.job.time_cap)):
                break
            result = None  # release the previous run's result before the next one
            gc.collect()
            self.before_each()
            before, io_before = procmem.own_memory(), io_counters()
            procmem.reset_peak()
            start = time.monotonic()
            result = operation()
            end = time.monotonic()
            after, io_after = procmem.own_memory(), io_counters()
            spent += end - start
            timed += 0 if warm else 1
            iterations.append(
                {
                    "warmup": warm,
                    "start": start,
                    "end": end,
                    "seconds": end - start,
                    "anon_before": before.anon,
                    "anon_after": after.anon,
                    "rss_before": before.rss,
                    "rss_after": after.rss,
                    "rss_peak": after.hwm,
                    "io": _delta(io_after, io_before),
                }
            )
        return iterations, result

    def check(self, result: Any) -> str:
        """'ok', or what is wrong with the last run's result."""
        contender, ctx, job = self.contender, self.ctx, self.job
        if job.op == "save":
            if not job.verify:
                return "ok"  # its output is checked by the load steps that read it
            self.input = result = None
            gc.collect()
            checker = get(contender.verifier) if contender.verifier else contender
            opened = checker.open_for_check(Path(str(job.output)), ctx)
            return compare(checker, opened, ctx)
        if job.op == "lazy":
            opened, touched = result
            if touched is not None and touched != ctx.tensors.touch_value:
                return (
                    f"sum of {ctx.tensors.touch} is {touched}, expected {ctx.tensors.touch_value}"
                )
            return compare(contender, opened, ctx)
        return compare(contender, result, ctx)


def compare(contender: Contender, result: Any, ctx: Context) -> str:
    """'ok' when ``result`` holds exactly the data of the case, else the first differences."""
    if ctx.is_records:
        got = records_digest(contender.records(result, ctx))
        expected = ctx.records.digest
    else:
        got = checkpoint_digest(contender.tensors(result, ctx))
        expected = ctx.tensors.digest
    if got == expected:
        return "ok"
    wrong = sorted(key for key in expected.keys() | got.keys() if got.get(key) != expected.get(key))
    shown = ", ".join(f"{key}: {got.get(key)} != {expected.get(key)}" for key in wrong[:3])
    return f"checksum mismatch in {len(wrong)} of {len(expected)} ({shown})"


def run_job(job: Job) -> dict[str, Any]:
    """Measure ``job``; never raises (an error is reported in the result)."""
    report: dict[str, Any] = {"ok": False, "check": "not run", "iterations": []}
    try:
        manifest = Manifest.read(job.manifest)
        ctx = context_for(job.case, manifest)
        contender = get(job.contender)
        report["version"] = contender.version()
        runner = Runner(job, contender, ctx)
        report["iterations"], result = runner.run()
        file = job.output if job.op == "save" else job.input
        report["file_bytes"] = disk_bytes(Path(str(file)))
        report["check"] = runner.check(result)
        report["ok"] = report["check"] == "ok"
        report["notes"] = runner.notes
    except BaseException as exc:  # reported to the parent, which decides
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc(limit=-6)
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job = Job(**json.loads(args[0]))
    report = run_job(job)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
