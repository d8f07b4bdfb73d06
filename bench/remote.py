"""Checkpoints on object storage against a local SeaweedFS server: ``python -m bench.remote``.

Standalone (it does not use the ``bench`` harness): it starts SeaweedFS on loopback
(:mod:`bench.loopback`), writes a checkpoint of 20 float32 tensors (one of 16 MiB, one of
64 MiB, the rest sharing what is left of ``--size``) and a records file (``--records`` records
of a name, a 4x4 and a 4-element tensor: twice as many tensors), and measures the targets of
issue 15, each against the same operation done by s3fs itself:

1. ``open`` of each file through a counting proxy: bytes and requests, against at most 1.5x the
   record bytes + 1 MiB, in at most one request per storage payload larger than the read-ahead
   block + ceil(record bytes / block) + 2. *Record bytes* are the bytes the parse must see: the
   file less the payloads larger than a block (smaller payloads sit inside the read-ahead
   windows, and S3 has no multi-range GET to skip them); the strict figure (less every payload)
   is printed too.
2. ``f[name]`` of the 16 MiB tensor, against one ranged GET of those bytes (``fs.cat_file``).
3. ``load`` of the whole checkpoint, against ``fs.cat`` of the object.
4. ``save`` of the checkpoint (its tensors ``np.memmap`` views, so that they are not anonymous
   memory) in a fresh process, against ``fs.put`` of the same bytes from a local file; the
   save's peak anonymous memory (``RssAnon``, sampled every 5 ms) over the process's baseline.
5. ``get_slice(...)[a:a+10]`` of the 64 MiB tensor through the proxy: bytes against 2 blocks.

Times are wall-clock, best of ``--repeat`` runs with the two contenders alternating (the VM is
shared and noisy). Big temporary files go to ``--folder`` and are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import streamser
from bench.loopback import CountingProxy, SeaweedFS, Traffic
from streamser.io.ranged import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_CONCURRENCY

MiB = 1 << 20
COLUMNS = 256
BUCKET = "bench"


@dataclass(frozen=True)
class Layout:
    """Tensor names and rows of the checkpoint; ``touch`` is 16 MiB, ``sliced`` 64 MiB."""

    rows: dict[str, int]
    touch: str
    sliced: str

    @classmethod
    def of(cls, total: int, count: int = 20) -> Layout:
        row_bytes = COLUMNS * 4
        touch_rows = min(16 * MiB, total // 8) // row_bytes
        sliced_rows = min(64 * MiB, total // 4) // row_bytes
        rest = total // row_bytes - touch_rows - sliced_rows
        share = rest // (count - 2)
        names = [f"layer{i:02d}" for i in range(count)]
        rows = dict.fromkeys(names, share)
        rows[names[count // 2]] = touch_rows
        rows[names[count // 2 + 1]] = sliced_rows
        return cls(rows, names[count // 2], names[count // 2 + 1])


def write_raw(path: Path, layout: Layout) -> dict[str, np.memmap[Any, Any]]:
    """The tensors back to back in a raw file, returned as read-only ``np.memmap`` views."""
    total = sum(layout.rows.values()) * COLUMNS
    raw = np.memmap(path, np.float32, "w+", shape=(total,))
    rng = np.random.default_rng(15)
    for start in range(0, total, 8 * MiB):
        piece = raw[start : start + 8 * MiB]
        rng.random(out=piece, dtype=np.float32)
    raw.flush()
    del raw
    views, offset = {}, 0
    for name, rows in layout.rows.items():
        views[name] = np.memmap(path, np.float32, "r", offset, (rows, COLUMNS))
        offset += rows * COLUMNS * 4
    return views


def records(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(16)
    w = rng.random((count, 4, 4), dtype=np.float32)
    b = rng.random((count, 4), dtype=np.float32)
    return [{"name": f"encoder.block{i}.proj", "w": w[i], "b": b[i]} for i in range(count)]


def best(runs: int, *contenders: Callable[[], Any]) -> list[float]:
    """Best wall time of each contender, run alternately ``runs`` times."""
    times = [math.inf] * len(contenders)
    for _ in range(runs):
        for index, run in enumerate(contenders):
            start = time.perf_counter()
            run()
            times[index] = min(times[index], time.perf_counter() - start)
    return times


def payloads(data_path: Path) -> list[int]:
    """The byte sizes of every storage payload of a ``.t7`` file."""
    with streamser.open(data_path) as f:
        seen: dict[int | None, int] = {}
        for info in f.tensors():
            seen[info.storage_offset] = info.storage_nbytes
    return list(seen.values())


@dataclass
class Bound:
    """What ``open`` may cost for one file (see the module)."""

    size: int
    record_bytes: int
    strict_record_bytes: int
    big_payloads: int
    block: int

    @classmethod
    def of(cls, path: Path, block: int) -> Bound:
        sizes = payloads(path)
        size = path.stat().st_size
        big = [n for n in sizes if n > block]
        return cls(size, size - sum(big), size - sum(sizes), len(big), block)

    @property
    def max_bytes(self) -> float:
        return 1.5 * self.record_bytes + MiB

    @property
    def max_requests(self) -> int:
        return self.big_payloads + -(-self.record_bytes // self.block) + 2


def measured_open(url: str, options: dict[str, Any], proxy: CountingProxy) -> Traffic:
    proxy.reset()
    with streamser.open(url, storage_options=options):
        pass
    return proxy.reset()


SAVE_CHILD = r"""
import json, sys, threading, time
import numpy as np, streamser
from bench.remote import anon_bytes, open_views, Sampler
args = json.loads(sys.argv[1])
value = open_views(args["raw"], args["rows"])
import s3fs
fs = s3fs.S3FileSystem(**args["options"])
fs.ls(args["bucket"])  # connect before the baseline
baseline = anon_bytes()
with Sampler() as sampler:
    start = time.perf_counter()
    streamser.save(args["url"], value, storage_options=args["options"])
    elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "baseline": baseline, "peak": sampler.peak}))
"""


def anon_bytes() -> int:
    """This process's resident anonymous memory (``RssAnon``)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """The peak of :func:`anon_bytes`, sampled every 5 ms on a thread."""

    def __init__(self) -> None:
        self.peak = anon_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, anon_bytes())

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_bytes())


def open_views(raw: str, rows: dict[str, int]) -> dict[str, Any]:
    views, offset = {}, 0
    for name, count in rows.items():
        views[name] = np.memmap(raw, np.float32, "r", offset, (count, COLUMNS))
        offset += count * COLUMNS * 4
    return views


def child_save(raw: Path, layout: Layout, url: str, options: dict[str, Any]) -> dict[str, Any]:
    arguments = {"raw": str(raw), "rows": layout.rows, "url": url, "options": options}
    arguments["bucket"] = BUCKET
    result = subprocess.run(
        [sys.executable, "-c", SAVE_CHILD, json.dumps(arguments)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def line(self, text: str) -> None:
        print(text, flush=True)

    def target(self, name: str, ok: bool, text: str) -> None:
        self.line(f"  {'PASS' if ok else 'FAIL'}  {name}: {text}")
        if not ok:
            self.failures.append(name)


def run(arguments: argparse.Namespace) -> int:
    report = Report()
    block = DEFAULT_BLOCK_SIZE
    folder = Path(tempfile.mkdtemp(prefix="streamser-remote-bench-", dir=arguments.folder))
    try:
        with SeaweedFS(folder / "seaweedfs") as server, CountingProxy(server.endpoint) as proxy:
            return _measure(arguments, report, block, folder, server, proxy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _measure(
    arguments: argparse.Namespace,
    report: Report,
    block: int,
    folder: Path,
    server: SeaweedFS,
    proxy: CountingProxy,
) -> int:
    import s3fs

    direct = {**server.storage_options, "skip_instance_cache": True}
    counted = {**direct, "client_kwargs": {**direct["client_kwargs"], "endpoint_url": proxy.url}}
    fs = s3fs.S3FileSystem(**direct)
    fs.mkdir(BUCKET)
    layout = Layout.of(arguments.size)
    raw = folder / "raw.f32"
    value = write_raw(raw, layout)
    local = folder / "checkpoint.t7"
    streamser.save(local, value)
    size = local.stat().st_size
    url, put_url = f"s3://{BUCKET}/checkpoint.t7", f"s3://{BUCKET}/put.t7"
    report.line(
        f"SeaweedFS {server.endpoint}; checkpoint {size / MiB:,.1f} MiB in 20 tensors; "
        f"block {block // MiB} MiB, {DEFAULT_MAX_CONCURRENCY} requests at once"
    )

    report.line("\n4. save (fresh process; tensors np.memmap) against fs.put of the same bytes")
    saves, puts = [], []
    for _ in range(arguments.repeat):
        start = time.perf_counter()
        fs.put(str(local), put_url)
        puts.append(time.perf_counter() - start)
        saves.append(child_save(raw, layout, url, direct))
    save_time = min(s["seconds"] for s in saves)
    extra = max(s["peak"] - s["baseline"] for s in saves)
    peak = max(s["peak"] for s in saves)
    put_time = min(puts)
    report.line(
        f"  save {save_time:.2f} s ({size / MiB / save_time:,.0f} MiB/s); fs.put {put_time:.2f} s"
    )
    report.target(
        "save >= 0.8x fs.put", put_time / save_time >= 0.8, f"{put_time / save_time:.2f}x"
    )
    report.target(
        "save memory < 128 MiB",
        extra < 128 * MiB,
        f"peak anonymous {extra / MiB:.1f} MiB over the process's {(peak - extra) / MiB:.1f} MiB"
        f" (total {peak / MiB:.1f} MiB)",
    )
    assert fs.cat_file(url, start=0, end=1 << 16) == local.read_bytes()[: 1 << 16]

    report.line("\n1. open through the counting proxy")
    bound = Bound.of(local, block)
    traffic = measured_open(url, counted, proxy)
    _open_targets(report, "checkpoint", traffic, bound)
    open_time = best(arguments.repeat, lambda: streamser.open(url, storage_options=direct).close())
    report.line(f"  open time {open_time[0] * 1000:.1f} ms (direct)")

    report.line("\n2. one 16 MiB tensor against one ranged GET of its bytes")
    with streamser.open(url, storage_options=direct) as f:
        info = {i.path: i for i in f.tensors()}[layout.touch]
        assert info.offset is not None
        start, end = info.offset, info.offset + info.nbytes
        ours, theirs = best(
            max(5, arguments.repeat),
            lambda: f[layout.touch],
            lambda: fs.cat_file(url, start=start, end=end),
        )
        assert np.array_equal(f[layout.touch], value[layout.touch])
    report.line(f"  f[{layout.touch!r}] {ours * 1000:.1f} ms; fs.cat_file {theirs * 1000:.1f} ms")
    report.target("tensor <= 1.2x one GET", ours <= 1.2 * theirs, f"{ours / theirs:.2f}x")

    report.line("\n3. full load against fs.cat of the object")
    loaded: dict[str, Any] = {}

    def load() -> None:
        loaded["value"] = streamser.load(url, storage_options=direct)

    ours, theirs = best(arguments.repeat, load, lambda: fs.cat(url))
    assert np.array_equal(loaded["value"][layout.sliced], value[layout.sliced])
    loaded.clear()
    report.line(
        f"  load {ours:.2f} s ({size / MiB / ours:,.0f} MiB/s); fs.cat {theirs:.2f} s "
        f"({size / MiB / theirs:,.0f} MiB/s)"
    )
    report.target("load >= 0.8x fs.cat", theirs / ours >= 0.8, f"{theirs / ours:.2f}x")

    report.line("\n5. get_slice of 10 rows of the 64 MiB tensor")
    with streamser.open(url, storage_options=counted) as f:
        proxy.reset()
        middle = layout.rows[layout.sliced] // 2
        rows = f.get_slice(layout.sliced)[middle : middle + 10]
        traffic = proxy.reset()
    assert np.array_equal(rows, value[layout.sliced][middle : middle + 10])
    fetched = _fetched(traffic)
    report.target(
        "get_slice <= 2 blocks",
        fetched <= 2 * block,
        f"{fetched:,} bytes in {len(traffic.requests)} request(s) (2 blocks: {2 * block:,})",
    )

    report.line(f"\n1b. open of the records file ({arguments.records:,} records)")
    records_local = folder / "records.t7"
    streamser.save(records_local, records(arguments.records))
    records_url = f"s3://{BUCKET}/records.t7"
    fs.put(str(records_local), records_url)
    traffic = measured_open(records_url, counted, proxy)
    _open_targets(report, "records", traffic, Bound.of(records_local, block))
    open_time = best(
        arguments.repeat, lambda: streamser.open(records_url, storage_options=direct).close()
    )
    report.line(f"  open time {open_time[0]:.2f} s (direct; {arguments.records * 2:,} tensors)")

    report.line("\n" + ("all targets met" if not report.failures else f"missed: {report.failures}"))
    return 1 if report.failures and arguments.check else 0


def _fetched(traffic: Traffic) -> int:
    total = 0
    for request in traffic.requests:
        if request.range:
            first, last = request.range.removeprefix("bytes=").split("-")
            total += int(last) - int(first) + 1
    return total


def _open_targets(report: Report, name: str, traffic: Traffic, bound: Bound) -> None:
    fetched = _fetched(traffic)
    report.line(
        f"  {name}: {bound.size:,} bytes; record bytes {bound.record_bytes:,} "
        f"(strict, less every payload: {bound.strict_record_bytes:,}); "
        f"{bound.big_payloads} payloads over a block"
    )
    report.target(
        f"{name} open bytes",
        fetched <= bound.max_bytes,
        f"{fetched:,} fetched ({fetched / max(1, bound.record_bytes):.2f}x record bytes; "
        f"bound {bound.max_bytes:,.0f}); {traffic.bytes_down:,} bytes on the wire with headers",
    )
    methods = ", ".join(f"{m} {len(traffic.methods(m))}" for m in ("HEAD", "GET"))
    report.target(
        f"{name} open requests",
        len(traffic.requests) <= bound.max_requests,
        f"{len(traffic.requests)} ({methods}; bound {bound.max_requests})",
    )


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.remote", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--size", type=_size, default=1 << 30, help="checkpoint bytes (1G)")
    parser.add_argument("--records", type=int, default=50_000, help="records (two tensors each)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--folder", default=os.environ.get("TMPDIR"), help="for temporary files")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--smoke", action="store_true", help="64 MiB and 2,000 records, once")
    arguments = parser.parse_args(argv)
    if arguments.smoke:
        arguments.size, arguments.records, arguments.repeat = 64 * MiB, 2_000, 1
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
