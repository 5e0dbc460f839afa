"""The explicit hazard cases through every entry point of the email service, on every
provider: deep nesting, lone surrogates, NUL, CR/LF, 1 MB strings, values JSON cannot hold,
huge integers and wrong types, in each argument. Only ``EmailError`` may escape, and
refused input never reaches the provider."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any

import pytest
from milequest.services.email import EmailError

from tests.runtime.email.harness import Harness
from tests.runtime.email.hostile import HAZARDS
from tests.runtime.email.test_properties import PROVIDERS, _call, _wire_is_clean
from tests.runtime.email.test_properties import harness as harness  # the fixture

OK = "a@example.com"


def _message(**fields: Any) -> dict[str, Any]:
    return {"to": OK, "subject": "Hello", "text": "Walk on!", **fields}


EntryPoint = tuple[str, Callable[[Any], tuple[Any, ...]]]
ENTRY_POINTS: list[EntryPoint] = [
    ("send_email", lambda h: (h,)),
    *(
        ("send_email", lambda h, f=field: (_message(**{f: h}),))
        for field in (
            "to",
            "cc",
            "bcc",
            "from",
            "reply_to",
            "subject",
            "html",
            "text",
            "template",
            "template_data",
            "tags",
            "configuration_set",
            "category",
            "attachments",
        )
    ),
    ("send_email", lambda h: (_message(headers={"X-A": h}),)),
    ("send_email", lambda h: (_message(template="welcome", template_data={"name": h}),)),
    ("send_email", lambda h: (_message(attachments=[{"filename": h, "content": b"x"}]),)),
    ("send_email", lambda h: (_message(attachments=[{"filename": "a", "content": h}]),)),
    ("send_templated_email", lambda h: (h, OK, {})),
    ("send_templated_email", lambda h: ("welcome", h, {"name": "x"})),
    ("send_templated_email", lambda h: ("welcome", OK, h)),
    ("send_templated_email", lambda h: ("welcome", OK, {"name": h})),
    ("send_bulk_emails", lambda h: (h,)),
    ("send_bulk_emails", lambda h: ([h],)),
    ("send_bulk_emails", lambda h: ([_message(subject=h)],)),
    ("validate_email", lambda h: (h,)),
    ("verify_domain", lambda h: (h,)),
    ("suppress_email", lambda h: (h,)),
    ("suppress_email", lambda h: (OK, h)),
    ("suppress_email", lambda h: (OK, "UNSUBSCRIBE", h)),
    ("remove_suppressed_email", lambda h: (h,)),
    ("remove_suppressed_email", lambda h: (OK, h)),
]
HASHABLE = {name: value for name, value in HAZARDS.items() if isinstance(value, Hashable)}


@pytest.mark.parametrize("harness", ["mock"], indirect=True)
@pytest.mark.parametrize("hazard", sorted(HAZARDS))
def test_every_entry_point_survives_the_hazard(harness: Harness, hazard: str) -> None:
    value = HAZARDS[hazard]
    for method, arguments in ENTRY_POINTS:
        _call(harness, method, *arguments(value))
    with contextlib.suppress(EmailError):
        list(harness.service.iter_bulk_emails([_message(text=value), value]))
    _wire_is_clean(harness)


# Validation is the service's, in one place; what differs per provider is what reaches its
# wire, so the other providers get the hazards through the fields that travel.
WIRE_FIELDS = ("to", "from", "reply_to", "subject", "html", "text", "tags", "category")


@pytest.mark.parametrize("harness", [p for p in PROVIDERS if p != "mock"], indirect=True)
@pytest.mark.parametrize("hazard", sorted(set(HAZARDS) - {"1mb"}))
def test_hazards_on_the_wire_of_every_provider(harness: Harness, hazard: str) -> None:
    value = HAZARDS[hazard]
    for field in WIRE_FIELDS:
        _call(harness, "send_email", _message(**{field: value}))
    _call(harness, "send_email", _message(headers={"X-A": value}))
    _call(harness, "send_templated_email", "welcome", OK, {"name": value})
    _call(harness, "send_bulk_emails", [_message(subject=value), _message(to=value)])
    _wire_is_clean(harness)


@pytest.mark.parametrize("harness", [p for p in PROVIDERS if p != "mock"], indirect=True)
def test_a_megabyte_body_goes_through_every_provider(harness: Harness) -> None:
    sent = _call(harness, "send_email", _message(text=HAZARDS["1mb"]))
    assert not isinstance(sent, EmailError), sent
    assert harness.last().text is not None
    assert len(harness.last().text.strip()) == 1024 * 1024
    _wire_is_clean(harness)


@pytest.mark.parametrize("harness", ["mock"], indirect=True)
@pytest.mark.parametrize("hazard", sorted(HASHABLE))
def test_hazards_as_header_names_and_keyword_options(harness: Harness, hazard: str) -> None:
    value = HASHABLE[hazard]
    _call(harness, "send_email", _message(headers={value: "x"}))
    _call(harness, "send_email", _message(tags={value: "x"}))
    _call(harness, "send_email", {value: "x", **_message()})
    _call(harness, "send_templated_email", "welcome", OK, {value: "x"})
    _wire_is_clean(harness)


def test_an_iterable_that_raises_is_a_typed_error() -> None:
    from milequest.services.email import EmailErrorCode, create_email_service

    def broken() -> Any:
        yield _message()
        raise RuntimeError("the caller's generator broke")

    service = create_email_service("mock")
    with pytest.raises(EmailError) as info:
        service.send_bulk_emails(broken())
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
    with pytest.raises(EmailError) as info:
        list(service.iter_bulk_emails(broken()))
    assert info.value.code is EmailErrorCode.INVALID_MESSAGE
