"""Property-based tests of every public method of the email service, on every provider that
runs offline (each against its local component). Seeds are fixed by the suite's profile.

The properties: only ``EmailError`` escapes; refused input never reaches the provider; no
CR, LF or NUL reaches a header on any provider's wire; results have their documented shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milequest.services.email import (
    BulkSendResult,
    DomainVerification,
    EmailError,
    EmailErrorCode,
    EmailValidation,
    SendResult,
    create_email_service,
)
from milequest.services.email.addresses import AddressError, normalize_address, normalize_domain
from milequest.services.health import HealthStatus

from tests.runtime.email import hostile
from tests.runtime.email.api_server import ApiServer
from tests.runtime.email.conftest import SmtpServer
from tests.runtime.email.harness import (
    Harness,
    MockHarness,
    ResendHarness,
    SendGridHarness,
    SesHarness,
    SmtpHarness,
)
from tests.runtime.email.resend_server import ResendState
from tests.runtime.email.sendgrid_server import SendGridState
from tests.runtime.email.ses_server import SesServer
from tests.runtime.email.test_contract import _deploy_templates

PROVIDERS = ["mock", "ses", "smtp", "resend", "sendgrid"]
UNSUBSCRIBE = {
    "email_unsubscribe_url": "https://api.milequest.example/email/unsubscribe",
    "email_unsubscribe_secret": "s3cret",
}
# Codes that say the input was refused: no send call may have been made.
REFUSED = frozenset(
    {
        EmailErrorCode.INVALID_EMAIL,
        EmailErrorCode.INVALID_MESSAGE,
        EmailErrorCode.INVALID_DOMAIN,
        EmailErrorCode.TOO_MANY_RECIPIENTS,
        EmailErrorCode.MESSAGE_TOO_LARGE,
        EmailErrorCode.TEMPLATE_NOT_FOUND,
        EmailErrorCode.TEMPLATE_RENDER_FAILED,
        EmailErrorCode.SUPPRESSED,
    }
)
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")
fewer = settings(max_examples=25)  # each example makes real local network calls


@pytest.fixture
def harness(
    request: pytest.FixtureRequest,
    ses_server: SesServer,
    smtp_plain: SmtpServer,
    resend_api: ApiServer[ResendState],
    sendgrid_api: ApiServer[SendGridState],
) -> Iterator[Harness]:
    name = request.param
    if name == "mock":
        yield MockHarness(create_email_service("mock", **UNSUBSCRIBE))
    elif name == "ses":
        _deploy_templates(ses_server)
        yield SesHarness(create_email_service("ses", **UNSUBSCRIBE), ses_server)
    elif name == "resend":
        yield ResendHarness(create_email_service("resend", **UNSUBSCRIBE), resend_api)
    elif name == "sendgrid":
        yield SendGridHarness(create_email_service("sendgrid", **UNSUBSCRIBE), sendgrid_api)
    else:
        service = create_email_service("smtp", **smtp_plain.settings(), **UNSUBSCRIBE)
        yield SmtpHarness(service, smtp_plain)


every_provider = pytest.mark.parametrize("harness", PROVIDERS, indirect=True)


def _wire_is_clean(harness: Harness) -> None:
    for name, value in harness.wire_headers():
        assert _FIELD_NAME.match(name), f"{harness.name}: header name {name!r}"
        assert name.lower() != "bcc", f"{harness.name}: a Bcc header reached the wire"
        for char in "\r\n\x00":
            assert char not in value, f"{harness.name}: {name}: {value!r}"


def _call(harness: Harness, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``method``: anything but ``EmailError`` escaping fails; refused input must not
    have reached the provider."""
    sends, calls = harness.network_calls(), harness.all_calls()
    try:
        return getattr(harness.service, method)(*args, **kwargs)
    except EmailError as exc:
        error = exc
    assert error.provider == harness.name
    if error.code in REFUSED:
        assert harness.network_calls() == sends, (method, error)
        if method not in ("send_email", "send_templated_email", "send_bulk_emails"):
            assert harness.all_calls() == calls, (method, error)
    return error


@every_provider
@fewer
@given(message=hostile.messages())
def test_send_email(harness: Harness, message: Any) -> None:
    result = _call(harness, "send_email", message)
    assert isinstance(result, SendResult | EmailError)
    if isinstance(result, SendResult):
        assert result.provider == harness.name
        assert result.message_id
    _wire_is_clean(harness)


@every_provider
@fewer
@given(
    template=st.sampled_from(["welcome", "team-invite", "weekly-summary", "nope"]) | hostile.values,
    to=hostile.address_lists,
    data=st.dictionaries(hostile.texts, hostile.values, max_size=4) | hostile.values,
    options=st.dictionaries(
        st.sampled_from(["cc", "headers", "from", "tags", "colour", "category"]),
        hostile.values,
        max_size=2,
    ),
)
def test_send_templated_email(
    harness: Harness, template: Any, to: Any, data: Any, options: dict[str, Any]
) -> None:
    result = _call(harness, "send_templated_email", template, to, data, **options)
    assert isinstance(result, SendResult | EmailError)
    _wire_is_clean(harness)


@every_provider
@fewer
@given(batch=st.lists(hostile.messages(), max_size=5) | hostile.values)
def test_send_bulk_emails(harness: Harness, batch: Any) -> None:
    result = _call(harness, "send_bulk_emails", batch)
    assert isinstance(result, BulkSendResult | EmailError)
    if isinstance(result, BulkSendResult):
        assert [r.index for r in result.results] == list(range(len(batch)))
        assert all(r.ok == (r.error is None) for r in result.results)
    _wire_is_clean(harness)


@every_provider
@fewer
@given(batch=st.lists(hostile.messages(), max_size=4) | hostile.values)
def test_iter_bulk_emails(harness: Harness, batch: Any) -> None:
    try:
        results = list(harness.service.iter_bulk_emails(batch))
    except EmailError:
        return
    assert [r.index for r in results] == list(range(len(batch)))
    _wire_is_clean(harness)


@every_provider
@given(address=hostile.addresses)
def test_validate_email(harness: Harness, address: Any) -> None:
    result = _call(harness, "validate_email", address)
    assert isinstance(result, EmailValidation | EmailError)
    if isinstance(result, EmailValidation):
        assert result.valid == (result.normalized is not None and result.reason.value == "ok")


@every_provider
@fewer
@given(
    domain=st.sampled_from(["walkers.example", "Trails.Example.", "bad domain", ""])
    | hostile.values
)
def test_verify_domain(harness: Harness, domain: Any) -> None:
    result = _call(harness, "verify_domain", domain)
    try:
        normalize_domain(domain)
    except AddressError:
        assert isinstance(result, EmailError)
        assert result.code is EmailErrorCode.INVALID_DOMAIN
        return
    if harness.name == "smtp":
        assert isinstance(result, EmailError)
        assert result.code is EmailErrorCode.NOT_SUPPORTED
    else:
        assert isinstance(result, DomainVerification)
        assert result.records


@every_provider
@given(
    address=hostile.addresses,
    reason=st.sampled_from(["BOUNCE", "complaint", "UNSUBSCRIBE", "SPAM"]) | hostile.values,
    category=st.none() | st.sampled_from(["news", "*", "bad category!"]) | hostile.values,
    source=st.none() | st.sampled_from(["csv-import", "a b"]) | hostile.values,
)
def test_suppress_and_remove(
    harness: Harness, address: Any, reason: Any, category: Any, source: Any
) -> None:
    before = harness.service.get_suppressed_emails()
    added = _call(harness, "suppress_email", address, reason, category, source=source)
    if isinstance(added, EmailError):
        # The address is checked first: a bad one is INVALID_EMAIL, anything else after it
        # INVALID_MESSAGE.
        try:
            normalize_address(address)
        except AddressError:
            assert added.code is EmailErrorCode.INVALID_EMAIL
        else:
            assert added.code is EmailErrorCode.INVALID_MESSAGE
        assert harness.service.get_suppressed_emails() == before
    removed = _call(harness, "remove_suppressed_email", address, category)
    assert isinstance(removed, bool | EmailError)


@every_provider
def test_methods_without_arguments(harness: Harness) -> None:
    assert isinstance(_call(harness, "get_verified_domains"), list)
    assert isinstance(_call(harness, "get_verified_emails"), list)
    assert isinstance(_call(harness, "get_suppressed_emails"), list)
    imported = _call(harness, "import_provider_suppressions")
    if harness.name in ("mock", "smtp"):
        assert isinstance(imported, EmailError)
        assert imported.code is EmailErrorCode.NOT_SUPPORTED
    else:
        assert imported == 0
    health = harness.service.health_check()
    assert isinstance(health, HealthStatus)
    assert health.healthy, health.details


_LONG_FIELDS: dict[str, Any] = {
    "to": lambda s: {"to": s + "@example.com"},
    "from": lambda s: {"to": "a@example.com", "from": s},
    "header name": lambda s: {"to": "a@example.com", "headers": {"X-" + s: "v"}},
    "header value": lambda s: {"to": "a@example.com", "headers": {"X-A": s + "\n"}},
    "tag": lambda s: {"to": "a@example.com", "tags": {s: "v"}},
    "category": lambda s: {"to": "a@example.com", "category": s},
    "unknown field": lambda s: {"to": "a@example.com", s: 1},
}


@settings(max_examples=30)
@given(
    field=st.sampled_from(sorted(_LONG_FIELDS)),
    filler=st.text(alphabet="abcxyz .:\u00e9", min_size=300, max_size=3000),
)
def test_long_input_is_shortened_in_error_messages(field: str, filler: str) -> None:
    service = create_email_service("mock", default_from_email="app@milequest.example")
    message = {"subject": "s", "text": "t", **_LONG_FIELDS[field](filler)}
    calls = (
        lambda: service.send_email(message),
        lambda: service.send_templated_email(filler, "a@example.com", {}),
        lambda: service.suppress_email("a@example.com", "UNSUBSCRIBE", filler),
    )
    for call in calls:
        try:
            call()
        except EmailError as error:
            text = str(error)
        else:
            pytest.fail(f"{field}: accepted")
        assert len(text) < 400, (field, text[:200])
        assert filler not in text
    detail = service.validate_email(filler + "@" + filler).detail or ""
    assert len(detail) < 400
    assert filler not in detail
