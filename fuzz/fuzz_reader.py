"""Atheris fuzz target for streamser's readers (project issue 5). See fuzz/README.md.

    python fuzz/fuzz_reader.py -max_total_time=600 tests/corpus fuzz/regressions

Each input goes through ``fuzz_checks.check``: detection and an explicit format picked by the
first byte, a Reader, a round trip, and every ``FILE_EVERY``-th input also a file on disk
(``load`` mapped and eager, ``open(...).tensors()``, every tensor touched). Only
``streamser.StreamserError`` may escape; anything else is a crash, as are a hang (``-timeout``)
and a huge allocation (``-rss_limit_mb``).

The corpus directories given are read as seeds only, with ``fuzz/seeds`` (zstd-compressed
files) added: new inputs go to ``fuzz/work/corpus`` and crashes to ``fuzz/work/`` (both ignored
by git), so ``tests/corpus`` is never written to. With
``STREAMSER_FUZZ_KEEP_GOING=1`` a crash is saved (once per distinct place it is raised) and
fuzzing goes on, so that one run can find several bugs.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shlex
import sys
import tempfile
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["streamser"]):
    import streamser  # noqa: F401  (instrumented before anything else imports it)

import fuzz_checks  # fuzz/ is on sys.path: this script's folder

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
SEEDS = HERE / "seeds"  # zstd-compressed seeds, which tests/corpus does not have
FILE_EVERY = 8  # one input in this many is also written to a file and loaded from it
DEFAULT_FLAGS = {
    "-rss_limit_mb": "3072",
    "-timeout": "10",
    "-max_len": "262144",
    "-artifact_prefix": f"{WORK}/",
}

_state = {"runs": 0}
_scratch = Path(tempfile.mkdtemp(prefix="streamser-fuzz-"))
_signatures: set[str] = set()
_keep_going = os.environ.get("STREAMSER_FUZZ_KEEP_GOING") == "1"


def _signature(exc: BaseException) -> str:
    """Where the crash was raised: its type and the innermost frame of streamser (or last)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "streamser" in f.filename and "fuzz" not in f.filename]
    frame = (ours or frames)[-1]
    return f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"


def _save_crash(data: bytes, exc: BaseException) -> None:
    signature = _signature(exc)
    if signature in _signatures:
        return
    _signatures.add(signature)
    name = f"crash-{hashlib.sha1(data).hexdigest()}"
    (WORK / name).write_bytes(data)
    text = "".join(traceback.format_exception(exc))
    (WORK / f"{name}.txt").write_text(f"{signature}\n\n{text}")
    print(f"\n== keep-going crash #{len(_signatures)}: {signature} -> {name}", flush=True)


def test_one_input(data: bytes) -> None:
    _state["runs"] += 1
    folder = _scratch if _state["runs"] % FILE_EVERY == 0 else None
    try:
        fuzz_checks.check(data, folder)
    except Exception as exc:
        if not _keep_going:
            raise
        _save_crash(data, exc)


def fuzzer_argv(argv: list[str]) -> list[str]:
    """libFuzzer arguments: defaults for unset flags, and a writable corpus folder first."""
    flags = [arg for arg in argv[1:] if arg.startswith("-")]
    folders = [arg for arg in argv[1:] if not arg.startswith("-")]
    given = {flag.split("=", 1)[0] for flag in flags}
    defaults = [f"{name}={value}" for name, value in DEFAULT_FLAGS.items() if name not in given]
    seeding = folders and all(Path(folder).is_dir() for folder in folders)
    if seeding and not any(flag.startswith(("-merge", "-minimize_crash")) for flag in flags):
        output = WORK / "corpus"
        output.mkdir(parents=True, exist_ok=True)
        extra = [str(SEEDS)] if SEEDS.resolve() not in {Path(f).resolve() for f in folders} else []
        folders = [str(output), *folders, *extra]
    # libFuzzer re-runs argv[0] through the shell for -minimize_crash, -merge and -fork: make
    # it this interpreter running this script, which works without an executable bit.
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(Path(argv[0]).resolve()))}"
    return [command, *defaults, *flags, *folders]


def cap_memory(extra: int) -> None:
    """Let this process map at most ``extra`` bytes more than it has now (Linux), so that a
    huge allocation fails at once as a MemoryError instead of growing until -rss_limit_mb."""
    statm = Path("/proc/self/statm")
    if not statm.exists():
        return
    used = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + extra if hard == resource.RLIM_INFINITY else min(used + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    cap_memory(int(os.environ.get("STREAMSER_FUZZ_MEMORY_MB", "1024")) << 20)
    atheris.Setup(fuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
