"""The contenders: streamser, its peers and the physical limits, behind one small interface.

Every contender can ``save`` a value to a path, ``load`` a path eagerly, open it ``lazy``-ly and
sum one tensor, and/or ``index`` it (list its tensors without reading them), for the cases it
takes part in (``ops``). ``prepare`` turns the common input (a dict of numpy arrays, or a list
of record dicts) into what the library takes, outside the timing; ``setup`` allocates what a
contender keeps for a whole phase (memcpy's destination) and ``buffers`` names the memory the
worker touches before each run; ``tensors`` and ``records`` turn a result back into the common
form for the checksum. Libraries are imported inside the methods, so that the parent can tell
which contenders are installed without importing them.

Roles: ``subject`` is streamser (its memory budget is enforced), ``peer`` a library doing the
same job, ``limit`` the plain way of moving the same bytes through the same kernel interface
(tofile, fromfile, np.memmap, copyfile; and the named reference of an operation without one),
``memory`` the copy of the bytes from memory to memory (memcpy): the floor under everything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import pickle
import shutil
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from .data import RecordData, TensorData, map_tensors, touch_value

Rows = Iterable[tuple[str, Any, Any]]
Arrays = dict[str, np.ndarray[Any, Any]]
ZSTD_LEVEL, ZSTD_THREADS = 3, 2


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
    def is_ascii(self) -> bool:
        return self.case.startswith("ascii")


class Contender:
    """Base class: a named way of saving and loading the benchmark's values."""

    name: ClassVar[str]
    role: ClassVar[str] = "peer"
    # the reference of its role wherever it runs, whatever its speed (else the fastest is)
    preferred: ClassVar[bool] = False
    labels: ClassVar[dict[str, str]] = {}  # op (or "case:op") -> what the table calls it
    ops: ClassVar[dict[str, tuple[str, ...]]] = {}  # case -> ops taken part in
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules needed
    suffix: ClassVar[str] = ""  # of the saved file; "" for a folder of files
    fsync: ClassVar[bool] = False  # does its save make the data durable
    reads: ClassVar[str | None] = None  # whose file its loads read: a contender or "source"
    reads_in: ClassVar[dict[str, str]] = {}  # case -> whose file, where not ``reads``
    verifier: ClassVar[str | None] = None  # whose loader checks its saves (None: its own)
    allowance: ClassVar[int] = 0  # memory its save may use beyond --max-mem, by design
    writes_file: ClassVar[bool] = True  # False: its save returns the result in memory

    def label(self, case: str, op: str) -> str:
        return self.labels.get(f"{case}:{op}") or self.labels.get(op, self.name)

    def reads_for(self, case: str) -> str | None:
        """Whose file its loads read in ``case``: a contender, "source", or None (its own)."""
        return self.reads_in.get(case, self.reads)

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

    def import_all(self) -> None:
        """Import the libraries up front, so that every run sees the same process."""
        for module in self.requires:
            __import__(module)

    def prepare(self, value: Any, ctx: Context) -> Any:
        return value

    def setup(self, op: str, ctx: Context) -> None:
        """Allocate what the contender keeps for a phase (outside the timing)."""

    def teardown(self) -> None:
        """Release what ``setup`` allocated."""

    def buffers(self) -> list[np.ndarray[Any, Any]]:
        """Memory of its own the worker touches before each run, as it touches the input."""
        return []

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        raise NotImplementedError

    def load(self, path: Path, ctx: Context) -> Any:
        raise NotImplementedError

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        """Open lazily and sum the tensor ``ctx.tensors.touch``: (opened value, the sum)."""
        raise NotImplementedError

    def index(self, path: Path, ctx: Context) -> Any:
        """List the tensors of a file without reading their data."""
        raise NotImplementedError

    def index_shapes(self, result: Any, path: Path, ctx: Context) -> list[tuple[int, ...]]:
        """The shapes an ``index`` result lists, for the check."""
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
        "index": "streamser open+tensors",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "records": ("save", "load", "index"),
        "memmap": ("save",),
        "ascii-float32": ("load",),
        "ascii-float64": ("load",),
    }
    requires = ("streamser",)
    suffix = ".t7"
    fsync = True
    # ascii is saved to an open file, as Torch7 does (its CPU time is the reference)
    reads_in: ClassVar[dict[str, str]] = {
        "ascii-float32": "streamser-fileobj",
        "ascii-float64": "streamser-fileobj",
    }

    @staticmethod
    def format(ctx: Context) -> Literal["ascii", "binary"]:
        return "ascii" if ctx.is_ascii else "binary"

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        import streamser

        streamser.save(path, value, format=self.format(ctx))

    def load(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path, mmap=False)

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        import streamser

        value = streamser.load(path)
        return value, touch_value(value[ctx.tensors.touch])

    def index(self, path: Path, ctx: Context) -> Any:
        import streamser

        # The open handle comes back with its rows, as the eager load's value comes back:
        # freeing the value graph the handle holds (about 20 ms for 100,000 tensors) falls
        # outside the timed region for both.
        handle = streamser.open(path)
        return handle, handle.tensors()

    def index_shapes(self, result: Any, path: Path, ctx: Context) -> list[tuple[int, ...]]:
        return [tuple(info.shape) for info in result[1]]

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path)

    def records(self, result: Any, ctx: Context) -> Rows:
        return ((r["name"], r["w"], r["b"]) for r in result.to_list())


class StreamserFileobj(Streamser):
    """streamser.save to an open file object: no fsync, as the peers' saves and Torch7's."""

    name = "streamser-fileobj"
    labels: ClassVar[dict[str, str]] = {"save": "streamser fileobj"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save",),
        "records": ("save",),
        "memmap": ("save",),
        "ascii-float32": ("save",),
        "ascii-float64": ("save",),
    }
    fsync = False
    verifier = "streamser"

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        import streamser

        with open(path, "wb") as out:
            streamser.save(out, value, format=self.format(ctx))


class StreamserMapped(Streamser):
    """streamser.load(path): records parsed, tensors left as views of the mapped file."""

    name = "streamser-mmap"
    labels: ClassVar[dict[str, str]] = {"load": "streamser mmap"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"records": ("load",)}
    reads = "streamser"

    def load(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path)


class StreamserLoadReference(Streamser):
    """The compiled eager load, as the reference of ``open`` + ``tensors()`` (issue 11:
    at most 1.5x of it)."""

    name = "streamser-load-ref"
    role = "limit"
    labels: ClassVar[dict[str, str]] = {"index": "streamser mmap=False (ref)"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"records": ("index",)}
    reads = "streamser"

    def index(self, path: Path, ctx: Context) -> Any:
        return self.load(path, ctx)

    def index_shapes(self, result: Any, path: Path, ctx: Context) -> list[tuple[int, ...]]:
        return [tuple(np.shape(array)) for _, w, b in self.records(result, ctx) for array in (w, b)]


class StreamserZstd(Streamser):
    """streamser.save with compress="zstd" (seekable frames, level 3, 2 threads) to a path
    (fsync), and streamser.load of it (detected, decompressed whole)."""

    name = "streamser-zstd"
    labels: ClassVar[dict[str, str]] = {
        "save": "streamser zstd (fsync)",
        "load": "streamser zstd",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "compressed": ("save", "load"),
        "records": ("save", "load"),
    }
    suffix = ".t7.zst"
    # Frames in flight: the one being filled, and per thread up to two frames of 4 MiB and
    # their compressed output (the bound for compressed saves is 128 MiB).
    allowance = 48 << 20

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        import streamser

        streamser.save(path, value, compress="zstd", level=ZSTD_LEVEL, threads=ZSTD_THREADS)

    def load(self, path: Path, ctx: Context) -> Any:
        import streamser

        return streamser.load(path)


class Zstandard(Contender):
    """The tensors' bytes through zstandard's streaming compressor (same level and threads,
    fsync), and back into one buffer: compression with no format around it."""

    name = "zstandard"
    role = "limit"
    labels: ClassVar[dict[str, str]] = {
        "save": "zstandard stream (fsync)",
        "load": "zstandard stream",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"compressed": ("save", "load")}
    requires = ("zstandard",)
    suffix = ".raw.zst"
    fsync = True

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        import zstandard

        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=ZSTD_THREADS)
        with open(path, "wb") as out:
            with compressor.stream_writer(out, closefd=False) as writer:
                for array in value.values():
                    writer.write(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
            out.flush()
            os.fsync(out.fileno())

    def load(self, path: Path, ctx: Context) -> Any:
        import zstandard

        buffer = np.empty(ctx.tensors.nbytes, np.uint8)
        with open(path, "rb") as source:
            reader = zstandard.ZstdDecompressor().stream_reader(source)
            done = 0
            while done < buffer.size:
                read = reader.readinto(buffer[done:].data)
                if not read:
                    raise EOFError(f"{path}: {buffer.size - done} bytes missing")
                done += read
        return _views(buffer, ctx.tensors)


def _views(buffer: np.ndarray[Any, Any], data: TensorData) -> Arrays:
    """The tensors of ``data`` as views of ``buffer``, which holds them back to back."""
    return {
        spec.name: np.ndarray(spec.shape, np.dtype(spec.dtype), buffer, spec.offset)
        for spec in data.layout
    }


class Torchfile(Contender):
    """torchfile.load (pure Python) reading streamser's own binary output."""

    name = "torchfile"
    labels: ClassVar[dict[str, str]] = {"load": "torchfile.load"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"checkpoint": ("load",), "records": ("load",)}
    requires = ("torchfile",)
    reads = "streamser"

    def load(self, path: Path, ctx: Context) -> Any:
        torchfile = importlib.import_module("torchfile")  # untyped
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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
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
        "index": "safetensors safe_open+keys",
    }
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load", "lazy"),
        "records": ("save", "load", "index"),
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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
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

    def index(self, path: Path, ctx: Context) -> Any:
        from safetensors import safe_open

        handle: Any = safe_open(path, framework="np")  # kept open, as streamser's handle is
        return handle, handle.keys()

    def index_shapes(self, result: Any, path: Path, ctx: Context) -> list[tuple[int, ...]]:
        from safetensors import safe_open

        with safe_open(path, framework="np") as handle:
            return [tuple(handle.get_slice(key).get_shape()) for key in result[1]]

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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
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
        return value, touch_value(value[str(ctx.tensors.touch)])

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        return self.lazy(path, ctx)[0]


class NumpyText(Contender):
    """np.savetxt / np.loadtxt, with the digits Torch7's ascii format writes (``%.9g`` for
    float32, ``%.17g`` for float64): a text format to set ascii against."""

    name = "numpy-text"
    labels: ClassVar[dict[str, str]] = {"save": "np.savetxt", "load": "np.loadtxt"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "ascii-float32": ("save", "load"),
        "ascii-float64": ("save", "load"),
    }

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        path.mkdir()
        for name, array in value.items():
            digits = 9 if array.dtype.itemsize == 4 else 17
            np.savetxt(path / f"{name}.txt", array, fmt=f"%.{digits}g")

    def load(self, path: Path, ctx: Context) -> Any:
        return {
            spec.name: np.loadtxt(path / f"{spec.name}.txt", dtype=np.dtype(spec.dtype))
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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        with open(path, "wb") as out:
            for array in value.values():
                array.tofile(out)
            if self.fsync:
                out.flush()
                os.fsync(out.fileno())

    def load(self, path: Path, ctx: Context) -> Any:
        with open(path, "rb") as source:
            return {
                spec.name: np.fromfile(source, np.dtype(spec.dtype), spec.count).reshape(spec.shape)
                for spec in ctx.tensors.layout
            }

    def lazy(self, path: Path, ctx: Context) -> tuple[Any, float | None]:
        mapped = np.memmap(path, np.uint8, "r")
        value = _views(mapped, ctx.tensors)
        return value, touch_value(value[str(ctx.tensors.touch)])

    def open_for_check(self, path: Path, ctx: Context) -> Any:
        mapped = np.memmap(path, np.uint8, "r")
        return _views(mapped, ctx.tensors)


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

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        shutil.copyfile(ctx.tensors.source, path)


class Memcpy(Contender):
    """The bytes copied from memory to memory into a buffer allocated once and touched before
    each run (``np.copyto``): memory bandwidth, the floor under every save and load. A save
    copies the input arrays; a load copies from a mapping of the raw file (page cache)."""

    name = "memcpy"
    role = "memory"
    labels: ClassVar[dict[str, str]] = {"save": "memcpy", "load": "memcpy"}
    ops: ClassVar[dict[str, tuple[str, ...]]] = {
        "checkpoint": ("save", "load"),
        "memmap": ("save",),
    }
    reads = "source"
    writes_file = False

    def __init__(self) -> None:
        self.destination: np.ndarray[Any, Any] | None = None
        self.source: Arrays = {}

    def setup(self, op: str, ctx: Context) -> None:
        self.destination = np.empty(ctx.tensors.nbytes, np.uint8)
        self.destination.fill(0)  # its pages exist before the first run, as after a load
        if op == "load":
            self.source = map_tensors(ctx.tensors)

    def teardown(self) -> None:
        self.destination, self.source = None, {}

    def buffers(self) -> list[np.ndarray[Any, Any]]:
        extra = [] if self.destination is None else [self.destination]
        return extra + list(self.source.values())

    def save(self, value: Any, path: Path, ctx: Context) -> Any:
        return self._copy(value, ctx)

    def load(self, path: Path, ctx: Context) -> Any:
        return self._copy(self.source, ctx)

    def _copy(self, arrays: Mapping[str, Any], ctx: Context) -> Arrays:
        if self.destination is None:
            raise RuntimeError("memcpy: setup was not called")
        out = _views(self.destination, ctx.tensors)
        for name, array in arrays.items():
            np.copyto(out[name], array)
        return out


class MemcpyTwoThreads(Memcpy):
    """The load's copy on two threads: each takes the next 8 MiB piece when done with one.

    The memory reference of the checkpoint load (``vs memcpy``), which uses both cores: what
    two threads can move on this machine at the time. One thread's ``memcpy`` over it is the
    speed-up the host gives a second vCPU then, which moves from run to run (see
    bench/README.md, Stability).
    """

    name = "memcpy-2"
    labels: ClassVar[dict[str, str]] = {"load": "memcpy 2 threads"}
    preferred = True  # the floor of a two-thread load, even where one thread is faster (small)
    ops: ClassVar[dict[str, tuple[str, ...]]] = {"checkpoint": ("load",)}
    PIECE = 8 << 20

    def __init__(self) -> None:
        super().__init__()
        self.pool: ThreadPoolExecutor | None = None

    def setup(self, op: str, ctx: Context) -> None:
        super().setup(op, ctx)
        self.pool = ThreadPoolExecutor(1)

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        self.pool = None
        super().teardown()

    def _copy(self, arrays: Mapping[str, Any], ctx: Context) -> Arrays:
        if self.destination is None or self.pool is None:
            raise RuntimeError("memcpy-2: setup was not called")
        out = _views(self.destination, ctx.tensors)
        pieces = []
        for name, array in arrays.items():
            source = np.asarray(array).reshape(-1).view(np.uint8)
            target = out[name].reshape(-1).view(np.uint8)
            pieces += [
                (target[i : i + self.PIECE], source[i : i + self.PIECE])
                for i in range(0, source.size, self.PIECE)
            ]
        taken = itertools.count()  # next() is atomic: each piece is copied once

        def take() -> None:
            for number in taken:
                if number >= len(pieces):
                    return
                np.copyto(*pieces[number])

        helper = self.pool.submit(take)
        take()
        helper.result()
        return out


CONTENDERS: dict[str, Contender] = {
    contender.name: contender
    for contender in (
        Streamser(),
        StreamserFileobj(),
        StreamserMapped(),
        StreamserZstd(),
        StreamserLoadReference(),
        Torchfile(),
        Torch(),
        Safetensors(),
        Numpy(),
        NumpyText(),
        Pickle(),
        Raw(),
        RawFsync(),
        Copyfile(),
        Zstandard(),
        Memcpy(),
        MemcpyTwoThreads(),
    )
}


def get(name: str) -> Contender:
    """The contender called ``name``."""
    return CONTENDERS[name]
