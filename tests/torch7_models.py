"""Torch7 modules as ``streamser.load`` gives them, built in Python for the torch tests.

The fields follow the Lua constructors of torch/nn and Element-Research/rnn (read with the
search tool), including the buffers a saved module carries, so that the tests see what a real
file holds rather than the minimum the bridge reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamser import LuaTable, Storage, TorchObject

Array = np.ndarray[Any, Any]


def module(typename: str, *kids: TorchObject, **fields: Any) -> TorchObject:
    """A Torch7 object; ``kids`` become its ``modules`` list. ``None`` fields are left out."""
    table = LuaTable({"_type": "torch.DoubleTensor", "output": np.zeros(0)})
    if kids:
        table["modules"] = LuaTable.from_list(kids)
    for name, value in fields.items():
        if value is not None:
            table[name] = value
    return TorchObject(typename, table)


def longs(*values: int) -> Storage:
    return Storage(np.array(values, dtype=np.int64), "torch.LongStorage")


def linear(
    rng: np.random.Generator, n_in: int, n_out: int, typename: str = "nn.Linear"
) -> TorchObject:
    bias = np.zeros(n_out) if typename == "nn.LinearNoBias" else rng.standard_normal(n_out)
    return module(
        typename,
        weight=rng.standard_normal((n_out, n_in)),
        bias=bias,
        gradWeight=np.zeros((n_out, n_in)),
        gradBias=np.zeros(n_out),
        gradInput=np.zeros(0),
    )


def _recurrent_fields(n_in: int, n_out: int, step: TorchObject, **extra: Any) -> dict[str, Any]:
    """What AbstractRecurrent and LSTM/GRU keep, as a mid-sequence save leaves it."""
    return {
        "inputSize": n_in,
        "outputSize": n_out,
        "rho": 9999,
        "recurrentModule": step,
        "sharedClones": LuaTable({1: step}),
        "zeroTensor": np.zeros((2, n_out)),
        "step": 4,
        "outputs": LuaTable({1: np.ones(n_out), 2: np.ones(n_out), 3: np.ones(n_out)}),
        "cells": LuaTable({1: np.ones(n_out)}),
        "gradCells": LuaTable(),
        "inputs": LuaTable(),
        "gradOutputs": LuaTable(),
        "_gradOutputs": LuaTable(),
        "fastBackward": True,
        "copyInputs": True,
        "copyGradOutputs": True,
        "gradParametersAccumulated": False,
        **extra,
    }


def fast_lstm(
    rng: np.random.Generator, n_in: int, n_out: int
) -> tuple[TorchObject, dict[str, Array]]:
    """rnn's FastLSTM (``usenngraph`` false): FastLSTM:buildModel, gates in the order input,
    hidden, forget, output."""
    i2g = linear(rng, n_in, 4 * n_out)
    o2g = linear(rng, n_out, 4 * n_out, "nn.LinearNoBias")
    gates = module(
        "nn.Sequential",
        module("nn.NarrowTable", offset=1, length=2),
        module("nn.ParallelTable", i2g, o2g),
        module("nn.CAddTable"),
        module(
            "nn.Reshape", size=longs(4, n_out), batchsize=longs(1, 4, n_out), nelement=4 * n_out
        ),
        module("nn.SplitTable", dimension=1, nInputDims=2),
        module(
            "nn.ParallelTable",
            module("nn.Sigmoid"),
            module("nn.Tanh"),
            module("nn.Sigmoid"),
            module("nn.Sigmoid"),
        ),
    )
    seq = module(
        "nn.Sequential",
        module("nn.ConcatTable", gates, module("nn.SelectTable", index=3)),
        module("nn.FlattenTable"),
        module(
            "nn.ConcatTable",
            module(
                "nn.Sequential",
                module(
                    "nn.ConcatTable",
                    module(
                        "nn.Sequential",
                        module("nn.NarrowTable", offset=1, length=2),
                        module("nn.CMulTable"),
                    ),
                    module(
                        "nn.Sequential",
                        module(
                            "nn.ConcatTable",
                            module("nn.SelectTable", index=3),
                            module("nn.SelectTable", index=5),
                        ),
                        module("nn.CMulTable"),
                    ),
                ),
                module("nn.CAddTable"),
            ),
            module("nn.SelectTable", index=4),
        ),
        module("nn.FlattenTable"),
        module(
            "nn.ConcatTable",
            module(
                "nn.Sequential",
                module(
                    "nn.ConcatTable",
                    module("nn.Sequential", module("nn.SelectTable", index=1), module("nn.Tanh")),
                    module("nn.SelectTable", index=2),
                ),
                module("nn.CMulTable"),
            ),
            module("nn.SelectTable", index=1),
        ),
    )
    fields = _recurrent_fields(n_in, n_out, seq, i2g=i2g, o2g=o2g, cell2gate=False)
    lstm = module("nn.FastLSTM", seq, **fields)
    params = {"Wx": i2g.weight, "b": i2g.bias, "Wh": o2g.weight}
    return lstm, params


def _gate(
    rng: np.random.Generator, n_in: int, n_out: int, params: dict[str, Array], key: str
) -> TorchObject:
    """LSTM:buildGate with cell2gate: sigmoid(W x + b + U h + w .* c) (Dropout p=0 first)."""
    x2g = linear(rng, n_in, n_out)
    h2g = linear(rng, n_out, n_out, "nn.LinearNoBias")
    c2g = module("nn.CMul", weight=rng.standard_normal(n_out), size=longs(n_out))
    params.update(
        {f"W{key}": x2g.weight, f"b{key}": x2g.bias, f"U{key}": h2g.weight, f"c{key}": c2g.weight}
    )
    return module(
        "nn.Sequential",
        module(
            "nn.ParallelTable",
            module("nn.Sequential", _dropout0(), x2g),
            module("nn.Sequential", _dropout0(), h2g),
            c2g,
        ),
        module("nn.CAddTable"),
        module("nn.Sigmoid"),
    )


def _dropout0() -> TorchObject:
    return module(
        "nn.Dropout", p=0, train=True, v2=True, lazy=True, mono=False, flag=True, noise=np.zeros(0)
    )


def lstm(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[TorchObject, dict[str, Array]]:
    """rnn's LSTM with peepholes (cell2gate true), as LSTM:buildModel assembles it."""
    params: dict[str, Array] = {}
    input_gate = _gate(rng, n_in, n_out, params, "i")
    forget_gate = _gate(rng, n_in, n_out, params, "f")
    x2h, h2h = linear(rng, n_in, n_out), linear(rng, n_out, n_out, "nn.LinearNoBias")
    params.update({"Wh": x2h.weight, "bh": x2h.bias, "Uh": h2h.weight})
    hidden = module(
        "nn.Sequential",
        module("nn.NarrowTable", offset=1, length=2),
        module(
            "nn.ParallelTable",
            module("nn.Sequential", _dropout0(), x2h),
            module("nn.Sequential", _dropout0(), h2h),
        ),
        module("nn.CAddTable"),
        module("nn.Tanh"),
    )
    forget = module(
        "nn.Sequential",
        module("nn.ConcatTable", forget_gate, module("nn.SelectTable", index=3)),
        module("nn.CMulTable"),
    )
    new_input = module(
        "nn.Sequential", module("nn.ConcatTable", input_gate, hidden), module("nn.CMulTable")
    )
    cell = module(
        "nn.Sequential", module("nn.ConcatTable", forget, new_input), module("nn.CAddTable")
    )
    output_gate = _gate(rng, n_in, n_out, params, "o")
    cell_act = module("nn.Sequential", module("nn.SelectTable", index=3), module("nn.Tanh"))
    output = module(
        "nn.Sequential", module("nn.ConcatTable", output_gate, cell_act), module("nn.CMulTable")
    )
    model = module(
        "nn.Sequential",
        module("nn.ConcatTable", module("nn.NarrowTable", offset=1, length=2), cell),
        module("nn.FlattenTable"),
        module("nn.ConcatTable", output, module("nn.SelectTable", index=3)),
    )
    fields = _recurrent_fields(
        n_in,
        n_out,
        model,
        cell2gate=True,
        p=0,
        mono=False,
        inputGate=input_gate,
        forgetGate=forget_gate,
        hiddenLayer=hidden,
        outputGate=output_gate,
        cellLayer=cell,
    )
    return module("nn.LSTM", model, **fields), params


def gru(rng: np.random.Generator, n_in: int, n_out: int) -> tuple[TorchObject, dict[str, Array]]:
    """rnn's GRU with p = 0, as GRU:buildModel assembles it (gates r, z; SAdd for 1 - z)."""
    i2g, o2g = linear(rng, n_in, 2 * n_out), linear(rng, n_out, 2 * n_out, "nn.LinearNoBias")
    x2h, h2h = linear(rng, n_in, n_out), linear(rng, n_out, n_out, "nn.LinearNoBias")
    gates = module(
        "nn.Sequential",
        module("nn.ParallelTable", i2g, o2g),
        module("nn.CAddTable"),
        module(
            "nn.Reshape", size=longs(2, n_out), batchsize=longs(1, 2, n_out), nelement=2 * n_out
        ),
        module("nn.SplitTable", dimension=1, nInputDims=2),
        module("nn.ParallelTable", module("nn.Sigmoid"), module("nn.Sigmoid")),
    )
    hidden = module(
        "nn.Sequential",
        module(
            "nn.ConcatTable",
            module("nn.Sequential", module("nn.SelectTable", index=1), x2h),
            module(
                "nn.Sequential",
                module("nn.NarrowTable", offset=2, length=2),
                module("nn.CMulTable"),
                h2h,
            ),
        ),
        module("nn.CAddTable"),
        module("nn.Tanh"),
    )
    one_minus_z = module(
        "nn.Sequential",
        module("nn.SelectTable", index=4),
        module("nn.SAdd", addend=-1, negate=True),
    )
    z_times_s = module(
        "nn.Sequential", module("nn.NarrowTable", offset=4, length=2), module("nn.CMulTable")
    )
    o1 = module(
        "nn.Sequential", module("nn.ConcatTable", hidden, one_minus_z), module("nn.CMulTable")
    )
    o2 = module("nn.Sequential", module("nn.ConcatTable", o1, z_times_s), module("nn.CAddTable"))
    seq = module(
        "nn.Sequential",
        module("nn.ConcatTable", module("nn.Identity"), gates),
        module("nn.FlattenTable"),
        module(
            "nn.ConcatTable",
            module("nn.NarrowTable", offset=1, length=4),
            module("nn.SelectTable", index=2),
        ),
        module("nn.FlattenTable"),
        o2,
    )
    fields = _recurrent_fields(n_in, n_out, seq, p=0, mono=False, i2g=i2g, o2g=o2g)
    params = {
        "Wg": i2g.weight,
        "bg": i2g.bias,
        "Ug": o2g.weight,
        "W": x2h.weight,
        "b": x2h.bias,
        "U": h2h.weight,
    }
    return module("nn.GRU", seq, **fields), params


def sequencer(inner: TorchObject, remember: str = "neither", train: Any = None) -> TorchObject:
    return module(
        "nn.Sequencer",
        inner,
        module=inner,
        sharedClones=LuaTable(),
        output=LuaTable(),
        tableoutput=LuaTable(),
        _output=LuaTable(),
        step=1,
        _remember=remember,
        train=train,
        dpnn_mediumEmpty=LuaTable.from_list(["output", "gradInput", "_output"]),
    )
