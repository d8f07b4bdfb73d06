"""Element-Research/rnn: ``LSTM``, ``FastLSTM``, ``GRU``, ``Recursor`` and ``Sequencer``.

A recurrent module in rnn processes one time step per ``forward`` and remembers its hidden
state until ``forget()``. Its arithmetic is the step module it keeps as ``modules[1]`` (a graph
of Linear, CAddTable, Sigmoid, ... that differs between rnn versions: peepholes or not, one
fused Linear or four), so the step module is built like any other module and run with
``{input, output(t-1), cell(t-1)}`` for the LSTMs and ``{input, output(t-1)}`` for the GRU:
whatever version saved the file, the built module computes what that version computed.

State starts as rnn's after ``forget()``: zeros of ``(batch, outputSize)`` (or
``(outputSize,)`` for a single sample), or the ``userPrevOutput`` / ``userPrevCell`` the
module holds. The state a file saved in the middle of a sequence is not resumed.
``Sequencer`` runs its module over a sequence (a list, or a tensor whose first dimension is
time), forgetting first unless its ``remember`` mode covers the current train/evaluate state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamser import TorchObject

from ..errors import InputShapeError, InvalidModuleError
from ..fields import array, field, integer
from ..registry import BuildContext, builds

_STATES = {
    "nn.LSTM": ("userPrevOutput", "userPrevCell"),
    "nn.FastLSTM": ("userPrevOutput", "userPrevCell"),
    "nn.GRU": ("userPrevOutput",),
}


def _not_false(value: Any) -> bool:
    """rnn's ``self.train ~= false``: training unless explicitly false."""
    return value is not False


class Recurrent(nn.Module):
    """One step of an rnn module per call; the hidden state is kept until :meth:`forget`."""

    def __init__(self, step: nn.Module, output_size: int, initial: list[torch.Tensor | None]):
        super().__init__()
        self.add_module("0", step)
        self.output_size = output_size
        self.initial_names: list[str | None] = []
        for index, tensor in enumerate(initial):
            # buffers follow .to() and .float(); not persistent: no state_dict key of Torch7's
            name = None if tensor is None else f"initial_{index}"
            if name is not None:
                self.register_buffer(name, tensor, persistent=False)
            self.initial_names.append(name)
        self.state: list[torch.Tensor] | None = None

    def forget(self) -> None:
        """Start a new sequence (rnn's ``forget()``)."""
        self.state = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state if self.state is not None else self._start(x)
        result: Any = self.get_submodule("0")([x, *state])
        outputs = result if len(state) > 1 else [result]
        if not isinstance(outputs, list) or len(outputs) != len(state):
            raise InputShapeError(f"the step module should give {len(state)} tensors")
        if not all(isinstance(output, torch.Tensor) for output in outputs):
            raise InputShapeError("the step module should give tensors")
        self.state = outputs
        output: torch.Tensor = outputs[0]
        return output

    def _start(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() not in (1, 2):
            raise InputShapeError(f"a recurrent module takes 1-D or 2-D input, got {x.dim()}-D")
        shape = (x.shape[0], self.output_size) if x.dim() == 2 else (self.output_size,)
        zeros = x.new_zeros(shape)
        return [zeros if name is None else self.get_buffer(name) for name in self.initial_names]

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, states={len(self.initial_names)}"


class Recursor(nn.Module):
    """A non-recurrent module applied step by step (rnn's ``Recursor``)."""

    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.add_module("0", step)

    def forward(self, x: Any) -> Any:
        return self.get_submodule("0")(x)


def forget_all(module: nn.Module) -> None:
    """rnn's ``forget()``: every recurrent module inside ``module`` starts a new sequence."""
    for inner in module.modules():
        if isinstance(inner, Recurrent):
            inner.forget()


class Sequencer(nn.Module):
    """The module on each step of a sequence: a list gives a list, a tensor (time first) a
    tensor. ``remember`` is rnn's: ``neither`` (forget before each sequence), ``train``,
    ``eval`` (remember in that state only) or ``both``."""

    def __init__(self, kid: nn.Module, remember: str) -> None:
        super().__init__()
        self.add_module("0", kid)
        self.remember = remember

    def forward(self, x: Any) -> Any:
        kid = self.get_submodule("0")
        if self.remember not in ("both", "train" if self.training else "eval"):
            forget_all(kid)
        steps = x.unbind(0) if isinstance(x, torch.Tensor) else list(x)
        outputs = [kid(step) for step in steps]
        return torch.stack(outputs) if isinstance(x, torch.Tensor) else outputs

    def extra_repr(self) -> str:
        return f"remember={self.remember!r}"


def _initial(obj: TorchObject, ctx: BuildContext) -> list[torch.Tensor | None]:
    given = (array(obj, name) for name in _STATES[obj.typename])
    return [None if a is None else ctx.maker.tensor(a) for a in given]


@builds(*_STATES, train=_not_false)
def recurrent(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Recurrent(ctx.only_child(obj), integer(obj, "outputSize"), _initial(obj, ctx))


@builds("nn.Recursor", train=_not_false)
def recursor(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    return Recursor(ctx.only_child(obj))


@builds("nn.Sequencer", train=_not_false)
def sequencer(obj: TorchObject, ctx: BuildContext) -> nn.Module:
    kid = ctx.only_child(obj)
    remember = field(obj, "_remember", "neither")
    if remember not in ("neither", "train", "eval", "both"):
        raise InvalidModuleError(f"nn.Sequencer._remember is {remember!r}")
    return Sequencer(kid, remember)
