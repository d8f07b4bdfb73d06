"""The documentation: it builds with warnings as errors, its examples run, every public name
has a docstring."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import streamser
import streamser.torch
import streamser.types
from streamser.cli.main import main
from streamser.tools import cast, export, from_safetensors, serial, to_safetensors

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "bench" not in p.parts)
BLOCK = re.compile(r"^```(python|console)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_mkdocs_builds_without_warnings(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
    command += ["--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's notice about its successor
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reference" / "torch" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES)
def test_guide_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``python`` block of a page, in order, in one namespace, in an empty folder where
    ``tests/real-world`` is the repository's; every ``$ streamser ...`` line of a ``console``
    block then runs the command line and must succeed."""
    blocks = BLOCK.findall((DOCS / page).read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "real-world").symlink_to(ROOT / "tests" / "real-world")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs.{page}"}
    for kind, code in blocks:
        if kind == "python":
            exec(compile(code, f"{page} (example)", "exec"), namespace)
            continue
        for line in code.splitlines():
            if line.startswith("$ streamser "):
                assert main(shlex.split(line)[2:]) == 0, line


# --- docstrings ------------------------------------------------------------------------------

# Documented modules, with the names the reference shows where they have no __all__.
MODULES: list[tuple[Any, list[str] | None]] = [
    (streamser, None),
    (streamser.torch, None),
    (streamser.types, None),
    (serial, ["add_serial_fields", "serial_hook"]),
    (cast, ["resolve_cast", "cast_hook"]),
    (from_safetensors, ["SafetensorsFile", "Entry", "read_header"]),
    (to_safetensors, ["t7_to_safetensors", "Named"]),
    (
        export,
        [
            "export",
            "ExportReport",
            "ExportError",
            "npz_member",
            "npz_name",
            "write_safetensors",
            "safetensors_header",
            "Described",
        ],
    ),
]


def public_names() -> list[tuple[str, Any]]:
    """Every public function, class, method and property of the documented modules."""
    found: list[tuple[str, Any]] = []
    for module, shown in MODULES:
        for name in shown or module.__all__:
            value = getattr(module, name)
            if not (inspect.isclass(value) or inspect.isroutine(value)):
                continue  # aliases and constants: see the griffe test below
            found.append((f"{module.__name__}.{name}", value))
            if isinstance(value, type):
                found += list(_members(f"{module.__name__}.{name}", value))
    return found


def _members(prefix: str, cls: type) -> Any:
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if callable(member) or isinstance(member, property):
            yield f"{prefix}.{name}", member


def test_every_public_name_has_a_docstring() -> None:
    missing = sorted({name for name, value in public_names() if not inspect.getdoc(value)})
    assert not missing, missing


def test_attributes_and_aliases_are_documented() -> None:
    """Attributes and type aliases have no runtime docstring; the reference reads them from
    the source, as griffe does here."""
    import griffe

    values = griffe.load("streamser.values.lua", search_paths=[str(ROOT)])
    for name in ("TorchObject", "Storage", "LuaFunction"):
        for attribute in values[name].attributes.values():
            if not attribute.name.startswith("_"):
                assert attribute.docstring is not None, f"{name}.{attribute.name}"
    types = griffe.load("streamser.types", search_paths=[str(ROOT)])
    for name in streamser.types.__all__:
        assert types[name].docstring is not None, name
