"""Tensors of a ``.t7`` file as Dask arrays, for work that outgrows one machine.

:func:`from_t7` makes a Dask array of one tensor of a checkpoint, local or remote, plain or
compressed; every task reads only its own chunk. The array's source is a :class:`T7Tensor`: the
tensor's shape and dtype, and how to find it again (the file's path or URL with its options,
and the tensor's path in the file), never its data. A worker process that receives a task opens
the file once (the handle is kept for the next tasks) and reads the rows of its chunk: mapped
from a local file, the frames under them from a compressed one, a ranged GET from object
storage.

Dask is the optional ``remote`` extra (``pip install 'streamser[remote]'``)::

    import streamser.dask
    weight = streamser.dask.from_t7("s3://bucket/model.t7", "model.modules.3.weight",
                                    storage_options={"anon": True})
    weight.std(axis=0).compute()
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from .portable import T7Tensor


def from_t7(
    source: Any,
    tensor_path: str | tuple[Any, ...],
    chunks: Any = None,
    *,
    name: str | None = None,
    **options: Any,
) -> da.Array:
    """A Dask array of the tensor at ``tensor_path`` (as for ``f[...]``) of the ``.t7`` file
    ``source``: a path, a URL, or a picklable file object.

    ``chunks`` as for ``dask.array.from_array``; by default whole rows, as many as make chunks
    of Dask's configured size (rows are what a file holds contiguously). ``options`` go to
    :func:`streamser.open` in every process that reads: ``format``, ``storage_options``,
    ``block_size``, ``max_concurrency`` and limits.
    """
    tensor = T7Tensor.open(source, tensor_path, **options)
    if chunks is None:
        chunks = ("auto", *(-1,) * (tensor.ndim - 1)) if tensor.ndim else ()
    meta = np.empty((0,) * tensor.ndim, dtype=tensor.dtype)
    array: da.Array = da.from_array(  # type: ignore[no-untyped-call]
        tensor, chunks=chunks, name=name, asarray=False, fancy=False, meta=meta
    )
    return array


__all__ = ["T7Tensor", "from_t7"]
