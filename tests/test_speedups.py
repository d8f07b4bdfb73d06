"""speedups: the compiled loops, loaded once, and the one switch that turns them off."""

from __future__ import annotations

import os
import subprocess
import sys

from streamser import speedups
from streamser.graph import reader, writer


def test_the_switch_is_read_once_from_the_environment() -> None:
    assert (os.environ.get("STREAMSER_PURE", "") not in ("", "0")) == speedups.PURE
    code = "import streamser.speedups as s, streamser.graph.reader as r; print(s.PURE, r._FASTREAD)"
    env = {**os.environ, "STREAMSER_PURE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["True", "None"]


def test_pure_python_blocks_nest() -> None:
    loop = object()
    assert speedups.active(loop) is (None if speedups._paused else loop)
    with speedups.pure_python():
        assert speedups.active(loop) is None
        with speedups.pure_python():
            assert speedups.active(loop) is None
        assert speedups.active(loop) is None
    assert speedups.active(loop) is loop
    assert speedups.active(None) is None


def test_the_compiled_loops_are_built_unless_switched_off() -> None:
    if speedups.PURE:
        assert reader._FASTREAD is None
        assert writer._FAST is None
    else:
        assert reader._FASTREAD is not None
        assert writer._FAST is not None
    assert speedups.compiled("no_such_module") is None
