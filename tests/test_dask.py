"""Dask arrays of checkpoint tensors: every task reads only its chunk, in whatever process.

A :class:`~streamser.dask.T7Tensor` pickles as file + tensor path + geometry (a few hundred
bytes, whatever the tensor's size); the reduction over a remote checkpoint runs on a
``LocalCluster`` of worker processes, which reopen the file from S3 (SeaweedFS on loopback).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import distributed
import numpy as np
import pytest
from conftest import S3Server

import streamser
import streamser.dask
from streamser import StreamserError
from streamser.dask import T7Tensor, from_t7


def _checkpoint(seed: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "encoder": {"weight": rng.standard_normal((512, 96)).astype(np.float32)},
        "decoder": {"weight": rng.standard_normal((300, 7, 5)).astype(np.float64)},
        "steps": np.arange(1000, dtype=np.int64),
    }


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_tensor_source_slices_and_pickles_small(tmp_path: Path, compress: str | None) -> None:
    value = _checkpoint()
    path = tmp_path / "model.t7"
    streamser.save(path, value, compress=compress)
    tensor = T7Tensor.open(path, "decoder.weight")
    assert (tensor.shape, tensor.dtype, tensor.ndim) == ((300, 7, 5), np.float64, 3)
    assert np.array_equal(tensor[10:20, 3], value["decoder"]["weight"][10:20, 3])
    assert np.array_equal(np.asarray(tensor), value["decoder"]["weight"])
    shipped = pickle.dumps(tensor)
    assert len(shipped) < 600  # file + path + geometry, not 84 KB of data
    again = pickle.loads(shipped)
    assert np.array_equal(again[-5:], value["decoder"]["weight"][-5:])


def test_from_t7_chunks_whole_rows_and_computes(tmp_path: Path) -> None:
    value = _checkpoint()
    path = tmp_path / "model.t7"
    streamser.save(path, value, compress="zstd")
    weight = from_t7(str(path), "encoder.weight")
    assert weight.chunks[1] == (96,)  # rows are what the file holds together
    rows = from_t7(str(path), "encoder.weight", chunks=(100, 96))
    expected = value["encoder"]["weight"]
    with dask.config.set(scheduler="threads"):
        assert np.allclose(rows.mean(axis=0).compute(), expected.mean(axis=0), atol=1e-6)
        assert np.array_equal(rows[250:260].compute(), expected[250:260])
    assert from_t7(str(path), "encoder.weight").name == weight.name  # deterministic


def test_changed_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "model.t7"
    streamser.save(path, _checkpoint())
    tensor = pickle.loads(pickle.dumps(T7Tensor.open(str(path), "steps")))
    stale = T7Tensor(str(path), "steps", (999,), np.dtype(np.int64))
    assert len(tensor[:3]) == 3
    with pytest.raises(StreamserError, match="changed"):
        stale[:3]


def test_reduction_over_a_remote_checkpoint_on_a_process_cluster(s3: S3Server) -> None:
    value = {f"layer{i}": np.full((2000, 64), i, np.float32) + np.arange(64) for i in range(4)}
    url = s3.url("cluster.t7")
    streamser.save(url, value, storage_options=s3.direct_options)
    options = {"storage_options": s3.direct_options}
    arrays = {name: from_t7(url, name, chunks=(500, 64), **options) for name in value}
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        sums = client.compute({name: array.sum() for name, array in arrays.items()}).result()
        totals = da.stack(list(arrays.values())).sum(axis=(0, 1)).compute()
    for name, array in value.items():
        assert sums[name] == pytest.approx(float(array.sum(dtype=np.float64)))
    assert np.allclose(totals, sum(value.values()).sum(axis=0))


def test_lazy_tensor_of_a_url_pickles_as_source_and_geometry() -> None:
    """A lazily opened tensor itself (not only ``T7Tensor``) is a ``from_array`` source."""
    value = _checkpoint()
    url = "memory://streamser-tests/dask/model.t7"
    streamser.save(url, value)
    with streamser.open(url) as f:
        lazy = f.get_slice("decoder.weight")._array
    shipped = pickle.dumps(lazy)
    assert len(shipped) < 1000
    again = pickle.loads(shipped)
    assert np.array_equal(again[100:110], value["decoder"]["weight"][100:110])
    array = da.from_array(lazy, chunks=(64, 7, 5), asarray=True)
    with dask.config.set(scheduler="threads"):
        assert np.allclose(array.sum().compute(), value["decoder"]["weight"].sum())


@pytest.mark.parametrize("compress", [None, "zstd"])
def test_get_slice_of_a_local_file_is_a_dask_source_and_pickles_as_source(
    tmp_path: Path, compress: str | None
) -> None:
    """``f.get_slice(p)`` of a mapped (or compressed) local file: ``ndim`` and slices for
    ``from_array``, and a pickle that names the file, not the 84 KB of data."""
    value = _checkpoint()
    path = tmp_path / "model.t7"
    streamser.save(path, value, compress=compress)
    expected = value["decoder"]["weight"]
    with streamser.open(path) as f:
        piece = f.get_slice("decoder.weight")
    assert (piece.ndim, piece.size, piece.nbytes) == (3, expected.size, expected.nbytes)
    shipped = pickle.dumps(piece)
    assert len(shipped) < 600
    again = pickle.loads(shipped)
    assert isinstance(again, T7Tensor)
    assert np.array_equal(again[7:9], expected[7:9])
    array = da.from_array(piece, chunks=(64, 7, 5), asarray=False)
    with dask.config.set(scheduler="processes", num_workers=2):
        assert np.allclose(array.sum().compute(), expected.sum())


def test_get_slice_of_a_file_object_pickles_its_values() -> None:
    """A file object cannot be opened again by another process: the slice ships its values."""
    value = _checkpoint()
    with streamser.open(io.BytesIO(streamser.serialize(value))) as f:
        piece = f.get_slice("steps")
    again = pickle.loads(pickle.dumps(piece))
    assert np.array_equal(np.asarray(again), value["steps"])
