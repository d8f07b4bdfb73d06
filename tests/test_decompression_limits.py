"""Decompression under the default limits (issue 13): what the default is, how output grows,
and what happens when memory runs out. The full-size bombs are ``python -m bench.bombs``; its
smoke run (small sizes, a 4 GiB address-space cap, every limit at its default) is a test here.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard

import streamser
from streamser import speedups
from streamser.io.compression import decompress, read_seek_table, seek_table
from streamser.spec import limits
from streamser.spec.limits import MIN_DECOMPRESSED, Limits, default_max_decompressed

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


def run_python(code: str, *, address_space: int | None = None) -> str:
    """Run ``code`` in a fresh interpreter (under an RLIMIT_AS cap if given); its stdout."""
    prefix = ""
    if address_space is not None:
        prefix = (
            "import resource\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
        )
    result = subprocess.run(
        [sys.executable, "-c", prefix + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


# --- the default ---------------------------------------------------------------------------------


def test_default_is_half_the_room_left_under_rlimit_as() -> None:
    """Under a 2 GiB address-space cap the default follows the cap, not the machine's RAM."""
    out = run_python(
        """
        from streamser.spec.limits import default_max_decompressed, memory_room
        print(memory_room(), default_max_decompressed())
        """,
        address_space=2 << 30,
    )
    room, default = map(int, out.split())
    assert room < 2 << 30
    assert default == max(MIN_DECOMPRESSED, room // 2)


def test_default_is_at_most_half_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Against one reading of MemAvailable (it moves between two reads on a busy machine),
    measured afresh rather than taken from the default's one-second cache."""
    available = limits._available_memory()
    assert available is not None
    monkeypatch.setattr(limits, "_available_memory", lambda: available)
    monkeypatch.setattr(limits, "_measured", (-1e9, -1, 0))
    assert MIN_DECOMPRESSED <= default_max_decompressed() <= max(MIN_DECOMPRESSED, available // 2)
    assert Limits().max_decompressed == default_max_decompressed()


def _fake_system(root: Path, meminfo_kb: int, cgroup_line: str) -> None:
    (root / "proc" / "self").mkdir(parents=True)
    (root / "proc" / "meminfo").write_text(
        f"MemTotal:       99999999 kB\nMemAvailable:   {meminfo_kb} kB\n"
    )
    (root / "proc" / "self" / "cgroup").write_text(cgroup_line + "\n")


@pytest.mark.parametrize("version", [1, 2])
def test_cgroup_memory_limit_bounds_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """A container with memory.max = 1 GiB, 300 MiB used of which 100 MiB reclaimable page
    cache, on a machine with 16 GiB available: the room (the limit of the parent
    cgroup, 4 GiB, is looser) is 1024 - 200 = 824 MiB, so the default is 412 MiB."""
    line = "0::/box/job" if version == 2 else "4:memory:/box/job"
    _fake_system(tmp_path, 16 << 20, line)
    base = tmp_path / "cgroup" / ("" if version == 2 else "memory")
    names = (
        ("memory.max", "memory.current", "inactive_file")
        if version == 2
        else ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
    )
    for folder, limit, used in (
        (base / "box" / "job", 1 << 30, 300 * MiB),
        (base / "box", 4 << 30, 0),
    ):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / names[0]).write_text(f"{limit}\n")
        (folder / names[1]).write_text(f"{used}\n")
        (folder / "memory.stat").write_text(f"anon 5\n{names[2]} {100 * MiB}\n")
    (base / names[0]).write_text("max\n" if version == 2 else "9223372036854771712\n")
    (base / names[1]).write_text("1\n")
    monkeypatch.setattr(limits, "_PROC", tmp_path / "proc")
    monkeypatch.setattr(limits, "_CGROUP", tmp_path / "cgroup")
    monkeypatch.setattr(limits, "_address_space_room", lambda: None)
    assert limits.memory_room() == 824 * MiB
    monkeypatch.setattr(limits, "_measured", (-1e9, -1, 0))
    assert default_max_decompressed() == 412 * MiB


def test_default_never_drops_below_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "memory_room", lambda: 1000)
    monkeypatch.setattr(limits, "_measured", (-1e9, -1, 0))
    assert default_max_decompressed() == MIN_DECOMPRESSED


# --- refusing claims at once ---------------------------------------------------------------------


def claiming(total: int, frames: int = 4) -> bytes:
    """A seekable stream whose table claims ``total`` bytes, with only tiny frames behind it."""
    frame = zstandard.ZstdCompressor().compress(b"x")
    entries = [(len(frame), total // frames)] * frames
    return frame * frames + seek_table(entries)


def test_a_claim_over_the_default_fails_at_once() -> None:
    """A table claiming more than the default (of twice the machine's memory, say) is refused
    before a frame is read, in far less than a second, by every reader."""
    data = claiming(4 * max(default_max_decompressed(), 1 << 30), frames=4096)
    start = time.process_time()
    for read in (streamser.deserialize, lambda d: decompress(d)):
        with pytest.raises(streamser.LimitError, match="max_decompressed"):
            read(data)
    assert time.process_time() - start < 0.5


def test_frames_that_disagree_with_the_seek_table_are_format_errors() -> None:
    data = streamser.serialize({"w": np.arange(10_000.0)}, compress="zstd")
    entries = read_seek_table(data)
    assert entries is not None
    body = data[: sum(c for c, _ in entries)]
    (packed, size), *rest = entries
    for wrong in ([(packed, size + 1), *rest], [(packed, size - 1), *rest]):
        with pytest.raises(streamser.FormatError, match="seek table"):
            decompress(body + seek_table(wrong))


# --- frames walked before they are decompressed ------------------------------------------------


@pytest.mark.parametrize("content_size", [True, False])
@pytest.mark.parametrize("checksum", [True, False])
def test_a_truncated_plain_frame_is_a_truncated_error(content_size: bool, checksum: bool) -> None:
    """zstd's stream reader stops quietly at the end of its input; the frame walk does not."""
    plain = streamser.serialize({"w": np.random.default_rng(0).random(50_000)})
    options = {"write_content_size": content_size, "write_checksum": checksum}
    whole = zstandard.ZstdCompressor(**options).compress(plain)
    assert bytes(decompress(whole)) == plain
    for cut in (len(whole) - 1, len(whole) - 4, len(whole) // 2, 6):
        with pytest.raises(streamser.TruncatedError):
            decompress(whole[:cut])


def test_concatenated_and_skippable_frames() -> None:
    one = zstandard.ZstdCompressor(write_content_size=False).compress(b"abc" * 1000)
    skippable = (0x184D2A51).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"xyz"
    assert bytes(decompress(one + skippable + one + skippable)) == b"abc" * 2000
    assert decompress(skippable) == b""


def test_plain_stream_past_the_limit() -> None:
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(8 * MiB))
    assert len(decompress(bomb, max_size=8 * MiB)) == 8 * MiB
    with pytest.raises(streamser.LimitError, match="max_decompressed=8,388,607"):
        decompress(bomb, max_size=8 * MiB - 1)


# --- memory ------------------------------------------------------------------------------------


def test_output_grows_without_copies() -> None:
    """256 MiB from a 8 KB frame without a content size: the high-water mark of resident
    memory rises by the output and a few MiB, not twice the output (as doubling did)."""
    out = run_python(
        """
        import zstandard
        from streamser.io.compression import decompress
        bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(256 << 20))
        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        open("/proc/self/clear_refs", "w").write("5")
        before = status("VmRSS")
        data = decompress(bomb)
        print(len(data), status("VmHWM") - before)
        """
    )
    size, added = map(int, out.split())
    assert size == 256 * MiB
    assert added < size + 16 * MiB


def test_running_out_of_address_space_is_a_limit_error() -> None:
    """With max_decompressed set far above what RLIMIT_AS allows, growing the output fails:
    the error is a LimitError that says memory ran out, not a MemoryError."""
    out = run_python(
        """
        import zstandard, streamser
        packer = zstandard.ZstdCompressor(write_content_size=False).compressobj()
        zeros = bytes(16 << 20)
        bomb = b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()
        try:
            streamser.deserialize(bomb, max_decompressed=1 << 40)
        except streamser.LimitError as exc:
            print("LimitError:", exc)
            print(exc.offset == 0, len(bomb))
        """,
        address_space=768 * MiB,
    )
    assert out.startswith("LimitError: out of memory while decompressing"), out
    # one frame: the error points at it (byte 0), as every FormatError gives a position
    assert "(at byte 0)" in out, out
    assert out.split()[-2] == "True", out


def test_memory_errors_while_reading_are_limit_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamser.graph import reader

    def no_memory(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(reader.GraphReader, "read_object", no_memory)
    with pytest.raises(streamser.LimitError, match="out of memory") as caught:
        streamser.deserialize(streamser.serialize([1, 2]))
    assert not caught.value.__notes__ if hasattr(caught.value, "__notes__") else True


@pytest.mark.parametrize("compiled", [True, False])
def test_memory_errors_name_the_record_being_read(
    monkeypatch: pytest.MonkeyPatch, compiled: bool
) -> None:
    """A MemoryError half way through a value is a LimitError at the start of the record being
    read (here the tensor whose storage could not be had), found without trying the other
    long size. The compiled loop, when memory runs out in it, hands over to the Python one,
    which knows where each record starts."""
    from streamser import _fastread
    from streamser.codecs.binary import BinaryDecoder

    data = streamser.serialize({"a": np.arange(3.0), "b": np.arange(100_000.0)})
    elements_at = data.index(np.arange(100_000.0).tobytes())
    original = BinaryDecoder.read_array

    def refusing(self: BinaryDecoder, element: object, count: int) -> object:
        if count == 100_000:
            raise MemoryError
        return original(self, element, count)  # type: ignore[arg-type]

    def compiled_out_of_memory(*args: object) -> object:
        raise MemoryError

    monkeypatch.setattr(BinaryDecoder, "read_array", refusing)
    if compiled:
        monkeypatch.setattr(_fastread, "read", compiled_out_of_memory)
    context = contextlib.nullcontext() if compiled else speedups.pure_python()
    with context, pytest.raises(streamser.LimitError, match="out of memory") as caught:
        streamser.deserialize(data)
    offset = caught.value.offset
    assert offset is not None
    assert 0 < elements_at - offset < 128  # the tensor's record, its storage's inside it
    assert data[offset : offset + 4] == (4).to_bytes(4, "little")  # a Torch object's tag
    assert f"(at byte {offset})" in str(caught.value)
    assert not getattr(caught.value, "__notes__", None)  # b32 was not tried


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_bomb_targets_at_small_sizes() -> None:
    """``python -m bench.bombs --smoke``: each bomb refused or read without doubling, the
    16 GiB claim refused within a second, ordinary checkpoints read, under RLIMIT_AS 4 GiB."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.bombs", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "every target met" in result.stdout


def test_without_mremap_the_buffer_grows_by_copying(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where mappings cannot be resized (macOS, Windows) a bigger one is made and the bytes
    copied: the same result, at the cost of a copy."""
    import mmap

    from streamser.io import growing

    class NoRemap(mmap.mmap):
        def resize(self, newsize: int) -> None:
            raise SystemError("mmap: resizing not available--no mremap()")

    monkeypatch.setattr(growing, "_new_map", lambda size: NoRemap(-1, size))
    plain = np.random.default_rng(1).integers(0, 4, 3 * MiB, dtype=np.uint8).tobytes()
    packed = zstandard.ZstdCompressor(write_content_size=False).compress(plain)
    result = decompress(packed)
    assert isinstance(result, NoRemap)
    assert bytes(result) == plain
