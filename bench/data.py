"""The data every contender saves and loads, made deterministically, and its checksums.

Three shapes of data:

* a *checkpoint*: 20 float32 tensors of shape ``(rows, 256)`` named ``layerNN.weight``, one of
  them (the one a lazy load touches) 16 MiB, the rest sharing what is left of the size;
* an *ascii* data set: one 1-D tensor of ``--ascii-elements`` float32 or float64 values, drawn
  uniformly from [0, 1) as ``torch.rand`` does;
* *records*: many small tensors, a list of ``{"name": str, "w": 4x4 float32, "b": 4 float32}``,
  made from a seed in the worker (they are small).

Tensor data is generated once per size into a raw file (the tensors back to back, no header),
which the worker reads into memory (``np.fromfile``) or maps (``np.memmap``) as its input, and
which the physical limits read and map. A result is checked by CRC-32 of every tensor's bytes
(plus dtype and shape), computed by zlib over whole buffers, never by a Python loop over
elements.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FLOAT32 = np.dtype(np.float32)
COLUMNS = 256  # every checkpoint tensor is (rows, 256) float32: 1 KiB a row
ROW_BYTES = COLUMNS * FLOAT32.itemsize
TOUCH_BYTES = 16 << 20  # the tensor a lazy load reads
TENSORS = 20
CHUNK_BYTES = 32 << 20  # generate and write 32 MiB at a time
RECORD_BYTES = (16 + 4) * FLOAT32.itemsize  # payload of one record: w and b
MIN_SIZE = TENSORS * 2 * ROW_BYTES
ASCII_DTYPES = {"ascii-float32": "<f4", "ascii-float64": "<f8"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a data set and where its bytes sit in the raw source file."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a numpy dtype string, e.g. "<f4"
    offset: int

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.count * np.dtype(self.dtype).itemsize


@dataclass
class TensorData:
    """A data set of tensors: layout, the raw file holding them, the checksums to expect."""

    source: str
    layout: list[TensorSpec]
    touch: str | None = None  # the tensor a lazy load sums
    digest: dict[str, str] = field(default_factory=dict)
    touch_value: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.layout)

    @property
    def touched(self) -> int:
        """Bytes of the tensor a lazy load reads (0 when there is none)."""
        return next((spec.nbytes for spec in self.layout if spec.name == self.touch), 0)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorData:
        layout = [
            TensorSpec(spec["name"], tuple(spec["shape"]), spec["dtype"], spec["offset"])
            for spec in data.pop("layout")
        ]
        return cls(layout=layout, **data)


@dataclass
class RecordData:
    """Records made from ``seed``: ``count`` dicts of two small tensors and a name."""

    count: int
    seed: int
    digest: dict[str, str] = field(default_factory=dict)
    footprint: int = 0  # bytes of the records as plain Python objects (see records_footprint)

    @property
    def nbytes(self) -> int:
        return self.count * RECORD_BYTES


@dataclass
class Manifest:
    """Everything a worker needs to know about the data of one size; stored as JSON."""

    size: int
    checkpoint: TensorData
    records: RecordData
    ascii: dict[str, TensorData]  # by case name: ascii-float32, ascii-float64

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        data = json.loads(Path(path).read_text())
        return cls(
            size=data["size"],
            checkpoint=TensorData.from_json(data["checkpoint"]),
            records=RecordData(**data["records"]),
            ascii={name: TensorData.from_json(d) for name, d in data["ascii"].items()},
        )

    def tensors_of(self, case: str) -> TensorData:
        """The tensor data set a case saves and loads (the checkpoint unless ascii)."""
        return self.ascii.get(case, self.checkpoint)


def checkpoint_layout(total: int, count: int = TENSORS) -> tuple[list[TensorSpec], str]:
    """``count`` tensors of about ``total`` bytes in all, and the name of the one to touch.

    The touched tensor sits in the middle of the file and is 16 MiB (half of ``total`` when
    that is smaller); the others share the rest, whole rows of 1 KiB each.

    >>> layout, touch = checkpoint_layout(64 << 20)
    >>> len(layout), touch, sum(s.nbytes for s in layout) == 64 << 20
    (20, 'layer10.weight', True)
    """
    if total < MIN_SIZE:
        raise ValueError(f"a checkpoint needs at least {MIN_SIZE} bytes, got {total}")
    middle = count // 2
    touch_rows = min(TOUCH_BYTES, total // 2) // ROW_BYTES
    rest = total // ROW_BYTES - touch_rows
    share, extra = divmod(rest, count - 1)
    rows = [share + (1 if i < extra else 0) for i in range(count - 1)]
    rows.insert(middle, touch_rows)
    layout, offset = [], 0
    for i, n in enumerate(rows):
        spec = TensorSpec(f"layer{i:02d}.weight", (n, COLUMNS), FLOAT32.str, offset)
        layout.append(spec)
        offset += spec.nbytes
    return layout, layout[middle].name


def write_tensors(data: TensorData, seed: int) -> TensorData:
    """Generate the tensors of ``data`` (uniform in [0, 1)) into its raw file; add checksums."""
    with open(data.source, "wb") as out:
        for index, spec in enumerate(data.layout):
            rng = np.random.default_rng([seed, index])
            dtype = np.dtype(spec.dtype)
            crc, left = 0, spec.count
            chunk_elements = CHUNK_BYTES // dtype.itemsize
            while left:
                chunk = rng.random(min(left, chunk_elements), dtype=dtype.type)
                crc = zlib.crc32(chunk.data, crc)
                out.write(chunk.data)
                left -= chunk.size
            data.digest[spec.name] = _digest_text(dtype, spec.shape, crc)
    if data.touch is not None:
        data.touch_value = touch_value(map_tensors(data)[data.touch])
    return data


def read_tensors(data: TensorData) -> dict[str, np.ndarray[Any, Any]]:
    """The data set's tensors read into memory (anonymous pages), in layout order."""
    arrays = {}
    with open(data.source, "rb") as source:
        for spec in data.layout:
            array = np.fromfile(source, np.dtype(spec.dtype), spec.count)
            arrays[spec.name] = array.reshape(spec.shape)
    return arrays


def map_tensors(data: TensorData) -> dict[str, np.ndarray[Any, Any]]:
    """The data set's tensors as read-only ``np.memmap`` views of its raw file."""
    return {
        spec.name: np.memmap(data.source, np.dtype(spec.dtype), "r", spec.offset, spec.shape)
        for spec in data.layout
    }


def touch_value(array: Any) -> float:
    """What a lazy load computes from the tensor it touches: the sum of all its elements."""
    return float(np.asarray(array).sum(dtype=np.float64))


def array_digest(array: Any) -> str:
    """dtype, shape and CRC-32 of an array's bytes (C order), e.g. ``<f4(4, 4):1a2b3c4d``."""
    array = np.ascontiguousarray(array)
    return _digest_text(array.dtype, array.shape, zlib.crc32(array.reshape(-1).view(np.uint8)))


def _digest_text(dtype: np.dtype[Any], shape: tuple[int, ...], crc: int) -> str:
    return f"{dtype.str}{tuple(shape)}:{crc:08x}"


def tensors_digest(arrays: Mapping[str, Any]) -> dict[str, str]:
    """``array_digest`` of every tensor of a loaded data set, by name."""
    return {name: array_digest(array) for name, array in arrays.items()}


def make_records(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` records, each with its own small arrays (not views of one big array)."""
    rng = np.random.default_rng([seed, 1 << 20])
    weights = rng.random((count, 4, 4), dtype=np.float32)
    biases = rng.random((count, 4), dtype=np.float32)
    return [
        {"name": f"encoder.block{i}.proj", "w": weights[i].copy(), "b": biases[i].copy()}
        for i in range(count)
    ]


def records_footprint(records: list[dict[str, Any]]) -> int:
    """Bytes the records take as plain Python objects: the list, each dict, name and array
    (with its data), as ``sys.getsizeof`` counts them. A loader's result cannot be smaller in
    kind, so this is what a records load may keep without counting as overhead."""
    total = sys.getsizeof(records)
    for record in records:
        total += sys.getsizeof(record) + sum(sys.getsizeof(value) for value in record.values())
    return total


def records_digest(rows: Iterable[tuple[str, Any, Any]]) -> dict[str, str]:
    """Checksums of records given as ``(name, w, b)``: the CRC-32 of all names, of all
    ``w`` bytes and of all ``b`` bytes in order, with the shapes and dtypes seen."""
    count, crc_w, crc_b, crc_names = 0, 0, 0, 0
    kinds: set[str] = set()
    for name, w, b in rows:
        w, b = np.ascontiguousarray(w), np.ascontiguousarray(b)
        kinds.add(f"w{w.dtype.str}{w.shape} b{b.dtype.str}{b.shape}")
        crc_w = zlib.crc32(w.reshape(-1).view(np.uint8).data, crc_w)
        crc_b = zlib.crc32(b.reshape(-1).view(np.uint8).data, crc_b)
        crc_names = zlib.crc32(name.encode() + b"\n", crc_names)
        count += 1
    return {
        "count": str(count),
        "kinds": " ".join(sorted(kinds)),
        "w": f"{crc_w:08x}",
        "b": f"{crc_b:08x}",
        "names": f"{crc_names:08x}",
    }


def index_digest(shapes: Iterable[tuple[int, ...]]) -> dict[str, str]:
    """What an index of the records' tensors must list: how many tensors of each shape (the
    names are left out: each library spells its paths its own way)."""
    counts: dict[str, int] = {}
    for shape in shapes:
        key = str(tuple(shape))
        counts[key] = counts.get(key, 0) + 1
    return {key: str(n) for key, n in sorted(counts.items())}


def make_manifest(
    folder: Path, size: int, records: int, ascii_elements: int, seed: int, cases: Iterable[str]
) -> Manifest:
    """Generate the data of one size that ``cases`` need under ``folder``, and describe it."""
    cases = set(cases)
    layout, touch = checkpoint_layout(size)
    checkpoint = TensorData(str(folder / "checkpoint.raw"), layout, touch)
    if cases & {"checkpoint", "memmap", "compressed"}:
        write_tensors(checkpoint, seed)
    ascii_sets = {}
    for number, (name, dtype) in enumerate(ASCII_DTYPES.items(), 1):
        spec = TensorSpec("x", (ascii_elements,), dtype, 0)
        ascii_sets[name] = TensorData(str(folder / f"{name}.raw"), [spec])
        if name in cases:
            write_tensors(ascii_sets[name], seed + number)
    record_data = RecordData(count=records, seed=seed)
    if "records" in cases:
        made = make_records(records, seed)
        record_data.digest = records_digest((r["name"], r["w"], r["b"]) for r in made)
        record_data.footprint = records_footprint(made)
    return Manifest(size=size, checkpoint=checkpoint, records=record_data, ascii=ascii_sets)
