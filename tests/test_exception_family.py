"""Inputs that once escaped the exception family (issue 13), through every way of reading them.

Each reproducer is read by ``deserialize`` (compiled loop and pure Python), ``load`` (mapped
and not), ``open`` (index and every tensor) and the command line (``verify``, ``info``, ``dis``
in process): the answer must be a value or a :class:`streamser.StreamserError`, and the command
line must answer in one line with exit status 2, never with a traceback.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import FormatError, StreamserError, TorchObject, speedups
from streamser.cli.main import main as cli_main
from streamser.io.compression import SeekableZstdWriter

OVERLONG_VERSION = b"V 0x" + b"f" * 300  # 2**1200: past any double


@contextmanager
def compiled_loop(enabled: bool) -> Iterator[None]:
    """The compiled record loop on (as by default) or off (pure Python), for one block."""
    with nullcontext() if enabled else speedups.pure_python():
        yield


def with_version(fmt: str, version: bytes, *, keep_name: bool = True) -> bytes:
    """An ``nn.Thing`` object whose version string is ``version`` (and whose class name is
    dropped unless ``keep_name``, so that the version string is read as the class name)."""
    data = streamser.serialize(TorchObject("nn.Thing", {"a": 1}, 1), format=fmt)
    name = (b"8\nnn.Thing\n" if fmt == "ascii" else struct.pack("<i", 8) + b"nn.Thing") * keep_name
    if fmt == "ascii":
        return data.replace(b"3\nV 1\n8\nnn.Thing\n", b"%d\n%s\n" % (len(version), version) + name)
    old = struct.pack("<i", 3) + b"V 1" + struct.pack("<i", 8) + b"nn.Thing"
    return data.replace(old, struct.pack("<i", len(version)) + version + name)


def seekable(plain: bytes) -> bytes:
    """``plain`` in the seekable zstd format, as ``save(..., compress="zstd")`` writes it."""
    pieces: list[bytes] = []
    writer = SeekableZstdWriter(pieces.append)
    writer.write(plain)
    writer.close()
    return b"".join(pieces)


def empty_but_huge_tensor() -> bytes:
    """``{"e": tensor}`` of size [0, 2**62]: no elements, yet a shape numpy cannot make."""
    plain = bytearray(streamser.serialize({"e": np.ones((1, 2), np.float32)}))
    at = plain.index(struct.pack("<qq", 1, 2))
    plain[at : at + 16] = struct.pack("<qq", 0, 2**62)
    return bytes(plain)


def outcome(read: Callable[[], Any]) -> Any:
    """The value ``read`` returns or the StreamserError it raises; anything else propagates."""
    try:
        return read()
    except StreamserError as exc:
        return exc


def every_reading(path: Path) -> dict[str, Any]:
    """The outcome of each way of reading ``path``, by name."""
    data = path.read_bytes()
    outcomes: dict[str, Any] = {}
    for compiled in (True, False):
        with compiled_loop(compiled):
            outcomes[f"deserialize compiled={compiled}"] = outcome(
                lambda: streamser.deserialize(data)
            )
            for mapped in (True, False):
                outcomes[f"load mmap={mapped} compiled={compiled}"] = outcome(
                    lambda mapped=mapped: streamser.load(path, mmap=mapped)
                )
            outcomes[f"open compiled={compiled}"] = outcome(lambda: _open_everything(path))
    return outcomes


def _open_everything(path: Path) -> Any:
    with streamser.open(path) as handle:
        for info in handle.tensors():  # by path, as a user would: each read on its own
            np.asarray(handle[info.path])
            handle.get_slice(info.path)[:1]
        arrays = [np.asarray(array) for _, array in handle.arrays()]
        return handle.load(), arrays


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = cli_main(list(argv))
    captured = capsys.readouterr()
    return status, captured.err


@pytest.mark.parametrize("fmt", ["binary", "b32", "ascii"])
def test_overlong_hex_version_is_a_class_name_not_an_overflow(tmp_path: Path, fmt: str) -> None:
    """``"V 0x"`` + 300 ``f``s is no finite number, so (as for ``"V inf"``) the string is the
    class name of an unversioned object; its payload follows at once."""
    path = tmp_path / "version.t7"
    path.write_bytes(with_version(fmt, OVERLONG_VERSION, keep_name=False))
    for how, value in every_reading(path).items():
        if how.startswith("open"):
            value = value[0]
        assert isinstance(value, TorchObject), how
        assert value.typename == OVERLONG_VERSION.decode(), how
        assert value.version == 0, how
        assert value["a"] == 1, how


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_overlong_hex_version_before_a_class_name_is_a_format_error(
    tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "version.t7"
    path.write_bytes(with_version(fmt, OVERLONG_VERSION))
    for how, value in every_reading(path).items():
        assert isinstance(value, FormatError), how
    for command in ("verify", "info", "dis", "show"):
        status, err = run_cli(capsys, command, str(path))
        assert status == 2, command
        assert err.startswith("streamser: damaged file:"), (command, err)
        assert "Traceback" not in err


def test_hex_versions_that_fit_are_numbers() -> None:
    value = streamser.deserialize(with_version("binary", b"V 0x10"))
    assert value.version == 16


@pytest.mark.parametrize(
    ("token", "expected"),
    [(b"0x1p99999", np.inf), (b"-0x1p99999", -np.inf), (b"0x1p-99999", 0.0), (b"0x1p4", 16)],
)
def test_ascii_hex_numbers_out_of_range_are_infinite_as_strtod_gives(
    token: bytes, expected: float
) -> None:
    assert streamser.deserialize(b"1\n" + token + b"\n", format="ascii") == expected
    storage = b"4\n1\n3\nV 1\n19\ntorch.DoubleStorage\n2\n" + token + b" 1\n"
    array = streamser.deserialize(storage, format="ascii").array
    assert array.tolist() == [expected, 1.0]


def test_ascii_hex_numbers_out_of_range_through_every_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``0x1p99999`` in a file: infinite through load, open and the command line alike."""
    path = tmp_path / "hex.t7"
    table = b"3\n1\n1\n2\n1\nx\n1\n0x1p99999\n"  # {x = 0x1p99999}
    path.write_bytes(table)
    for how, value in every_reading(path).items():
        assert not isinstance(value, BaseException), how
        loaded = value[0] if isinstance(value, tuple) else value
        assert loaded["x"] == np.inf, how
    assert run_cli(capsys, "verify", str(path))[0] == 0
    assert cli_main(["show", str(path)]) == 0
    assert "x: inf" in capsys.readouterr().out


def test_memory_errors_in_open_and_lazy_reads_are_limit_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MemoryError while a compressed file is opened, or while one of its tensors is read,
    surfaces as a LimitError that says memory ran out."""
    from streamser.graph import reader
    from streamser.io.seekable import FrameSource

    path = tmp_path / "lazy.t7"
    streamser.save(path, {"w": np.arange(1000.0)}, compress="zstd")
    with streamser.open(path) as handle:

        def no_memory(*args: object, **kwargs: object) -> None:
            raise MemoryError

        with monkeypatch.context() as patch:
            patch.setattr(FrameSource, "read_into", no_memory)
            with pytest.raises(streamser.LimitError, match="out of memory") as caught:
                np.asarray(handle["w"])
            assert caught.value.offset == handle.tensors()[0].offset  # where its bytes start
        assert np.asarray(handle["w"]).sum() == 499500.0
    monkeypatch.setattr(reader.GraphReader, "read_object", no_memory)
    with pytest.raises(streamser.LimitError, match="out of memory"):
        streamser.open(path)


def test_empty_tensor_too_big_for_numpy_in_a_seekable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``load`` refused the shape [0, 2**62] while ``open`` accepted it and then raised numpy's
    bare ValueError when the tensor was read: both now refuse it as a FormatError."""
    path = tmp_path / "huge-empty.t7"
    path.write_bytes(seekable(empty_but_huge_tensor()))
    for how, value in every_reading(path).items():
        assert isinstance(value, FormatError), how
        assert "too big" in str(value), how
    status, err = run_cli(capsys, "verify", str(path))
    assert (status, err.startswith("streamser: damaged file:")) == (2, True)
