"""The cases and the plan: which contenders alternate in which phase, on which files.

A case runs in one worker process per size, phase by phase (``save``, then ``load``, ``lazy``,
``index``). In a phase every contender takes one run per repetition, in a fixed order
(A B C, A B C, ...). A load reads the file its contender's save wrote in the save phase (the
last repetition's), the raw source file (the physical limits), or another contender's output
(torchfile reads streamser's). The files of a case are deleted when the case ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .peers import Contender

OPS = ("save", "load", "lazy", "index")


@dataclass(frozen=True)
class Case:
    """A benchmark case: its name, what it measures, its clock and its references."""

    name: str
    title: str
    unit: str  # what throughput is counted in: "bytes" or "records"
    clock: str = "wall"  # "cpu": time.process_time of the worker (ascii, as Torch7 was timed)
    reference: str = "the physical limit with the same durability"


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("checkpoint", "20 float32 tensors", "bytes"),
        Case(
            "records",
            "records of a name, a 4x4 and a 4-element float32 tensor",
            "records",
            reference="index: streamser's eager load (issue 11: at most 1.5x); else none",
        ),
        Case(
            "memmap",
            "save from np.memmap inputs, mapped anew before each run (file cached, not read)",
            "bytes",
        ),
        Case(
            "compressed",
            "20 float32 tensors, zstd level 3, 2 threads",
            "bytes",
            reference="the same bytes through zstandard's stream, no container",
        ),
        Case(
            "ascii-float32",
            "one 1-D float32 tensor in Torch7's ascii format, CPU time",
            "bytes",
            clock="cpu",
            reference="real Lua Torch7, CPU time (constants)",
        ),
        Case(
            "ascii-float64",
            "one 1-D float64 tensor in Torch7's ascii format, CPU time",
            "bytes",
            clock="cpu",
            reference="real Lua Torch7, CPU time (constants)",
        ),
        Case(
            "import",
            "whole-process python -c 'import ...', bytecode cached",
            "runs",
            reference="import numpy",
        ),
    )
}
GROUPS = {"ascii": ("ascii-float32", "ascii-float64")}  # names --cases accepts for several

# Real Lua Torch7 on this machine class (2-core Xeon VM), 1e6 elements, CPU time, measured in
# the same run as streamser by the author of issue 16 ("Also measured: real Lua Torch7 on this
# machine class, in CPU time"). Torch7 is not installed here, so they are constants.
TORCH7_ELEMENTS = 1_000_000
TORCH7_CPU_SECONDS = {
    ("ascii-float32", "save"): 0.166,
    ("ascii-float32", "load"): 0.108,
    ("ascii-float64", "save"): 0.212,
    ("ascii-float64", "load"): 0.144,
}
TORCH7_SOURCE = "real Lua Torch7, CPU time, from issue 16"


def expand(names: list[str]) -> list[str]:
    """Case names with groups (``ascii``) replaced by their members, in CASES order."""
    wanted = {member for name in names for member in GROUPS.get(name, (name,))}
    return [name for name in CASES if name in wanted]


@dataclass
class Phase:
    """One operation of a case: the contenders that alternate, and the file each one uses
    (the output of a save, the input of a load)."""

    case: str
    op: str
    contenders: list[Contender]
    files: dict[str, Path] = field(default_factory=dict)


def plan(
    case: str, contenders: list[Contender], folder: Path, source: Path
) -> tuple[list[Phase], list[str]]:
    """The phases of ``case``, and notes on contenders that cannot run."""
    phases: list[Phase] = []
    notes: list[str] = []
    outputs: dict[str, Path] = {}
    names = {contender.name for contender in contenders}
    for op in OPS:
        phase = Phase(case, op, [])
        for contender in contenders:
            if op not in contender.ops.get(case, ()):
                continue
            if op == "save":
                outputs[contender.name] = folder / f"{case}.{contender.name}{contender.suffix}"
                phase.files[contender.name] = outputs[contender.name]
            elif contender.reads_for(case) == "source":
                phase.files[contender.name] = source
            else:
                owner = contender.reads_for(case) or contender.name
                if owner not in outputs:
                    why = "not selected" if owner not in names else "does not save it"
                    notes.append(
                        f"{case} {op} {contender.name}: skipped, it reads the file "
                        f"{owner} writes ({owner} {why})"
                    )
                    continue
                phase.files[contender.name] = outputs[owner]
            phase.contenders.append(contender)
        if phase.contenders:
            phases.append(phase)
    return phases, notes
