"""How well runs of the bench agree: ``python -m bench.spread A.json B.json C.json``.

Reads the JSON files of several runs of the same command (copies of bench/results/latest.json)
and prints, for every ratio of every row present in all of them, its value in each run and the
spread: the largest over the smallest, minus one. The bench's acceptance is a spread of at most
10% between three consecutive runs on a quiet machine. By default only streamser's rows are
shown (``--all`` for every row); ratios of a reference to itself are left out, and so are
ratios whose reference differs between the runs. Under them, how far the ratios moved where no
streamser code runs (``render_controls``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .report import RATIOS
from .stats import spread
from .units import format_bytes

LIMIT = 0.10
Key = tuple[Any, ...]


def ratios_of(document: dict[str, Any], everyone: bool, subjects: bool = True) -> dict[Key, float]:
    """Every ratio of a run, by (size, case, op, label, ratio kind and its reference, best or
    paired): of streamser's rows, of every row (``everyone``), or (not ``subjects``) of the
    rows and references where no streamser code runs at all."""
    found: dict[Key, float] = {}
    labels = {m["label"] for m in document["measurements"] if _streamser(m)}
    for m in document["measurements"]:
        if not everyone and (m["role"] == "subject") != subjects:
            continue
        for kind in RATIOS:
            ratio = m.get(kind)
            if not ratio or ratio["to"] == m["label"]:
                continue
            if not everyone and not subjects and (_streamser(m) or ratio["to"] in labels):
                continue  # streamser's eager load is the records index's reference, a limit
            for reading in ("best", "paired"):
                if ratio.get(reading) is not None:
                    name = f"{kind} {ratio['to']}"
                    key = (m["size"] or 0, m["case"], m["op"], m["label"], name, reading)
                    found[key] = ratio[reading]
    return found


def _streamser(m: dict[str, Any]) -> bool:
    """Does streamser's code run in this row (as the subject, or as a reference)?"""
    return m["role"] == "subject" or str(m["contender"]).startswith("streamser")


def rows(runs: list[dict[Key, float]]) -> list[tuple[Key, list[float], float]]:
    """(key, the values in each run, their spread) for the keys all runs have."""
    common = set(runs[0]).intersection(*runs[1:])
    out = []
    for key in sorted(common, key=lambda k: (k[0], k[1], k[2], k[3], k[4], k[5])):
        values = [run[key] for run in runs]
        out.append((key, values, spread(values) or 0.0))
    return out


def render(table: list[tuple[Key, list[float], float]], count: int) -> str:
    head = f"{'size':>6}  {'case':13} {'op':5} {'contender':28} {'ratio':16}"
    head += "".join(f"{'run ' + str(i + 1):>8}" for i in range(count)) + "  spread"
    lines = [head]
    for (size, case, op, label, kind, reading), values, width in table:
        name = f"{kind.split()[0].removeprefix('vs_')} {reading}"
        cells = "".join(f"{value:7.3f}x" for value in values)
        flag = "  !" if width > LIMIT else ""
        lines.append(
            f"{format_bytes(size) if size else '-':>6}  {case:13} {op:5} {label:28} {name:16}"
            f"{cells}  {width * 100:5.1f}%{flag}"
        )
    held = sum(1 for *_, width in table if width <= LIMIT)
    lines.append(f"{held} of {len(table)} ratios within {LIMIT:.0%} (largest over smallest)")
    return "\n".join(lines)


def render_controls(table: list[tuple[Key, list[float], float]], shown: int = 6) -> str:
    """How far the references' ratios to one another moved: no streamser code runs in them,
    so what moves there is the machine (a second vCPU's speed, memory handed back to the
    host), and a streamser ratio of the same kind cannot be held tighter."""
    if not table:
        return ""
    held = sum(1 for *_, width in table if width <= LIMIT)
    lines = [
        f"the other contenders' ratios to their references (no streamser code): {held} of "
        f"{len(table)} within {LIMIT:.0%}; the widest:"
    ]
    widest = sorted(table, key=lambda row: -row[2])[:shown]
    lines += render(widest, len(widest[0][1])).splitlines()[1:-1]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spread", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="JSON files of runs of one command")
    parser.add_argument("--all", action="store_true", help="every row, not only streamser's")
    args = parser.parse_args(argv)
    documents = [json.loads(path.read_text()) for path in args.runs]
    runs = [ratios_of(document, args.all) for document in documents]
    print(render(rows(runs), len(runs)))
    apart = set().union(*runs) - set(runs[0]).intersection(*runs[1:])
    if apart:  # a row missing from a run, or a ratio against another reference there
        print(f"{len(apart)} ratios left out: not in every run against the same reference")
    if not args.all:
        controls = render_controls(rows([ratios_of(d, False, subjects=False) for d in documents]))
        if controls:
            print("\n" + controls)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
