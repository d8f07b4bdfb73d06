"""The ``streamser`` command line.

``streamser demo`` saves a small model-like checkpoint, loads it back lazily and prints it.
``streamser show FILE`` prints the outline of any ``.t7`` file. Errors print one line with the
byte offset and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import load, save
from .errors import StreamserError
from .walk import outline, tensors


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
    value = load(args.file, format=args.format)
    print(outline(value, max_lines=args.max_lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamser", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="save and lazily load a small built-in checkpoint")
    demo.add_argument("--dir", help="folder for the demo files (default: a new temporary one)")
    demo.set_defaults(run=_demo)
    show = commands.add_parser("show", help="print the outline of a .t7 file")
    show.add_argument("file")
    show.add_argument("--format", choices=["binary", "ascii", "b32", "b64"])
    show.add_argument("--max-lines", type=int, default=200)
    show.set_defaults(run=_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
        return result
    except (StreamserError, OSError) as exc:
        if args.debug:
            raise
        print(f"streamser: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
