"""The ``streamser`` command line: every command, on good and on damaged files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import streamser
from streamser.cli.main import main

CORPUS = Path(__file__).parent / "corpus"


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    path = tmp_path / "cut.t7"
    path.write_bytes((CORPUS / "nn_linear.binary.t7").read_bytes()[:200])
    return path


def test_demo_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shares memory with model.layers[1].weight: True" in out
    assert (tmp_path / "demo.binary.t7").exists()
    assert (tmp_path / "demo.ascii.t7").exists()


def test_info_lists_tensors_and_sharing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(CORPUS / "tensor_Float_views.binary.t7")]) == 0
    out = capsys.readouterr().out
    assert "5 tensors in 1 storages" in out
    assert "storage of " in out  # the views say whose storage they share
    assert "torch.FloatTensor" in out


def test_info_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--json", str(CORPUS / "nn_linear.b32.t7")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "b32"
    weight = next(row for row in report["tensor_index"] if row["path"] == "weight")
    assert weight["shape"] == [3, 5]
    assert weight["typename"] == "torch.DoubleTensor"
    assert isinstance(weight["offset"], int)


@pytest.mark.parametrize(
    ("options", "fmt"),
    [([], "binary"), (["--format", "ascii"], "ascii"), (["--format", "b32"], "b32")],
)
def test_convert_round_trips(tmp_path: Path, options: list[str], fmt: str) -> None:
    out = tmp_path / "out.t7"
    assert main(["convert", str(CORPUS / "nn_seq.binary.t7"), str(out), *options]) == 0
    converted = streamser.load(out, format=fmt)
    original = streamser.load(CORPUS / "nn_seq.binary.t7")
    np.testing.assert_array_equal(converted.modules[1].weight, original.modules[1].weight)
    if fmt == "binary":
        assert out.read_bytes() == (CORPUS / "nn_seq.binary.t7").read_bytes()


def test_convert_light_float32(tmp_path: Path) -> None:
    out = tmp_path / "light.t7"
    args = ["convert", str(CORPUS / "nn_seq.binary.t7"), str(out), "--serial", "light"]
    assert main([*args, "--cast", "float32"]) == 0
    light = streamser.load(out)
    assert light.modules[1].weight.dtype == np.float32
    assert light.modules[1].gradWeight.size == 0
    assert out.stat().st_size < (CORPUS / "nn_seq.binary.t7").stat().st_size / 4


def test_dis_lists_records(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dis", str(CORPUS / "tensor_shared_storage.binary.t7")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["0:", "table"]
    assert any("-> object" in line for line in lines)  # the shared storage
    assert "end of value" in lines[-1]


def test_verify_and_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(CORPUS / "nn_seq.ascii.t7")]) == 0
    assert "OK (ascii" in capsys.readouterr().out
    npz = tmp_path / "t.npz"
    assert main(["export", str(CORPUS / "nn_linear.binary.t7"), str(npz)]) == 0
    with np.load(npz) as arrays:
        original = streamser.load(CORPUS / "nn_linear.binary.t7")
        np.testing.assert_array_equal(arrays["weight"], original.weight)


def test_verify_flags_trailing_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tail.t7"
    path.write_bytes((CORPUS / "nn_linear.binary.t7").read_bytes() + b"junk")
    assert main(["verify", str(path)]) == 1
    assert "4 bytes follow the value" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["info", "dis", "verify", "show", "export", "convert"])
def test_damage_is_one_line_with_offset(
    damaged: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [str(tmp_path / "out.npz")] if command in ("export", "convert") else []
    assert main([command, str(damaged), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("streamser: damaged file:")
    assert "(at byte 181)" in err


def test_debug_shows_the_traceback(damaged: Path) -> None:
    with pytest.raises(streamser.TruncatedError):
        main(["--debug", "verify", str(damaged)])


def test_console_script_and_module_entry_points(damaged: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "verify", str(damaged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "streamser", "info", "/nonexistent.t7"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "No such file" in missing.stderr


# --- dis, verify and info on every input -------------------------------------------------------


def _corpus_values() -> list[Path]:
    """One corpus file per value (the binary, ascii and b32 files of a name hold the same)."""
    first: dict[str, Path] = {}
    for path in sorted(CORPUS.glob("*.t7")):
        first.setdefault(path.name.split(".")[0], path)
    return [path for name, path in first.items() if name != "bigfloat"]  # 8 MB of ascii floats


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.t7")), ids=lambda p: p.name)
def test_dis_and_verify_every_corpus_file(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fmt = streamser.open(path).format.name
    assert main(["dis", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"records, {fmt})")
    assert main(["verify", str(path)]) == 0
    assert f": OK ({fmt}, " in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["binary", "b32", "ascii"])
@pytest.mark.parametrize("compress", [None, "zstd"])
def test_dis_and_verify_in_every_format(
    tmp_path: Path, fmt: str, compress: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in _corpus_values():
        value = streamser.load(path, referenced=".noref-" not in path.name)
        target = tmp_path / f"{path.name}.{fmt}"
        streamser.save(target, value, format=fmt, compress=compress)
        for command in ("dis", "verify"):
            assert main([command, str(target)]) == 0, (path.name, capsys.readouterr())
    capsys.readouterr()


def test_dis_reads_plain_zstd_and_says_offsets_are_decompressed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zstandard = pytest.importorskip("zstandard")
    data = (CORPUS / "nn_linear.b32.t7").read_bytes()
    path = tmp_path / "plain.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert main(["dis", str(path)]) == 0
    out = capsys.readouterr().out
    assert "decompressed stream" in out.splitlines()[0]
    assert out.splitlines()[-1].endswith("records, b32)")


def test_dis_of_a_huge_claim_is_instant_and_small(tmp_path: Path) -> None:
    path = tmp_path / "claim.t7"
    path.write_bytes(struct.pack("<iii", 3, 1, 100_000_000) + bytes(16))
    result = subprocess.run(
        [sys.executable, "-m", "streamser", "dis", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "table claims 100000000 entries but only 16 bytes are left" in result.stderr


def test_dis_lists_a_damaged_b32_file_in_b32(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (CORPUS / "nn_linear.b32.t7").read_bytes()
    path = tmp_path / "cut.t7"
    path.write_bytes(data[: len(data) - 7])
    assert main(["dis", str(path)]) == 2
    captured = capsys.readouterr()
    assert "size [3, 5] stride [5, 1]" in captured.out  # b32 longs, not 21474836483
    assert "damaged file" in captured.err


def test_foreign_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.npz"
    np.savez(path, a=np.ones(3))
    for command in ("dis", "verify", "info", "show"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "not a Torch7 file: this is a zip archive" in err
        assert "torch.load" in err


def test_info_and_show_take_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    file = str(CORPUS / "nn_seq.binary.t7")
    assert main(["info", "--json", file, "modules[1]"]) == 0
    rows = json.loads(capsys.readouterr().out)["tensor_index"]
    assert rows
    assert all(row["path"].startswith("modules[1].") for row in rows)
    assert {"strides", "storage"} <= set(rows[0])
    for row in rows:
        assert main(["show", file, row["path"]]) == 0
        assert capsys.readouterr().out.startswith("<root>: float")
    assert main(["info", file, "modules.1.weight"]) == 0  # the dotted form still works
    assert main(["info", file, "modules[9]"]) == 2
    assert "'modules[9]' is not in" in capsys.readouterr().err
