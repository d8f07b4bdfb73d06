"""Compressed checkpoints: ratio and speed by level and threads, lazy reads, memory, shuffle.

``python -m bench.zstd`` prints four tables (``--size``: bytes of each data set, default 256M;
``--lazy-sizes``: the compressed checkpoints a tensor is read from, default 256M,2G):

1. save with ``compress="zstd"`` at levels 1, 3, 9 with 1 and 2 threads, on float32 weights
   drawn from N(0, 0.02) and on int64 (Long) token ids: compression ratio, throughput, and the
   ratio of the time to a plain save and to the ``zstd`` command line tool on the same bytes
   (same level and threads, plain file to compressed file);
2. lazy reads: ``open`` of a compressed checkpoint of 16 MiB tensors, then one tensor read,
   against one decompression of 16 MiB at the same level (the issue's bound: at most 3x,
   independent of the file's size);
3. peak anonymous memory (``RssAnon``, sampled every 2 ms in a child process) of a compressed
   save and of a lazy open + tensor read (the bound: 128 MiB);
4. the byte-shuffle experiment: the bytes of each float regrouped by position before zstd.

Times are the best of ``--repeat`` warm runs; every input is touched once before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

import streamser

from .units import parse_size

MiB = 1 << 20
TENSOR = 16 * MiB


def weights(nbytes: int, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    """float32 weights from N(0, 0.02) in 16 MiB tensors (the last one smaller)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i, start in enumerate(range(0, nbytes, TENSOR)):
        count = min(TENSOR, nbytes - start) // 4
        out[f"layer{i}.weight"] = rng.normal(0, 0.02, count).astype(np.float32)
    return out


def token_ids(nbytes: int, seed: int = 1) -> dict[str, np.ndarray[Any, Any]]:
    """int64 token ids below 50,000 (a vocabulary), Zipf-like, in 16 MiB tensors."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for i, start in enumerate(range(0, nbytes, TENSOR)):
        count = min(TENSOR, nbytes - start) // 8
        out[f"batch{i}"] = np.minimum(rng.zipf(1.2, count), 49_999).astype(np.int64)
    return out


def best(run: Callable[[], object], repeat: int) -> float:
    run()  # warm: first touch of memory and of the page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def levels_table(folder: Path, size: int, repeat: int) -> list[str]:
    zstd = shutil.which("zstd")
    lines = [
        f"1. save with compress='zstd' ({size // MiB} MiB of each data set)",
        f"{'data':<22}{'level':>6}{'thr':>4}{'ratio':>8}{'MB/s':>8}"
        f"{'x plain save':>14}{'zstd CLI ratio':>16}{'CLI MB/s':>10}{'x CLI':>8}",
    ]
    plain_path = folder / "plain.t7"
    packed = folder / "packed.t7.zst"
    for name, value in (("float32 N(0,0.02)", weights(size)), ("int64 token ids", token_ids(size))):
        plain_time = best(partial(streamser.save, plain_path, value), repeat)
        plain = plain_path.stat().st_size
        for level in (1, 3, 9):
            for threads in (1, 2):

                def save(v: Any = value, lv: int = level, th: int = threads) -> None:
                    streamser.save(packed, v, compress="zstd", level=lv, threads=th)

                seconds = best(save, repeat)
                ratio = plain / packed.stat().st_size
                cli = folder / "cli.zst"
                cli_row = f"{'-':>16}{'-':>10}{'-':>8}"
                if zstd is not None:
                    command = [zstd, "-q", "-f", f"-{level}", f"-T{threads}", str(plain_path)]
                    command += ["-o", str(cli)]
                    cli_time = best(partial(subprocess.run, command, check=True), repeat)
                    cli_ratio = plain / cli.stat().st_size
                    cli_row = (
                        f"{cli_ratio:>16.3f}{plain / cli_time / 1e6:>10.0f}"
                        f"{seconds / cli_time:>7.2f}x"
                    )
                lines.append(
                    f"{name:<22}{level:>6}{threads:>4}{ratio:>8.3f}{plain / seconds / 1e6:>8.0f}"
                    f"{seconds / plain_time:>13.2f}x{cli_row}"
                )
        lines.append(f"{name:<22} plain save (fsync): {plain_time * 1e3:.0f} ms")
    return lines


def lazy_table(folder: Path, sizes: list[int], repeat: int) -> list[str]:
    lines = [
        "2. lazy read of one 16 MiB tensor from a compressed checkpoint (level 3)",
        f"{'file':>8}{'frames':>8}{'open ms':>9}{'read 16 MiB ms':>16}"
        f"{'decompress 16 MiB ms':>22}{'read / decompress':>19}",
    ]
    for size in sizes:
        path = folder / f"lazy{size}.t7.zst"
        value = weights(size)
        streamser.save(path, value, compress="zstd", level=3, threads=2)
        middle = f"layer{size // TENSOR // 2}.weight"
        expected = value[middle]
        del value
        tensor = np.random.default_rng(9).normal(0, 0.02, TENSOR // 4).astype(np.float32)
        packed = zstandard.ZstdCompressor(level=3).compress(tensor.tobytes())
        decompress = best(partial(zstandard.ZstdDecompressor().decompress, packed), repeat)

        def open_only(p: Path = path) -> None:
            with streamser.open(p) as f:
                f.tensors()

        def read_one(p: Path = path, key: str = middle) -> None:
            with streamser.open(p) as f:
                f.get(key).sum()

        opened = best(open_only, repeat)
        read = best(read_one, repeat) - opened
        with streamser.open(path) as f:
            frames = getattr(f._source, "frame_count", 0)  # a FrameSource: its frames
            if not np.array_equal(f.get(middle), expected):
                raise SystemExit(f"wrong tensor read from {path}")
        lines.append(
            f"{size // MiB:>7}M{frames:>8}{opened * 1e3:>9.1f}{read * 1e3:>16.1f}"
            f"{decompress * 1e3:>22.1f}{read / decompress:>18.2f}x"
        )
        path.unlink()
    return lines


MEMORY_BOUND = 128 * MiB


def memory_table(folder: Path, size: int) -> list[str]:
    """Peaks of a compressed save and a lazy read; exits with 1 past the bound."""
    lines = [
        "3. peak anonymous memory (RssAnon above the process's baseline; bound 128 MiB)",
    ]
    over = []
    path = folder / "mem.t7.zst"
    for job in (
        {"op": "save", "path": str(path), "size": size},
        {"op": "lazy", "path": str(path), "size": size},
    ):
        out = subprocess.run(
            [sys.executable, "-m", "bench.zstd", "--child", json.dumps(job)],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        report = json.loads(out.stdout.strip().splitlines()[-1])
        what = {
            "save": "compressed save (level 3, 2 threads), weights built beforehand",
            "lazy": "open + tensors() + read one 16 MiB tensor",
        }[str(job["op"])]
        lines.append(
            f"{size // MiB}M {what}: +{report['peak'] / MiB:.1f} MiB in {report['seconds']:.2f} s"
        )
        if report["peak"] >= MEMORY_BOUND:
            over.append(what)
    path.unlink(missing_ok=True)
    if over:
        print("\n".join(lines))
        raise SystemExit(f"over {MEMORY_BOUND // MiB} MiB: {', '.join(over)}")
    return lines


def _anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def child(job: dict[str, Any]) -> None:
    """Run one job while a thread samples RssAnon; print the peak above the baseline."""
    path = Path(job["path"])
    value = weights(job["size"]) if job["op"] == "save" else None
    if value is not None:
        for array in value.values():
            array.sum()
    baseline = _anon()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _anon())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if value is not None:
        streamser.save(path, value, compress="zstd", level=3, threads=2)
    else:
        with streamser.open(path) as f:
            f.tensors()
            f.get("layer1.weight").sum()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    peak = max(peak, _anon())
    print(json.dumps({"peak": peak - baseline, "seconds": seconds}))


def shuffle_table(size: int, repeat: int) -> list[str]:
    """The byte-shuffle transform, measured on the raw bytes of float32 weights."""
    data = np.concatenate(list(weights(size).values()))
    raw = data.view(np.uint8)
    lines = [
        f"4. byte shuffle of float32 weights ({size // MiB} MiB, one thread, zstandard)",
        f"{'level':>6}{'ratio':>8}{'shuffled':>10}{'saved':>8}"
        f"{'MB/s':>8}{'shuffled MB/s':>15}{'unshuffle MB/s':>16}",
    ]
    for level in (1, 3, 9):
        compressor = zstandard.ZstdCompressor(level=level)
        plain_time = best(partial(compressor.compress, raw.data), repeat)
        packed = compressor.compress(raw.data)

        def shuffled(c: Any = compressor) -> bytes:
            return bytes(c.compress(np.ascontiguousarray(raw.reshape(-1, 4).T)))

        shuffle_time = best(shuffled, repeat)
        packed_shuffled = shuffled()
        planes = np.frombuffer(zstandard.ZstdDecompressor().decompress(packed_shuffled), np.uint8)
        unshuffle = best(partial(np.ascontiguousarray, planes.reshape(4, -1).T), repeat)
        assert np.array_equal(np.ascontiguousarray(planes.reshape(4, -1).T).reshape(-1), raw)
        ratio, ratio_shuffled = raw.nbytes / len(packed), raw.nbytes / len(packed_shuffled)
        saved = 1 - len(packed_shuffled) / len(packed)
        lines.append(
            f"{level:>6}{ratio:>8.3f}{ratio_shuffled:>10.3f}{saved:>7.1%}"
            f"{raw.nbytes / plain_time / 1e6:>8.0f}{raw.nbytes / shuffle_time / 1e6:>15.0f}"
            f"{raw.nbytes / unshuffle / 1e6:>16.0f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.zstd", description=__doc__)
    parser.add_argument("--size", default="256M", help="bytes of each data set (default 256M)")
    parser.add_argument("--lazy-sizes", default="256M,2G", help="compressed checkpoints to read")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CI: 16M, one run, all tables")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    size = parse_size(args.size)
    lazy_sizes = [parse_size(s) for s in args.lazy_sizes.split(",")]
    if args.smoke:
        size, lazy_sizes, args.repeat = 16 * MiB, [32 * MiB], 1
    with tempfile.TemporaryDirectory(prefix="bench-zstd-", dir=os.environ.get("BENCH_DIR")) as d:
        folder = Path(d)
        for table in (
            levels_table(folder, size, args.repeat),
            lazy_table(folder, lazy_sizes, args.repeat),
            memory_table(folder, max(lazy_sizes)),
            shuffle_table(size, args.repeat),
        ):
            print("\n".join(table), end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
