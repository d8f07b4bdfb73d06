"""How long a process waited for a CPU: the run-queue delay of its threads (Linux).

``/proc/PID/task/TID/schedstat`` holds three numbers per thread: nanoseconds on a CPU,
nanoseconds spent runnable but waiting on a run queue, and time slices. The second is what a
busy neighbour costs a timed run on a shared 2-core machine: a run that waited a tenth of its
wall time for a CPU is a tenth slower for reasons that have nothing to do with the code under
test. The worker notes each run's wait so that the parent can time a disturbed run again.
Where the files do not exist (other systems, kernels without sched_info) the wait reads 0.
"""

from __future__ import annotations

import os
from typing import Any


def waited(pid: int | None = None) -> float:
    """Seconds the threads of process ``pid`` (default: this one) have waited on run queues
    since they started (threads that have exited no longer count)."""
    root = f"/proc/{pid or os.getpid()}/task"
    total = 0
    try:
        tasks = os.listdir(root)
    except OSError:
        return 0.0
    for task in tasks:
        try:
            with open(f"{root}/{task}/schedstat") as stats:
                total += int(stats.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def waited_process(pid: int) -> float:
    """Seconds a whole process waited on run queues, read from ``/proc/PID/schedstat`` (which
    stays readable while an exited child is not yet reaped)."""
    try:
        with open(f"/proc/{pid}/schedstat") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def wait_share(run: dict[str, Any]) -> float:
    """The share of a run's time its threads spent waiting for a CPU: its wait over the time
    they were runnable (CPU time plus wait), or over the wall time when that is longer.

    For one thread this is the wait over the wall time. A run on two threads is runnable for
    up to twice its wall time, and the harness's own sampler preempts one of them now and
    then; over the wall time alone, such a run would look disturbed when it is not.

    >>> round(wait_share({"seconds": 0.1, "cpu": 0.09, "wait": 0.01}), 3)  # one thread: wall
    0.1
    >>> round(wait_share({"seconds": 0.1, "cpu": 0.19, "wait": 0.01}), 3)  # two threads
    0.05
    """
    seconds = float(run.get("seconds") or 0.0)
    wait = float(run.get("wait") or 0.0)
    runnable = max(seconds, float(run.get("cpu") or 0.0) + wait)
    return wait / runnable if runnable > 0 else 0.0
