"""The import case: whole-process timings of ``python -c "import streamser"`` against
``python -c "import numpy"`` (and ``python -c pass``, the interpreter alone).

Each run is a fresh interpreter started from the repository root; the parent times it from
spawn to exit, and reads how long its main thread waited for a CPU: a run that waited more than
``max_wait`` of its time is redone (as in the other cases). One more run of each, untimed,
reads its own RSS and anonymous memory. The commands alternate (pass, numpy,
streamser, pass, numpy, ...), after untimed runs that write the bytecode caches, so every
timed run finds its ``.pyc`` files and shared libraries in the page cache. The table's ratio is
the median of the paired ratios, streamser's run over numpy's run in the same repetition.
Afterwards one ``python -X importtime -c "import streamser"`` lists the modules that took
longest to import (their own time, not counting what they imported), for the JSON and notes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from . import procmem, sched
from .report import Measurement
from .sched import waited_process
from .session import ROOT

COMMANDS = {  # name: (label, role, code)
    "python": ("python -c pass", "floor", "pass"),
    "numpy": ("import numpy", "limit", "import numpy"),
    "streamser": ("import streamser", "subject", "import streamser"),
}


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the caches must be written and used
    return env


def time_process(code: str) -> dict[str, Any]:
    """Seconds from spawn to exit of ``python -c code``, how long it waited for a CPU (read
    while the exited child is not yet reaped), and its exit status."""
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_environment())
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    seconds = time.monotonic() - started
    wait = waited_process(child.pid)
    child.wait()
    return {"seconds": seconds, "wait": wait, "status": child.returncode}


def timed_run(code: str, max_wait: float, retries: int) -> dict[str, Any]:
    """``time_process``, redone while the process waited for a CPU more than ``max_wait`` of
    its time (at most ``retries`` times); the least disturbed attempt, with the others."""
    attempts = [time_process(code)]
    while sched.wait_share(attempts[-1]) > max_wait and len(attempts) <= retries:
        attempts.append(time_process(code))
    kept = min(attempts, key=sched.wait_share)
    kept["disturbed_attempts"] = [run for run in attempts if run is not kept]
    return kept


def memory_after(code: str) -> dict[str, int]:
    """RSS and anonymous memory of a process right after ``code`` ran, from its own
    ``/proc/self/status`` (a separate, untimed run; ``wait4``'s peak RSS would count the
    parent's memory, which a spawned child inherits in the kernel's bookkeeping)."""
    probe = f"{code}\nprint(open('/proc/self/status').read())"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    memory = procmem.parse_status(result.stdout)
    return {"rss": memory.rss, "anon": memory.anon}


def run_imports(
    runs: int, warmup: int = 2, max_wait: float = 0.05, retries: int = 3
) -> list[Measurement]:
    """``runs`` alternating timed runs of each command, after ``warmup`` untimed ones."""
    rows = {name: _measurement(name) for name in COMMANDS}
    for repetition in range(warmup + runs):
        for name, (_, _, code) in COMMANDS.items():
            warm = repetition < warmup
            run = time_process(code) if warm else timed_run(code, max_wait, retries)
            m = rows[name]
            if run.pop("status") != 0:
                m["ok"], m["error"] = False, "the import failed"
                continue
            m["runs"].append({"repetition": repetition, "warmup": warm, **run})
    for name, m in rows.items():
        if m["ok"] is None:
            m["ok"], m["check"] = True, "ok"
            m["memory"] = memory_after(COMMANDS[name][2])
    rows["streamser"]["slowest_modules"] = slowest_modules()
    return list(rows.values())


def _measurement(name: str) -> Measurement:
    label, role, _ = COMMANDS[name]
    return {
        "size": None,
        "case": "import",
        "op": "import",
        "contender": name,
        "label": label,
        "role": role,
        "fsync": False,
        "clock": "wall",
        "payload": 0,
        "records": 0,
        "footprint": 0,
        "touched": 0,
        "runs": [],
        "ok": None,
        "check": "not run",
        "error": None,
    }


def slowest_modules(count: int = 8) -> list[dict[str, Any]]:
    """The modules with the largest own import time in ``import streamser`` (-X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import streamser"],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    rows: list[tuple[int, int, str]] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, total, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(own), int(total), name))
    rows.sort(reverse=True)
    return [{"module": m, "self_us": own, "cumulative_us": total} for own, total, m in rows[:count]]
