"""The structure-aware fuzzer (``fuzz/structured_fuzz.py``, issue 13): its mutator, a smoke run
per format in CI, and every saved crasher replayed through all of its checks.

The long runs (30 minutes and more per format) are run by hand; see ``fuzz/README.md``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"
REGRESSIONS = FUZZ / "regressions"
SMOKE_CASES = 40  # per format: a few seconds each

sys.path.insert(0, str(FUZZ))
import structured_fuzz as sf  # noqa: E402
import t7_fields as tf  # noqa: E402
import t7_mutator as tm  # noqa: E402

POOL = sf.seeds()


def test_every_format_has_seeds() -> None:
    assert all(len(POOL[fmt]) >= 20 for fmt in ("binary", "b32", "ascii")), {
        fmt: len(streams) for fmt, streams in POOL.items()
    }


@pytest.mark.parametrize("fmt", ["binary", "b32", "ascii"])
def test_the_parser_reads_every_seed_whole(fmt: str) -> None:
    for stream in POOL[fmt]:
        records, damage = tf.parse(stream.data, stream.long_size, stream.ascii)
        assert damage is None
        assert stream.data[records[0].end :].strip() == b""
        assert all(r.start < r.end for r in records)


def test_fields_are_rewritten_by_meaning() -> None:
    """A length edit lands on a length, a geometry edit rewrites the block consistently."""
    stream = next(s for s in POOL["binary"] if any(r.first("ndim") for r in s.parse()))
    rng = random.Random(0)
    for _ in range(50):
        edits = tm.mutate_geometry(rng, stream, stream.parse())
        changed = stream.with_edits(edits)
        tensor = next(r for r in changed.parse() if r.first("ndim") is not None)
        ndim = tensor.first("ndim")
        assert ndim is not None
        assert len(tensor.all("size")) == len(tensor.all("stride")) == ndim.value
    for mutation, _ in tm.MUTATIONS:
        assert any(mutation(random.Random(n), stream, stream.parse()) for n in range(20))


def test_cases_are_reproducible() -> None:
    for fmt in tm.FORMATS:
        assert sf.make_case(fmt, 7, 11, POOL) == sf.make_case(fmt, 7, 11, POOL)
        assert sf.make_case(fmt, 7, 11, POOL) != sf.make_case(fmt, 7, 12, POOL)


@pytest.mark.parametrize("fmt", tm.FORMATS)
def test_smoke_run(fmt: str) -> None:
    """A few dozen cases per format in forked children under the time and memory caps."""
    result = subprocess.run(
        [sys.executable, str(FUZZ / "structured_fuzz.py"), "--format", fmt,
         "--cases", str(SMOKE_CASES), "--seed", "13", "--batch", str(SMOKE_CASES)],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{SMOKE_CASES} cases, 0 findings" in result.stdout


def _format_of(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return next((fmt for fmt in ("ascii", "b32") if path.name.startswith(fmt)), "binary")


@pytest.mark.parametrize("path", sorted(REGRESSIONS.glob("*.bin")), ids=lambda p: p.name)
def test_regression_through_every_path(path: Path, tmp_path: Path) -> None:
    """Each crasher ever found, through every reading path and the command line, with the
    compiled loop and in pure Python."""
    with sf.memory_cap(128 << 20):  # as in the fuzzing children: the default limit follows
        for compiled in (True, False):
            sf.check_case(path.read_bytes(), _format_of(path), tmp_path, compiled, budget=20.0)
