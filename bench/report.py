"""Reading the measurements: best and median times, paired ratios, the memory budget, the
table and the JSON file."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import sched
from .balloon import lost_memory
from .cases import CASES, OPS
from .stats import best_ratio, paired_median
from .units import format_bytes, format_rate, format_seconds

Measurement = dict[str, Any]
RATIOS = ("vs_ref", "vs_memcpy", "vs_peer")
MIN_QUIET = 3  # quiet repetitions a paired median needs, else it takes them all (marked *)

COLUMNS = (  # header, width, alignment
    ("op", 6, "<"),
    ("contender", 28, "<"),
    ("best", 8, ">"),
    ("n", 2, ">"),
    ("speed", 11, ">"),
    ("wait", 4, ">"),
    ("RSS rise", 8, ">"),
    ("anon rise", 9, ">"),
    ("+anon", 7, ">"),
    ("vs ref", 13, ">"),
    ("vs memcpy", 13, ">"),
    ("vs peer", 13, ">"),
    ("check", 0, "<"),
)

FOOTNOTES = """\
best: the best of n timed runs (wall time; CPU time of the process for ascii). The contenders of
  an operation alternate in every repetition (A B C, A B C, ...) in one worker process per case,
  each run after the same untimed preparation: sync, input touched, scratch memory written.
ratios: "1.02x (1.01x)" is best over best, then (in brackets) the median over the repetitions
  of the paired ratio: this run over the reference's run in the same repetition, taken over
  the repetitions in which neither run waited for a CPU more than --max-wait of its time nor
  lost memory to the host ("1.01x*": fewer than 3 such repetitions, so over all of them).
vs ref: against the case's reference (in its heading): for tensor data the physical limit with
  the same durability ('streamser (fsync)' and 'tofile+fsync' fsync, nothing else does).
vs memcpy: against copying the same bytes from memory to memory. vs peer: against the peer
  library of smallest median time. Neither for a save with fsync that has a limit with fsync
  (peers never fsync: set them against 'streamser fileobj').
wait: the median share of a run's wall time its process waited for a CPU (another process
  had it). A run that waited more than --max-wait is redone, up to --retries times, and the
  least disturbed attempt kept: with the machine quiet, this column reads 0%. So is a run during
  which the host took back more than 32 MiB of the VM's free memory (virtio-balloon page
  reporting): what it touched came back from the host several times slower.
speed: data bytes (GB = 10^9 B) or records per second; for lazy, the touched tensor's bytes
  over the time to open the file and sum that tensor.
RSS rise, anon rise: how far the worker's RSS (mapped file pages included) and its anonymous
  memory (RssAnon) rose during the run above where they stood when it began.
+anon: the anon rise beyond what the result may keep (an eager load's arrays; records as plain
  Python dicts and arrays): the memory the operation needed beyond its input and its result.
  --max-mem applies to it, for streamser; peers are only marked."""


def expected_growth(m: Measurement) -> int:
    """The anonymous memory an operation may keep without it counting as overhead: nothing
    for a save or a lazy open of tensors; the loaded arrays for an eager load; the records as
    plain Python objects for any load or index of records."""
    if m["case"] == "records" and m["op"] != "save":
        return int(m["footprint"])
    return int(m["payload"]) if m["op"] == "load" else 0


def summarise(m: Measurement, max_wait: float = 0.05) -> None:
    """Add the times by repetition, best, median and memory peaks of the timed runs, and the
    quiet repetitions: those whose run did not wait for a CPU more than ``max_wait``."""
    key = "cpu" if m.get("clock") == "cpu" else "seconds"
    timed = [run for run in m["runs"] if not run["warmup"]]
    by_repetition = {run["repetition"]: run[key] for run in timed}
    times = [m["constant"]] if "constant" in m else list(by_repetition.values())
    m["times"], m["repetitions"] = times, list(by_repetition)
    m["best"] = min(times) if times else None
    m["median"] = statistics.median(times) if times else None
    m["n"] = len(by_repetition)
    waits = {run["repetition"]: _waited(run) for run in timed}
    m["wait"] = statistics.median(waits.values()) if waits else None
    cpu_clock = m.get("clock") == "cpu"  # waiting does not count in CPU time
    lost = {run["repetition"] for run in timed if lost_memory(run)}
    m["quiet"] = [
        rep for rep, wait in waits.items() if cpu_clock or (wait <= max_wait and rep not in lost)
    ]
    m["redone"] = sum(len(run.get("disturbed_attempts", [])) for run in timed)
    rises = [run["d_anon"] for run in timed if run.get("d_anon") is not None]
    m["d_rss"] = max((run["d_rss"] for run in timed if run.get("d_rss") is not None), default=None)
    m["d_anon"] = max(rises, default=None)
    m["overhead"] = max(rises) - expected_growth(m) if rises else None
    if "memory" in m:  # a whole process (imports): its memory, not a rise
        m["d_rss"], m["d_anon"] = m["memory"]["rss"], m["memory"]["anon"]


def _waited(run: dict[str, Any]) -> float:
    """The share of a run's time its threads waited for a CPU (:func:`bench.sched.wait_share`)."""
    return sched.wait_share(run)


def _times(m: Measurement) -> dict[int, float]:
    return dict(zip(m["repetitions"], m["times"], strict=False))


def ratio(m: Measurement, reference: Measurement | None) -> dict[str, Any] | None:
    """``m`` against ``reference``: best over best, and the median of paired ratios over the
    repetitions in which neither run waited for a CPU (over all of them when fewer than
    ``MIN_QUIET`` were quiet: ``quiet`` is then False); the median time over a constant."""
    if reference is None or not m["times"] or not reference["times"]:
        return None
    best = best_ratio(m["times"], reference["times"])
    if "constant" in reference:
        return {
            "to": reference["label"],
            "best": best,
            "paired": m["median"] / reference["constant"],
        }
    quiet = set(m["quiet"]) & set(reference["quiet"])
    enough = len(quiet) >= min(
        MIN_QUIET, len(set(m["repetitions"]) & set(reference["repetitions"]))
    )
    paired = paired_median(_times(m), _times(reference), quiet if enough else None)
    return {"to": reference["label"], "best": best, "paired": paired, "quiet": enough}


def _fastest(group: list[Measurement], role: str, fsync: bool | None = None) -> Measurement | None:
    """The reference of a role: the one marked preferred if any (so that the reference does
    not change from run to run), else the one with the smallest median time (steadier than
    the best)."""
    candidates = [o for o in group if o["role"] == role and (fsync is None or o["fsync"] == fsync)]
    candidates = [o for o in candidates if o.get("preferred")] or candidates
    return min(candidates, key=lambda o: o["median"], default=None)


def analyse(
    measurements: list[Measurement], budget: int | None, max_wait: float = 0.05
) -> list[str]:
    """Add summaries, ratios and budget verdicts to every measurement; return the failures.

    A failure is a wrong or missing result (any contender: the data is the harness's own) or
    streamser going over the memory budget. Peers over the budget are marked, not failed.
    """
    for m in measurements:
        summarise(m, max_wait)
    failures: list[str] = []
    for m in measurements:
        group = [o for o in measurements if _key(o) == _key(m) and o.get("ok") and o["times"]]
        m["vs_ref"] = ratio(m, _fastest(group, "limit", m["fsync"]))
        # a durable save of tensor data waits for the disk: against memory, or peers that do
        # not fsync, that is noise; its reference is the limit that fsyncs too
        durable = m["fsync"] and m["vs_ref"] is not None
        m["vs_memcpy"] = None if durable else ratio(m, _fastest(group, "memory"))
        m["vs_peer"] = None if durable else ratio(m, _fastest(group, "peer"))
        where = f"{_size(m)}{m['case']} {m['op']} {m['label']}"
        if not m.get("ok"):
            failures.append(f"{where}: {m.get('error') or m.get('check')}")
        allowed = None if budget is None else budget + m.get("allowance", 0)
        overhead = m.get("overhead")
        over = overhead - allowed if allowed is not None and overhead is not None else 0
        m["over_budget"] = over if over > 0 else None
        if m["over_budget"] and m["role"] == "subject":
            failures.append(
                f"{where}: anonymous memory rose {format_bytes(overhead)} beyond its data, "
                f"{format_bytes(over)} over the budget of {format_bytes(allowed or 0)}"
            )
    return failures


def _key(m: Measurement) -> tuple[Any, ...]:
    return (m["size"], m["case"], m["op"])


def _size(m: Measurement) -> str:
    return f"{format_bytes(m['size'])} " if m.get("size") else ""


def table(measurements: list[Measurement]) -> str:
    """The results as a text table: one block per size and case, rows by operation."""
    lines: list[str] = []
    blocks: dict[tuple[int | None, str], list[Measurement]] = {}
    for m in measurements:
        blocks.setdefault((m["size"], m["case"]), []).append(m)
    for (_, case), rows in blocks.items():
        lines.append("")
        lines.append(heading(case, rows))
        lines.append(_row([name for name, _, _ in COLUMNS]))
        rows.sort(key=lambda m: OPS.index(m["op"]) if m["op"] in OPS else -1)
        lines.extend(_row(_cells(m)) for m in rows)
    return "\n".join(lines)


def heading(case: str, rows: list[Measurement]) -> str:
    first, spec = rows[0], CASES[case]
    if case == "records":
        amount = f"{first['records']:,} records, {2 * first['records']:,} tensors"
    elif case == "import":
        amount = f"{max(m['n'] for m in rows)} alternating runs each (memory: the whole process)"
    else:
        amount = format_bytes(first["payload"])
    clock = "CPU time" if spec.clock == "cpu" else "wall time"
    size = f"--size {format_bytes(first['size'])} | " if first.get("size") else ""
    return f"== {size}{case}: {spec.title} | {amount} | {clock} | ref: {spec.reference}"


def _row(cells: Iterable[str]) -> str:
    parts = [
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _speed(m: Measurement) -> str:
    best = m.get("best")
    if m["case"] == "import":
        return "-"
    if m["case"] == "records":
        return format_rate(m["records"], best, "records")
    amount = m["touched"] if m["op"] == "lazy" else m["payload"]
    return format_rate(amount, best, "bytes")


def _check(m: Measurement) -> str:
    if "constant" in m:
        return str(m["check"])
    check = "ok" if m.get("ok") else "FAIL " + str(m.get("error") or m.get("check"))[:60]
    if m.get("over_budget"):
        check += f", {format_bytes(m['over_budget'])} OVER BUDGET"
    return check


def _cells(m: Measurement) -> list[str]:
    overhead = m.get("overhead")
    return [
        m["op"],
        m["label"],
        format_seconds(m.get("best")),
        str(m["n"]) if m["n"] else "-",
        _speed(m),
        "-" if m.get("wait") is None else f"{m['wait']:.0%}",
        format_bytes(m.get("d_rss")),
        format_bytes(m.get("d_anon")),
        format_bytes(None if overhead is None else max(0, overhead)),
        *(ratio_text(m.get(key)) for key in RATIOS),
        _check(m),
    ]


def ratio_text(ratio: dict[str, Any] | None) -> str:
    """``1.02x (1.01x)``: best over best, then the paired median; ``-`` when unknown."""
    if ratio is None or ratio["best"] is None:
        return "-"
    flag = "" if ratio.get("quiet", True) else "*"
    paired = "" if ratio["paired"] is None else f" ({ratio['paired']:.2f}x{flag})"
    return f"{ratio['best']:.2f}x{paired}"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write every measurement, with its runs and memory samples, as compact JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, separators=(",", ":"), default=str) + "\n")
