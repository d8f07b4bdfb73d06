"""Paths into a loaded value: one syntax, printed by every listing and accepted by every lookup.

``f.tensors()``, ``f.arrays()``, ``streamser info`` and ``export`` print paths in this syntax, and
``f[...]``, ``f.get_slice``, ``in``, ``f.load(...)`` and the command line accept them unchanged:

==================  ==========================================================================
part                meaning
==================  ==========================================================================
``name``            a string key that is an identifier: ``model``, ``.weight`` after a part
``[3]``, ``[-1.5]`` a number key (Lua lists count from 1: ``modules[1]`` is the first module)
``['a b']``         any other string key, quoted as Python quotes it: ``['1']`` is the *string*
                    "1", never the number 1; ``['x.y']``, ``['[0]']``, ``['']`` likewise
``[b'\\xff']``       a string that is not UTF-8 (Lua strings are bytes)
``[true]``          a boolean key (``[True]`` is accepted too)
``[#2]``            the value of the table's 2nd entry, in the file's order: for keys that are
                    tables, tensors or functions, which have no literal
``{#2}``            the *key* of the table's 2nd entry (a tensor or a table used as a key)
``<upvalues>``      a Lua function's upvalues
==================  ==========================================================================

A torch object (``nn.Linear``) is transparent: its fields follow it directly
(``modules[1].weight``). The whole value is ``<root>`` (or the empty path), and ``<root>`` may
start any path, as in the writer's error messages (``<root>.model.layers[2].weight``).

The dotted form of earlier versions keeps working: ``modules.1.weight``. A dotted part that is
not an identifier is looser than a bracketed one: it names the string key if there is one, and
else the number it spells (``.1`` is the string "1" if the table has it, else the number 1).

>>> format_path(("model", "modules", 1, "weight"))
'model.modules[1].weight'
>>> parse_path("model.modules[1].weight") == ("model", "modules", 1, "weight")
True
>>> format_path(("vocab", "1", 1, True, 2.5, "a b"))
"vocab['1'][1][true][2.5]['a b']"
>>> parse_path("modules.1.weight")
('modules', Dotted('1'), 'weight')
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from ..errors import StreamserError
from ..values.lua import LuaFunction, LuaTable, TorchObject

ROOT: Final = "<root>"
UPVALUES_TEXT: Final = "<upvalues>"


@dataclass(frozen=True, slots=True)
class Entry:
    """``[#n]``: the value of a table's n-th entry (1-based, in the file's order)."""

    number: int


@dataclass(frozen=True, slots=True)
class KeyOf:
    """``{#n}``: the key of a table's n-th entry."""

    number: int


@dataclass(frozen=True, slots=True)
class Upvalues:
    """``<upvalues>``: a function's upvalues."""


@dataclass(frozen=True, slots=True)
class Dotted:
    """A dotted part that is not an identifier: the string key, or else the number it spells."""

    text: str

    def __repr__(self) -> str:
        return f"Dotted({self.text!r})"


UPVALUES: Final = Upvalues()
Part = str | bytes | int | float | bool | Entry | KeyOf | Upvalues | Dotted


class PathError(StreamserError, KeyError):
    """A path that does not parse, or names nothing in the value."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# --- formatting ------------------------------------------------------------------------------


def format_part(part: Part, first: bool = False) -> str:
    """One part as it follows a path (``first``: as it starts one)."""
    if type(part) is str and part.isidentifier():
        return part if first else "." + part
    if isinstance(part, Upvalues):
        return UPVALUES_TEXT if first else "." + UPVALUES_TEXT
    if isinstance(part, Dotted):
        return part.text if first else "." + part.text
    return _bracketed(part)


def _bracketed(part: Any) -> str:
    if isinstance(part, bool):
        return "[true]" if part else "[false]"
    if isinstance(part, Entry):
        return f"[#{part.number}]"
    if isinstance(part, KeyOf):
        return f"{{#{part.number}}}"
    return f"[{part!r}]"  # str, bytes, int, float (and, in messages, anything else)


def format_path(parts: Iterable[Part]) -> str:
    """The printed form of a path; ``<root>`` for the empty one."""
    text = "".join(format_part(part, index == 0) for index, part in enumerate(parts))
    return text or ROOT


def join(prefix: str, part: Part) -> str:
    """``prefix`` (a formatted path, "" for the root) followed by ``part``."""
    return prefix + format_part(part, not prefix)


# --- parsing ---------------------------------------------------------------------------------

_SEGMENT = re.compile(r"[^.\[{]+")
_BRACKET = re.compile(r"\[(?:#(?P<entry>-?\d+)|(?P<atom>[^'\"\]]*))\]")
_BRACE = re.compile(r"\{#(?P<key>-?\d+)\}")
_QUOTED = re.compile(r"""\[(?P<literal>b?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"))\]""", re.DOTALL)
_WORDS: Final[dict[str, bool]] = {"true": True, "false": False, "True": True, "False": False}


def parse_path(path: str) -> tuple[Part, ...]:
    """The parts of ``path``; :class:`PathError` if it is malformed."""
    pos = len(ROOT) if path.startswith(ROOT) else 0
    parts: list[Part] = []
    while pos < len(path):
        char = path[pos]
        if char == "[":
            part, pos = _parse_bracket(path, pos)
        elif char == "{":
            match = _BRACE.match(path, pos)
            if match is None:
                raise PathError(f"bad path {path!r}: expected {{#n}} at character {pos}")
            part, pos = KeyOf(int(match["key"])), match.end()
        else:
            pos += char == "."
            match = _SEGMENT.match(path, pos)
            if match is None:
                continue  # an empty dotted part ("a..b", a trailing dot): nothing to name
            part, pos = _segment(match.group()), match.end()
        parts.append(part)
    return tuple(parts)


def _segment(text: str) -> Part:
    if text == UPVALUES_TEXT:
        return UPVALUES
    return text if text.isidentifier() else Dotted(text)


def _parse_bracket(path: str, pos: int) -> tuple[Part, int]:
    quoted = _QUOTED.match(path, pos)
    if quoted is not None:
        literal: str | bytes = ast.literal_eval(quoted["literal"])
        return literal, quoted.end()
    match = _BRACKET.match(path, pos)
    if match is None:
        raise PathError(f"bad path {path!r}: unclosed or malformed [...] at character {pos}")
    if match["entry"] is not None:
        return Entry(int(match["entry"])), match.end()
    return _atom(path, match["atom"]), match.end()


def _atom(path: str, text: str) -> Part:
    if text in _WORDS:
        return _WORDS[text]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise PathError(f"bad path {path!r}: [{text}] is not a key (quote strings)") from None
    if math.isnan(number):
        raise PathError(f"bad path {path!r}: NaN is never a table key")
    return number


# --- lookup ----------------------------------------------------------------------------------

MISSING: Final = object()


def child(value: Any, part: Part) -> Any:
    """What ``part`` names inside ``value``, or :data:`MISSING`."""
    if isinstance(value, TorchObject):
        value = value.fields  # a torch object's fields follow it directly
    if isinstance(value, LuaFunction):
        return value.upvalues if isinstance(part, Upvalues) else MISSING
    if isinstance(value, Mapping):
        return _in_mapping(value, part)
    if isinstance(value, (list, tuple)):
        return _in_list(value, part)
    return MISSING


def _in_mapping(table: Mapping[Any, Any], part: Part) -> Any:
    if isinstance(part, (Entry, KeyOf)):
        pair = _nth(table, part.number)
        return MISSING if pair is None else pair[isinstance(part, Entry)]
    if isinstance(part, Dotted):
        if part.text in table:
            return table[part.text]
        number = _number(part.text)
        return table[number] if number is not None and number in table else MISSING
    if isinstance(part, Upvalues):
        return MISSING
    try:
        return table.get(part, MISSING)
    except TypeError:  # an unhashable part for a plain dict
        return MISSING


def _nth(table: Mapping[Any, Any], number: int) -> tuple[Any, Any] | None:
    if number < 1:
        return None
    pairs = table._entries.values() if isinstance(table, LuaTable) else table.items()
    return next(islice(pairs, number - 1, None), None)


def _in_list(items: list[Any] | tuple[Any, ...], part: Part) -> Any:
    number: Any = part
    if isinstance(part, Dotted):
        number = _number(part.text)
    elif isinstance(part, Entry):
        number = part.number
    if type(number) is float and number.is_integer():
        number = int(number)
    if type(number) is int and 1 <= number <= len(items):
        return items[number - 1]  # Lua lists count from 1
    return MISSING


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def loose(keys: Iterable[Any]) -> tuple[Part, ...]:
    """Keys given one by one (``f.get("optim", "3")``): strings are looked up as dotted parts
    are, so ``"3"`` also reaches the number key 3."""
    return tuple(Dotted(key) if type(key) is str else key for key in keys)


__all__ = [
    "MISSING",
    "ROOT",
    "UPVALUES",
    "Dotted",
    "Entry",
    "KeyOf",
    "Part",
    "PathError",
    "Upvalues",
    "child",
    "format_part",
    "format_path",
    "join",
    "loose",
    "parse_path",
]
