"""The data every contender saves and loads, made deterministically, and its checksums.

Two shapes of data:

* a *checkpoint*: ``count`` float32 tensors of shape ``(rows, 256)`` named ``layerNN.weight``,
  one of them (the one a lazy load touches) 16 MiB, the rest sharing what is left of the size.
  It is generated once per size into a raw file (the tensors back to back, no header), which
  the children read into memory (``np.fromfile``) or map (``np.memmap``) as their input;
* *records*: many small tensors, a list of ``{"name": str, "w": 4x4 float32, "b": 4 float32}``,
  made from a seed in each child (they are small).

A result is checked by CRC-32 of every tensor's bytes (plus dtype and shape), computed by zlib
over whole buffers, never by a Python loop over elements.
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

DTYPE = np.dtype(np.float32)
COLUMNS = 256  # every checkpoint tensor is (rows, 256) float32: 1 KiB a row
ROW_BYTES = COLUMNS * DTYPE.itemsize
TOUCH_BYTES = 16 << 20  # the tensor a lazy load reads
TENSORS = 20
CHUNK_ELEMENTS = 8 << 20  # generate and write 32 MiB at a time
RECORD_BYTES = (16 + 4) * DTYPE.itemsize  # payload of one record: w and b
MIN_SIZE = TENSORS * 2 * ROW_BYTES


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a checkpoint and where its bytes sit in the raw source file."""

    name: str
    rows: int
    offset: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, COLUMNS)

    @property
    def nbytes(self) -> int:
        return self.rows * ROW_BYTES


@dataclass
class TensorData:
    """A checkpoint: its layout, the raw file holding it, and the checksums to expect."""

    source: str
    layout: list[TensorSpec]
    touch: str  # the tensor a lazy load sums
    digest: dict[str, str] = field(default_factory=dict)
    touch_value: float = 0.0

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.layout)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorData:
        layout = [TensorSpec(**spec) for spec in data.pop("layout")]
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
    """Everything a child needs to know about the data of one size; stored as JSON."""

    size: int
    checkpoint: TensorData
    ascii: TensorData
    records: RecordData

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        data = json.loads(Path(path).read_text())
        return cls(
            size=data["size"],
            checkpoint=TensorData.from_json(data["checkpoint"]),
            ascii=TensorData.from_json(data["ascii"]),
            records=RecordData(**data["records"]),
        )


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
        layout.append(TensorSpec(f"layer{i:02d}.weight", n, offset))
        offset += n * ROW_BYTES
    return layout, layout[middle].name


def write_checkpoint(path: Path, total: int, seed: int) -> TensorData:
    """Generate a checkpoint of ``total`` bytes into the raw file ``path``, with checksums."""
    data = describe_checkpoint(path, total)
    layout, touch = data.layout, data.touch
    buffer = np.empty(CHUNK_ELEMENTS, DTYPE)
    with open(path, "wb") as out:
        for index, spec in enumerate(layout):
            rng = np.random.default_rng([seed, index])
            crc, left = 0, spec.nbytes // DTYPE.itemsize
            while left:
                chunk = buffer[: min(left, CHUNK_ELEMENTS)]
                rng.random(out=chunk, dtype=DTYPE)
                crc = zlib.crc32(chunk.data, crc)
                out.write(chunk.data)
                left -= chunk.size
            data.digest[spec.name] = _digest_text(DTYPE, spec.shape, crc)
    arrays = map_checkpoint(data)
    data.touch_value = touch_value(arrays[touch])
    return data


def read_checkpoint(data: TensorData) -> dict[str, np.ndarray]:
    """The checkpoint's tensors read into memory (anonymous pages), in layout order."""
    arrays = {}
    with open(data.source, "rb") as source:
        for spec in data.layout:
            arrays[spec.name] = np.fromfile(source, DTYPE, spec.rows * COLUMNS).reshape(spec.shape)
    return arrays


def map_checkpoint(data: TensorData) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as read-only ``np.memmap`` views of its raw file."""
    return {
        spec.name: np.memmap(data.source, DTYPE, "r", spec.offset, spec.shape)
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


def checkpoint_digest(arrays: Mapping[str, Any]) -> dict[str, str]:
    """``array_digest`` of every tensor of a loaded checkpoint, by name."""
    return {name: array_digest(array) for name, array in arrays.items()}


def make_records(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` records, each with its own small arrays (not views of one big array)."""
    rng = np.random.default_rng([seed, 1 << 20])
    weights = rng.random((count, 4, 4), dtype=DTYPE)
    biases = rng.random((count, 4), dtype=DTYPE)
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


def describe_checkpoint(path: Path, total: int) -> TensorData:
    """A checkpoint's layout without its data, for cases not run."""
    layout, touch = checkpoint_layout(total)
    return TensorData(source=str(path), layout=layout, touch=touch)


def make_manifest(
    folder: Path, size: int, records: int, ascii_size: int, seed: int, cases: Iterable[str]
) -> Manifest:
    """Generate the data of one size that ``cases`` need under ``folder``, and describe it."""
    cases = set(cases)
    path, ascii_path = folder / "checkpoint.raw", folder / "ascii.raw"
    checkpoint = (
        write_checkpoint(path, size, seed)
        if cases & {"checkpoint", "memmap"}
        else describe_checkpoint(path, size)
    )
    ascii_data = (
        write_checkpoint(ascii_path, ascii_size, seed + 1)
        if "ascii" in cases
        else describe_checkpoint(ascii_path, ascii_size)
    )
    record_data = RecordData(count=records, seed=seed)
    if "records" in cases:
        made = make_records(records, seed)
        record_data.digest = records_digest((r["name"], r["w"], r["b"]) for r in made)
        record_data.footprint = records_footprint(made)
    return Manifest(size=size, checkpoint=checkpoint, ascii=ascii_data, records=record_data)
