"""The cases and the plan: which contender does what, on which file, in which order.

A contender's loads read what its own save wrote (so the save must come first), the raw source
file (the physical limit), or another contender's output (torchfile reads streamser's). A file
is deleted right after the last step that uses it, so at most a few copies of the data are on
disk at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .case import Job
from .data import Manifest
from .peers import Contender

OPS = ("save", "load", "lazy")


@dataclass(frozen=True)
class Case:
    """A benchmark case: its name, what it measures, and what throughput is counted in."""

    name: str
    title: str
    unit: str  # "bytes" or "records"


CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("checkpoint", "tensor-heavy checkpoint: 20 float32 tensors", "bytes"),
        Case(
            "records",
            "metadata-heavy: records of a 4x4 and a 4 float32 tensor and a name",
            "records",
        ),
        Case("memmap", "save from np.memmap inputs (a raw file mapped, not read)", "bytes"),
        Case("ascii", "ascii format (size capped at 16M)", "bytes"),
    )
}


@dataclass
class Step:
    """One child to run, and the files to delete once it has run."""

    job: Job
    contender: Contender
    cleanup: list[Path] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.contender.label(self.job.op)


def plan(
    manifest_path: Path,
    manifest: Manifest,
    folder: Path,
    contenders: list[Contender],
    cases: list[str],
    settings: dict[str, Any],
) -> tuple[list[Step], list[str]]:
    """The steps for one size, and notes on what cannot run."""
    steps: list[Step] = []
    notes: list[str] = []
    for case in cases:
        outputs: dict[str, Path] = {}
        case_steps: list[Step] = []
        source = Path(manifest.ascii.source if case == "ascii" else manifest.checkpoint.source)
        names = {contender.name for contender in contenders}
        for contender in contenders:
            ops = contender.ops.get(case, ())
            for op in (op for op in OPS if op in ops):
                job = Job(
                    case=case,
                    contender=contender.name,
                    op=op,
                    manifest=str(manifest_path),
                    **settings,
                )
                if op == "save":
                    job.output = str(folder / f"{case}.{contender.name}{contender.suffix}")
                    outputs[contender.name] = Path(job.output)
                elif contender.reads == "source":
                    job.input = str(source)
                else:
                    owner = contender.reads or contender.name
                    if owner not in outputs:
                        why = "not selected" if owner not in names else "does not save it"
                        notes.append(
                            f"{case} {op} {contender.name}: skipped, it reads the "
                            f"file {owner} writes ({owner} {why})"
                        )
                        continue
                    job.input = str(outputs[owner])
                case_steps.append(Step(job, contender))
        for output in outputs.values():
            users = [i for i, step in enumerate(case_steps) if step.job.input == str(output)]
            if users:  # the loads check what was saved: no need to check it twice
                next(s for s in case_steps if s.job.output == str(output)).job.verify = False
            last = max(
                i
                for i, step in enumerate(case_steps)
                if str(output) in (step.job.input, step.job.output)
            )
            case_steps[last].cleanup.append(output)  # delete each output after its last use
        steps.extend(case_steps)
    return steps, notes
