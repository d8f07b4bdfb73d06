"""Values of other libraries met by the writer (torch tensors), with the library imported only then.

The writer asks :func:`foreign_handler` about a type it has no handler for, once per type. A
type is torch's when its module is (``torch``, ``torch.nn.parameter``) or when it subclasses
``torch.Tensor`` or ``torch.nn.Module``, which is asked only of a torch already imported: a
tensor cannot exist before torch is, so streamser never imports torch itself, and saving numpy
values costs nothing more. The torch side lives in :mod:`streamser.torch.adapt`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .writer import GraphWriter


def claims_foreign(kind: type) -> bool:
    """Whether a library streamser bridges (torch) claims values of type ``kind``."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return False
    claimed = (torch.Tensor, torch.nn.Module)  # subclasses live in the user's modules
    return kind.__module__.startswith("torch") or issubclass(kind, claimed)


def foreign_handler(writer: GraphWriter, kind: type) -> Callable[[Any], None] | None:
    """The writer's handler for values of type ``kind``, or None when no library claims it.

    The handler holds the writer weakly (it is kept per writer, beside it, not by it)."""
    if not claims_foreign(kind):
        return None
    from ..torch.adapt import handler_for  # torch is loaded: importing the bridge is cheap now

    return handler_for(writer, kind)
