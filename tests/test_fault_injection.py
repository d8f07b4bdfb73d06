"""Fault injection for ``save`` (issue 5, "No data lost").

Whatever goes wrong while a file is saved (a disk that fills at any one of the save's writes, a
real file size limit, the process killed mid-write) the file that was at the path before stays
byte for byte as it was and loadable, and no temporary file is left behind except the one of a
killed process, which the next save removes. Arrays loaded lazily from a file keep their values
when the file is replaced under them.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import deadline

import streamser
import streamser.api
import streamser.io.atomic
import streamser.io.sink
from streamser import LuaTable
from streamser.io.writeback import WriteBehindFile

TEMP_SUFFIX = ".streamser-tmp"
MiB = 1 << 20
KERNEL_COPY_MIN = 16 * MiB  # arrays of np.memmap at least this big go through copy_file_range
COPY_STEP = 4 * MiB  # the injected copy_file_range copies at most this much per call

needs_posix = pytest.mark.skipif(os.name != "posix", reason="POSIX processes and limits")


# --- helpers ---------------------------------------------------------------------------------


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{TEMP_SUFFIX}"))


def old_value() -> dict[str, Any]:
    return {"name": "old", "w": np.arange(12, dtype=np.float32).reshape(3, 4), "n": [1, 2, 3]}


def save_old(path: Path) -> bytes:
    """Save the value that must survive, and return the bytes it was saved as."""
    streamser.save(path, old_value())
    return path.read_bytes()


def assert_old_file_intact(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before, "the previous file changed"
    loaded = streamser.load(path)
    assert loaded["name"] == "old"
    np.testing.assert_array_equal(loaded["w"], old_value()["w"])
    del loaded


def write_floats(path: Path, nbytes: int, fill: int) -> None:
    np.full(nbytes // 4, fill, dtype=np.float32).tofile(path)


def new_value(memmap: np.memmap[Any, Any] | None) -> dict[str, Any]:
    """Several tensors: small ones, one past 1 MiB, a strided view, a chunked one, a memmap."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((768, 1024)).astype(np.float32)  # 3 MiB
    value: dict[str, Any] = {
        "name": "new",
        "small": np.arange(5, dtype=np.int64),
        "half": np.linspace(0, 1, 33, dtype=np.float16),
        "big": rng.standard_normal(MiB // 2).astype(np.float64),  # 4 MiB, passed straight on
        "strided": base[::2, ::3],  # not contiguous: copied out in bounded pieces
        "chunked": np.ones(KERNEL_COPY_MIN // 8 + 1234, dtype=np.float64),  # > one chunk
        "bytes": np.frombuffer(rng.bytes(MiB + 7), dtype=np.uint8),
    }
    if memmap is not None:
        value["mapped"] = memmap
    return value


class FaultPlan:
    """Counts the save's writes and kernel copies; from call ``fail_at`` on, the disk is full.

    Call ``fail_at`` is a short one (half of what was asked, as a disk that fills part-way
    accepts), and every later call raises ``OSError(ENOSPC)``. ``fail_at=None`` only counts.
    """

    def __init__(self, fail_at: int | None) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.writes = 0
        self.copies = 0

    def next_call(self) -> bool:
        """True when this call is the short one; raises when the disk is already full."""
        self.calls += 1
        if self.fail_at is None or self.calls < self.fail_at:
            return False
        if self.calls == self.fail_at:
            return True
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def install_faults(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan) -> None:
    """Route the temporary file's writes and ``os.copy_file_range`` through ``plan``."""
    real_copy = os.copy_file_range

    class FaultyFile(WriteBehindFile):
        def write(self, data: Any) -> int:
            plan.writes += 1
            view = memoryview(data).cast("B")
            if plan.next_call():
                view = view[: max(1, view.nbytes // 2)]
            return super().write(view)

    def faulty_copy(src: int, dst: int, count: int, offset_src: Any = None, *rest: Any) -> int:
        plan.copies += 1
        count = min(count, COPY_STEP)
        if plan.next_call():
            count = max(1, count // 2)
        return real_copy(src, dst, count, offset_src, *rest)

    monkeypatch.setattr(streamser.io.atomic, "WriteBehindFile", FaultyFile)
    monkeypatch.setattr(streamser.io.sink.os, "copy_file_range", faulty_copy)


def run_child(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.002)


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


# --- 1. a disk that fills at the Nth write -------------------------------------------------------


@pytest.fixture(scope="module")
def shared_memmap(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], np.memmap[Any, Any]]]:
    """A new mapping of the user's data at each call: the kernel copies only from mappings this
    process has not faulted in yet (one that was read is written through, see io/arrays)."""
    path = tmp_path_factory.mktemp("source") / "user-data.f32"
    nbytes = KERNEL_COPY_MIN + 3 * MiB
    write_floats(path, nbytes, 7)
    yield lambda: np.memmap(path, dtype=np.float32, mode="r", shape=(nbytes // 4,))
    path.unlink()


@needs_posix
@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no os.copy_file_range")
@pytest.mark.parametrize("fmt", ["binary", "b32"])
@pytest.mark.parametrize("server", [False, True], ids=["local", "file-server"])
def test_disk_full_at_every_write(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_memmap: Callable[[], np.memmap[Any, Any]],
    fmt: str,
    server: bool,
) -> None:
    """The memmap tensor goes through copy_file_range where a file server copies (NFS, SMB),
    else through writes from mapped windows of its file: a full disk at any call fails cleanly."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: server)
    value = new_value(shared_memmap())
    expected = streamser.serialize(new_value(shared_memmap()), format=fmt)
    path = tmp_path / "model.t7"
    before = save_old(path)

    counting = FaultPlan(None)
    with monkeypatch.context() as patch:
        install_faults(patch, counting)
        streamser.save(path, value, format=fmt)
    assert path.read_bytes() == expected, "a save through capped kernel copies differs"
    assert counting.writes > 5, "the injected write was unused: is WriteBehindFile gone?"
    if server:
        assert counting.copies >= 2, "the memmap tensor did not go through copy_file_range"
    else:
        assert counting.copies == 0, "copy_file_range used on a local file system"
    total = counting.calls

    path.write_bytes(before)
    for fail_at in range(1, total + 1):
        plan = FaultPlan(fail_at)
        with monkeypatch.context() as patch:
            install_faults(patch, plan)
            with deadline(30), pytest.raises(OSError, match="No space") as caught:
                streamser.save(path, value, format=fmt)
        assert caught.value.errno == errno.ENOSPC, f"fault at call {fail_at}: {caught.value!r}"
        assert plan.calls > fail_at, f"fault at call {fail_at} never reached the full disk"
        assert temporaries(tmp_path) == [], f"fault at call {fail_at} left a temporary file"
        assert_old_file_intact(path, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.t7"]


@needs_posix
def test_disk_full_at_every_write_ascii(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    value = {
        "name": "new",
        "raw": np.frombuffer(np.random.default_rng(1).bytes(2 * MiB), dtype=np.uint8),
        "floats": np.linspace(-1, 1, 200_000, dtype=np.float32),  # about 2.6 MB of text
        "ints": np.arange(1000, dtype=np.int16),
    }
    path = tmp_path / "model.t7"
    before = save_old(path)
    counting = FaultPlan(None)
    with monkeypatch.context() as patch:
        install_faults(patch, counting)
        streamser.save(path, value, format="ascii")
    assert path.read_bytes() == streamser.serialize(value, format="ascii")
    assert counting.writes > 3
    path.write_bytes(before)
    for fail_at in range(1, counting.calls + 1):
        with monkeypatch.context() as patch:
            install_faults(patch, FaultPlan(fail_at))
            with deadline(30), pytest.raises(OSError, match="No space"):
                streamser.save(path, value, format="ascii")
        assert temporaries(tmp_path) == []
        assert_old_file_intact(path, before)


@needs_posix
def test_disk_full_for_a_new_path_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = new_value(None)
    for fail_at in (1, 3):
        with monkeypatch.context() as patch:
            install_faults(patch, FaultPlan(fail_at))
            with pytest.raises(OSError, match="No space"):
                streamser.save(tmp_path / "fresh.t7", value)
        assert list(tmp_path.iterdir()) == []


@needs_posix
@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no os.copy_file_range")
@pytest.mark.parametrize(
    "stop_after",
    [
        pytest.param(MiB, id="element-boundary"),
        pytest.param(MiB + 3, id="mid-element"),  # resumed at the byte, inside an element
    ],
)
def test_kernel_copy_failing_part_way_is_finished_by_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_memmap: Callable[[], np.memmap[Any, Any]],
    stop_after: int,
) -> None:
    """copy_file_range copies some bytes, then fails (EIO) while plain writes still work:
    the save falls back to writing the rest, and the file is exactly what serialize gives."""
    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: True)
    value = {"name": "new", "mapped": shared_memmap(), "after": np.arange(3, dtype=np.int16)}
    real_copy = os.copy_file_range
    calls = []

    def copy_then_fail(src: int, dst: int, count: int, offset_src: Any = None, *rest: Any) -> int:
        calls.append(count)
        if len(calls) == 1:
            return real_copy(src, dst, min(count, stop_after), offset_src, *rest)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(streamser.io.sink.os, "copy_file_range", copy_then_fail)
    path = tmp_path / "model.t7"
    streamser.save(path, value)
    monkeypatch.undo()
    assert len(calls) == 2, "the memmap tensor did not go through copy_file_range"
    assert path.read_bytes() == streamser.serialize(value)


# --- 2. a real limit: RLIMIT_FSIZE in a child process ------------------------------------------

_FSIZE_CHILD = """
    import errno, resource, signal, sys
    import numpy as np
    import streamser

    path, limit, kind, source, fmt = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    if kind == "memory":
        data = np.arange(3 * limit // 8 + 1, dtype=np.float64)  # three times the limit
    else:
        data = np.memmap(source, dtype=np.float32, mode="r")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail with EFBIG instead of dying
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        streamser.save(path, {"name": "new", "data": data, "tail": [1, 2]}, format=fmt)
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, exc.errno))
        sys.exit(0)
    print("saved")
    sys.exit(1)
"""


@needs_posix
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="no SIGXFSZ")
@pytest.mark.parametrize(
    ("source", "fmt"),
    [("memory", "binary"), ("memmap", "binary"), ("memory", "ascii")],
)
def test_file_size_limit_keeps_old_file(tmp_path: Path, source: str, fmt: str) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "model.t7"
    before = save_old(path)
    limit = 4 * MiB if fmt == "binary" else MiB
    source_path = tmp_path / "user-data.f32"
    if source == "memmap":  # big enough for the kernel copy, several times the limit
        write_floats(source_path, KERNEL_COPY_MIN + MiB, fill=3)
    child = run_child(_FSIZE_CHILD, str(path), str(limit), source, str(source_path), fmt)
    out, err = child.communicate(timeout=60)
    source_path.unlink(missing_ok=True)
    assert child.returncode == 0, f"child: rc={child.returncode} {out!r} {err.decode()[-2000:]}"
    assert out.strip() == b"EFBIG", out
    assert temporaries(folder) == [], "the failed save left its temporary file"
    assert_old_file_intact(path, before)
    assert sorted(p.name for p in folder.iterdir()) == ["model.t7"]


# --- 3. SIGKILL mid-save ------------------------------------------------------------------------

_KILLED_CHILD = """
    import sys
    import numpy as np
    import streamser

    path = sys.argv[1]
    pieces = 16  # 16 x 64 MiB = 1 GiB, made one at a time so memory stays small
    items = ((i + 1, np.full(1 << 23, i, dtype=np.float64)) for i in range(pieces))
    streamser.save(path, streamser.TableStream(pieces, items))
    print("finished")
"""


@needs_posix
def test_sigkill_mid_save_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.t7"
    before = save_old(path)
    child = run_child(_KILLED_CHILD, str(path))
    try:
        mine = f".{path.name}.{child.pid}-"

        def growing_temp() -> list[Path]:
            return [p for p in temporaries(tmp_path) if p.name.startswith(mine)]

        def grown() -> bool:
            if child.poll() is not None:
                raise AssertionError(f"the child ended unkilled (rc={child.returncode})")
            found = growing_temp()
            return bool(found) and size_of(found[0]) >= 192 * MiB

        wait_until(grown, 60, "the child's temporary file to grow past 192 MiB")
        assert_old_file_intact(path, before)  # mid-save, the old file is untouched
        assert streamser.io.atomic.remove_stale_temporaries(path) == [], (
            "removed a live save's file"
        )
        assert growing_temp(), "the live save's temporary file was removed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        _out, err = child.communicate(timeout=30)  # reaps the child and closes its pipes
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert_old_file_intact(path, before)
    stale = temporaries(tmp_path)
    assert len(stale) == 1, stale
    assert stale[0].name.startswith(mine), stale
    assert stale[0].stat().st_size >= 192 * MiB

    streamser.save(path, {"name": "after", "w": np.ones(3, np.float32)})
    assert temporaries(tmp_path) == [], "the dead process's temporary file was not removed"
    assert streamser.load(path)["name"] == "after"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.t7"]


# --- 4. lazy views outlive the file they map ---------------------------------------------------


def _lazy_value() -> dict[str, Any]:
    base = np.arange(60_000, dtype=np.float32).reshape(300, 200)
    return {
        "base": base,
        "view": base[10:20, ::4],  # a view into the same storage
        "longs": np.arange(-50, 50, dtype=np.int64),
        "bytes": np.arange(256, dtype=np.uint8),
        "nested": LuaTable([(1, np.full(7, 2.5)), ("k", np.eye(3, dtype=np.float16))]),
    }


def _copies(value: Any) -> dict[str, np.ndarray[Any, Any]]:
    return {
        "base": np.array(value["base"]),
        "view": np.array(value["view"]),
        "longs": np.array(value["longs"]),
        "bytes": np.array(value["bytes"]),
        "nested1": np.array(value["nested"][1]),
        "nestedk": np.array(value["nested"]["k"]),
    }


def _assert_same(value: Any, expected: dict[str, np.ndarray[Any, Any]]) -> None:
    for key, array in _copies(value).items():
        np.testing.assert_array_equal(array, expected[key], err_msg=key)


def test_lazy_views_survive_replacement(tmp_path: Path) -> None:
    path = tmp_path / "model.t7"
    streamser.save(path, _lazy_value())
    expected = _copies(_lazy_value())
    lazy = streamser.load(path)  # mapped
    assert np.shares_memory(lazy["base"], lazy["view"]), "views of one storage were copied"
    handle = streamser.open(path)
    from_handle = handle.load()
    rows = handle.get_slice("base")
    _assert_same(lazy, expected)

    smaller = {"base": np.zeros((2, 2), np.float32), "other": "x"}
    bigger = {"base": np.full((600, 400), -1, np.float32), "noise": np.ones(MiB, np.uint8)}
    for replacement in (smaller, bigger, smaller):
        streamser.save(path, replacement)
        _assert_same(lazy, expected)
        _assert_same(from_handle, expected)
        np.testing.assert_array_equal(rows[5:7], expected["base"][5:7])
        np.testing.assert_array_equal(streamser.load(path)["base"], replacement["base"])
    handle.close()
    _assert_same(from_handle, expected)  # closing the handle does not invalidate views
    assert [p.name for p in tmp_path.iterdir()] == ["model.t7"]


def test_saving_a_lazy_value_over_its_own_file(tmp_path: Path) -> None:
    """The writer reads the mapping of the very file it replaces: same bytes come out."""
    path = tmp_path / "model.t7"
    streamser.save(path, _lazy_value())
    before = path.read_bytes()
    lazy = streamser.load(path)
    expected = _copies(lazy)
    for _ in range(2):
        streamser.save(path, lazy)
        assert path.read_bytes() == before
        _assert_same(lazy, expected)


@needs_posix
def test_saving_a_memmap_of_the_target_over_itself(tmp_path: Path) -> None:
    """A shared np.memmap of the target's own tensor data, copied by the kernel into the
    temporary file, then renamed over the file it maps: the data and the mapping survive."""
    path = tmp_path / "model.t7"
    count = KERNEL_COPY_MIN // 4 + 99
    data = np.arange(count, dtype=np.float32)
    streamser.save(path, {"w": data})
    (info,) = streamser.open(path).tensors()
    assert info.offset is not None
    mapped = np.memmap(path, dtype=np.float32, mode="r", offset=info.offset, shape=(count,))
    streamser.save(path, {"w": mapped, "again": True})
    np.testing.assert_array_equal(mapped, data)  # still the old (unlinked) file's pages
    loaded = streamser.load(path)
    assert loaded["again"] is True
    np.testing.assert_array_equal(loaded["w"], data)
    del mapped, loaded
