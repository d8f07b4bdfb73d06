"""The benchmark suite's CI smoke run: correctness and memory budgets, never speed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_module(module: str) -> str:
    """``python -m <module> --smoke`` from the repository root; its output, which must succeed."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_bench_smoke_run_passes() -> None:
    assert "streamser" in _run_module("bench")


def test_zstd_bench_smoke_run_passes() -> None:
    """Every table of ``python -m bench.zstd``, a tensor read checked, memory under bound."""
    output = _run_module("bench.zstd")
    for heading in ("1. save", "2. lazy read", "3. peak", "4. byte shuffle"):
        assert heading in output
