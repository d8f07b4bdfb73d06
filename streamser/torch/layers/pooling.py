"""Spatial pooling with THNN's exact output sizes, and nearest up-sampling.

THNN sizes a pooled dimension as ``floor`` (or ``ceil`` in ceil mode) of
``(size - k + 2*pad) / d`` plus one, then, when any padding is set, drops the last window
if it would start in the padding. PyTorch drops it whether or not there is padding, so the two
disagree on ceil mode without padding. To follow THNN everywhere, the input is padded here to
exactly the extent of THNN's windows (with ``-inf`` for max, zeros for sums) and pooled
without implicit padding; average pooling divides by THNN's window sizes, clipped to the
padded input (``count_include_pad``) or to the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError
from ..fields import ffi_bool, field, flag, integer
from ..registry import BuildContext, builds


class _Pooling(nn.Module):
    """Window geometry shared by max and average pooling, in (height, width) order."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        pad: tuple[int, int],
        ceil_mode: bool,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.pad, self.ceil_mode = kernel, stride, pad, ceil_mode

    def output_size(self, x: torch.Tensor) -> tuple[int, int]:
        """THNN's output height and width for input ``x``."""
        if x.dim() not in (3, 4):
            raise InputShapeError(f"spatial pooling takes a 3-D or 4-D input, got {x.dim()}-D")
        if any(k // 2 < p for k, p in zip(self.kernel, self.pad, strict=True)):
            raise InputShapeError(f"padding {self.pad} is more than half the kernel {self.kernel}")
        sizes = x.shape[-2:]
        out = [
            self._extent(*args)
            for args in zip(sizes, self.kernel, self.stride, self.pad, strict=True)
        ]
        if any(self.pad):
            out = [
                o - 1 if (o - 1) * d >= n + p else o
                for o, n, d, p in zip(out, sizes, self.stride, self.pad, strict=True)
            ]
        if min(out) < 1:
            raise InputShapeError(f"input {tuple(sizes)} is too small for kernel {self.kernel}")
        return out[0], out[1]

    def _extent(self, size: int, k: int, d: int, pad: int) -> int:
        span = size - k + 2 * pad
        steps = -(-span // d) if self.ceil_mode else span // d
        return steps + 1

    def padded(self, x: torch.Tensor, out: tuple[int, int], value: float) -> torch.Tensor:
        """``x`` padded (or cropped) to exactly the span of ``out`` windows."""
        (ph, pw), (kh, kw), (dh, dw) = self.pad, self.kernel, self.stride
        bottom = (out[0] - 1) * dh + kh - x.shape[-2] - ph
        right = (out[1] - 1) * dw + kw - x.shape[-1] - pw
        return F.pad(x, (pw, right, ph, bottom), value=value)

    def extra_repr(self) -> str:
        return (
            f"kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
            f"ceil_mode={self.ceil_mode}"
        )


class SpatialMaxPooling(_Pooling):
    """Max pooling. After each forward, ``indices`` holds where each maximum came from, as
    0-based flat positions in its input plane (Torch7's ``indices`` minus one); -1 marks a
    window with no element above ``-inf``."""

    indices: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output_size(x)
        padded = self.padded(x, out, -math.inf)
        result, flat = F.max_pool2d(padded, self.kernel, self.stride, return_indices=True)
        self.indices = self._input_positions(flat, x, padded)
        return result

    def _input_positions(
        self, flat: torch.Tensor, x: torch.Tensor, padded: torch.Tensor
    ) -> torch.Tensor:
        width = padded.shape[-1]
        row = torch.div(flat, width, rounding_mode="floor") - self.pad[0]
        col = flat % width - self.pad[1]
        inside = (row >= 0) & (row < x.shape[-2]) & (col >= 0) & (col < x.shape[-1])
        return torch.where(inside, row * x.shape[-1] + col, torch.full_like(flat, -1))


class SpatialAveragePooling(_Pooling):
    """Average pooling; ``divide=False`` (files older than the field) gives window sums."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        pad: tuple[int, int],
        ceil_mode: bool,
        count_include_pad: bool,
        divide: bool,
    ) -> None:
        super().__init__(kernel, stride, pad, ceil_mode)
        self.count_include_pad, self.divide = count_include_pad, divide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output_size(x)
        sums = F.avg_pool2d(self.padded(x, out, 0.0), self.kernel, self.stride, divisor_override=1)
        averages = sums / self._divisors(x, out)
        return averages if self.divide else averages * (self.kernel[0] * self.kernel[1])

    def _divisors(self, x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        """THNN divides each window by its height times its width (clipped as configured)."""
        rows, cols = (
            torch.tensor(
                self._counts(out[i], x.shape[i - 2], self.kernel[i], self.stride[i], self.pad[i]),
                dtype=x.dtype,
                device=x.device,
            )
            for i in range(2)
        )
        return torch.outer(rows, cols)

    def _counts(self, n: int, size: int, k: int, d: int, pad: int) -> list[int]:
        """THNN's divisor of each window along one dimension."""
        counts = []
        for start in range(-pad, n * d - pad, d):
            end = min(start + k, size + pad)
            if not self.count_include_pad:
                start, end = max(start, 0), min(end, size)
            counts.append(end - start)
        return counts

    def extra_repr(self) -> str:
        return super().extra_repr() + f", count_include_pad={self.count_include_pad}"


def _geometry(obj: TorchObject) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = integer(obj, "kH"), integer(obj, "kW")
    stride = integer(obj, "dH", kernel[0]), integer(obj, "dW", kernel[1])
    return kernel, stride, (integer(obj, "padH", 0), integer(obj, "padW", 0))


@builds("nn.SpatialMaxPooling")
def max_pooling(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SpatialMaxPooling(*_geometry(obj), ffi_bool(field(obj, "ceil_mode", None)))


@builds("nn.SpatialAveragePooling")
def average_pooling(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    """Files from before ``ceil_mode`` existed count the padding, as Torch7 assumes."""
    modern = field(obj, "ceil_mode", None) is not None
    include_pad = ffi_bool(field(obj, "count_include_pad", None)) if modern else True
    return SpatialAveragePooling(
        *_geometry(obj), ffi_bool(field(obj, "ceil_mode", None)), include_pad, flag(obj, "divide")
    )


class SpatialUpSamplingNearest(nn.Module):
    """Each pixel repeated ``scale`` times down and across (3-D or 4-D input)."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise InputShapeError(f"SpatialUpSamplingNearest takes 3-D or 4-D, got {x.dim()}-D")
        return x.repeat_interleave(self.scale, dim=-2).repeat_interleave(self.scale, dim=-1)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@builds("nn.SpatialUpSamplingNearest")
def up_sampling_nearest(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return SpatialUpSamplingNearest(integer(obj, "scale_factor"))
