"""Structure-aware fuzzing of every reading path, in child processes under time and memory caps.

    python fuzz/structured_fuzz.py --format binary --minutes 30 --coverage
    python fuzz/structured_fuzz.py --format zstd --cases 200 --seed 1        # a short run
    python fuzz/structured_fuzz.py --format ascii --replay fuzz/regressions/some-bug.bin

Each case is a seed from ``tests/corpus`` (binary, b32 or ascii; zstd cases wrap any of them)
mutated by meaning (:mod:`t7_mutator`), reproducible from ``--seed``, the format and its number.
It is read through ``deserialize`` (detected and explicit format), ``load`` (mapped and
``mmap=False``), ``open`` (the index, every tensor by path and by ``get_slice``, ``load``,
``load(copy=True)``) and the command line in process (``verify``, ``info``, ``info --json``,
``dis``, ``show``, with a strict UTF-8 stdout as a real pipe has), alternately with the compiled
record loop and in pure Python. Every limit is at its default.

The property: each step gives a value or a ``StreamserError``, within ``--budget`` seconds, in
a process whose address space is capped at its size plus ``--memory-mb`` (so the default
``max_decompressed`` is at most half of that). Anything else is a finding: another exception
(``escape``), a ``LimitError`` saying memory ran out (``oom``: a small input must not need
that much), a step slower than half the budget (``slow``), or a child that hangs or dies
(``hang``, ``crash``). Findings are written to ``fuzz/work/findings/`` with their traceback,
once per distinct place. Cases run in batches in forked children; a hang or crash ends its
batch and the next batch starts after the case that caused it.

``--coverage`` measures line and branch coverage of ``streamser`` (coverage.py, Python code
only) and prints it at the end. Exit status 1 when there were findings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import select
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]
COVERAGE_DATA = HERE / "work" / f"coverage-{os.getpid()}"
COVERAGE: Any = None
if __name__ == "__main__" and "--coverage" in sys.argv:  # before streamser is imported
    import coverage

    COVERAGE_DATA.mkdir(parents=True, exist_ok=True)
    COVERAGE = coverage.Coverage(
        data_file=str(COVERAGE_DATA / ".coverage"), data_suffix=True, branch=True,
        source_pkgs=["streamser"],
    )  # fmt: skip
    COVERAGE.start()

import fuzz_checks  # noqa: E402
import numpy as np  # noqa: E402
import t7_mutator as tm  # noqa: E402

import streamser  # noqa: E402
from streamser import speedups  # noqa: E402
from streamser.cli.main import main as cli_main  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
FINDINGS = HERE / "work" / "findings"
MAX_SEED_BYTES = 128 << 10
_STEPS = (1, 1, 1, 2, 2, 3, 4)  # mutations per case


class Finding(Exception):
    """A case broke the property; ``kind`` says how."""

    def __init__(self, kind: str, step: str, detail: str) -> None:
        super().__init__(f"{kind} in {step}: {detail}")
        self.kind, self.step, self.detail = kind, step, detail


# --- seeds and cases ---------------------------------------------------------------------------


def seeds() -> dict[str, list[tm.Stream]]:
    """Corpus files by format, as parseable streams (files whose records do not parse whole
    are left out: a mutation should start from meaning)."""
    out: dict[str, list[tm.Stream]] = {"binary": [], "b32": [], "ascii": []}
    for path in sorted(CORPUS.glob("*.t7")):
        fmt = path.name.split(".")[-2].removeprefix("noref-")
        if fmt not in out or path.stat().st_size > MAX_SEED_BYTES:
            continue
        stream = tm.Stream(path.read_bytes(), 4 if fmt == "b32" else 8, fmt == "ascii")
        records, damage = tm.tf.parse(stream.data, stream.long_size, stream.ascii)
        if damage is None and records:
            out[fmt].append(stream)
    return out


def make_case(
    fmt: str, seed: int, number: int, pool: dict[str, list[tm.Stream]]
) -> tuple[bytes, list[str]]:
    """Case ``number`` of a run: its bytes and the mutations applied."""
    rng = random.Random(f"{seed}:{fmt}:{number}")
    base = fmt if fmt != "zstd" else rng.choice(["binary", "binary", "binary", "b32", "ascii"])
    stream, applied = tm.mutate_stream(rng, rng.choice(pool[base]), rng.choice(_STEPS))
    if fmt != "zstd":
        return stream.data, applied
    data, container = tm.mutate_container(rng, stream.data)
    return data, [f"from-{base}", *applied, *container]


# --- the checks of one case --------------------------------------------------------------------


@contextlib.contextmanager
def compiled_loop(enabled: bool) -> Iterator[None]:
    with contextlib.nullcontext() if enabled else speedups.pure_python():
        yield


def step(name: str, action: Callable[[], Any], budget: float) -> Any:
    """Run one reading step: its value, or None if it raised a StreamserError."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            result = action()
    except streamser.LimitError as exc:
        if "out of memory" in str(exc):
            raise Finding("oom", name, str(exc)) from exc
        result = None
    except streamser.StreamserError:
        result = None
    except Finding:
        raise
    except Exception as exc:
        raise Finding("escape", name, _where(exc)) from exc
    if time.perf_counter() - start > budget / 2:
        raise Finding("slow", name, f"{time.perf_counter() - start:.1f} s")
    return result


def _where(exc: BaseException) -> str:
    """The exception and the innermost streamser frame that raised it (the dedup key)."""
    place = "?"
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = Path(frame.filename).parts
        if "streamser" in parts[:-1] or frame.filename.endswith("fuzz_checks.py"):
            place = f"{Path(frame.filename).name}:{frame.name}"
            break
    return f"{type(exc).__name__} at {place}: {str(exc)[:200]}"


def read_everything(value: Any) -> None:
    fuzz_checks.touch(value)
    fuzz_checks.show(value)


def check_case(data: bytes, fmt: str, folder: Path, compiled: bool, budget: float) -> None:
    """Every reading path for ``data``; raises :class:`Finding` on a broken property."""
    explicit = None if fmt == "zstd" else fmt
    path = folder / "case.t7"
    temp = folder / "case.tmp"
    temp.write_bytes(data)
    os.replace(temp, path)  # a rename: views of the previous case stay valid
    with compiled_loop(compiled):
        for name, action in (
            ("deserialize", lambda: streamser.deserialize(data)),
            ("deserialize format", lambda: streamser.deserialize(data, format=explicit)),
            ("load", lambda: streamser.load(path)),
            ("load mmap=False", lambda: streamser.load(path, format=explicit, mmap=False)),
        ):
            value = step(name, action, budget)
            step(f"{name}: touch", lambda v=value: read_everything(v), budget)
        if value is not None:
            step("round trip", lambda v=value: fuzz_checks._round_trip(v, "binary"), budget)
        handle = step("open", lambda: streamser.open(path), budget)
        if handle is not None:
            with handle:
                check_handle(handle, budget)
    for command in (["verify"], ["info"], ["info", "--json"], ["dis"], ["show"]):
        step(f"cli {command[0]}", lambda c=command: run_cli([*c, str(path)]), budget)


def check_handle(handle: Any, budget: float) -> None:
    """The index, every tensor by path and by slice, and the whole value, from ``open``."""
    infos = step("open: tensors", handle.tensors, budget) or []
    for info in infos:
        step(
            "open: tensor info",
            lambda i=info: fuzz_checks.check_tensor_info(i, handle.size),
            budget,
        )
        step("open: tensor", lambda i=info: read_everything(lookup(handle, i.path)), budget)
        step("open: get_slice", lambda i=info: first_and_last_rows(handle, i.path), budget)
    step("open: load", lambda: read_everything(handle.load()), budget)
    step("open: load copy", lambda: read_everything(handle.load(copy=True)), budget)


def lookup(handle: Any, path: str) -> Any:
    """``handle[path]`` of a path ``tensors()`` gave: it must name its tensor (a KeyError
    here is an index that lists what the value does not hold: an escape)."""
    return handle[path]


def first_and_last_rows(handle: Any, path: str) -> None:
    tensor = handle.get_slice(path)
    rows = [tensor[:1], tensor[-1:]] if len(tensor) else []
    fuzz_checks.touch([*rows, np.asarray(tensor)])  # touch sums with warnings off


def run_cli(argv: list[str]) -> None:
    """The command in process, with a strict UTF-8 stdout and stderr as a real pipe has."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(argv)
        out.flush()
        err.flush()
    if status not in (0, 1, 2):
        raise AssertionError(f"exit status {status!r}")


# --- children ----------------------------------------------------------------------------------


def _status(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _cap_memory(extra: int) -> None:
    used = _status("VmSize")
    resource.setrlimit(
        resource.RLIMIT_AS, (used + extra, resource.getrlimit(resource.RLIMIT_AS)[1])
    )


@contextlib.contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """This process's address space capped at its size plus ``extra`` within the block."""
    saved = resource.getrlimit(resource.RLIMIT_AS)
    _cap_memory(extra)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, saved)


def run_batch(
    args: argparse.Namespace, first: int, last: int, pool: dict[str, list[tm.Stream]], out: int
) -> None:
    """In a forked child: cases ``first`` to ``last - 1``, one JSON line each to ``out``."""
    _cap_memory(args.memory_mb << 20)
    signal.signal(signal.SIGALRM, _alarm)
    with (
        tempfile.TemporaryDirectory(prefix="streamser-sfuzz-") as folder,
        os.fdopen(out, "w") as pipe,
    ):
        for number in range(first, last):
            report = run_one(args, number, pool, Path(folder))
            pipe.write(json.dumps(report) + "\n")
            pipe.flush()
    if COVERAGE is not None:  # started before the fork: this child's lines are saved apart
        COVERAGE.stop()
        COVERAGE.save()


class CaseTimeout(BaseException):
    """A case over its time budget: not an ``Exception`` (``TimeoutError`` is an ``OSError``),
    so that neither ``step`` nor library code catching errors can take it for its own."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout("case over its time budget")


def run_one(
    args: argparse.Namespace, number: int, pool: dict[str, list[tm.Stream]], folder: Path
) -> dict[str, Any]:
    data, applied = make_case(args.format, args.seed, number, pool)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    rss = _status("VmRSS")
    start = time.perf_counter()
    report: dict[str, Any] = {"number": number, "mutations": applied, "size": len(data)}
    signal.alarm(int(args.budget))
    try:
        check_case(data, args.format, folder, compiled=number % 2 == 0, budget=args.budget)
        report["status"] = "ok"
    except Finding as finding:
        report.update(status=finding.kind, step=finding.step, detail=finding.detail)
        report["traceback"] = "".join(traceback.format_exception(finding.__cause__ or finding))
    except CaseTimeout:
        report.update(status="hang", step="?", detail=traceback.format_exc()[-600:])
    finally:
        signal.alarm(0)
    report["seconds"] = time.perf_counter() - start
    report["peak"] = _status("VmHWM") - rss
    return report


# --- the parent --------------------------------------------------------------------------------


class Run:
    """Counts, findings and the schedule of one fuzzing run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pool = seeds()
        self.counts: Counter[str] = Counter()
        self.mutations: Counter[str] = Counter()
        self.places: dict[str, str] = {}  # dedup key -> file written
        self.max_peak = 0
        self.max_seconds = 0.0
        self.cases = 0

    def fuzz(self) -> None:
        args = self.args
        deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
        number = 0
        while (args.cases is None or number < args.cases) and (
            deadline is None or time.monotonic() < deadline
        ):
            last = (
                number + args.batch if args.cases is None else min(args.cases, number + args.batch)
            )
            number = self.batch(number, last)

    def batch(self, first: int, last: int) -> int:
        """Run cases from ``first`` in a child; where the next batch starts."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            code = 0
            try:
                run_batch(self.args, first, last, self.pool, write_end)
            except BaseException:
                traceback.print_exc()
                code = 3
            os._exit(code)
        os.close(write_end)
        expected = first
        with os.fdopen(read_end) as pipe:
            while expected < last:
                ready, _, _ = select.select([pipe], [], [], self.args.budget * 2 + 5)
                line = pipe.readline() if ready else ""
                if not line:
                    break
                self.record(json.loads(line))
                expected += 1
        if expected < last:  # the child hung or died at case ``expected``
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            kind = (
                "crash"
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) != signal.SIGKILL
                else "hang"
            )
            detail = f"wait status {status}"
            empty = {"mutations": [], "seconds": 0.0, "peak": 0}
            self.record(
                {"number": expected, "status": kind, "step": "?", "detail": detail, **empty}
            )
            return expected + 1
        os.waitpid(pid, 0)
        return last

    def record(self, report: dict[str, Any]) -> None:
        self.cases += 1
        self.counts[report["status"]] += 1
        self.mutations.update(report["mutations"])
        self.max_peak = max(self.max_peak, report.get("peak", 0))
        self.max_seconds = max(self.max_seconds, report.get("seconds", 0.0))
        if report["status"] != "ok":
            self.save_finding(report)

    def save_finding(self, report: dict[str, Any]) -> None:
        key = f"{report['status']}|{report['step']}|{str(report['detail']).split(':')[0]}"
        if key in self.places:
            return
        data, _ = make_case(self.args.format, self.args.seed, report["number"], self.pool)
        name = f"{self.args.format}-{report['status']}-{hashlib.sha1(data).hexdigest()[:12]}"
        FINDINGS.mkdir(parents=True, exist_ok=True)
        (FINDINGS / f"{name}.bin").write_bytes(data)
        (FINDINGS / f"{name}.txt").write_text(
            json.dumps(report, indent=1) + "\n" + report.get("traceback", "")
        )
        self.places[key] = name
        where = f"{report['status']} in {report['step']}"
        print(f"finding: {name}: {where}: {str(report['detail'])[:300]}", flush=True)

    def summary(self) -> str:
        findings = sum(n for status, n in self.counts.items() if status != "ok")
        lines = [
            f"format {self.args.format}, seed {self.args.seed}: {self.cases:,} cases, "
            f"{findings} findings ({len(self.places)} distinct) {dict(self.counts)}",
            f"slowest case {self.max_seconds:.2f} s; "
            f"largest RSS rise {self.max_peak / (1 << 20):.0f} MiB",
            "mutations: " + ", ".join(f"{k} {v:,}" for k, v in self.mutations.most_common()),
        ]
        return "\n".join(lines)


def coverage_report(work: Path) -> str:
    """Line and branch coverage of streamser over every batch of the run (JSON totals)."""
    import coverage

    cov = coverage.Coverage(data_file=str(work / ".coverage"), branch=True)
    cov.combine([str(work)], keep=False)
    cov.save()
    out = work / "coverage.json"
    cov.json_report(outfile=str(out))
    totals = json.loads(out.read_text())["totals"]
    lines, branches = totals["num_statements"], totals["num_branches"]
    return (
        f"coverage of streamser (Python): lines {totals['covered_lines']:,}/{lines:,} "
        f"({100 * totals['covered_lines'] / max(lines, 1):.1f}%), branches "
        f"{totals['covered_branches']:,}/{branches:,} "
        f"({100 * totals['covered_branches'] / max(branches, 1):.1f}%); data in {work}"
    )


def replay(args: argparse.Namespace) -> int:
    """Run one saved input through the checks, in this process; 1 if it breaks the property."""
    data = Path(args.replay).read_bytes()
    with tempfile.TemporaryDirectory(prefix="streamser-sfuzz-") as folder, memory_cap(1 << 30):
        for compiled in (True, False):
            try:
                check_case(data, args.format, Path(folder), compiled, args.budget)
            except Finding as finding:
                traceback.print_exception(finding.__cause__ or finding)
                print(f"{finding} (compiled={compiled})")
                return 1
    print("ok")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--format", choices=tm.FORMATS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, help="stop after this many cases")
    parser.add_argument("--minutes", type=float, help="stop after this long")
    parser.add_argument("--batch", type=int, default=100, help="cases per child process")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per case")
    parser.add_argument(
        "--memory-mb", type=int, default=1024, help="address space per child beyond its size"
    )
    parser.add_argument("--coverage", action="store_true")
    parser.add_argument("--replay", help="one input file to check")
    args = parser.parse_args(argv)
    if args.cases is None and args.minutes is None and args.replay is None:
        parser.error("give --cases, --minutes or --replay")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replay:
        return replay(args)
    run = Run(args)
    started = time.monotonic()
    run.fuzz()
    print(run.summary())
    print(f"{run.cases / max(time.monotonic() - started, 1e-9):.1f} cases/s")
    if COVERAGE is not None:
        COVERAGE.stop()
        print(coverage_report(COVERAGE_DATA))
    return 1 if run.places else 0


if __name__ == "__main__":
    sys.exit(main())
