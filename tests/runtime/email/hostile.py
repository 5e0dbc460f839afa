"""Hostile input for every entry point: Hypothesis strategies and the explicit hazard cases
(deep nesting, lone surrogates, NUL, 1 MB strings, values JSON cannot hold, huge integers,
wrong types)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from hypothesis import strategies as st


def deep_list(levels: int = 5000) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def deep_dict(levels: int = 5000) -> Any:
    value: Any = {}
    for _ in range(levels):
        value = {"a": value}
    return value


class Unprintable:
    """An object whose repr and str raise, as a hostile caller's might."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


HAZARDS: dict[str, Any] = {
    "deep-list": deep_list(),
    "deep-dict": deep_dict(),
    "surrogate": "a\ud800b@example.com",
    "nul": "a\x00b@example.com",
    "crlf": "a@example.com\r\nBcc: victim@example.com",
    "1mb": "x" * (1024 * 1024),
    "object": object(),
    "unprintable": Unprintable(),
    "datetime": dt.datetime(2024, 1, 1),
    "set": {"a@example.com"},
    "bytes": b"a@example.com",
    "huge-int": 10**5000,
    "nan": math.nan,
    "int": 42,
    "none": None,
    "list": ["a@example.com", 5],
    "dict": {"to": "a@example.com"},
}

ADDRESSES = [
    "a@example.com",
    "B.Walker@Example.com",
    "Ann <ann@example.com>",
    "quoted name\r\n <q@example.com>",
    "x@example.com\nBcc: victim@example.com",
    "not-an-email",
    "user@localhost",
    "",
]
HEADER_TEXT = [
    "Hello",
    "Grüße 🏃",
    "Hi\r\nBcc: victim@example.com",
    "line\nbreak",
    "nul\x00here",
    "\ud800",
    "=?utf-8?q?encoded?=",
]

texts = st.text(max_size=30) | st.sampled_from(HEADER_TEXT)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | texts
    | st.binary(max_size=20)
    | st.sampled_from([HAZARDS["object"], HAZARDS["datetime"]])
    | st.builds(pow, st.just(10), st.integers(4400, 4500))  # past int's digit limit
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
addresses = st.sampled_from(ADDRESSES) | values
address_lists = addresses | st.lists(st.sampled_from(ADDRESSES), max_size=4)

_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "to": address_lists,
    "cc": address_lists,
    "bcc": address_lists,
    "from": addresses,
    "reply_to": address_lists,
    "subject": texts | values,
    "html": texts | values,
    "text": texts | values,
    "template": st.sampled_from(["welcome", "team-invite", "weekly-summary", "nope"]) | values,
    "template_data": st.dictionaries(texts, values, max_size=4) | values,
    "headers": st.dictionaries(texts, texts, max_size=3) | values,
    "tags": st.dictionaries(texts, texts, max_size=2) | values,
    "attachments": st.lists(
        st.fixed_dictionaries({"filename": texts, "content": st.binary(max_size=40) | values}),
        max_size=2,
    )
    | values,
    "configuration_set": texts | values,
    "category": st.sampled_from(["news", "weekly-summary", "bad category!"]) | values,
    "colour": values,
}


_HEADER_BOUND = {
    "subject": st.sampled_from(HEADER_TEXT),
    "headers": st.dictionaries(
        st.sampled_from(["X-A", "Bcc", "X B"]), st.sampled_from(HEADER_TEXT), min_size=1, max_size=2
    ),
    "from": st.sampled_from(ADDRESSES),
    "reply_to": st.sampled_from(ADDRESSES),
    "tags": st.dictionaries(
        st.sampled_from(["campaign"]), st.sampled_from(HEADER_TEXT), min_size=1
    ),
    "category": st.sampled_from(["news", "a\r\nb", "weekly-summary"]),
    "attachments": st.lists(
        st.fixed_dictionaries({"filename": st.sampled_from(HEADER_TEXT), "content": st.just(b"x")}),
        min_size=1,
        max_size=1,
    ),
}


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """A message as callers might pass one: mostly plausible, with a header-bound field
    aimed at injection, often broken, sometimes not a mapping at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    base: dict[str, Any] = {
        "to": draw(st.sampled_from(ADDRESSES[:3])),
        "subject": "Hello",
        "text": "Walk on!",
    }
    aimed = draw(st.sampled_from(sorted(_HEADER_BOUND)))
    base[aimed] = draw(_HEADER_BOUND[aimed])
    for name in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=2, unique=True)):
        base[name] = draw(_FIELD_VALUES[name])
    return base
