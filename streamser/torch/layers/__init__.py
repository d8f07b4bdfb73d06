"""The layer families; importing them fills ``registry.BUILDERS``."""

from . import activations, containers, convolution, normalization, pooling, recurrent, shape, tables

__all__ = [
    "activations",
    "containers",
    "convolution",
    "normalization",
    "pooling",
    "recurrent",
    "shape",
    "tables",
]
