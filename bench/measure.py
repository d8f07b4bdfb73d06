"""The parent's side of a measurement: start the child, sample its memory, sum up.

The child (``python -m bench.case``) runs in a fresh interpreter, so nothing a previous
measurement allocated, imported or cached in Python is left over. While it runs, the parent
reads its memory every ``interval`` seconds (``/proc/PID/status`` on Linux: RSS and its anonymous
part; psutil's USS elsewhere). The child reports the window of each run on the same monotonic
clock; the peaks of a run are the largest samples in its window, together with the child's own
readings just before and after it and the kernel's RSS high-water mark.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .case import Job
from .procmem import sampler

ROOT = Path(__file__).resolve().parent.parent  # the directory `python -m bench.case` runs in


def run_child(job: Job, *, interval: float = 0.005) -> dict[str, Any]:
    """Run ``job`` in a child process and return its report with the memory samples added."""
    command = [sys.executable, "-m", "bench.case", json.dumps(asdict(job))]
    samples: list[tuple[float, int, int]] = []
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        try:
            read = sampler(child.pid)
            while child.poll() is None:
                memory = read()
                if memory is not None and memory.rss:
                    samples.append((time.monotonic(), memory.rss, memory.anon))
                time.sleep(interval)
        finally:
            if child.poll() is None:  # interrupted: leave no child behind
                child.kill()
                child.wait()
        finished = time.monotonic()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    report = _parse(stdout, stderr, child.returncode)
    report["child_seconds"] = finished - started
    report["samples"] = [[round(t - started, 4), rss, anon] for t, rss, anon in samples]
    _summarise(report, samples, started)
    return report


def _parse(stdout: str, stderr: str, code: int) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    try:
        report: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = "\n".join(stderr.strip().splitlines()[-8:])
        return {
            "ok": False,
            "check": "not run",
            "iterations": [],
            "error": f"child exited with {code} without a report: {tail}",
        }
    if stderr.strip():
        report["stderr"] = stderr[-4000:]
    return report


def _summarise(report: dict[str, Any], samples: list[tuple[float, int, int]], t0: float) -> None:
    """Add the best time and the memory peaks of the timed runs to ``report``."""
    timed = [it for it in report.get("iterations", []) if not it["warmup"]]
    if not timed:
        return
    peaks_rss, peaks_anon, added = [], [], []
    for it in timed:
        window = [(rss, anon) for t, rss, anon in samples if it["start"] <= t <= it["end"]]
        peak_anon = max([it["anon_before"], it["anon_after"], *(anon for _, anon in window)])
        peak_rss = max([it["rss_after"], it["rss_peak"] or 0, *(rss for rss, _ in window)])
        peaks_rss.append(peak_rss)
        peaks_anon.append(peak_anon)
        added.append(peak_anon - it["anon_before"])
        it["window"] = [round(it["start"] - t0, 4), round(it["end"] - t0, 4), len(window)]
    best = min(timed, key=lambda it: it["seconds"])
    report["seconds"] = best["seconds"]
    report["times"] = [it["seconds"] for it in timed]
    report["peak_rss"] = max(peaks_rss)
    report["peak_anon"] = max(peaks_anon)
    report["anon_added"] = max(added)
    report["io"] = best["io"]
