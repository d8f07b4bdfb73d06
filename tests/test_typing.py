"""The public API type-checks in user code: ``mypy --strict`` passes on a typical script, and
misspelt options (``format="asci"``, ``serial="lite"``) are type errors, not run-time ones."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import streamser

PACKAGE = Path(streamser.__file__).parent

USER_SCRIPT = """
import io

import numpy as np

import streamser
from streamser.types import CastSpec, FormatName, SerialMode


def checkpoint(path: str, fmt: FormatName, serial: SerialMode, cast: CastSpec | None) -> bytes:
    weights = {"w": np.ones((2, 3), np.float32), "steps": 10}
    streamser.save(path, weights, format=fmt, serial=serial, cast=cast, compress="zstd")
    value = streamser.load(path, mmap=False)
    with streamser.open(path) as handle:
        names = [info.path for info in handle.tensors()]
    buffer = io.BytesIO()
    with streamser.Writer(buffer, format="ascii", serial="light") as writer:
        writer.write_object(value)
        writer.write_table(len(names), ((name, np.zeros(1)) for name in names))
    reader = streamser.Reader(buffer.getvalue(), format=None)
    again = reader.read_object()
    data: bytes = streamser.serialize(again, "b32", referenced=False, compress=None)
    return data + bytes(streamser.deserialize(data, format="b32") is None)


checkpoint("model.t7", "binary", "medium", "cpu+float32")
"""

MISTAKES = """
import io

import streamser

streamser.save("m.t7", {}, format="asci")  # error
streamser.save("m.t7", {}, serial="lite")  # error
streamser.save("m.t7", {}, compress="gzip")  # error
streamser.load("m.t7", format="b16")  # error
streamser.serialize({}, "Binary")  # error
streamser.deserialize(b"", format="text")  # error
streamser.Writer(io.BytesIO(), format="asci")  # error
streamser.Writer(io.BytesIO(), serial="lite")  # error
streamser.Reader(b"", format="acsii")  # error
"""


def run_mypy(folder: Path, *scripts: str) -> list[str]:
    """mypy --strict on ``scripts`` as a user would run it; streamser found beside them."""
    env = {**os.environ, "MYPYPATH": str(PACKAGE.parent)}
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
    command += ["--cache-dir", str(folder / ".mypy_cache"), "--no-error-summary", *scripts]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done.stdout.splitlines()


def test_user_code_type_checks_and_misspelt_options_are_errors(tmp_path: Path) -> None:
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    (tmp_path / "mistakes.py").write_text(MISTAKES)
    lines = run_mypy(tmp_path, "user.py", "mistakes.py")
    assert not [line for line in lines if line.startswith("user.py")], lines
    expected = {n for n, text in enumerate(MISTAKES.splitlines(), 1) if text.endswith("# error")}
    found = {int(m[1]) for line in lines if (m := re.match(r"mistakes\.py:(\d+): error", line))}
    assert found == expected, lines
    assert all("Literal[" in line for line in lines if line.startswith("mistakes.py")), lines


def test_the_package_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["streamser"]
