"""The errors of the PyTorch bridge, all inside streamser's one family (``StreamserError``).

A model is checked whole before anything is built, so that one error names every class that
cannot be converted instead of the first one found: a user porting a model learns the full
list of work in one run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamser import StreamserError


class TorchBridgeError(StreamserError):
    """Base class of the errors raised while converting Torch7 values to PyTorch."""


class UnsupportedModuleError(TorchBridgeError):
    """The model holds Torch7 classes that ``to_module`` cannot build.

    ``classes`` maps each class name to the paths (``modules.1.modules.3``, Lua's 1-based
    indices as in ``streamser.open``) of every module of that class in the model.
    """

    def __init__(self, classes: Mapping[str, Sequence[str]]) -> None:
        self.classes = {name: list(paths) for name, paths in sorted(classes.items())}
        parts = [f"{name} (at {_paths(paths)})" for name, paths in self.classes.items()]
        count = len(self.classes)
        noun = "class" if count == 1 else "classes"
        super().__init__(f"cannot convert {count} Torch7 {noun} to PyTorch: " + "; ".join(parts))


class InvalidModuleError(TorchBridgeError):
    """A supported module whose fields do not make sense (missing, wrong type, inconsistent).

    ``path`` locates the module in the model, as in :class:`UnsupportedModuleError`.
    """

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        where = f" at {path}" if path else ""
        super().__init__(message + where)


class InputShapeError(TorchBridgeError):
    """An input the Torch7 module would reject as well (wrong number of dimensions, sizes)."""


def _paths(paths: Sequence[str], shown: int = 3) -> str:
    listed = ", ".join(path or "<root>" for path in paths[:shown])
    more = len(paths) - shown
    return listed + (f" and {more} more" if more > 0 else "")
