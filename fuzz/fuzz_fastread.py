"""Atheris target for the compiled reader: it must read exactly as the Python reader does.

    python fuzz/fuzz_fastread.py -max_total_time=600 tests/corpus fuzz/regressions

Each input is read by a ``GraphReader`` over its bytes, value after value, with both long sizes
and with and without ``referenced``, once with ``streamser._fastread`` and once in pure Python
(see ``tests/test_fastread.py``, whose comparison this uses). Any difference (a value, the
decoder's position or counters, the registered objects, an exception's class, message or offset)
is a crash, as is a crash of the C code itself. Flags and folders as for ``fuzz_reader.py``.
For memory errors that do not crash, build the extension with ``-fsanitize=address`` and run
with ``LD_PRELOAD`` set to the compiler's ``libasan.so`` (``ASAN_OPTIONS=detect_leaks=0``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["streamser"]):
    import streamser  # noqa: F401  (instrumented before anything else imports it)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import fuzz_reader  # fuzz/ is on sys.path: this script's folder
from test_fastread import FAST, assert_same_steps


def test_one_input(data: bytes) -> None:
    for long_size in (8, 4):
        for referenced in (True, False):
            assert_same_steps(data, long_size, referenced)
            assert_same_steps(bytearray(data), long_size, referenced)


def main() -> None:
    if FAST is None:
        raise SystemExit("streamser._fastread is not built (or STREAMSER_PURE is set)")
    fuzz_reader.WORK.mkdir(parents=True, exist_ok=True)
    atheris.Setup(fuzz_reader.fuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
