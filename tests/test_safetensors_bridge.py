"""``streamser convert`` to and from ``.safetensors``, checked with safetensors' own loader."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from safetensors.torch import load_file as load_torch_file
from safetensors.torch import save_file as save_torch_file

import streamser
import streamser.torch as st
from streamser.cli.main import main
from streamser.tools.from_safetensors import SafetensorsFile
from streamser.tools.to_safetensors import t7_to_safetensors

NETS = Path(__file__).parent / "real-world" / "opencv-nets"
RNG = np.random.default_rng(14)


def every_numpy_type() -> dict[str, np.ndarray[Any, Any]]:
    arrays = {
        f"{dtype}.{index}": (RNG.standard_normal((3, 4)) * 50).astype(dtype)
        for index, dtype in enumerate(
            ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8"]
        )
    }
    arrays["scalar"] = np.array(2.5)
    arrays["empty"] = np.zeros((0, 3), np.float32)
    arrays["model.0.weight"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    return arrays


def test_safetensors_to_t7_keeps_names_types_and_values(tmp_path: Path) -> None:
    arrays = every_numpy_type()
    save_file(arrays, tmp_path / "in.safetensors", metadata={"format": "pt"})
    assert main(["convert", str(tmp_path / "in.safetensors"), str(tmp_path / "out.t7")]) == 0
    loaded = streamser.load(tmp_path / "out.t7")
    with safe_open(tmp_path / "in.safetensors", framework="numpy") as handle:
        assert list(loaded.keys()) == list(handle.offset_keys())  # data order, flat names
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype, name
        expected = array.reshape(-1) if array.size else np.zeros(0, array.dtype)
        np.testing.assert_array_equal(loaded[name].reshape(-1), expected, err_msg=name)
        if array.ndim and array.size:
            assert loaded[name].shape == array.shape
    assert loaded["scalar"].shape == (1,)  # Torch7 has no 0-d tensors


def test_t7_options_apply_to_converted_safetensors(tmp_path: Path) -> None:
    arrays = {"w": RNG.standard_normal((4, 5))}
    save_file(arrays, tmp_path / "in.safetensors")
    out = tmp_path / "out.t7"
    args = ["--format", "ascii", "--cast", "float32", "--compress", "zstd", "--quiet"]
    assert main(["convert", str(tmp_path / "in.safetensors"), str(out), *args]) == 0
    loaded = streamser.load(out)
    assert loaded["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["w"], arrays["w"].astype(np.float32))


def test_tensors_are_mapped_one_at_a_time(tmp_path: Path) -> None:
    save_file({f"t{i}": np.full(1000, i, np.float32) for i in range(4)}, tmp_path / "in.st")
    source = SafetensorsFile(tmp_path / "in.st")
    seen: list[weakref.ref[Any]] = []

    def spy(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            assert isinstance(value.base, np.memmap) or isinstance(value, np.memmap)
            seen.append(weakref.ref(value))
            assert sum(ref() is not None for ref in seen) <= 2  # this one and maybe the last
        return value

    streamser.save(tmp_path / "out.t7", source.table(), hook=spy)
    assert len(seen) == 4


def test_big_tensors_are_written_a_window_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A safetensors file's tensors are memmaps not read yet: the save faults them in a window
    at a time instead of page by page inside write()."""
    import streamser.codecs.binary

    monkeypatch.setattr(streamser.io.sink, "copies_on_server", lambda fd: False)
    big = np.arange(1 << 22, dtype=np.float32)  # 16 MiB: the size from which memmaps qualify
    save_file({"big": big}, tmp_path / "in.safetensors")
    handed: list[int] = []
    original = streamser.codecs.binary.write_in_windows

    def counted(array: Any, place: Any, write: Any, start: int = 0) -> None:
        handed.append(array.nbytes - start)
        original(array, place, write, start)

    monkeypatch.setattr(streamser.codecs.binary, "write_in_windows", counted)
    streamser.save(tmp_path / "out.t7", SafetensorsFile(tmp_path / "in.safetensors").table())
    assert handed == [big.nbytes]
    np.testing.assert_array_equal(streamser.load(tmp_path / "out.t7")["big"], big)


@pytest.mark.parametrize(
    ("dtype", "cast", "expected"),
    [
        (torch.bfloat16, "float32", np.float32),
        (torch.float8_e4m3fn, "float64", np.float64),
        (torch.float8_e5m2, "float32", np.float32),
        (torch.bool, "torch.BoolTensor=torch.ByteTensor", np.uint8),
        (torch.uint16, "torch.UInt16Tensor=torch.IntTensor", np.int32),
        (torch.uint32, "torch.UInt32Tensor=torch.LongTensor", np.int64),
    ],
)
def test_types_torch7_lacks_need_a_cast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dtype: torch.dtype, cast: str, expected: Any
) -> None:
    values = torch.tensor([[0.0, 1.0], [2.0, 0.5]]).to(dtype)
    save_torch_file({"x": values}, tmp_path / "in.safetensors")
    source, out = str(tmp_path / "in.safetensors"), str(tmp_path / "out.t7")
    assert main(["convert", source, out]) == 2
    advice = f'cast="{cast}"' if "=" in cast else 'cast="float32"'
    assert advice in capsys.readouterr().err
    assert not Path(out).exists()
    assert main(["convert", source, out, "--cast", cast]) == 0
    loaded = streamser.load(out)["x"]
    assert loaded.dtype == expected
    np.testing.assert_array_equal(loaded, values.to(torch.float64).numpy().astype(expected))


def test_t7_to_safetensors_names_tensors_by_path(tmp_path: Path) -> None:
    weight = RNG.standard_normal((4, 6)).astype(np.float32)
    value = {
        "model": {"layers": [{"weight": weight, "bias": np.zeros(4, np.int64)}]},
        "transposed": weight.T,  # a strided view of the same storage: written in C order
        "rows": weight[1:3],
        "empty": np.zeros(0, np.float32),
        "step": 3,
    }
    streamser.save(tmp_path / "in.t7", value)
    assert main(["convert", str(tmp_path / "in.t7"), str(tmp_path / "out.safetensors")]) == 0
    written = load_file(tmp_path / "out.safetensors")
    with streamser.open(tmp_path / "in.t7") as handle:
        expected = {path: np.asarray(a) for path, a in handle.arrays() if a.size}
    assert sorted(written) == sorted(expected)
    assert "model.layers[1].weight" in written  # the path syntax of streamser.open
    for name, array in expected.items():
        assert written[name].dtype == array.dtype
        np.testing.assert_array_equal(written[name], array, err_msg=name)


@pytest.mark.parametrize("name", ["net_conv", "net_batch_norm", "net_inception_block"])
def test_torch_names_load_into_the_converted_module(tmp_path: Path, name: str) -> None:
    (net_path,) = NETS.glob(f"{name}_net.*")
    (input_path,) = NETS.glob(f"{name}_input.*")
    (output_path,) = NETS.glob(f"{name}_output.*")
    out = tmp_path / "net.safetensors"
    assert main(["convert", str(net_path), str(out), "--torch-names"]) == 0
    module = st.to_module(streamser.load(net_path))
    tensors = load_torch_file(out)
    assert list(tensors) == list(st.state_dict(streamser.load(net_path)))
    for tensor in module.state_dict().values():
        tensor.zero_()  # forget the weights: only the converted file gives them back
    module.load_state_dict(tensors, strict=True)
    with torch.no_grad():
        output = module(torch.from_numpy(streamser.load(input_path)))
    difference = np.abs(output.double().numpy() - streamser.load(output_path))
    assert difference.mean() <= 1e-5
    assert difference.max() <= 1e-4


def test_round_trip_through_both_directions(tmp_path: Path) -> None:
    arrays = {k: v for k, v in every_numpy_type().items() if v.ndim and v.size}
    save_file(arrays, tmp_path / "a.safetensors")
    t7_path, back = tmp_path / "a.t7", tmp_path / "b.safetensors"
    assert main(["convert", str(tmp_path / "a.safetensors"), str(t7_path)]) == 0
    assert t7_to_safetensors(t7_path, back, torch_names=True) == len(arrays)
    for name, array in load_file(back).items():
        np.testing.assert_array_equal(array, arrays[name])
        assert array.dtype == arrays[name].dtype


def test_bad_inputs_and_options_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((40).to_bytes(8, "little") + b'{"x": {"dtype": "F32", "shape": [9]')
    assert main(["convert", str(bad), str(tmp_path / "x.t7")]) == 2
    assert "not a valid .safetensors file" in capsys.readouterr().err
    save_file({"w": np.ones(3, np.float32)}, tmp_path / "ok.safetensors")
    streamser.save(tmp_path / "ok.t7", {"w": np.ones(3, np.float32)})
    streamser.save(tmp_path / "number.t7", 3.0)
    t7, st_out = str(tmp_path / "ok.t7"), str(tmp_path / "o.safetensors")
    cases = [
        ([t7, st_out, "--format", "ascii"], "--format"),
        ([t7, st_out, "--cast", "float32"], "--cast"),
        ([str(tmp_path / "ok.safetensors"), str(tmp_path / "o.t7"), "--torch-names"], "names"),
        ([str(tmp_path / "number.t7"), st_out, "--torch-names"], "a module or a table"),
    ]
    for args, message in cases:
        assert main(["convert", *args]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1


def test_the_bridge_benchmark_runs_and_checks_its_outputs(tmp_path: Path) -> None:
    from bench import safetensors_bridge as bench

    bench.make_data(tmp_path, 1 << 20)
    for operation, _ in bench.CASES.values():
        operation(tmp_path)
    assert bench.check_outputs(tmp_path) == []
    assert bench.measure("limit: copyfile", tmp_path)["seconds"] >= 0
