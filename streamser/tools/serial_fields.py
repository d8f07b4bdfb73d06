"""What each serialization mode clears, class by class, as the Lua modules clear themselves.

The lists come from the modules' own sources: ``clearState`` in nn, nngraph, rnn (Element-Research
and torch/rnn) and cudnn.torch, and dpnn's ``dpnn_mediumEmpty`` / ``dpnn_lightEmpty``. *medium* is
what ``clearState()`` (and dpnn's medium serial) clears; *light* adds what dpnn's light serial
also empties, the gradients of the parameters.

Three tables, one per way the Lua code clears a value:

* :data:`SERIAL_FIELDS` -- emptied as ``nn.utils.clear`` empties them: a tensor becomes Torch's
  empty tensor *in place* (``t:set()``, so every reference to that tensor sees it empty), a
  table becomes ``{}``, and any other value is removed. ``"*"`` applies to every module,
  ``"*Criterion"`` instead of it to criteria (``Criterion:clearState`` clears only
  ``gradInput``: a criterion's ``output`` is its loss, a number).
* :data:`SERIAL_DROPS` -- removed outright (the Lua code sets them to nil), e.g.
  ``LookupTable._gradOutput`` or ``AbstractRecurrent.zeroMask``.
* :data:`NODE_DATA_DROPS` -- nngraph: ``gModule:clearState`` removes ``input`` from the data
  table of each of its forward nodes and ``gradOutput`` / ``gradOutputBuffer`` from those of its
  backward nodes (forward and backward nodes share their data tables).

A module may also list its own fields, as dpnn modules do, in ``dpnn_mediumEmpty`` /
``dpnn_lightEmpty`` fields. Extend the tables with :func:`add_serial_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..values.lua import TorchObject

MODES = ("heavy", "medium", "light")
MODULE_PREFIXES = ("nn.", "cudnn.", "cunn.", "dpnn.", "nngraph.", "rnn.")

_CONVOLUTION_BUFFERS = ("finput", "fgradInput", "_input", "_gradOutput")
_CONVOLUTIONS = (
    "nn.SpatialConvolution",
    "nn.SpatialConvolutionMM",
    "nn.SpatialConvolutionLocal",
    "nn.SpatialFullConvolution",
    "nn.SpatialDilatedConvolution",
    "nn.VolumetricConvolution",
    "nn.VolumetricFullConvolution",
    "nn.VolumetricDilatedConvolution",
    "nn.TemporalConvolution",
)
# cudnn.torch's convolutions: their clearState clears these (their nn parents' buffers are
# listed too, since cudnn.convert copies every field of an nn convolution across).
_CUDNN_CONVOLUTION_BUFFERS = (
    *_CONVOLUTION_BUFFERS,
    "input_slice",
    "output_slice",
    "extraBuffer",
)
_CUDNN_CONVOLUTIONS = (
    "cudnn.SpatialConvolution",
    "cudnn.SpatialFullConvolution",
    "cudnn.SpatialDilatedConvolution",
    "cudnn.VolumetricConvolution",
    "cudnn.VolumetricFullConvolution",
    "cudnn.VolumetricDilatedConvolution",
    "cudnn.TemporalConvolution",
)
_BATCH_NORM_BUFFERS = (
    "buffer",
    "buffer2",
    "centered",
    "std",
    "normalized",
    "save_mean",
    "save_std",
    "_input",
    "_gradOutput",
)
_BATCH_NORMS = (
    "nn.BatchNormalization",
    "nn.SpatialBatchNormalization",
    "nn.VolumetricBatchNormalization",
    "cudnn.BatchNormalization",
    "cudnn.SpatialBatchNormalization",
    "cudnn.VolumetricBatchNormalization",
)
_POOLINGS_WITH_INDICES = (
    "nn.SpatialMaxPooling",
    "nn.VolumetricMaxPooling",
    "nn.TemporalMaxPooling",
    "nn.SpatialAdaptiveMaxPooling",
)
# cudnn's pooling, pointwise (ReLU, Tanh, Sigmoid, ...), softmax and LRN modules keep one buffer.
_CUDNN_GRAD_OUTPUT_ONLY = (
    "cudnn.SpatialMaxPooling",
    "cudnn.SpatialAveragePooling",
    "cudnn.VolumetricMaxPooling",
    "cudnn.VolumetricAveragePooling",
    "cudnn.ReLU",
    "cudnn.Tanh",
    "cudnn.Sigmoid",
    "cudnn.ClippedReLU",
    "cudnn.ELU",
    "cudnn.SoftMax",
    "cudnn.LogSoftMax",
    "cudnn.SpatialSoftMax",
    "cudnn.SpatialLogSoftMax",
    "cudnn.VolumetricSoftMax",
    "cudnn.VolumetricLogSoftMax",
    "cudnn.SpatialCrossMapLRN",
)
# rnn's AbstractRecurrent:clearState (the union of its versions); every recurrent module
# inherits it, and keeps its step clones (sharedClones), each cleared in turn.
_RECURRENT_BUFFERS = (
    "prevOutput",
    "_input",
    "_gradOutput",
    "_gradOutputs",
    "gradPrevOutput",
    "cell",
    "cells",
    "gradCells",
    "outputs",
    "gradInputs",
    "gradOutputs",
)
_LSTM_BUFFERS = (
    *_RECURRENT_BUFFERS,
    "zeroTensor",
    "userPrevOutput",
    "userPrevCell",
    "userGradPrevOutput",
    "userGradPrevCell",
)
_RECURRENT = (
    "nn.AbstractRecurrent",
    "nn.Recurrent",
    "nn.GRU",
    "nn.Mufuru",
    "nn.Recurrence",
    "nn.Recursor",
    "nn.NormStabilizer",
    "nn.RecGRU",
    "nn.LinearRNN",
    "nn.LookupRNN",
)
_LSTMS = ("nn.LSTM", "nn.FastLSTM", "nn.RecLSTM")
_SEQ_LSTMS = ("nn.SeqLSTM", "nn.SeqLSTMP", "nn.SeqGRU")
_SEQ_LSTM_BUFFERS = (
    "cell",
    "gates",
    "buffer1",
    "buffer2",
    "buffer3",
    "grad_a_buffer",
    "grad_c0",
    "grad_h0",
    "grad_x",
    "c0",
    "h0",
)

# mode -> class name -> fields that mode empties (light also empties medium's).
SERIAL_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "medium": {
        "*": ("output", "gradInput", "momGradParams", "dpnn_input"),
        "*Criterion": ("gradInput",),
        "nn.Linear": ("addBuffer",),
        "nn.Bilinear": ("buff1", "buff2"),
        "nn.Dropout": ("noise",),
        "nn.SpatialDropout": ("noise",),
        "nn.VolumetricDropout": ("noise",),
        "nn.CMul": ("_output", "_weight", "_expand", "_repeat", "_sum"),
        "nn.Normalize": ("_output", "norm", "normp", "buffer", "cross", "_indices"),
        "nn.Cosine": ("_input", "_weight", "_gradOutput", "_sum", "_inputNorm", "_weightNorm"),
        "nn.CosineDistance": ("buffer", "w1", "w22", "w", "w32", "ones"),
        "nn.DotProduct": ("buffer",),
        "nn.Euclidean": (
            "_input",
            "_output",
            "_gradOutput",
            "_weight",
            "_div",
            "_sum",
            "_expand",
            "_expand2",
            "_expand3",
            "_repeat",
            "_repeat2",
        ),
        "nn.LogSigmoid": ("buffer",),
        "nn.LookupTable": ("_count", "_input"),
        "nn.Max": ("_indices", "_output"),
        "nn.Min": ("_indices", "_output"),
        "nn.MixtureTable": (
            "_gaterView",
            "_expert",
            "_expertView",
            "_sum",
            "_expert2",
            "_expertView2",
        ),
        "nn.PairwiseDistance": ("diff", "outExpand", "grad", "ones"),
        "nn.SpatialCrossMapLRN": ("scale", "paddedRatio", "accumRatio"),
        "nn.MaskedSelect": (
            "_maskIndexBuffer",
            "_maskIndexBufferCPU",
            "_maskIndices",
            "_gradBuffer",
            "_gradMask",
        ),
        "nn.SpatialSubtractiveNormalization": ("ones", "_coef"),
        "nn.SpatialDivisiveNormalization": ("ones", "_coef"),
        "nn.Sequencer": ("_output", "tableoutput", "tablegradinput", "tablegradInput"),
        "nn.SequenceGenerator": ("_output",),
        "nn.NCEModule": (
            "sampleidx",
            "sampleprob",
            "_noiseidx",
            "_noiseprob",
            "_weight",
            "_gradWeight",
            "_gradOutput",
            "_tgradOutput",
        ),
        "cudnn.BatchNormalization": ("save_mean", "save_std"),
        **dict.fromkeys(_CONVOLUTIONS, _CONVOLUTION_BUFFERS),
        **dict.fromkeys(_CUDNN_CONVOLUTIONS, _CUDNN_CONVOLUTION_BUFFERS),
        **dict.fromkeys(_BATCH_NORMS, _BATCH_NORM_BUFFERS),
        **dict.fromkeys(_POOLINGS_WITH_INDICES, ("indices",)),
        **dict.fromkeys(_CUDNN_GRAD_OUTPUT_ONLY, ("_gradOutput",)),
        **dict.fromkeys(_RECURRENT, _RECURRENT_BUFFERS),
        **dict.fromkeys(_LSTMS, _LSTM_BUFFERS),
        **dict.fromkeys(_SEQ_LSTMS, _SEQ_LSTM_BUFFERS),
    },
    "light": {"*": ("gradWeight", "gradBias")},
}

# mode -> class name -> fields that mode removes (the Lua code sets them to nil).
SERIAL_DROPS: dict[str, dict[str, tuple[str, ...]]] = {
    "medium": {
        "nn.LookupTable": ("_gradOutput",),
        "nn.SpatialFractionalMaxPooling": ("indices", "randomSamples"),
        **dict.fromkeys((*_RECURRENT, *_LSTMS), ("zeroMask",)),
        **dict.fromkeys(
            _SEQ_LSTMS,
            ("_grad_x", "_output", "grad_hidden", "hidden", "zeroMask", "_zeroMask"),
        ),
    },
    "light": {},
}

# gModule class -> (field listing its nodes, keys removed from each node's data table).
NODE_DATA_DROPS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "nn.gModule": (
        ("forwardnodes", ("input",)),
        ("backwardnodes", ("gradOutput", "gradOutputBuffer")),
    ),
}

_DECLARED = {"medium": ("dpnn_mediumEmpty",), "light": ("dpnn_mediumEmpty", "dpnn_lightEmpty")}


def add_serial_fields(mode: str, typename: str, *fields: str, drop: bool = False) -> None:
    """Make ``mode`` (medium or light) also empty ``fields`` of ``typename`` (``"*"``: any
    module); with ``drop=True`` the fields are removed instead of emptied."""
    if mode not in ("medium", "light"):
        raise ValueError(f"mode must be 'medium' or 'light', not {mode!r}")
    table = (SERIAL_DROPS if drop else SERIAL_FIELDS)[mode]
    current = table.get(typename, ())
    table[typename] = current + tuple(f for f in fields if f not in current)


def is_module(value: Any) -> bool:
    """A Torch module or criterion: a class of the nn family, or any object with the fields
    ``nn.Module``'s constructor gives (``output`` and ``gradInput``)."""
    if not isinstance(value, TorchObject) or not isinstance(value.fields, Mapping):
        return False
    if value.typename.startswith(MODULE_PREFIXES):
        return True
    return "output" in value.fields and "gradInput" in value.fields


def _modes(mode: str) -> tuple[str, ...]:
    return {"medium": ("medium",), "light": ("medium", "light")}.get(mode, ())


def fields_to_empty(mode: str, module: TorchObject) -> set[str]:
    """The field names ``mode`` empties in ``module`` (tensors in place, tables to ``{}``)."""
    generic = "*Criterion" if module.typename.endswith("Criterion") else "*"
    names: set[str] = set()
    for each in _modes(mode):
        table = SERIAL_FIELDS[each]
        names.update(table.get(generic, table.get("*", ())), table.get(module.typename, ()))
    fields = module.fields
    if isinstance(fields, Mapping):
        for declared in _DECLARED.get(mode, ()):
            names.update(_names_in(fields.get(declared)))
    return names


def fields_to_drop(mode: str, module: TorchObject) -> set[str]:
    """The field names ``mode`` removes from ``module``."""
    names: set[str] = set()
    for each in _modes(mode):
        names.update(SERIAL_DROPS[each].get(module.typename, ()))
    return names


def _names_in(listed: Any) -> list[str]:
    """The strings of a Lua list of field names (a table or a Python list)."""
    values = listed.values() if isinstance(listed, Mapping) else listed
    if not isinstance(values, (list, tuple)) and not isinstance(listed, Mapping):
        return []
    return [v for v in values if isinstance(v, str)]
