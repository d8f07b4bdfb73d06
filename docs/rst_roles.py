"""A griffe extension for the API reference: streamser's docstrings are written for ``help()``
and Sphinx-style readers (``:func:`load```, doctest lines); this renders them as Markdown.

* ``:role:`~a.b.c``` becomes ```c``` and ``:role:`a.b``` becomes ```a.b```: inline code;
* a run of doctest lines (``>>>``, ``...`` and the output after them) becomes a ``pycon`` block.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match[2]
    return f"`{target.rsplit('.', 1)[-1] if match[1] else target}`"


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    indent: int | None = None  # of the first prompt of the block being fenced
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>") and indent is None:
            indent = len(line) - len(line.lstrip())
            out += ["", "```pycon"]
        elif indent is not None and not stripped:
            out.append("```")
            indent = None
        out.append(line if indent is None else line[indent:])
    if indent is not None:
        out.append("```")
    return "\n".join(out)


def markdown(text: str) -> str:
    """A docstring's text as Markdown (see the module docstring)."""
    return _fence_doctests(_ROLE.sub(_role, text))


class RstRoles(griffe.Extension):
    """Rewrites every docstring once it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
