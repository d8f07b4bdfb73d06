"""Fuzzing in the test suite (issue 5): crashers replayed, and a short mutation fuzz for CI.

Both run the checks of ``fuzz/fuzz_checks.py``, the ones the atheris target runs: detection and
an explicit format, a Reader, a round trip, and a file read through ``load`` (mapped and eager)
and ``open`` with every tensor touched. Only :class:`streamser.StreamserError` may escape; a
hang fails through a per-input alarm.

Bugs found but not fixed yet are listed in ``KNOWN_BUGS``: their crashers are strict xfails
(they fail the suite once the bug is fixed, so that the entry is removed) and the mutation fuzz
tolerates exactly those exceptions raised at those places, and nothing else.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import struct
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import deadline

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
REGRESSIONS = ROOT / "fuzz" / "regressions"
ZSTD_SEEDS = ROOT / "fuzz" / "seeds"
INPUT_DEADLINE = 10.0  # seconds for one input through every check
MAX_SEED_BYTES = 64 << 10  # seeds of the mutation fuzz; bigger files are slow to mutate
MEMORY_HEADROOM = 768 << 20  # bytes one input may map beyond what the process holds
FUZZ_EXAMPLES = int(os.environ.get("STREAMSER_FUZZ_EXAMPLES", "24000"))


def _load_checks() -> ModuleType:
    """``fuzz/fuzz_checks.py``, which is a script folder, not a package."""
    name = "fuzz_checks"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "fuzz" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checks = _load_checks()


@dataclass(frozen=True)
class KnownBug:
    """An open bug: the exception it raises and the streamser module and function raising it."""

    exception: str
    module: str  # file name in streamser/ (or fuzz_checks.py for an invariant the checks test)
    functions: frozenset[str]
    summary: str


# Open bugs, keyed by the crasher's file name in fuzz/regressions/ (before the first dot), e.g.
#   "table-self-key": KnownBug("RecursionError", "values.py", frozenset({"__repr__"}), "...")
# Remove an entry when its bug is fixed: its strict xfail fails (XPASS) until you do. Every bug
# found so far is fixed (4c73b2e, f0d197d): their crashers now simply pass.
KNOWN_BUGS: dict[str, KnownBug] = {}


def _innermost_frame(exc: BaseException) -> tuple[str, str] | None:
    """(file name, function) of the innermost frame in streamser or in the fuzz checks."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        where = Path(frame.filename)
        if "streamser" in where.parts[:-1] or where.name == "fuzz_checks.py":
            return where.name, frame.name
    return None


def known_bug(exc: BaseException) -> str | None:
    """The name of the known bug ``exc`` is an instance of, or None."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    frame = _innermost_frame(exc)
    for name, bug in KNOWN_BUGS.items():
        if bug.exception in names and frame is not None:
            module, function = frame
            if module == bug.module and function in bug.functions:
                return name
    return None


@contextlib.contextmanager
def memory_cap(extra: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra`` bytes, so that a
    huge allocation fails at once as ``MemoryError`` (Linux only; elsewhere a no-op)."""
    statm = Path("/proc/self/statm")
    if resource is None or not statm.exists():
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    cap = used + extra
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def run_checks(data: bytes, folder: Path | None) -> None:
    with deadline(INPUT_DEADLINE), memory_cap(MEMORY_HEADROOM):
        checks.check(data, folder)


# --- (a) every crasher ever found is replayed --------------------------------------------------


class KnownBugReproduced(Exception):
    """A crasher failed exactly as its entry in ``KNOWN_BUGS`` says."""


def _bug_name(path: Path) -> str:
    return path.name.split(".")[0]


def _regression_params() -> list[object]:
    params: list[object] = []
    for path in sorted(REGRESSIONS.iterdir()):
        if path.name.startswith(".") or path.suffix == ".md":
            continue
        bug = KNOWN_BUGS.get(_bug_name(path))
        marks = []
        if bug is not None:
            reason = f"open bug: {bug.summary}"
            marks.append(pytest.mark.xfail(raises=KnownBugReproduced, strict=True, reason=reason))
        params.append(pytest.param(path, id=path.name, marks=marks))
    return params


def test_regressions_exist() -> None:
    assert _regression_params(), f"no crashers in {REGRESSIONS}"


@pytest.mark.parametrize("path", _regression_params())
def test_regression_input(path: Path, tmp_path: Path) -> None:
    try:
        run_checks(path.read_bytes(), tmp_path)
    except Exception as exc:
        name = _bug_name(path)
        if name in KNOWN_BUGS and known_bug(exc) == name:
            raise KnownBugReproduced(name) from exc
        raise  # a new failure, or a known crasher failing in a new way


def test_empty_input(tmp_path: Path) -> None:
    run_checks(b"", tmp_path)


def test_seek_table_claim_under_default_limits() -> None:
    """175 bytes whose seek table declares 60 GiB, read with the default max_decompressed
    (half of what the process can allocate): a StreamserError, not a MemoryError."""
    import streamser

    data = (REGRESSIONS / "zstd-seek-table-claim.bin").read_bytes()
    with (
        deadline(INPUT_DEADLINE),
        memory_cap(MEMORY_HEADROOM),
        pytest.raises(streamser.StreamserError),
    ):
        streamser.deserialize(data)


# --- (b) a short mutation fuzz -----------------------------------------------------------------

SEEDS = sorted(
    path
    for path in [*CORPUS.iterdir(), *ZSTD_SEEDS.iterdir()]
    if path.suffix in {".t7", ".bin", ".txt", ".zst"} and path.stat().st_size <= MAX_SEED_BYTES
)
_SEED_BYTES = {path.name: path.read_bytes() for path in SEEDS}
_INT_EDGES = (0, 1, 2, 3, 4, 7, 8, -1, -2, 255, 256, 65535, 1 << 16, 1 << 24, 2**31 - 1, -(2**31))
_LONG_EDGES = (0, 1, -1, 2, 1 << 32, 1 << 40, 2**62, 2**63 - 1, -(2**63))
KINDS = ("flip", "set", "insert", "delete", "int32", "int64", "truncate", "splice", "repeat")

mutations = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, steps: list[tuple[str, int, bytes]]) -> bytes:
    """Apply ``steps`` (kind, position, operand bytes) to ``data``, as libFuzzer would."""
    out = bytearray(data)
    for kind, where, operand in steps:
        pos = where % (len(out) + 1)
        pick = operand[0]
        if kind == "flip" and out:
            out[pos % len(out)] ^= 1 << (pick % 8)
        elif kind == "set":
            out[pos : pos + len(operand)] = operand
        elif kind == "insert":
            out[pos:pos] = operand
        elif kind == "delete":
            del out[pos : pos + 1 + pick % 16]
        elif kind == "int32":
            out[pos : pos + 4] = struct.pack("<i", _INT_EDGES[pick % len(_INT_EDGES)])
        elif kind == "int64":
            out[pos : pos + 8] = struct.pack("<q", _LONG_EDGES[pick % len(_LONG_EDGES)])
        elif kind == "truncate":
            del out[pos:]
        elif kind == "splice" and out:
            start = (where // 7) % len(out)
            out[pos:pos] = out[start : start + 1 + pick * 4]
        elif kind == "repeat" and out:
            out[pos:pos] = out[pos : pos + 4] * (1 + pick % 64)
    return bytes(out)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the file checks of every example (each input replaces the last)."""
    return tmp_path_factory.mktemp("fuzz")


# CI runs a fixed sequence of examples, so a red build always reproduces; local runs explore.
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(seed=st.sampled_from(sorted(_SEED_BYTES)), steps=mutations, through_file=st.booleans())
def test_mutated_corpus_raises_only_streamser_errors(
    scratch: Path, seed: str, steps: list[tuple[str, int, bytes]], through_file: bool
) -> None:
    data = mutate(_SEED_BYTES[seed], steps)
    try:
        run_checks(data, scratch if through_file else None)
    except Exception as exc:
        if known_bug(exc) is None:
            raise


def test_mutations_change_the_input() -> None:
    data = bytes(range(64))
    for kind in KINDS:
        assert mutate(data, [(kind, 10, b"\x05\x01")]) != data, kind


def test_known_bug_matching_is_precise(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known bug's entry tolerates only its own exception raised in its own place."""
    import streamser

    with pytest.raises(streamser.TruncatedError) as caught:
        streamser.deserialize(b"\x01\x00\x00\x00\x00", format="binary")
    place = _innermost_frame(caught.value)
    assert place is not None
    assert known_bug(caught.value) is None
    module, function = place
    bug = KnownBug("TruncatedError", module, frozenset({function}), "a test entry")
    monkeypatch.setitem(KNOWN_BUGS, "test-entry", bug)
    assert known_bug(caught.value) == "test-entry"
    with pytest.raises(RecursionError) as elsewhere:
        raise RecursionError("not raised in streamser")
    assert known_bug(elsewhere.value) is None
    other = KnownBug("ValueError", module, frozenset({function}), "another type")
    monkeypatch.setitem(KNOWN_BUGS, "test-entry", other)
    assert known_bug(caught.value) == "test-entry"  # TruncatedError is a ValueError
    monkeypatch.setitem(KNOWN_BUGS, "test-entry", KnownBug("KeyError", module, bug.functions, ""))
    assert known_bug(caught.value) is None
