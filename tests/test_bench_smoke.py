"""The benchmark suite's CI smoke run: correctness and memory budgets, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("checkpoint", "records", "memmap", "compressed", "ascii-float32", "ascii-float64")


def _run_module(module: str, *args: str) -> str:
    """``python -m <module> --smoke`` from the repository root; its output, which must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_bench_smoke_run_passes(tmp_path: Path) -> None:
    """Every case runs, every result is checked, streamser stays in its memory budget, and
    every operation of streamser gets a paired ratio to something it was measured beside."""
    output = _run_module("bench", "--results", str(tmp_path))
    for case in CASES:
        assert f"| {case}: " in output
    assert "== import: " in output
    document = json.loads((tmp_path / "latest.json").read_text())
    assert document["failures"] == []
    streamser = [m for m in document["measurements"] if m["role"] == "subject"]
    assert {m["case"] for m in streamser} == {*CASES, "import"}
    for m in streamser:
        assert m["ok"], m
        ratios = [m[key] for key in ("vs_ref", "vs_memcpy", "vs_peer") if m[key]]
        assert any(r["paired"] is not None for r in ratios), (m["case"], m["op"], m["label"])
    _check_spread(tmp_path)


def _check_spread(tmp_path: Path) -> None:
    """``python -m bench.spread`` over a run and a copy with one ratio moved: identical rows
    have no spread, the moved one is flagged, and the references' own rows are summed up."""
    first = tmp_path / "latest.json"
    moved = json.loads(first.read_text())
    subject = next(
        m for m in moved["measurements"] if m["role"] == "subject" and m["vs_ref"] is not None
    )
    subject["vs_ref"]["best"] *= 1.5
    second = tmp_path / "moved.json"
    second.write_text(json.dumps(moved))
    result = subprocess.run(
        [sys.executable, "-m", "bench.spread", str(first), str(first), str(second)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    flagged = [line for line in result.stdout.splitlines() if line.endswith("!")]
    assert len(flagged) == 1, result.stdout
    assert subject["label"] in flagged[0]
    assert "50.0%" in flagged[0]
    controls = result.stdout.split("no streamser code")[1]
    assert "streamser" not in controls  # neither as a row nor as the reference of one


def test_zstd_bench_smoke_run_passes() -> None:
    """Every table of ``python -m bench.zstd``, a tensor read checked, memory under bound."""
    output = _run_module("bench.zstd")
    for heading in ("1. save", "2. lazy read", "3. peak", "4. byte shuffle"):
        assert heading in output
