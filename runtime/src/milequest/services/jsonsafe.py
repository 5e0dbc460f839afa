"""JSON in and out of the services with hostile input in mind.

The standard library's ``json`` recurses once per nesting level (a ``RecursionError`` on a
few kB of brackets), turns ``"\\ud800"`` escapes into lone surrogates that no UTF-8 encoder
accepts, and accepts ``NaN`` and ``Infinity``. These wrappers keep ``json``'s speed and turn
each of those into a :class:`JsonSafetyError` (a ``ValueError``), which callers map to their
own typed error. pydantic's JSON parser has similar limits but no depth setting and no
surrogate check, hence this small module.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting accepted: far beyond any real payload, far below the recursion limit."""

_SCALARS = (str, int, float, bool, type(None))


class JsonSafetyError(ValueError):
    """The value or text is not JSON we accept; the message says why."""


def _reject_constant(name: str) -> Any:
    raise JsonSafetyError(f"{name} is not valid JSON")


def loads(text: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``text``; :class:`JsonSafetyError` when it is not acceptable JSON.

    Refused: invalid JSON or UTF-8, ``NaN``/``Infinity``, integers past Python's digit
    limit, nesting deeper than ``max_depth`` and lone surrogates in strings.
    """
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise JsonSafetyError(f"nested deeper than {max_depth} levels") from None
    except JsonSafetyError:
        raise
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, digit limit
        raise JsonSafetyError(f"not valid JSON: {_short(exc)}") from None
    check(value, max_depth=max_depth)
    return value


def dumps(value: Any, *, max_depth: int = MAX_DEPTH) -> str:
    """Compact JSON text of ``value`` (UTF-8 kept as is); :class:`JsonSafetyError` if unsafe."""
    check(value, max_depth=max_depth)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def check(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`JsonSafetyError` unless ``value`` is plain, finite, valid-UTF-8 JSON data.

    Plain means dicts with string keys, lists or tuples, strings, ints, finite floats,
    booleans and None, nested at most ``max_depth`` levels. The walk is iterative, so a
    value nested far past the recursion limit is refused rather than crashing.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JsonSafetyError(f"{item} is not a finite number")
        elif isinstance(item, _SCALARS):
            continue
        elif isinstance(item, dict):
            if depth > max_depth:
                raise JsonSafetyError(f"nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise JsonSafetyError(f"object keys must be strings, not {_kind(key)}")
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > max_depth:
                raise JsonSafetyError(f"nested deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in item)
        else:
            raise JsonSafetyError(f"{_kind(item)} is not JSON-serializable")


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonSafetyError("text contains a lone surrogate (not valid Unicode)") from None


def _kind(value: object) -> str:
    return f"a value of type {type(value).__name__}"


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(exc: Exception, limit: int = 80) -> str:
    return clip(str(exc), limit)


def shorten(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages about input.

    Safe on any object: a ``repr`` that fails or recurses yields the type name instead.
    """
    try:
        text = repr(value) if not isinstance(value, list | dict | tuple) else _outline(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def _outline(value: list[Any] | dict[Any, Any] | tuple[Any, ...]) -> str:
    # repr() of a deeply nested container recurses: describe it without descending.
    return f"<{type(value).__name__} of {len(value)} item(s)>"
