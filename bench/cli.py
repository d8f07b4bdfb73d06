"""``python -m bench``: options, the run over sizes, and the printed verdict."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import chart, procmem
from .case import remove
from .cases import CASES, Step, plan
from .data import MIN_SIZE, Manifest, make_manifest
from .measure import ROOT, run_child
from .peers import CONTENDERS, Contender
from .report import FOOTNOTES, analyse, table, write_json
from .units import format_bytes, format_seconds, parse_size, parse_sizes

RESULTS = ROOT / "bench" / "results"
FULL_RECORDS = 50_000  # 100,000 small tensors
FULL_RECORDS_FROM = 512 << 20  # smaller sizes get proportionally fewer records
ASCII_CAP = 16 << 20
SMOKE_SIZE = 32 << 20
SMOKE_ASCII = 1 << 20
SMOKE_BUDGET = 16 << 20
DEFAULT_SIZE = 256 << 20


def time_cap(size: int, requested: float | None) -> float:
    """Seconds of runs after which a measurement stops repeating: 1.5 plus 8 per GiB of size,
    so that best-of-3 holds at large sizes while cases of fixed cost stay quick at small ones."""
    return requested if requested is not None else 1.5 + 8.0 * size / (1 << 30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time and memory of streamser against its peers and the physical limits.",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="checkpoint size, e.g. 64M, 1G, 8G (default 256M)",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="several sizes, e.g. 256M,1G,4G (draws the chart)",
    )
    parser.add_argument(
        "--max-mem",
        type=parse_size,
        default=None,
        help="fail when streamser's anonymous memory rises more than this "
        "beyond its data in any operation (default: no budget)",
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before every run that reads a file (root)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI run: {format_bytes(SMOKE_SIZE)} ({format_bytes(SMOKE_ASCII)} ascii), one "
        f"timed run, budget {format_bytes(SMOKE_BUDGET)}; fails only on a wrong result or "
        "the budget, never on time",
    )
    parser.add_argument("--repeat", type=int, default=None, help="timed runs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="stop repeating a measurement once its runs took this many seconds "
        "(default 1.5 + 8 per GiB of the size: slow cases of fixed size get fewer runs)",
    )
    parser.add_argument(
        "--ascii-size",
        type=parse_size,
        default=None,
        help=f"data of the ascii case (default: the size, at most {format_bytes(ASCII_CAP)})",
    )
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help=f"records of the records case (default {FULL_RECORDS:,} from "
        f"{format_bytes(FULL_RECORDS_FROM)} up, fewer below)",
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}"
    )
    parser.add_argument(
        "--contenders", default=None, help=f"comma-separated subset of {','.join(CONTENDERS)}"
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the data files go (a folder made and removed in it)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where latest.json and latest.png go (default bench/results)",
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated data")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size = args.size or SMOKE_SIZE
        args.repeat = args.repeat or 1
        args.ascii_size = args.ascii_size or SMOKE_ASCII
        args.max_mem = args.max_mem if args.max_mem is not None else SMOKE_BUDGET
    args.sizes = args.sizes or [args.size or DEFAULT_SIZE]
    args.repeat = args.repeat or 3
    args.cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    for case in args.cases:
        if case not in CASES:
            parser.error(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    for size in args.sizes:
        if size < MIN_SIZE:
            parser.error(f"size {size} is too small: at least {format_bytes(MIN_SIZE)}")
    if args.contenders:
        names = [name.strip() for name in args.contenders.split(",") if name.strip()]
        unknown = [name for name in names if name not in CONTENDERS]
        if unknown:
            parser.error(f"unknown contenders {unknown}; choose from {', '.join(CONTENDERS)}")
        args.contenders = names
    return args


def records_for(size: int, requested: int | None) -> int:
    """Records of the records case at ``size``: 50,000 from 512M up, proportionally fewer
    below so that quick runs stay quick."""
    if requested:
        return requested
    scaled = FULL_RECORDS * min(size, FULL_RECORDS_FROM) // FULL_RECORDS_FROM
    return max(1_000, scaled // 250 * 250)


def choose_contenders(selected: list[str] | None) -> tuple[list[Contender], list[str]]:
    """The contenders to run (in table order), and notes on the ones not installed."""
    chosen, notes = [], []
    for name, contender in CONTENDERS.items():
        if selected is not None and name not in selected:
            continue
        missing = contender.missing()
        if missing:
            notes.append(
                f"{name}: skipped, {', '.join(missing)} not installed "
                f"(pip install {' '.join(missing)})"
            )
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
    }
    try:
        import psutil

        info["memory"] = psutil.virtual_memory().total
    except ImportError:
        pass
    return info


def run_size(
    size: int, args: argparse.Namespace, contenders: list[Contender], folder: Path, notes: list[str]
) -> list[dict[str, Any]]:
    """Generate the data of one size, run every step on it, return the measurements."""
    records = records_for(size, args.records)
    started = time.monotonic()
    ascii_size = min(size, args.ascii_size or ASCII_CAP)
    manifest = make_manifest(folder, size, records, ascii_size, args.seed, args.cases)
    manifest_path = folder / "manifest.json"
    manifest.write(manifest_path)
    _progress(
        f"{format_bytes(size)}: data generated in {format_seconds(time.monotonic() - started)}"
        f" ({records:,} records)"
    )
    settings = {
        "warmup": args.warmup,
        "repeat": args.repeat,
        "time_cap": time_cap(size, args.time_cap),
        "cold": args.cold,
    }
    steps, plan_notes = plan(manifest_path, manifest, folder, contenders, args.cases, settings)
    notes.extend(f"{format_bytes(size)} {note}" for note in plan_notes)
    measurements = []
    for number, step in enumerate(steps, 1):
        measurement = _measure(step, size, manifest)
        measurements.append(measurement)
        verdict = "ok" if measurement.get("ok") else "FAILED"
        _progress(
            f"[{number:2d}/{len(steps)}] {format_bytes(size):>6} {step.job.case:10} "
            f"{step.job.op:4} {step.label:24} {format_seconds(measurement.get('seconds')):>8}"
            f"  {verdict}"
        )
        for path in step.cleanup:
            remove(path)
    return measurements


def _measure(step: Step, size: int, manifest: Manifest) -> dict[str, Any]:
    job = step.job
    tensors = manifest.ascii if job.case == "ascii" else manifest.checkpoint
    if job.input and not Path(job.input).exists():
        report: dict[str, Any] = {
            "ok": False,
            "check": "not run",
            "error": f"input {Path(job.input).name} missing (save failed)",
        }
    else:
        report = run_child(job)
    payload = manifest.records.nbytes if job.case == "records" else tensors.nbytes
    touched = next(spec.nbytes for spec in tensors.layout if spec.name == tensors.touch)
    report.update(
        size=size,
        case=job.case,
        op=job.op,
        contender=job.contender,
        label=step.label,
        role=step.contender.role,
        allowance=step.contender.allowance if job.op == "save" else 0,
        fsync=step.contender.fsync and job.op == "save",
        payload=payload,
        records=manifest.records.count,
        footprint=manifest.records.footprint,
        touched=touched,
        job=vars(job),
    )
    return report


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contenders, notes = choose_contenders(args.contenders)
    if args.cold:
        why_not = procmem.drop_page_cache()
        if why_not:
            notes.append(f"--cold ignored: {why_not}")
            args.cold = False
    args.tmp.mkdir(parents=True, exist_ok=True)
    needed, free = 3.5 * max(args.sizes) + (1 << 30), shutil.disk_usage(args.tmp).free
    if free < needed:
        print(
            f"not enough disk in {args.tmp}: {format_bytes(free)} free, "
            f"{format_bytes(needed)} needed (--tmp DIR to use another place)",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    measurements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="streamser-bench-", dir=args.tmp) as tmp:
        for size in args.sizes:
            folder = Path(tmp) / f"size-{size}"
            folder.mkdir()
            measurements.extend(run_size(size, args, contenders, folder, notes))
            shutil.rmtree(folder)
    failures = analyse(measurements, args.max_mem)
    summary = {
        "command": ["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
        "settings": {k: v for k, v in vars(args).items() if k not in ("tmp", "results")},
        "machine": machine(),
        "seconds": time.monotonic() - started,
        "notes": notes,
        "failures": failures,
        "measurements": measurements,
    }
    publish(summary, args)
    return 1 if failures else 0


def publish(summary: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the table and the verdict; write the JSON file and the chart."""
    measurements, notes, failures = summary["measurements"], summary["notes"], summary["failures"]
    print(table(measurements))
    print()
    print(FOOTNOTES)
    chart_path = args.results / "latest.png"
    notes.append(chart.draw(measurements, chart_path) or f"chart: {chart_path}")
    json_path = args.results / "latest.json"
    notes.append(f"every sample: {json_path}")
    write_json(json_path, summary)
    print()
    for note in notes:
        print(f"note: {note}")
    budget = f", budget {format_bytes(args.max_mem)}" if args.max_mem is not None else ""
    verdict = f"{len(failures)} FAILED" if failures else "all checks passed"
    print(
        f"{len(measurements)} measurements in {format_seconds(summary['seconds'])}{budget}: "
        f"{verdict}"
    )
    for failure in failures:
        print(f"FAILED: {failure}")
