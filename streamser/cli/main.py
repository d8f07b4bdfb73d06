"""The ``streamser`` command line: demo, show, info, convert, dis, verify, export.

``streamser demo`` saves a small model-like checkpoint, loads it back lazily and prints it;
``info`` prints a file's tree and tensor index (instantly, from the lazy index); ``convert``
rewrites a file in another format, serialization mode or type; ``dis`` lists the record stream
for debugging damaged files; ``verify`` reads everything and checks every bound; ``export``
writes every tensor to ``.npz`` or ``.safetensors``. Errors print one line with the byte offset
and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import load, save
from ..codecs import Decoder
from ..errors import FormatError, StreamserError
from ..graph.loading import Input, closing, detect, open_input
from ..graph.walk import outline, tensors
from ..handle import TensorInfo
from ..handle import open as streamser_open
from ..io.mapping import buffer_of
from ..spec.detect import ForeignFormatError
from ..spec.format import FORMATS, Format, get_format
from ..spec.grammar import describe, iter_records
from ..spec.limits import Limits
from ..tools.export import export
from ..tools.verify import read_values
from ..values.classes import CLASS_CODECS
from .bridge import from_safetensors, is_safetensors, to_safetensors


def demo_checkpoint(seed: int = 0) -> dict[str, Any]:
    """A small model-like value: two linear layers, a view sharing a weight, training state."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.02, (64, 32)).astype(np.float32)
    w2 = rng.normal(0, 0.02, (10, 64)).astype(np.float32)
    return {
        "model": {
            "layers": [
                {"weight": w1, "bias": np.zeros(64, np.float32)},
                {"weight": w2, "bias": np.zeros(10, np.float32)},
            ],
            "first_rows": w1[:4],  # a view: written as a tensor of w1's storage
        },
        "epoch": 12,
        "learning_rate": 0.01,
        "name": "demo-mlp",
    }


def _demo(args: argparse.Namespace) -> int:
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="streamser-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    value = demo_checkpoint()
    for fmt in ("binary", "ascii"):
        path = folder / f"demo.{fmt}.t7"
        started = time.perf_counter()
        save(path, value, format=fmt)
        saved = time.perf_counter() - started
        started = time.perf_counter()
        loaded = load(path)
        opened = time.perf_counter() - started
        print(
            f"{path}: {path.stat().st_size:,} bytes, saved in {saved * 1e3:.1f} ms, "
            f"loaded in {opened * 1e3:.1f} ms ({fmt}, format detected)"
        )
    print()
    print(outline(loaded))
    first = dict(tensors(loaded))
    shared = np.shares_memory(first["model.layers[1].weight"], first["model.first_rows"])
    print(f"\nmodel.first_rows shares memory with model.layers[1].weight: {shared}")
    return 0


def _show(args: argparse.Namespace) -> int:
    if args.path:
        with streamser_open(args.file, format=args.format) as handle:
            print(outline(handle.subtree(args.path), max_lines=args.max_lines))
        return 0
    value = load(args.file, format=args.format)
    print(outline(value, max_lines=args.max_lines))
    return 0


def _info(args: argparse.Namespace) -> int:
    with streamser_open(args.file, format=args.format) as handle:
        tree = handle.subtree(args.path) if args.path else handle.root
        tensors = [t for t in handle.tensors() if _under(t.path, args.path)]
        storages = {t.storage: t.storage_nbytes for t in tensors if t.storage is not None}
        data_bytes = sum(storages.values()) or sum(t.nbytes for t in tensors)
        summary = {
            "file": str(args.file),
            "format": handle.format.name,
            "file_bytes": Path(args.file).stat().st_size,
            "tensors": len(tensors),
            "storages": len(storages),
            "tensor_bytes": data_bytes,
        }
        if args.json:
            rows = [_tensor_json(info) for info in tensors]
            print(json.dumps({**summary, "tensor_index": rows}, indent=1))
            return 0
        print(
            f"{args.file}: {handle.format.name}, {len(tensors)} tensors in {len(storages)} "
            f"storages, {data_bytes:,} bytes of tensor data in {summary['file_bytes']:,} bytes"
        )
        print()
        print(outline(tree, max_lines=args.max_lines))
        print()
        _print_tensor_table(tensors)
    return 0


def _under(path: str, prefix: str | None) -> bool:
    """Whether ``path`` lies in the subtree at ``prefix`` (both as tensors() prints them)."""
    if not prefix:
        return True
    return path == prefix or (path.startswith(prefix) and path[len(prefix)] in ".[{")


def _tensor_json(info: TensorInfo) -> dict[str, Any]:
    return {
        "path": info.path,
        "typename": info.typename,
        "shape": list(info.shape),
        "dtype": str(info.dtype),
        "nbytes": info.nbytes,
        "offset": info.offset,
        "storage_offset": info.storage_offset,
        "storage_nbytes": info.storage_nbytes,
        "strides": list(info.strides),
        "storage": info.storage,
    }


def _print_tensor_table(tensors: list[TensorInfo]) -> None:
    owners: dict[int | None, str] = {}
    width = max([len(info.path) for info in tensors] + [4])
    print(f"{'path':<{width}}  {'class':<24} {'shape':<18} {'bytes':>12} {'offset':>12}  shares")
    for info in tensors:
        owner = owners.setdefault(info.storage, info.path) if info.storage is not None else None
        shared = f"storage of {owner}" if owner and owner != info.path else ""
        offset = "" if info.offset is None else f"{info.offset:,}"
        print(
            f"{info.path:<{width}}  {info.typename:<24} {list(info.shape)!s:<18} "
            f"{info.nbytes:>12,} {offset:>12}  {shared}"
        )


def _convert(args: argparse.Namespace) -> int:
    if is_safetensors(args.output):
        return to_safetensors(args)
    if is_safetensors(args.input):
        return from_safetensors(args, lambda total: Progress(total, enabled=not args.quiet))
    with streamser_open(args.input, format=args.input_format) as handle:
        total = sum(info.nbytes for info in handle.tensors())
        progress = Progress(total, enabled=not args.quiet)
        save(
            args.output,
            handle.root,  # a compressed file's storages are streamed from it, frame by frame
            format=args.format,
            serial=args.serial,
            cast=args.cast,
            hook=progress.hook,
            compress=args.compress,
            level=args.level,
            threads=args.threads,
        )
        progress.close()
    before, after = Path(args.input).stat().st_size, Path(args.output).stat().st_size
    print(f"{args.input} ({before:,} bytes) -> {args.output} ({after:,} bytes, {args.format})")
    return 0


def _dis(args: argparse.Namespace) -> int:
    """The records of the file's value, its format found as ``load`` finds it (compressed
    inputs too); a damaged file's records are listed up to the damage, then the error."""
    limits = Limits()
    with open(args.file, "rb") as fileobj:
        buffer, start, _ = buffer_of(fileobj, mmap=True)
    with closing(open_input(buffer, start, limits, lazy=True, format=args.format)) as stream:
        fmt = _dis_format(stream, args.format, limits)
        if stream.compressed:
            print(f"{'':>10}  (zstd: offsets are those of the decompressed stream)")
        decoder = stream.decoder(fmt)
        shown = 0
        for record in iter_records(decoder, classes=CLASS_CODECS, limits=limits):
            print(describe(record))
            shown += 1
            if args.max_records and shown >= args.max_records:
                print("...")
                return 0
        left = decoder.remaining()
    print(f"{decoder.pos:>10}: end of value ({shown} records, {fmt.name})")
    if left:
        print(f"{decoder.pos:>10}: {left} more bytes follow")
    return 0


def _dis_format(stream: Input, name: str | None, limits: Limits) -> Format:
    """The format ``load`` would read ``stream`` in; for a damaged binary input, the long size
    whose reading gets further (so that its records are worth listing)."""

    def walk(decoder: Decoder) -> int:
        return sum(1 for _ in iter_records(decoder, classes=CLASS_CODECS, limits=limits))

    try:
        return detect(stream, get_format(name) if name else None, walk)[0]
    except FormatError:
        reached: dict[str, int] = {}
        for fmt in (FORMATS["binary"], FORMATS["b32"]):
            decoder = stream.decoder(fmt)
            with contextlib.suppress(FormatError):
                walk(decoder)
            reached[fmt.name] = decoder.pos
        return FORMATS[max(reached, key=lambda name: reached[name])]


def _verify(args: argparse.Namespace) -> int:
    with streamser_open(args.file, format=args.format) as handle:
        values = read_values(handle)  # each storage once, never through an expanded view
        for path in values.nonfinite:
            print(f"note: {path} holds NaN or infinite values")
        checked = values.nbytes
        count = len(handle.tensors())
        name = handle.format.name
        trailing = handle.size - handle.end
    if trailing:
        print(f"{args.file}: {trailing} bytes follow the value (at byte {handle.end})")
        return 1
    print(f"{args.file}: OK ({name}, {count} tensors, {checked:,} bytes of data read)")
    return 0


def _export(args: argparse.Namespace) -> int:
    options = {"keep_empty": args.keep_empty, "allow_expanded": args.allow_expanded}
    print(export(args.file, args.output, format=args.format, **options))
    return 0


class Progress:
    """Bytes of tensor data written: a tqdm bar on a terminal, plain counts otherwise."""

    def __init__(self, total: int, *, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._enabled = enabled and total > (64 << 20)  # only long runs get a progress report
        self._next_report = 0
        if self._enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]  # optional

                self._bar = tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr)
            except ImportError:
                self._bar = None

    def hook(self, value: Any) -> Any:
        if self._enabled and isinstance(value, np.ndarray):
            self.done += value.nbytes
            if self._bar is not None:
                self._bar.update(value.nbytes)
            elif self.done >= self._next_report:
                print(f"{self.done:,} / {self.total:,} bytes", file=sys.stderr)
                self._next_report = self.done + max(self.total // 10, 1)
        return value

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    formats = ["binary", "ascii", "b32", "b64"]

    demo = commands.add_parser("demo", help="save and lazily load a small built-in checkpoint")
    demo.add_argument("--dir", help="folder for the demo files (default: a new temporary one)")
    demo.set_defaults(run=_demo)

    show = commands.add_parser("show", help="print the outline of a .t7 file")
    show.add_argument("file")
    show.add_argument("path", nargs="?", help="a subtree, as info and tensors() print paths")
    show.add_argument("--format", choices=formats)
    show.add_argument("--max-lines", type=int, default=200)
    show.set_defaults(run=_show)

    info = commands.add_parser(
        "info", help="tree, tensors, sharing and totals, from the lazy index"
    )
    info.add_argument("file")
    info.add_argument("path", nargs="?", help="a subtree, as info and tensors() print paths")
    info.add_argument("--format", choices=formats)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--max-lines", type=int, default=200)
    info.set_defaults(run=_info)

    convert = commands.add_parser(
        "convert", help="rewrite a file in another format or mode, or to/from .safetensors"
    )
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--format", choices=formats, default="binary")
    convert.add_argument("--input-format", choices=formats)
    convert.add_argument("--serial", choices=["heavy", "medium", "light"], default="heavy")
    convert.add_argument(
        "--cast", help="'cpu', 'nn' (cudnn modules as nn), 'float32', ...; joined: 'cpu+nn'"
    )
    convert.add_argument("--compress", choices=["zstd"], help="seekable zstd around the file")
    convert.add_argument("--level", type=int, default=3, help="zstd level (default 3)")
    convert.add_argument("--threads", type=int, default=1, help="frames compressed at once")
    convert.add_argument("--quiet", action="store_true", help="no progress report")
    convert.add_argument(
        "--torch-names", action="store_true", help=".safetensors output: PyTorch state_dict names"
    )
    convert.set_defaults(run=_convert)

    dis = commands.add_parser("dis", help="print the record stream, for damaged files")
    dis.add_argument("file")
    dis.add_argument("--format", choices=formats)
    dis.add_argument("--max-records", type=int, default=0)
    dis.set_defaults(run=_dis)

    verify = commands.add_parser("verify", help="read everything and check every bound")
    verify.add_argument("file")
    verify.add_argument("--format", choices=formats)
    verify.set_defaults(run=_verify)

    export = commands.add_parser("export", help="every tensor to .npz or .safetensors")
    export.add_argument("file")
    export.add_argument("output", help="OUT.npz or OUT.safetensors")
    export.add_argument("--format", choices=formats)
    export.add_argument("--keep-empty", action="store_true", help="also write empty tensors")
    export.add_argument(
        "--allow-expanded", action="store_true", help="write views far larger than their storage"
    )
    export.set_defaults(run=_export)
    return parser


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()  # built once per process (argparse takes milliseconds to build it)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # class names and keys may hold any bytes
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        result: int = args.run(args)
        return result
    except (StreamserError, OSError) as exc:
        if args.debug:
            raise
        kind = "damaged file" if isinstance(exc, FormatError) else "error"
        if isinstance(exc, ForeignFormatError):
            kind = "not a Torch7 file"
        print(f"streamser: {kind}: {exc}", file=sys.stderr)
        return 2
