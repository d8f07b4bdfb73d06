"""Memory and time of ``streamser convert`` between ``.t7`` and ``.safetensors``.

```sh
python -m bench.safetensors_bridge                 # 1 GiB, best of 3, about a minute
python -m bench.safetensors_bridge --size 256M --repeat 1
```

The data is a Torch7 ``nn.Sequential`` of ``nn.Linear`` layers (float32 weights of 64 MiB at
1 GiB, and biases), written by streamser; its ``.safetensors`` twin is made by the converter
itself and checked. Each measurement runs in a fresh process that samples its own memory every
5 ms (``/proc/self/status``): the peak of ``RssAnon`` (heap, copies) and of ``VmRSS`` (which
also counts the pages of mapped files the process touched: clean page cache, given back under
pressure) above what the process held before the operation, imports included. Times are wall
clock, page cache warm, best of ``--repeat``; memory is the highest of the runs. Every output is
checked afterwards, one tensor at a time, against its source with safetensors' own ``safe_open``.

Baselines: what a user does without the bridge, which holds the whole data in memory
(safetensors' ``load_file`` then ``streamser.save``; ``streamser.load`` then ``save_file``), and
``shutil.copyfile`` of the file (the disk's own speed for the same bytes).

Standalone on purpose (no ``bench`` harness): ``python -m bench.safetensors_bridge``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

LAYER_BYTES = 64 << 20  # one layer's weight at 1 GiB and above
CHILD = "--child"


# --- data ------------------------------------------------------------------------------------


def layer_shapes(size: int) -> list[tuple[int, int]]:
    """(out, in) of each Linear so that the weights total ``size`` bytes of float32."""
    per_layer = min(LAYER_BYTES, size)
    side = int((per_layer // 4) ** 0.5)
    return [(side, side)] * max(1, size // (side * side * 4))


def make_data(folder: Path, size: int) -> None:
    """``model.t7`` (an nn.Sequential of nn.Linear) and its ``.safetensors`` twin."""
    import streamser
    from streamser.tools.to_safetensors import t7_to_safetensors

    def layers() -> Iterator[tuple[int, Any]]:
        rng = np.random.default_rng(0)
        for index, (rows, cols) in enumerate(layer_shapes(size), 1):
            weight = rng.standard_normal((rows, cols), dtype=np.float32)
            fields = {"weight": weight, "bias": np.zeros(rows, np.float32)}
            yield index, streamser.TorchObject("nn.Linear", fields)

    count = len(layer_shapes(size))
    modules = streamser.TableStream(count, layers())
    model = streamser.TorchObject("nn.Sequential", {"modules": modules})
    streamser.save(folder / "model.t7", model)
    t7_to_safetensors(folder / "model.t7", folder / "model.safetensors")


# --- the operations --------------------------------------------------------------------------


def st_to_t7(folder: Path) -> None:
    import streamser
    from streamser.tools.from_safetensors import SafetensorsFile

    streamser.save(folder / "out.t7", SafetensorsFile(folder / "model.safetensors").table())


def st_to_t7_float16(folder: Path) -> None:
    import streamser
    from streamser.tools.from_safetensors import SafetensorsFile

    source = SafetensorsFile(folder / "model.safetensors")
    streamser.save(folder / "out16.t7", source.table(), cast="float16")


def t7_to_st_paths(folder: Path) -> None:
    from streamser.tools.to_safetensors import t7_to_safetensors

    t7_to_safetensors(folder / "model.t7", folder / "paths.safetensors")


def t7_to_st_torch_names(folder: Path) -> None:
    from streamser.tools.to_safetensors import t7_to_safetensors

    t7_to_safetensors(folder / "model.t7", folder / "torch.safetensors", torch_names=True)


def baseline_load_file_then_save(folder: Path) -> None:
    import safetensors.numpy

    import streamser

    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    streamser.save(folder / "base.t7", tensors)


def baseline_load_then_save_file(folder: Path) -> None:
    import safetensors.numpy

    import streamser

    with streamser.open(folder / "model.t7") as handle:
        arrays = {path: np.asarray(array) for path, array in handle.arrays()}
        safetensors.numpy.save_file(arrays, folder / "base.safetensors")


def copy_file(folder: Path) -> None:
    shutil.copyfile(folder / "model.safetensors", folder / "copy.safetensors")


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "safetensors -> t7": (st_to_t7, "streamser convert model.safetensors out.t7"),
    "safetensors -> t7, cast float16": (st_to_t7_float16, "... --cast float16"),
    "t7 -> safetensors, path names": (t7_to_st_paths, "streamser convert model.t7 x.safetensors"),
    "t7 -> safetensors, torch names": (t7_to_st_torch_names, "... --torch-names"),
    "baseline: load_file + save": (baseline_load_file_then_save, "safetensors.numpy.load_file"),
    "baseline: load + save_file": (baseline_load_then_save_file, "safetensors.numpy.save_file"),
    "limit: copyfile": (copy_file, "shutil.copyfile of model.safetensors"),
}
_IMPORTS = ("streamser", "safetensors", "safetensors.numpy", "torch")


# --- measuring, in a fresh process -----------------------------------------------------------


def _status() -> tuple[int, int]:
    """(VmRSS, RssAnon) of this process, in bytes."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(rest.split()[0]) * 1024
    return fields["VmRSS"], fields["RssAnon"]


def measure(name: str, folder: Path) -> dict[str, float]:
    """Run case ``name`` once here; its time and peak memory above the state before it."""
    for module in _IMPORTS:
        __import__(module)
    operation = CASES[name][0]
    rss0, anon0 = _status()
    peaks = [rss0, anon0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            rss, anon = _status()
            peaks[0], peaks[1] = max(peaks[0], rss), max(peaks[1], anon)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, cpu = time.perf_counter(), time.process_time()
    operation(folder)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    done.set()
    sampler.join()
    rss, anon = _status()
    peak_rss, peak_anon = max(peaks[0], rss) - rss0, max(peaks[1], anon) - anon0
    return {"seconds": seconds, "cpu": cpu_seconds, "rss": peak_rss, "anon": peak_anon}


def run_child(name: str, folder: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.safetensors_bridge", CHILD, name, str(folder)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- checking --------------------------------------------------------------------------------


def check_outputs(folder: Path) -> list[str]:
    """Every output against its source, one tensor at a time; returns the problems found."""
    from safetensors import safe_open

    import streamser

    problems: list[str] = []
    with safe_open(folder / "model.safetensors", framework="numpy") as source:
        names = list(source.offset_keys())
        for t7 in ("out.t7", "out16.t7"):
            with streamser.open(folder / t7) as handle:
                for name in names:
                    expected = source.get_tensor(name)
                    if t7 == "out16.t7":
                        expected = expected.astype(np.float16)
                    if not np.array_equal(handle.get(name), expected):
                        problems.append(f"{t7}: {name} differs")
    with (
        streamser.open(folder / "model.t7") as handle,
        safe_open(folder / "paths.safetensors", framework="numpy") as paths,
        safe_open(folder / "torch.safetensors", framework="numpy") as named,
    ):
        for index, (path, array) in enumerate(handle.arrays()):
            torch_name = f"{(index // 2)}.{'weight' if index % 2 == 0 else 'bias'}"
            if not np.array_equal(paths.get_tensor(path), array):
                problems.append(f"paths.safetensors: {path} differs")
            if not np.array_equal(named.get_tensor(torch_name), array):
                problems.append(f"torch.safetensors: {torch_name} differs")
    return problems


# --- the report ------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == CHILD:
        print(json.dumps(measure(argv[1], Path(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.safetensors_bridge")
    parser.add_argument("--size", default="1G", help="bytes of weights (default 1G)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="streamser-st-bench-") as temp:
        folder = Path(temp)
        make_data(folder, size)
        data = (folder / "model.safetensors").stat().st_size
        print(f"{data:,} bytes of safetensors ({len(layer_shapes(size))} layers), warm cache")
        print(f"{'case':<34} {'time':>9} {'MB/s':>7} {'cpu':>8} {'peak anon':>11} {'peak RSS':>11}")
        for name in CASES:
            runs = [run_child(name, folder) for _ in range(args.repeat)]
            best = min(run["seconds"] for run in runs)
            cpu = min(run["cpu"] for run in runs)
            anon, rss = max(run["anon"] for run in runs), max(run["rss"] for run in runs)
            print(
                f"{name:<34} {best * 1e3:>7.0f} ms {data / best / 1e6:>7.0f} {cpu * 1e3:>5.0f} ms "
                f"{anon / 2**20:>7.1f} MiB {rss / 2**20:>7.1f} MiB"
            )
        problems = check_outputs(folder)
    print("outputs checked with safe_open:", "OK" if not problems else "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
