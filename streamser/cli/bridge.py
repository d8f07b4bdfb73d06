"""``streamser convert`` between ``.t7`` and ``.safetensors``, chosen by the file extensions.

``convert in.safetensors out.t7`` writes a flat table ``{name: tensor}`` (every ``.t7`` option
applies: ``--format``, ``--cast``, ``--compress``); ``convert in.t7 out.safetensors`` writes every
tensor under its path in the file, or under PyTorch's names with ``--torch-names``. Both stream
one tensor at a time (:mod:`streamser.tools.from_safetensors`,
:mod:`streamser.tools.to_safetensors`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api import save
from ..errors import StreamserError
from ..tools.from_safetensors import SafetensorsFile
from ..tools.to_safetensors import t7_to_safetensors

_SAVE_OPTIONS = ("format", "serial", "cast", "compress", "level", "threads")
_T7_ONLY = {"format": "binary", "serial": "heavy", "cast": None, "compress": None}


def is_safetensors(path: str) -> bool:
    return Path(path).suffix.lower() == ".safetensors"


def to_safetensors(args: argparse.Namespace) -> int:
    """``convert in.t7 out.safetensors [--torch-names] [--input-format F]``."""
    given = [f"--{name}" for name, default in _T7_ONLY.items() if getattr(args, name) != default]
    if given:
        raise StreamserError(f"{', '.join(given)}: options of .t7 output, not of .safetensors")
    count = t7_to_safetensors(
        args.input, args.output, torch_names=args.torch_names, format=args.input_format
    )
    _report(args, f"{count} tensors, safetensors")
    return 0


def from_safetensors(args: argparse.Namespace, progress: Callable[[int], Any]) -> int:
    """``convert in.safetensors out.t7 [.t7 options]``; ``progress(total)`` makes the hook."""
    if args.torch_names:
        raise StreamserError("--torch-names names the tensors of .safetensors output")
    source = SafetensorsFile(args.input)
    report = progress(source.nbytes)
    options = {name: getattr(args, name) for name in _SAVE_OPTIONS}
    save(args.output, source.table(), hook=report.hook, **options)
    report.close()
    dropped = f"; metadata not written: {sorted(source.metadata)}" if source.metadata else ""
    _report(args, f"{len(source.entries)} tensors, {args.format}{dropped}")
    return 0


def _report(args: argparse.Namespace, what: str) -> None:
    before, after = Path(args.input).stat().st_size, Path(args.output).stat().st_size
    print(f"{args.input} ({before:,} bytes) -> {args.output} ({after:,} bytes, {what})")
