"""``import streamser`` stays light: heavy modules are imported on first use, not at startup.

Each check runs in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import streamser

# Modules the package must not import at startup (each costs milliseconds, or starts threads);
# a module numpy itself imports is exempt, since the package cannot avoid it.
HEAVY = {
    "zstandard",
    "ctypes",
    "ctypes.util",
    "threading",
    "concurrent.futures",
    "secrets",
    "logging",
    "random",
    "subprocess",
    "tempfile",
    "shutil",
    "hashlib",
    "queue",
    "glob",
    "streamser.handle",
    "streamser.graph.writer",
    "streamser.io.seekable",
    "streamser.tools.serial",
}


def _modules_after(statement: str) -> set[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout))


def test_no_heavy_module_is_imported_at_startup() -> None:
    by_numpy = _modules_after("import numpy")
    loaded = _modules_after("import streamser")
    assert "numpy" in loaded  # the value types are numpy arrays: imported, and fully usable
    assert sorted((loaded - by_numpy) & HEAVY) == []


def test_the_first_load_and_save_import_what_they_need() -> None:
    loaded = _modules_after(
        "import numpy, streamser\n"
        "data = streamser.serialize({'w': numpy.ones(3)}, compress='zstd')\n"
        "assert streamser.deserialize(data)['w'].tolist() == [1.0, 1.0, 1.0]"
    )
    assert {"streamser.graph.reader", "streamser.graph.writer", "zstandard"} <= loaded


@pytest.mark.parametrize("name", sorted(streamser._ON_FIRST_USE))
def test_names_loaded_on_first_use_resolve(name: str) -> None:
    assert name in streamser.__all__ or name == "serial"
    assert getattr(streamser, name) is not None
    loaded = _modules_after(f"import streamser\nstreamser.{name}")
    module = streamser._ON_FIRST_USE[name][0]
    assert f"streamser{module}" in loaded


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = streamser.nothing  # type: ignore[attr-defined]
