"""The contenders: streamser, its peers and the physical limits, behind one small interface.

Every contender can ``save`` a value to a path, ``load`` a path eagerly, and/or open it
``lazy``-ly and touch one tensor, for the cases it takes part in (``ops``). ``prepare`` turns the
common input (a dict of numpy arrays, or a list of record dicts) into what the library takes,
outside the timing; ``tensors`` and ``records`` turn a result back into the common form for the
checksum. Libraries are imported inside the methods, so that a child imports only what it runs
and the parent can tell which contenders are installed without importing them.

Roles: ``subject`` is streamser (its memory budget is enforced), ``peer`` a library doing the
same job, ``limit`` the physical floor (plain reads, writes, maps and copies of the same bytes).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pickle
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .data import COLUMNS, DTYPE, RecordData, TensorData, touch_value

Rows = Iterable[tuple[str, Any, Any]]
TENSOR_CASES = ("checkpoint", "memmap", "ascii")


@dataclass
class Context:
    """What an operation needs to know beyond its input: the case and its data."""

    case: str
    tensors: TensorData
    records: RecordData

    @property
    def is_records(self) -> bool:
        return self.case == "records"

    @property
    def payload(self) -> int:
        """Bytes of array data in the value (what throughput is counted in)."""
        return self.records.nbytes if self.is_records else self.tensors.nbytes


class Contender:
    """Base class: a named way of saving and loading the benchmark's values."""

    name: ClassVar[str]
    role: ClassVar[str] = "peer"
    labels: ClassVar[dict[str, str]] = {}  # op -> what the table calls it
    ops: ClassVar[dict[str, tuple[str, ...]]] = {}  # case -> ops taken part in
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules needed
    suffix: ClassVar[str] = ""  # of the saved file; "" for a folder of files
    fsync: ClassVar[bool] = False  # does its save make the data durable
    reads: ClassVar[str | None] = None  # whose file its loads read: a contender or "source"
    verifier: ClassVar[str | None] = None  # whose loader checks its saves (None: its own)
    allowance: ClassVar[int] = 0  # memory its save may use beyond --max-mem, by design

    def label(self, op: str) -> str:
        return self.labels.get(op, self.name)

    def missing(self) -> list[str]:
        """The required modules that cannot be imported."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    def version(self) -> str | None:
        for module in self.requires:
            try:
                return f"{module} {importlib.metadata.version(module)}"
            except importlib.metadata.PackageNotFoundError:
                return None
        return None

    def prepare(self, value: Any, ctx: Context) -> Any:
        return value

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        raise NotImplementedError

    def load(self, path: Path, ctx: Context) -> Any:
        raise NotImplementedError

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        """Open lazily and sum the tensor ``ctx.tensors.touch``: (opened value, the sum)."""
        raise NotImplementedError

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        """The cheapest complete reading of a saved file, for the correctness check."""
        return self.load(path, ctx)

    def tensors(self, result: Any, ctx: Context) -> Mapping[str, Any]:
        return dict(result.items())

    def records(self, result: Any, ctx: Context) -> Rows:
        return ((r["name"], r["w"], r["b"]) for r in result)


class Streamser(Contender):
    """streamser.save to a path (temporary file, fsync, rename) and streamser.load."""

    name = "streamser"
    role = "subject"
    labels: ClassVar[dict[str, str]] = {
        "save": "streamser (fsync)",
        "load": "streamser mmap=False",
        "lazy": "streamser mmap",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "records": ("save", "load", "lazy"),
        "memmap": ("save",),
        "ascii": ("save", "load"),
    }
    suffix = ".t7"
    fsync = True

    @staticmethod
    def format(ctx: Context) -> str:
        return "ascii" if ctx.case == "ascii" else "binary"

    def version(self) -> str | None:
        import streamser

        return f"streamser {streamser.__version__}"

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        import streamser

        streamser.save(path, value, format=self.format(ctx))

    def load(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path, mmap=False)

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        import streamser

        value = streamser.load(path)
        if ctx.is_records:
            return value, None
        return value, touch_value(value[ctx.tensors.touch])

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path)

    def records(self, result: Any, ctx: Context) -> Rows:
        return ((r["name"], r["w"], r["b"]) for r in result.to_list())


class StreamserFileobj(Streamser):
    """streamser.save to an open file object: no fsync, as the peers' saves."""

    name = "streamser-fileobj"
    labels: ClassVar[dict[str, str]] = {"save": "streamser fileobj"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save",),
        "records": ("save",),
        "memmap": ("save",),
    }
    fsync = False
    verifier = "streamser"

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        import streamser

        with open(path, "wb") as out:
            streamser.save(out, value, format=self.format(ctx))


class StreamserZstd(Streamser):
    """streamser.save with compress="zstd" (seekable frames, level 3, 2 threads), load detected.

    Compressed files are decompressed whole on load (no lazy frame reader yet), so there is
    no lazy row for them.
    """

    name = "streamser-zstd"
    labels: ClassVar[dict[str, str]] = {"save": "streamser zstd", "load": "streamser zstd"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load"),
        "records": ("save", "load"),
        "ascii": ("save", "load"),
    }
    suffix = ".t7.zst"
    # Frames in flight: the one being filled, and per thread up to two frames of 4 MiB and
    # their compressed output (the bound for compressed saves is 128 MiB).
    allowance = 48 << 20

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        import streamser

        streamser.save(path, value, format=self.format(ctx), compress="zstd", threads=2)

    def load(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path)


class Torchfile(Contender):
    """torchfile.load (pure Python) reading streamser's own binary output."""

    name = "torchfile"
    labels: ClassVar[dict[str, str]] = {"load": "torchfile.load"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"checkpoint": ("load",), "records": ("load",)}
    requires = ("torchfile",)
    reads = "streamser"

    def load(self, path: Path, ctx: Context) -> Any:
        import torchfile

        return torchfile.load(str(path), utf8_decode_strings=True)


class Torch(Contender):
    """torch.save / torch.load (zip of storages), tensors made with torch.from_numpy."""

    name = "torch"
    labels: ClassVar[dict[str, str]] = {
        "save": "torch.save",
        "load": "torch.load",
        "lazy": "torch.load mmap",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "records": ("save", "load"),
        "memmap": ("save",),
    }
    requires = ("torch",)
    suffix = ".pt"

    def prepare(self, value: Any, ctx: Context) -> Any:
        import torch

        with warnings.catch_warnings():  # read-only memmaps: "not writable" is expected
            warnings.simplefilter("ignore", UserWarning)
            if ctx.is_records:
                return [
                    {
                        "name": r["name"],
                        "w": torch.from_numpy(r["w"]),
                        "b": torch.from_numpy(r["b"]),
                    }
                    for r in value
                ]
            return {name: torch.from_numpy(array) for name, array in value.items()}

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        import torch

        torch.save(value, path)

    def load(self, path: Path, ctx: Context) -> Any:
        import torch

        return torch.load(path, weights_only=True)

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        import torch

        value = torch.load(path, mmap=True, weights_only=True)
        return value, touch_value(value[ctx.tensors.touch].numpy())

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        if ctx.is_records:
            return self.load(path, ctx)
        return self.lazy(path, ctx)[0]

    def tensors(self, result: Any, ctx: Context) -> Mapping[str, Any]:
        return {name: tensor.numpy() for name, tensor in result.items()}

    def records(self, result: Any, ctx: Context) -> Rows:
        return ((r["name"], r["w"].numpy(), r["b"].numpy()) for r in result)


class Safetensors(Contender):
    """safetensors' numpy API: save_file, load_file, safe_open; record names as metadata."""

    name = "safetensors"
    labels: ClassVar[dict[str, str]] = {
        "save": "safetensors save_file",
        "load": "safetensors load_file",
        "lazy": "safetensors safe_open",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "records": ("save", "load"),
        "memmap": ("save",),
    }
    requires = ("safetensors",)
    suffix = ".safetensors"

    def prepare(self, value: Any, ctx: Context) -> Any:
        if not ctx.is_records:
            return value, None
        tensors, names = {}, {}
        for index, record in enumerate(value):
            key = f"{index:08d}"
            tensors[f"{key}.w"], tensors[f"{key}.b"] = record["w"], record["b"]
            names[key] = record["name"]
        return tensors, names

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        from safetensors.numpy import save_file

        tensors, metadata = value
        save_file(tensors, path, metadata=metadata)

    def load(self, path: Path, ctx: Context) -> Any:
        from safetensors import safe_open
        from safetensors.numpy import load_file

        if not ctx.is_records:
            return load_file(path)
        with safe_open(path, framework="np") as handle:  # load_file, plus the metadata
            return {key: handle.get_tensor(key) for key in handle.keys()}, handle.metadata()  # noqa: SIM118

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        from safetensors import safe_open

        handle: Any = safe_open(path, framework="np")
        return handle, touch_value(handle.get_tensor(ctx.tensors.touch))

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        return self.load(path, ctx)

    def tensors(self, result: Any, ctx: Context) -> Mapping[str, Any]:
        if isinstance(result, dict):
            return result
        return {key: result.get_tensor(key) for key in result.keys()}  # noqa: SIM118

    def records(self, result: Any, ctx: Context) -> Rows:
        tensors, names = result
        return ((names[key], tensors[f"{key}.w"], tensors[f"{key}.b"]) for key in sorted(names))


class Numpy(Contender):
    """np.save of each tensor into a folder of .npy files; np.load, eager or mmap_mode="r"."""

    name = "numpy"
    labels: ClassVar[dict[str, str]] = {
        "save": "np.save",
        "load": "np.load",
        "lazy": "np.load mmap_mode=r",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "memmap": ("save",),
    }

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        path.mkdir()
        for name, array in value.items():
            np.save(path / f"{name}.npy", array)

    def load(self, path: Path, ctx: Context) -> Any:
        return {spec.name: np.load(path / f"{spec.name}.npy") for spec in ctx.tensors.layout}

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        value = {
            spec.name: np.load(path / f"{spec.name}.npy", mmap_mode="r")
            for spec in ctx.tensors.layout
        }
        return value, touch_value(value[ctx.tensors.touch])

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        return self.lazy(path, ctx)[0]


class NumpyText(Contender):
    """np.savetxt / np.loadtxt of each tensor ("%.9g"): a text format to set ascii against."""

    name = "numpy-text"
    labels: ClassVar[dict[str, str]] = {"save": "np.savetxt", "load": "np.loadtxt"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"ascii": ("save", "load")}

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        path.mkdir()
        for name, array in value.items():
            np.savetxt(path / f"{name}.txt", array, fmt="%.9g")

    def load(self, path: Path, ctx: Context) -> Any:
        return {
            spec.name: np.loadtxt(path / f"{spec.name}.txt", dtype=DTYPE, ndmin=2)
            for spec in ctx.tensors.layout
        }


class Pickle(Contender):
    """pickle protocol 5 to a file (arrays in-band, written and read without extra copies)."""

    name = "pickle"
    labels: ClassVar[dict[str, str]] = {"save": "pickle5 dump", "load": "pickle5 load"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load"),
        "records": ("save", "load"),
        "memmap": ("save",),
    }
    suffix = ".pkl"

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        with open(path, "wb") as out:
            pickle.dump(value, out, protocol=5)

    def load(self, path: Path, ctx: Context) -> Any:
        with open(path, "rb") as source:
            return pickle.load(source)


class Raw(Contender):
    """The physical limit: the tensors' bytes back to back, ``ndarray.tofile`` to write,
    ``np.fromfile`` to read, one ``np.memmap`` for a lazy open."""

    name = "raw"
    role = "limit"
    labels: ClassVar[dict[str, str]] = {
        "save": "tofile",
        "load": "fromfile",
        "lazy": "np.memmap",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "memmap": ("save",),
    }
    suffix = ".raw"
    reads = "source"

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        with open(path, "wb") as out:
            for array in value.values():
                array.tofile(out)
            if self.fsync:
                out.flush()
                os.fsync(out.fileno())

    def load(self, path: Path, ctx: Context) -> Any:
        with open(path, "rb") as source:
            return {
                spec.name: np.fromfile(source, DTYPE, spec.rows * COLUMNS).reshape(spec.shape)
                for spec in ctx.tensors.layout
            }

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        mapped = np.memmap(path, np.uint8, "r")
        value = {
            spec.name: np.ndarray(spec.shape, DTYPE, mapped, spec.offset)
            for spec in ctx.tensors.layout
        }
        return value, touch_value(value[ctx.tensors.touch])

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        return self.lazy(path, ctx)[0]


class RawFsync(Raw):
    """``tofile`` then fsync: the floor for a durable save such as streamser's to a path."""

    name = "raw-fsync"
    labels: ClassVar[dict[str, str]] = {"save": "tofile+fsync"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"checkpoint": ("save",), "memmap": ("save",)}
    fsync = True
    verifier = "raw"


class Copyfile(Raw):
    """``shutil.copyfile`` of the raw file the memmaps view: reading a file and writing it."""

    name = "copyfile"
    labels: ClassVar[dict[str, str]] = {"save": "copyfile"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"memmap": ("save",)}
    verifier = "raw"

    def save(self, value: Any, path: Path, ctx: Context) -> None:
        shutil.copyfile(ctx.tensors.source, path)


CONTENDERS: dict[str, Contender] = {
    contender.name: contender
    for contender in (
        Streamser(),
        StreamserFileobj(),
        StreamserZstd(),
        Torchfile(),
        Torch(),
        Safetensors(),
        Numpy(),
        NumpyText(),
        Pickle(),
        Raw(),
        RawFsync(),
        Copyfile(),
    )
}


def get(name: str) -> Contender:
    """The contender called ``name``."""
    return CONTENDERS[name]
