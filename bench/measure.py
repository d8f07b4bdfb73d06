"""The alternation: every phase of a case as repetitions of A B C, A B C, ... in one worker.

For each phase the parent tells the worker to set it up, has the keeper map the files the
phase reads, then runs the repetitions: warm-up repetitions first (untimed, the same for
everyone), then up to ``repeat`` timed ones. Within a repetition every contender takes one run,
in a fixed order, right after the keeper touched the file it reads. A contender whose runs have
taken ``time_cap`` seconds stops repeating (it keeps at least one timed run), so slow peers of
fixed cost do not hold up a quick run; the others go on alternating. The first timed run of
each contender is checked against the data's checksums.

A neighbour's process on the same two cores makes a run wait for a CPU; the worker reads how
long each timing waited on the run queue (``sched``). A timed run that waited more than 5% of
its wall time (``--max-wait``) is run again at once, up to 3 times (``--retries``), and the
least disturbed attempt is kept (the others stay in the JSON). CPU-time cases are not redone
(waiting does not count in CPU time), nor runs of 3 s or more (they meet the average load
anyway, and redoing them would multiply a slow peer's cost). When 12 redone attempts in a row
all waited too, the machine is busy for good, and the phase stops redoing runs. A run during
which the host took back more than 32 MiB of the guest's free memory (``balloon``) is redone
the same way: the memory it touched came back from the host, several times slower.

Operations of a few milliseconds (a lazy open, an index, small records) are at the mercy of a
neighbour's burst or of which vCPU they land on (times here are bimodal, e.g. 2.7 or 6.7 ms
for the same mapped sum). So when the fastest contender of a phase took less than 50 ms in the
warm-up, each run times the operation several times back to back (the same number for every
contender of the phase, at most 20) and the best of that batch is the run's time.

Each run's memory comes from the parent's samples inside the run's window, the worker's own
readings just before and after it, and the kernel's high-water mark: ``d_rss`` and ``d_anon``
are how far RSS and anonymous memory rose above where they stood when the run began.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sched
from .balloon import lost_memory
from .cases import CASES, Phase, plan
from .data import Manifest
from .keeper import Keeper
from .peers import Contender
from .session import Sample, Session, WorkerError
from .units import format_seconds
from .worker import remove

Measurement = dict[str, Any]
BATCH_SECONDS = 0.05  # operations faster than this are timed several times per run
MAX_BATCH = 20
REDO_BELOW = 3.0  # seconds: longer runs are not redone for having waited for a CPU
GIVE_UP = 12  # redone attempts in a row that waited too: the machine is busy, stop redoing


@dataclass(frozen=True)
class Settings:
    """How many runs, and what the worker does before each."""

    warmup: int
    repeat: int
    time_cap: float
    cold: bool
    max_wait: float = 0.05  # a run that waited longer for a CPU (share of its time) is redone
    retries: int = 3


def run_case(
    case: str,
    manifest_path: Path,
    manifest: Manifest,
    contenders: list[Contender],
    settings: Settings,
    folder: Path,
) -> tuple[list[Measurement], list[str]]:
    """Measure every phase of ``case``; return the measurements and notes."""
    tensors = manifest.tensors_of(case)
    source = Path(tensors.source)
    phases, notes = plan(case, contenders, folder, source)
    names = sorted({c.name for phase in phases for c in phase.contenders})
    args = [str(manifest_path), case, json.dumps(names), json.dumps({"cold": settings.cold})]
    measurements: list[Measurement] = []
    try:
        with Session(args) as session, Keeper() as keeper:
            versions = session.ready["versions"]
            alternation = Alternation(session, keeper, settings, source)
            for number, phase in enumerate(phases):
                rows = [
                    new_measurement(case, phase.op, c, manifest, versions) for c in phase.contenders
                ]
                measurements.extend(rows)
                alternation.phase(phase, rows)
                _remove_unread(phase, phases[number + 1 :])
            notes.extend(f"{case}: {note}" for note in alternation.notes)
            alternation.redo.new_phase()
            if alternation.redo.phases_given_up:
                notes.append(
                    f"{case}: in {alternation.redo.phases_given_up} phase(s), stopped redoing "
                    f"runs after {GIVE_UP} redone in a row still waited for a CPU (busy machine)"
                )
    except WorkerError as exc:
        for m in measurements:
            if m["ok"] is None:  # not checked yet: the worker died before
                _fail(m, str(exc))
        notes.append(f"{case}: {exc}")
    finally:
        for phase in phases:
            if phase.op == "save":
                for path in phase.files.values():
                    remove(path)
    return measurements, notes


def _remove_unread(phase: Phase, later: list[Phase]) -> None:
    """Delete the outputs of a save phase that no later phase reads (tofile's, fileobj's):
    fewer files in the page cache while the loads run."""
    if phase.op != "save":
        return
    read = {path for other in later for path in other.files.values()}
    for path in phase.files.values():
        if path not in read:
            remove(path)


def new_measurement(
    case: str, op: str, contender: Contender, manifest: Manifest, versions: dict[str, Any]
) -> Measurement:
    tensors = manifest.tensors_of(case)
    return {
        "size": manifest.size,
        "case": case,
        "op": op,
        "contender": contender.name,
        "label": contender.label(case, op),
        "role": contender.role,
        "preferred": contender.preferred,
        "fsync": contender.fsync and op == "save",
        "clock": CASES[case].clock,
        "allowance": contender.allowance if op == "save" else 0,
        "payload": manifest.records.nbytes if case == "records" else tensors.nbytes,
        "records": manifest.records.count,
        "footprint": manifest.records.footprint,
        "touched": tensors.touched,
        "version": versions.get(contender.name),
        "runs": [],
        "ok": None,
        "check": "not run",
        "error": None,
    }


def _fail(m: Measurement, error: str) -> None:
    m["ok"], m["error"] = False, error


def input_file(phase: Phase, name: str, source: Path) -> Path | None:
    """The file a run of contender ``name`` reads: a load's input; for a save, the raw source
    file when the input arrays map it (the memmap case), else none."""
    if phase.op != "save":
        return phase.files[name]
    return source if phase.case == "memmap" else None


class Redo:
    """When to time a run again because its process waited for a CPU.

    Redoing helps when other processes come and go. When they stay, every attempt waits too,
    and redoing only adds to the load: after ``GIVE_UP`` redone attempts in a row that all
    waited, the case stops redoing runs (and a note says so).

    >>> redo = Redo(Settings(warmup=1, repeat=5, time_cap=10.0, cold=False))
    >>> m, run = {"clock": "wall"}, {"warmup": False, "seconds": 0.1, "wait": 0.02}
    >>> redo.again(m, run, 1), redo.again(m, {**run, "wait": 0.001}, 2)
    (True, False)
    >>> redo.again({"clock": "cpu"}, run, 1), redo.again(m, {**run, "seconds": 5.0}, 1)
    (False, False)
    >>> redo.again(m, {**run, "wait": 0.0, "returned": 100 << 20}, 1)  # the host took memory
    True
    """

    def __init__(self, settings: Settings) -> None:
        self.max_wait, self.retries = settings.max_wait, settings.retries
        self.streak = 0
        self.gave_up = False
        self.phases_given_up = 0

    def new_phase(self) -> None:
        """Start counting afresh: the load may have changed since the last phase."""
        self.phases_given_up += self.gave_up
        self.streak, self.gave_up = 0, False

    def disturbed(self, m: Measurement, run: dict[str, Any]) -> bool:
        """Did a timed wall-clock run wait for a CPU more than ``max_wait`` of its time, or
        lose memory to the host (:mod:`bench.balloon`) while it ran? (Runs of ``REDO_BELOW``
        seconds or more are never redone: they meet the average load.)"""
        if run.get("warmup", True) or "error" in run or m["clock"] == "cpu":
            return False
        if run["seconds"] >= REDO_BELOW:
            return False
        return bool(sched.wait_share(run) > self.max_wait or lost_memory(run))

    def again(self, m: Measurement, run: dict[str, Any], attempts: int) -> bool:
        """Time the run again, after ``attempts`` attempts of which ``run`` is the last?"""
        disturbed = self.disturbed(m, run)
        if attempts > 1:
            self.streak = self.streak + 1 if disturbed else 0
            self.gave_up = self.gave_up or self.streak >= GIVE_UP
        return disturbed and not self.gave_up and attempts <= self.retries


class Alternation:
    """The phases of one case in one worker: repetitions, batches, redone runs, the keeper."""

    def __init__(self, session: Session, keeper: Keeper, settings: Settings, source: Path):
        self.session, self.keeper, self.settings, self.source = session, keeper, settings, source
        self.redo = Redo(settings)
        self.notes: list[str] = []

    def phase(self, phase: Phase, rows: list[Measurement]) -> None:
        """Set up one phase in the worker and the keeper, then run its repetitions."""
        files = {name: str(path) for name, path in phase.files.items()}
        self.redo.new_phase()
        reply, _ = self.session.request({"cmd": "phase", "op": phase.op, "files": files})
        inputs = {m["contender"]: input_file(phase, m["contender"], self.source) for m in rows}
        for m in rows:
            path = inputs[m["contender"]]
            if m["contender"] in reply.get("errors", {}):
                _fail(m, reply["errors"][m["contender"]])
            elif path is not None and not path.exists():
                _fail(m, f"input {path.name} missing (its save failed)")
            elif path is not None and not self.settings.cold:
                self.keeper.keep(path)
        self._repeat(phase, rows, inputs)

    def _repeat(
        self, phase: Phase, rows: list[Measurement], inputs: dict[str, Path | None]
    ) -> None:
        """The repetitions of a phase: every contender once in each, in order."""
        settings = self.settings
        spent = {m["contender"]: 0.0 for m in rows}
        inner = 1
        for repetition in range(settings.warmup + settings.repeat):
            warmup = repetition < settings.warmup
            if repetition == settings.warmup and repetition:
                inner = batch_size(rows)
            done: list[str] = []
            for m in rows:
                if m["ok"] is False or not _wants_run(m, warmup, spent[m["contender"]], settings):
                    continue
                command = {"cmd": "run", "contender": m["contender"], "warmup": warmup}
                command.update(check=not warmup and m["ok"] is None, inner=inner)
                reply, samples = self._run(command, inputs[m["contender"]], m)
                if "error" in reply:
                    _fail(m, reply["error"])
                    m["traceback"] = reply.get("traceback")
                    continue
                spent[m["contender"]] += reply["seconds"]
                _record(m, reply, samples, repetition)
                done.append(_brief(m, reply))
            _progress(phase, repetition, warmup, done)

    def _run(
        self, command: dict[str, Any], path: Path | None, m: Measurement
    ) -> tuple[dict[str, Any], list[Sample]]:
        """One run, timed again while it waited too long for a CPU; the least disturbed."""
        attempts: list[tuple[dict[str, Any], list[Sample]]] = []
        while not attempts or self.redo.again(m, attempts[-1][0], len(attempts)):
            if path is not None:
                self.keeper.touch(path)
            check = command["check"] and not attempts
            attempts.append(self.session.request({**command, "check": check}))
            self.notes.extend(n for n in attempts[-1][0].get("notes", []) if n not in self.notes)
        failed = [attempt for attempt in attempts if "error" in attempt[0]]
        if failed:
            return failed[0]
        kept, samples = min(attempts, key=lambda attempt: _disturbance(attempt[0]))
        if "check" in attempts[0][0]:
            kept["check"] = attempts[0][0]["check"]
        kept["disturbed_attempts"] = [_attempt(r) for r, _ in attempts if r is not kept]
        return kept, samples


def _disturbance(run: dict[str, Any]) -> tuple[bool, float]:
    """How disturbed an attempt was, for keeping the least: memory lost, then CPU waited."""
    return lost_memory(run), sched.wait_share(run)


def batch_size(rows: list[Measurement]) -> int:
    """Timings per run for a phase: enough that the fastest contender's batch lasts
    ``BATCH_SECONDS`` (at most ``MAX_BATCH``), the same for every contender of the phase so
    that each run's best is the best of as many timings. From the warm-up's times."""
    times = [_clock(m, run) for m in rows for run in m["runs"] if run["warmup"]]
    if not times or min(times) <= 0:
        return 1
    return max(1, min(MAX_BATCH, math.ceil(BATCH_SECONDS / min(times))))


def _clock(m: Measurement, run: dict[str, Any]) -> float:
    return float(run["cpu"] if m["clock"] == "cpu" else run["seconds"])


def _attempt(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run.get(key, 0) for key in ("seconds", "cpu", "wait", "returned", "start", "end")}


def _wants_run(m: Measurement, warmup: bool, spent: float, settings: Settings) -> bool:
    if warmup:
        return True
    timed = sum(1 for run in m["runs"] if not run["warmup"])
    return timed < settings.repeat and (timed == 0 or spent < settings.time_cap)


def _record(m: Measurement, run: dict[str, Any], samples: list[Sample], repetition: int) -> None:
    """Add one run to ``m`` with its memory peaks; a check result settles ``ok``."""
    window = [(rss, anon) for t, rss, anon in samples if run["start"] <= t <= run["end"]]
    peak_rss = max([run["rss_after"], run["rss_peak"] or 0, *(rss for rss, _ in window)])
    peak_anon = max([run["anon_before"], run["anon_after"], *(anon for _, anon in window)])
    run.update(
        repetition=repetition,
        d_rss=peak_rss - run["rss_before"],
        d_anon=peak_anon - run["anon_before"],
        samples=[[round(t - run["start"], 4), rss, anon] for t, rss, anon in samples],
    )
    run.pop("notes", None)
    m["runs"].append(run)
    if "check" in run:
        m["check"] = run.pop("check")
        m["ok"] = m["check"] == "ok"


def _brief(m: Measurement, run: dict[str, Any]) -> str:
    seconds = _clock(m, run)
    flag = "" if m["ok"] is not False else " FAILED"
    return f"{m['label']} {format_seconds(seconds)}{flag}"


def _progress(phase: Phase, repetition: int, warmup: bool, done: list[str]) -> None:
    if done:
        kind = "warm-up" if warmup else f"rep {repetition}"
        print(f"  {phase.case} {phase.op} {kind}: {', '.join(done)}", file=sys.stderr, flush=True)
