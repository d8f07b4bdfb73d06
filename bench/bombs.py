"""zstd bombs against the default limits, each read in a child process under an address-space cap.

``python -m bench.bombs`` builds the inputs of issue 13 at full size and reads each one through
``load`` (mapped and not), ``deserialize`` and ``open`` (everything read), each in a fresh child
process with ``RLIMIT_AS`` at ``--address-space`` (default 12G) and every limit at its default:

* a seekable file holding one 1 GiB string (about 32 KB compressed);
* a plain zstd frame without a content size expanding to 4 GiB (about 131 KB);
* a seekable file whose seek table claims 16 GiB (4,096 frames of zeros, about 524 KB);
* ordinary 256 MiB checkpoints of float32 weights, seekable and plain.

The targets: a bomb either raises ``LimitError`` or loads without doubling (peak RSS over the
child's starting RSS at most the decompressed bytes, plus the loaded value where it is a copy
(a string), plus the compressed input (mapped or read: a few KB for a bomb), plus 64 MiB);
the 16 GiB claim fails with ``LimitError`` in under a second;
the ordinary checkpoints load. Exit status 1 when a target is missed. ``--smoke`` (CI) uses
small sizes (a 32 MiB string, a 128 MiB frame, 16 MiB checkpoints; the claim stays 16 GiB,
which costs nothing to build) and two calls (``load``, ``open``) under a 4 GiB cap.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

import streamser
from streamser.io.compression import seek_table

from .units import format_bytes, parse_size

MiB = 1 << 20
GiB = 1 << 30
FRAME = 4 * MiB
SLACK = 64 * MiB  # allowed beyond the decompressed bytes and the value's own copy
CLAIM_SECONDS = 1.0
CALLS = ("load", "load mmap=False", "deserialize", "open")


@dataclass(frozen=True)
class Bomb:
    """One input: its file, what it expands to, the bytes of its value if that is a copy."""

    name: str
    path: Path
    plain: int  # decompressed bytes
    copied: int  # bytes of the loaded value that are not views of the decompressed buffer
    must_load: bool = False  # an ordinary checkpoint: refusing it is a failure
    must_refuse_within: float | None = None  # seconds to a LimitError, if it must be refused


# --- building the inputs -----------------------------------------------------------------------


def _seekable(path: Path, frames: Iterator[bytes]) -> None:
    """Write ``frames`` (plain pieces, each at most one frame) as a seekable zstd file, each
    distinct piece compressed once (bombs repeat one frame thousands of times)."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=True)
    last: tuple[bytes, bytes] = (b"", b"")  # (piece, compressed): the repeated frame
    entries = []
    with path.open("wb") as out:
        for piece in frames:
            if piece != last[0]:
                last = (piece, compressor.compress(piece))
            out.write(last[1])
            entries.append((len(last[1]), len(piece)))
        out.write(seek_table(entries))


def _in_frames(head: bytes, fill: bytes, total: int) -> Iterator[bytes]:
    """``head`` then ``fill`` bytes repeated, ``total`` bytes in frames of ``FRAME``."""
    first = head + fill * ((FRAME - len(head)) // len(fill))
    yield first
    whole = fill * (FRAME // len(fill))
    done = len(first)
    while done < total:
        piece = whole if total - done >= FRAME else whole[: total - done]
        yield piece
        done += len(piece)


def string_bomb(path: Path, length: int) -> Bomb:
    """A seekable file holding one Lua string of ``length`` bytes of ``a``."""
    head = (2).to_bytes(4, "little") + length.to_bytes(4, "little")
    _seekable(path, _in_frames(head, b"a", len(head) + length))
    return Bomb(f"seekable, one {format_bytes(length)} string", path, len(head) + length, length)


def storage_header(count: int) -> bytes:
    """A ``torch.ByteStorage`` of ``count`` elements, up to its first element."""

    def string(text: bytes) -> bytes:
        return len(text).to_bytes(4, "little") + text

    return (
        (4).to_bytes(4, "little")
        + (1).to_bytes(4, "little")
        + string(b"V 1")
        + string(b"torch.ByteStorage")
        + count.to_bytes(8, "little")
    )


def plain_bomb(path: Path, size: int) -> Bomb:
    """One zstd frame without a content size: a ByteStorage of zeros, ``size`` bytes in all."""
    head = storage_header(size - len(storage_header(0)))
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=False)
    zeros = bytes(64 * MiB)
    with path.open("wb") as out, compressor.stream_writer(out, closefd=False) as writer:
        writer.write(head)
        left = size - len(head)
        while left:
            writer.write(zeros[: min(left, len(zeros))])
            left -= min(left, len(zeros))
    return Bomb(f"plain frame, {format_bytes(size)}, no content size", path, size, 0)


def claim_bomb(path: Path, size: int) -> Bomb:
    """A seekable file of ``size`` bytes (a ByteStorage of zeros) whose table says so."""
    _seekable(path, _in_frames(storage_header(size - len(storage_header(0))), b"\0", size))
    return Bomb(f"seekable, claims {format_bytes(size)}", path, size, 0, must_refuse_within=1.0)


def checkpoint(path: Path, size: int, *, seekable: bool) -> Bomb:
    """An ordinary checkpoint: float32 weights in 16 MiB tensors, ``size`` bytes of data."""
    rng = np.random.default_rng(0)
    tensors = {
        f"layer{i}": rng.normal(0, 0.02, min(16 * MiB, size - start) // 4).astype(np.float32)
        for i, start in enumerate(range(0, size, 16 * MiB))
    }
    if seekable:
        streamser.save(path, tensors, compress="zstd", level=1)
    else:
        path.write_bytes(zstandard.ZstdCompressor(level=1).compress(streamser.serialize(tensors)))
    kind = "seekable" if seekable else "plain"
    plain = sum(t.nbytes for t in tensors.values()) + 100 * len(tensors)
    return Bomb(f"checkpoint {format_bytes(size)}, {kind}", path, plain, 0, must_load=True)


def build(folder: Path, *, smoke: bool) -> list[Bomb]:
    string, plain, ordinary = (
        (32 * MiB, 128 * MiB, 16 * MiB) if smoke else (GiB, 4 * GiB, 256 * MiB)
    )
    return [
        string_bomb(folder / "string.t7", string),
        plain_bomb(folder / "plain.t7", plain),
        claim_bomb(folder / "claim.t7", 16 * GiB),
        checkpoint(folder / "seekable.t7", ordinary, seekable=True),
        checkpoint(folder / "plain-checkpoint.t7", ordinary, seekable=False),
    ]


# --- reading one in a child --------------------------------------------------------------------


def _status(key: str) -> int:
    """A size from /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    """Start the RSS high-water mark (VmHWM) afresh (Linux 4.0+: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def _everything(path: str) -> Any:
    with streamser.open(path) as handle:
        return handle.load()


READERS: dict[str, Callable[[str], Any]] = {
    "load": streamser.load,
    "load mmap=False": lambda path: streamser.load(path, mmap=False),
    "deserialize": lambda path: streamser.deserialize(Path(path).read_bytes()),
    "open": _everything,
}


def child(path: str, call: str) -> dict[str, Any]:
    """Read ``path`` with ``call``; what happened, how long it took, the peak RSS it added."""
    _reset_peak()
    before = _status("VmRSS")
    start = time.perf_counter()
    try:
        value = READERS[call](path)
        outcome = f"value ({type(value).__name__})"
    except streamser.LimitError as exc:
        outcome = f"LimitError: {exc}"
    except Exception as exc:  # reported: a missed target
        outcome = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    return {"outcome": outcome, "seconds": seconds, "added": _status("VmHWM") - before}


def run_child(path: Path, call: str, address_space: int) -> dict[str, Any]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    result = subprocess.run(
        [sys.executable, "-m", "bench.bombs", "--child", str(path), call],
        capture_output=True,
        text=True,
        preexec_fn=cap,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if result.returncode != 0:
        return {
            "outcome": f"child died ({result.returncode}): {result.stderr[-300:]}",
            "seconds": 0.0,
            "added": 0,
        }
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def verdict(bomb: Bomb, report: dict[str, Any]) -> str:
    """'ok' or why the target is missed."""
    outcome: str = report["outcome"]
    refused = outcome.startswith("LimitError")
    bound = bomb.plain + bomb.copied + bomb.path.stat().st_size + SLACK  # the input is read too
    if bomb.must_refuse_within is not None:
        if not refused or report["seconds"] > bomb.must_refuse_within:
            return f"must be refused within {bomb.must_refuse_within} s"
        return "ok"
    if refused:
        return "refused, must load" if bomb.must_load else "ok"
    if not outcome.startswith("value"):
        return "neither a value nor a LimitError"
    return "ok" if report["added"] <= bound else f"peak over {format_bytes(bound)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bombs", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    parser.add_argument("--address-space", type=parse_size, default=None)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "CALL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    space = args.address_space or (4 * GiB if args.smoke else 12 * GiB)
    failed = 0
    print(f"RLIMIT_AS {format_bytes(space)}, every limit at its default")
    print(f"{'input':<36} {'compressed':>10} {'call':<16} {'time':>8} {'peak +RSS':>10}  outcome")
    with tempfile.TemporaryDirectory(prefix="streamser-bombs-") as folder:
        for bomb in build(Path(folder), smoke=args.smoke):
            for call in CALLS[::3] if args.smoke else CALLS:  # smoke: load and open
                report = run_child(bomb.path, call, space)
                judged = verdict(bomb, report)
                failed += judged != "ok"
                print(
                    f"{bomb.name:<36} {format_bytes(bomb.path.stat().st_size):>10} {call:<16} "
                    f"{report['seconds']:>7.2f}s {format_bytes(report['added']):>10}  "
                    f"{report['outcome'][:90]}" + ("" if judged == "ok" else f"  << {judged}")
                )
    print("every target met" if not failed else f"{failed} targets missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
