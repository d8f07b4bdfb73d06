"""export and verify: bounded by the file, names as data, .npz and .safetensors."""

from __future__ import annotations

import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

import streamser
from streamser.cli.main import main
from streamser.tools.export import (
    EXPANSION_BOUND,
    ExportError,
    export,
    npz_member,
    npz_name,
)
from streamser.tools.verify import read_values

CORPUS = Path(__file__).parent / "corpus"
AWKWARD = ["file", "allow_pickle", "../evil", "/abs/path", "a/b\\c:d", "100%", "é ü", ".."]


def awkward_checkpoint() -> dict[str, Any]:
    """Tensors under names that are np.savez keywords or unsafe as zip members, and tensors of
    every layout: big endian, strided, integer, empty."""
    value: dict[str, Any] = {
        name: np.arange(index + 2, dtype=np.float64) * index for index, name in enumerate(AWKWARD)
    }
    value["big_endian"] = np.arange(6, dtype=">f4").reshape(2, 3)
    value["strided"] = np.arange(24, dtype=np.int32).reshape(4, 6)[::2, ::3]
    value["tokens"] = np.array([3, -1, 2**40], dtype=np.int64)
    value["buffer"] = np.empty(0, np.float32)
    return value


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.t7"
    streamser.save(path, awkward_checkpoint())
    return path


def _index(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    with streamser.open(path) as handle:
        return {name: np.array(array) for name, array in handle.arrays()}


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_every_name_round_trips(checkpoint: Path, tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    report = export(checkpoint, target)
    assert report.path == target
    assert (report.arrays, report.skipped_empty) == (len(AWKWARD) + 3, 1)
    expected = {name: array for name, array in _index(checkpoint).items() if array.size}
    if suffix == ".npz":
        with np.load(target) as archive:
            got = {npz_name(member): archive[member] for member in archive.files}
    else:
        got = load_file(str(target))
    assert set(got) == set(expected)
    for name, array in expected.items():
        assert got[name].dtype.newbyteorder("=") == array.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def test_npz_members_cannot_escape_the_folder(checkpoint: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.npz"
    export(checkpoint, target)
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(target) as archive:
        for member in archive.namelist():
            assert "/" not in member
            assert "\\" not in member
            assert ":" not in member
        archive.extractall(folder)
    assert len(list(folder.iterdir())) == len(AWKWARD) + 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extracted", "model.t7", "out.npz"]


@pytest.mark.parametrize("name", [*AWKWARD, "model.modules[3].weight", "", "%2F", "a\udcff"])
def test_npz_member_names_are_reversible(name: str) -> None:
    member = npz_member(name)
    assert npz_name(member + ".npy") == name
    assert set(member) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~[]%"
    )


def test_readable_names_stay_as_they_are() -> None:
    assert npz_member("model.modules[3].weight") == "model.modules[3].weight"


def test_empty_tensors_are_kept_on_request(checkpoint: Path, tmp_path: Path) -> None:
    report = export(checkpoint, tmp_path / "all.safetensors", keep_empty=True)
    assert report.skipped_empty == 0
    assert load_file(str(tmp_path / "all.safetensors"))["buffer"].shape == (0,)


def test_unknown_extensions_and_reserved_names_are_refused(
    checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=r"\.npz, \.safetensors"):
        export(checkpoint, tmp_path / "out.safetensors.bak")
    reserved = tmp_path / "reserved.t7"
    streamser.save(reserved, {"__metadata__": np.ones(2)})
    with pytest.raises(ExportError, match="reserves"):
        export(reserved, tmp_path / "out.safetensors")
    export(reserved, tmp_path / "out.npz")  # any name is fine in .npz
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.t7", "out.npz", "reserved.t7"]


def expanded_file(path: Path, count: int) -> Path:
    """A file holding one float viewed ``count`` times (stride 0) and one ordinary tensor."""
    one = np.ones(1, np.float32)
    streamser.save(path, {"expanded": np.broadcast_to(one, (count,)), "weight": np.arange(4.0)})
    return path


def test_verify_reads_storages_not_expanded_views(tmp_path: Path) -> None:
    path = expanded_file(tmp_path / "huge.t7", 2**40)
    assert path.stat().st_size < 300
    started = time.process_time()
    with streamser.open(path) as handle:
        report = read_values(handle)
    assert time.process_time() - started < 1.0
    assert (report.tensors, report.nbytes, report.nonfinite) == (2, 4 + 32, [])


def test_export_refuses_expanded_views_unless_allowed(tmp_path: Path) -> None:
    huge = expanded_file(tmp_path / "huge.t7", 2**40)
    with pytest.raises(ExportError, match="allow-expanded") as caught:
        export(huge, tmp_path / "out.npz", allow_expanded=False)
    assert "4,398,046,511,104 bytes" in str(caught.value)
    assert not (tmp_path / "out.npz").exists()
    modest = expanded_file(tmp_path / "modest.t7", 1 << 19)  # 2 MiB shown by 4 bytes
    with pytest.raises(ExportError, match=f"the bound is {EXPANSION_BOUND}x"):
        export(modest, tmp_path / "out.safetensors")
    export(modest, tmp_path / "out.safetensors", allow_expanded=True)
    written = load_file(str(tmp_path / "out.safetensors"))["expanded"]
    assert written.shape == (1 << 19,)
    assert bool((written == 1).all())
    small = expanded_file(tmp_path / "small.t7", 1000)  # below the floor: always written
    assert export(small, tmp_path / "small.npz").arrays == 2


def test_verify_notes_nan_once_per_storage(tmp_path: Path) -> None:
    base = np.array([1.0, np.nan, 3.0])
    streamser.save(tmp_path / "nan.t7", {"a": base, "b": base[1:], "c": np.arange(3)})
    with streamser.open(tmp_path / "nan.t7") as handle:
        report = read_values(handle)
    assert report.nonfinite == ["a"]
    assert report.nbytes == 24 + 24


def test_verify_reads_a_compressed_file_a_chunk_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lazily read storage is checked in pieces of CHUNK_BYTES, once for all its views."""
    from streamser.tools import verify
    from streamser.values.lazy import LazyStorage

    weights = np.arange(4096, dtype=np.float32)
    weights[3000] = np.inf
    value = {"w": weights, "rows": weights.reshape(64, 64)[10:20], "ids": np.arange(100)}
    path = tmp_path / "lazy.t7"
    streamser.save(path, value, compress="zstd")
    reads: list[int] = []
    real_read = LazyStorage.read

    def counted(self: LazyStorage, first: int = 0, end: int | None = None) -> Any:
        piece = real_read(self, first, end)
        reads.append(piece.nbytes)
        return piece

    monkeypatch.setattr(verify, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(LazyStorage, "read", counted)
    with streamser.open(path) as handle:
        report = verify.read_values(handle)
    assert report.tensors == 3
    assert report.nonfinite == ["w"]
    assert report.nbytes == 4096 * 4 + 100 * 8  # the shared storage read once
    assert max(reads) <= 1024
    assert sum(reads) == report.nbytes


def test_exports_stream_in_bounded_memory(tmp_path: Path) -> None:
    source = tmp_path / "big.t7"
    big = np.arange(12 << 20, dtype=">f4")  # 48 MiB, big endian: converted chunk by chunk
    streamser.save(source, {"w": big, "v": big[::2]})
    del big
    for suffix in (".safetensors", ".npz"):
        tracemalloc.start()
        export(source, tmp_path / f"out{suffix}")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 40 << 20, (suffix, peak)
        (tmp_path / f"out{suffix}").unlink()


def test_compressed_files_export(tmp_path: Path) -> None:
    source = tmp_path / "z.t7"
    streamser.save(source, awkward_checkpoint(), compress="zstd")
    export(source, tmp_path / "z.safetensors")
    assert set(load_file(str(tmp_path / "z.safetensors"))) == {
        name for name, array in _index(source).items() if array.size
    }


def test_export_command(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "light.safetensors"
    assert main(["export", str(checkpoint), str(target)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{target}: {len(AWKWARD) + 3} arrays")
    assert "1 empty tensor skipped" in out
    huge = expanded_file(tmp_path / "huge.t7", 2**40)
    assert main(["export", str(huge), str(tmp_path / "h.npz")]) == 2
    assert "--allow-expanded" in capsys.readouterr().err
    assert main(["verify", str(huge)]) == 0
    assert "2 tensors, 36 bytes of data read" in capsys.readouterr().out
    assert main(["export", str(checkpoint), str(tmp_path / "x.zip")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "name it .npz, .safetensors" in err


def test_light_corpus_model_exports_only_parameters(tmp_path: Path) -> None:
    light = tmp_path / "light.t7"
    streamser.save(light, streamser.load(CORPUS / "nn_seq.binary.t7"), serial="light")
    report = export(light, tmp_path / "light.npz")
    with np.load(tmp_path / "light.npz") as archive:
        names = sorted(npz_name(member) for member in archive.files)
    assert report.arrays == len(names) == 4
    assert all(name.endswith(("weight", "bias")) for name in names)
