"""Reading the measurements: ratios, the memory budget, the table, and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .cases import CASES, OPS
from .units import format_bytes, format_rate, format_seconds

Measurement = dict[str, Any]

COLUMNS = (  # header, width, alignment
    ("op", 5, "<"),
    ("contender", 22, "<"),
    ("time", 8, ">"),
    ("speed", 12, ">"),
    ("peak RSS", 8, ">"),
    ("peak anon", 9, ">"),
    ("+anon", 7, ">"),
    ("vs limit", 8, ">"),
    ("vs peer", 7, ">"),
    ("check", 0, "<"),
)

FOOTNOTES = """\
time: best of the timed runs, each in a fresh process after an untimed warm-up run.
speed: data bytes (GB = 10^9 B) or records per second; for lazy, the touched tensor's bytes over
  the time to open the file and sum that tensor.
peak RSS counts mapped file pages; peak anon is its anonymous part (RssAnon: private memory).
+anon: how far anon rose during the run beyond what the result may keep (an eager load's
  arrays; records as plain Python dicts and arrays): the memory the operation needed beyond
  its input and its result. --max-mem applies to it, for streamser; peers are only marked.
vs limit: time over the fastest physical limit (tofile, fromfile, np.memmap, copyfile) with
  the same durability; 'streamser (fsync)' and 'tofile+fsync' fsync, nothing else does.
vs peer: time over the fastest peer library for the same operation (peers never fsync: set
  them against 'streamser fileobj')."""


def expected_growth(measurement: Measurement) -> int:
    """The anonymous memory an operation may keep without it counting as overhead: nothing
    for a save or a lazy open of tensors; the loaded arrays for an eager load; the records as
    plain Python objects for any load of records."""
    if measurement["case"] == "records" and measurement["op"] != "save":
        return int(measurement["footprint"])
    return int(measurement["payload"]) if measurement["op"] == "load" else 0


def analyse(measurements: list[Measurement], budget: int | None) -> list[str]:
    """Add overhead, ratios and budget verdicts to every measurement; return the failures.

    A failure is a wrong or missing result (any contender: the data is the harness's own) or
    streamser going over the memory budget. Peers over the budget are marked, not failed.
    """
    failures: list[str] = []
    for m in measurements:
        m["overhead"] = m["anon_added"] - expected_growth(m) if "anon_added" in m else None
        group = [o for o in measurements if _key(o) == _key(m) and o.get("ok") and "seconds" in o]
        m["vs_limit"] = _ratio(
            m, [o for o in group if o["role"] == "limit" and o["fsync"] == m["fsync"]]
        )
        m["vs_peer"] = _ratio(m, [o for o in group if o["role"] == "peer"])
        where = f"{format_bytes(m['size'])} {m['case']} {m['op']} {m['label']}"
        if not m.get("ok"):
            failures.append(f"{where}: {m.get('error') or m.get('check')}")
        allowed = None if budget is None else budget + m.get("allowance", 0)
        over = m["overhead"] - allowed if allowed is not None and m["overhead"] is not None else 0
        m["over_budget"] = over if over > 0 else None
        if m["over_budget"] and m["role"] == "subject":
            failures.append(
                f"{where}: anonymous memory rose {format_bytes(m['overhead'])} beyond its data, "
                f"{format_bytes(over)} over the budget of {format_bytes(allowed or 0)}"
            )
    return failures


def _key(m: Measurement) -> tuple[Any, ...]:
    return (m["size"], m["case"], m["op"])


def _ratio(m: Measurement, references: list[Measurement]) -> float | None:
    if "seconds" not in m or not references:
        return None
    best = min(o["seconds"] for o in references)
    return m["seconds"] / best if best > 0 else None


def table(measurements: list[Measurement]) -> str:
    """The results as a text table: one block per size and case, rows by operation."""
    lines: list[str] = []
    blocks: dict[tuple[int, str], list[Measurement]] = {}
    for m in measurements:
        blocks.setdefault((m["size"], m["case"]), []).append(m)
    for (size, case), rows in blocks.items():
        first = rows[0]
        amount = (
            f"{first['records']:,} records, {2 * first['records']:,} tensors"
            if case == "records"
            else format_bytes(first["payload"])
        )
        lines.append("")
        lines.append(f"== --size {format_bytes(size)} | {case}: {CASES[case].title} | {amount}")
        lines.append(_row([name for name, _, _ in COLUMNS]))
        rows.sort(key=lambda m: OPS.index(m["op"]))
        lines.extend(_row(_cells(m)) for m in rows)
    return "\n".join(lines)


def _row(cells: Iterable[str]) -> str:
    parts = [
        f"{cell:{align}{width}}" for cell, (_, width, align) in zip(cells, COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _cells(m: Measurement) -> list[str]:
    seconds = m.get("seconds")
    if m["case"] == "records":
        speed = format_rate(m["records"], seconds, "records")
    elif m["op"] == "lazy":
        speed = format_rate(m["touched"], seconds, "bytes")
    else:
        speed = format_rate(m["payload"], seconds, "bytes")
    check = "ok" if m.get("ok") else "FAIL " + str(m.get("error") or m.get("check"))[:60]
    if m.get("over_budget"):
        check += f", {format_bytes(m['over_budget'])} OVER BUDGET"
    return [
        m["op"],
        m["label"],
        format_seconds(seconds),
        speed,
        format_bytes(m.get("peak_rss")),
        format_bytes(m.get("peak_anon")),
        format_bytes(None if m.get("overhead") is None else max(0, m["overhead"])),
        _times(m.get("vs_limit")),
        _times(m.get("vs_peer")),
        check,
    ]


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write every measurement, with its memory samples, as compact JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, separators=(",", ":"), default=str) + "\n")
