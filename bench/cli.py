"""``python -m bench``: options, the run over sizes and cases, and the printed verdict."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import chart, procmem, sched
from .balloon import lost_memory
from .cases import CASES, GROUPS, TORCH7_CPU_SECONDS, TORCH7_ELEMENTS, TORCH7_SOURCE, expand
from .data import MIN_SIZE, Manifest, make_manifest
from .imports import run_imports
from .measure import Settings, run_case
from .peers import CONTENDERS, Contender
from .report import FOOTNOTES, Measurement, analyse, table, write_json
from .session import ROOT
from .units import format_bytes, format_seconds, parse_size, parse_sizes

RESULTS = ROOT / "bench" / "results"
RECORDS = 50_000  # 100,000 small tensors
ASCII_ELEMENTS = 1_000_000
IMPORT_RUNS = 20
DEFAULT_SIZE = 256 << 20
SIZED = ("checkpoint", "memmap", "compressed")  # the other cases run once, at the first size
SMOKE = {
    "size": 32 << 20,
    "repeat": 1,
    "warmup": 0,
    "records": 1_000,
    "ascii_elements": 100_000,
    "import_runs": 2,
    "max_mem": 16 << 20,
    "retries": 0,  # times do not matter here
}


def time_cap(size: int, requested: float | None) -> float:
    """Seconds of runs after which a contender stops repeating: 10 plus 8 per GiB of size, so
    that every contender of a few hundred milliseconds gets all its runs (paired ratios need
    the references in every repetition) while slow peers of fixed cost (torch on records,
    6-8 s a load) stop after one or two."""
    return requested if requested is not None else 10.0 + 8.0 * size / (1 << 30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time and memory of streamser against its peers and the physical limits, "
        "the contenders of each operation alternating run by run.",
    )
    add = parser.add_argument
    add("--size", type=parse_size, default=None, help="checkpoint size, e.g. 64M, 1G (256M)")
    add("--sizes", type=parse_sizes, default=None, help="several sizes, e.g. 256M,1G,2G (chart)")
    add(
        "--max-mem",
        type=parse_size,
        default=None,
        help="fail when streamser's anonymous memory rises more than this beyond its data",
    )
    add("--cold", action="store_true", help="drop the page cache before runs that read (root)")
    add(
        "--smoke",
        action="store_true",
        help="CI run: 32M, 1,000 records, 1e5 ascii elements, one timed run, no warm-up or "
        "retries, budget 16M; "
        "fails only on a wrong result or the budget, never on time",
    )
    add("--repeat", type=int, default=None, help="timed repetitions (default 7)")
    add("--warmup", type=int, default=None, help="untimed repetitions first (default 1)")
    add(
        "--time-cap",
        type=float,
        default=None,
        help="seconds after which a contender stops "
        "repeating (default 10 + 8 per GiB of the size; at least one timed run)",
    )
    add(
        "--max-wait",
        type=float,
        default=0.05,
        help="redo a timed run that waited for a CPU "
        "longer than this share of its time (default 0.05)",
    )
    add("--retries", type=int, default=None, help="times a disturbed run is redone (default 3)")
    add("--records", type=int, default=None, help=f"records (default {RECORDS:,})")
    add(
        "--ascii-elements",
        type=int,
        default=None,
        help=f"elements of the ascii tensors (default {ASCII_ELEMENTS:,}, as Torch7 was timed)",
    )
    add("--import-runs", type=int, default=None, help=f"runs per import (default {IMPORT_RUNS})")
    add(
        "--cases",
        default=",".join(CASES),
        help=f"comma-separated subset of {','.join([*CASES, *GROUPS])}",
    )
    add("--contenders", default=None, help=f"comma-separated subset of {','.join(CONTENDERS)}")
    add("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="where data files go")
    add("--results", type=Path, default=RESULTS, help="where latest.json/.txt/.png go")
    add(
        "--publish",
        type=Path,
        default=None,
        help="also write results.txt and chart.png there (docs/bench: the README's figures)",
    )
    add("--seed", type=int, default=2024, help="seed of the generated data")
    args = parser.parse_args(argv)
    _defaults(args, parser)
    return args


def _defaults(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.smoke:
        for key, value in SMOKE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    args.sizes = args.sizes or [args.size or DEFAULT_SIZE]
    args.repeat = args.repeat or 7
    args.warmup = 1 if args.warmup is None else args.warmup
    args.retries = 3 if args.retries is None else args.retries
    args.records = args.records or RECORDS
    args.ascii_elements = args.ascii_elements or ASCII_ELEMENTS
    args.import_runs = args.import_runs or IMPORT_RUNS
    names = [case.strip() for case in args.cases.split(",") if case.strip()]
    for case in names:
        if case not in CASES and case not in GROUPS:
            parser.error(f"unknown case {case!r}; choose from {', '.join([*CASES, *GROUPS])}")
    args.cases = expand(names)
    for size in args.sizes:
        if size < MIN_SIZE:
            parser.error(f"size {size} is too small: at least {format_bytes(MIN_SIZE)}")
    if args.contenders:
        chosen = [name.strip() for name in args.contenders.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in CONTENDERS]
        if unknown:
            parser.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
        args.contenders = chosen


def choose_contenders(selected: list[str] | None) -> tuple[list[Contender], list[str]]:
    """The contenders to run (in table order), and notes on the ones not installed."""
    chosen, notes = [], []
    for name, contender in CONTENDERS.items():
        if selected is not None and name not in selected:
            continue
        missing = contender.missing()
        if missing:
            notes.append(f"{name}: skipped, {', '.join(missing)} not installed")
            continue
        chosen.append(contender)
    return chosen, notes


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import numpy

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    with contextlib.suppress(ImportError):
        info["memory"] = importlib.import_module("psutil").virtual_memory().total
    return info


def torch7_rows(case: str, manifest: Manifest, elements: int) -> list[Measurement]:
    """The Torch7 reference of an ascii case, as constant rows (only for 1e6 elements)."""
    if elements != TORCH7_ELEMENTS:
        return []
    return [
        {
            "size": manifest.size,
            "case": case,
            "op": op,
            "contender": "torch7",
            "label": "Torch7 (constant)",
            "role": "limit",
            "fsync": False,
            "clock": "cpu",
            "constant": seconds,
            "payload": manifest.tensors_of(case).nbytes,
            "records": 0,
            "footprint": 0,
            "touched": 0,
            "runs": [],
            "ok": True,
            "check": f"constant: {TORCH7_SOURCE}",
        }
        for (name, op), seconds in TORCH7_CPU_SECONDS.items()
        if name == case
    ]


def run_size(
    size: int, cases: list[str], args: argparse.Namespace, contenders: list[Contender], tmp: Path
) -> tuple[list[Measurement], list[str]]:
    """Generate the data of one size and measure ``cases`` on it."""
    folder = tmp / f"size-{size}"
    folder.mkdir()
    started = time.monotonic()
    manifest = make_manifest(folder, size, args.records, args.ascii_elements, args.seed, cases)
    manifest_path = folder / "manifest.json"
    manifest.write(manifest_path)
    _progress(f"{format_bytes(size)}: data in {format_seconds(time.monotonic() - started)}")
    cap = time_cap(size, args.time_cap)
    settings = Settings(args.warmup, args.repeat, cap, args.cold, args.max_wait, args.retries)
    measurements: list[Measurement] = []
    notes: list[str] = []
    try:
        for case in cases:
            _progress(f"{format_bytes(size)} {case}")
            rows, case_notes = run_case(case, manifest_path, manifest, contenders, settings, folder)
            measurements.extend(rows)
            measurements.extend(torch7_rows(case, manifest, args.ascii_elements))
            notes.extend(f"{format_bytes(size)} {note}" for note in case_notes)
    finally:
        shutil.rmtree(folder)
    return measurements, notes


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_space(args: argparse.Namespace, contenders: list[Contender]) -> str | None:
    """Why the run cannot start (not enough disk for the files of a case), or None.

    Every saver's output of a phase exists at once (the loads alternate over them)."""
    savers = sum(1 for c in contenders if c.writes_file)
    needed = (savers + 2) * max(args.sizes) + (1 << 30)
    free = shutil.disk_usage(args.tmp).free
    if free < needed:
        return (
            f"not enough disk in {args.tmp}: {format_bytes(free)} free, {format_bytes(needed)} "
            "needed (--tmp DIR to use another place, --contenders to run fewer)"
        )
    return None


def busy_note(measurements: list[Measurement], max_wait: float) -> str:
    """How busy the machine was: runs redone, and kept runs that still waited for a CPU or
    lost memory to the host."""
    timed = [run for m in measurements for run in m["runs"] if not run["warmup"] and "wait" in run]
    attempts = [a for run in timed for a in run.get("disturbed_attempts", [])]
    lost = sum(1 for attempt in attempts if lost_memory(attempt))
    busy = sum(1 for run in timed if sched.wait_share(run) > max_wait)
    kept_lost = sum(1 for run in timed if lost_memory(run))
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{len(timed)} timed runs, {len(attempts)} redone for waiting more than {max_wait:.0%} "
        f"of their time for a CPU or losing memory to the host ({lost} lost memory); kept runs "
        f"that still waited: {busy}, that still lost memory: {kept_lost} (load average now {load})"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contenders, notes = choose_contenders(args.contenders)
    if args.cold:
        why_not = procmem.drop_page_cache()
        if why_not:
            notes.append(f"--cold ignored: {why_not}")
            args.cold = False
    args.tmp.mkdir(parents=True, exist_ok=True)
    why_not = check_space(args, contenders)
    if why_not:
        print(why_not, file=sys.stderr)
        return 2
    started = time.monotonic()
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="streamser-bench-", dir=args.tmp) as tmp:
        for number, size in enumerate(args.sizes):
            cases = [c for c in args.cases if c != "import" and (c in SIZED or number == 0)]
            rows, size_notes = run_size(size, cases, args, contenders, Path(tmp))
            measurements.extend(rows)
            notes.extend(size_notes)
    if "import" in args.cases:
        _progress("import")
        warmup = min(2, args.warmup + 1)
        measurements.extend(run_imports(args.import_runs, warmup, args.max_wait, args.retries))
    failures = analyse(measurements, args.max_mem, args.max_wait)
    notes.append(busy_note(measurements, args.max_wait))
    summary = {
        "command": ["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
        "settings": {k: v for k, v in vars(args).items() if k not in ("tmp", "results", "publish")},
        "machine": machine(),
        "seconds": time.monotonic() - started,
        "notes": notes,
        "failures": failures,
        "measurements": measurements,
    }
    publish(summary, args)
    return 1 if failures else 0


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (published text stays portable)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def publish(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the table and the verdict; write the text, the JSON file and the chart."""
    measurements, notes, failures = summary["measurements"], summary["notes"], summary["failures"]
    chart_path = args.results / "latest.png"
    notes.append(chart.draw(measurements, chart_path) or f"chart: {_shown(chart_path)}")
    json_path = args.results / "latest.json"
    notes.append(f"every run and memory sample: {_shown(json_path)}")
    write_json(json_path, summary)
    slow = next((m.get("slowest_modules") for m in measurements if "slowest_modules" in m), None)
    if slow:
        notes.append(
            "slowest own import times in streamser: "
            + ", ".join(f"{row['module']} {row['self_us'] / 1000:.1f}ms" for row in slow[:5])
        )
    budget = f", budget {format_bytes(args.max_mem)}" if args.max_mem is not None else ""
    verdict = f"{len(failures)} FAILED" if failures else "all checks passed"
    text = "\n".join(
        [
            table(measurements),
            "",
            FOOTNOTES,
            "",
            *(f"note: {note}" for note in notes),
            f"{len(measurements)} measurements in {format_seconds(summary['seconds'])}"
            f"{budget}: {verdict}",
            *(f"FAILED: {failure}" for failure in failures),
        ]
    )
    print(text)
    (args.results / "latest.txt").write_text(text + "\n")
    if args.publish is not None:
        args.publish.mkdir(parents=True, exist_ok=True)
        (args.publish / "results.txt").write_text(text + "\n")
        if chart_path.exists():
            shutil.copyfile(chart_path, args.publish / "chart.png")
