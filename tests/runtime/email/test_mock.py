"""The mock provider's own controls: outbox, failure injection, latency, identities."""

from __future__ import annotations

import pytest
from milequest.services.email import EmailError, EmailErrorCode, create_email_service
from milequest.services.email.mock import MockEmailService

MSG = {"to": "a@example.com", "subject": "s", "text": "t"}


@pytest.fixture
def mock() -> MockEmailService:
    service = create_email_service("mock", seed=7)
    assert isinstance(service, MockEmailService)
    return service


def test_outbox_newest_last_and_clear(mock: MockEmailService) -> None:
    mock.send_email({**MSG, "subject": "first"})
    mock.send_email({**MSG, "subject": "second", "tags": {"k": "v"}})
    assert [m.subject for m in mock.outbox] == ["first", "second"]
    assert mock.last.tags == {"k": "v"}
    mock.clear()
    assert mock.outbox == []


def test_fail_next_with_a_code(mock: MockEmailService) -> None:
    mock.fail_next(2, "RATE_LIMITED")
    for _ in range(2):
        with pytest.raises(EmailError) as info:
            mock.send_email(MSG)
        assert info.value.code is EmailErrorCode.RATE_LIMITED
        assert info.value.retryable
    assert mock.send_email(MSG).accepted == ["a@example.com"]
    mock.fail_next(1, "MESSAGE_REJECTED")
    with pytest.raises(EmailError) as info:
        mock.send_email(MSG)
    assert info.value.code is EmailErrorCode.MESSAGE_REJECTED
    assert not info.value.retryable
    with pytest.raises(ValueError, match="unknown error code"):
        mock.fail_next(1, "NOPE")


def test_fail_rate(mock: MockEmailService) -> None:
    mock.fail_rate = 1.0
    with pytest.raises(EmailError) as info:
        mock.send_bulk_emails([MSG] * 5)
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    mock.fail_rate = 0.5
    result = mock.send_bulk_emails([MSG] * 200)
    assert 60 < result.failed < 140  # seeded: about half
    assert len(mock.outbox) == result.succeeded
    assert {f.error.code for f in result.failures() if f.error} == {
        EmailErrorCode.PROVIDER_UNAVAILABLE
    }


def test_fail_rate_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_MOCK_FAIL_RATE", "1")
    with pytest.raises(EmailError) as info:
        create_email_service("mock").send_email(MSG)
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable


def test_latency_is_applied(mock: MockEmailService, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("milequest.services.email.mock.time.sleep", slept.append)
    mock.latency_ms = 40
    mock.send_email(MSG)
    assert slept == [0.04]


def test_latency_past_the_call_deadline_fails_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("milequest.services.email.mock.time.sleep", slept.append)
    mock = create_email_service("mock", email_mock_latency_ms=20_000, email_call_timeout=2.0)
    with pytest.raises(EmailError) as info:
        mock.send_email(MSG)
    assert info.value.code is EmailErrorCode.PROVIDER_UNAVAILABLE
    assert info.value.retryable
    assert "EMAIL_CALL_TIMEOUT" in info.value.message
    assert slept == [2.0]
    assert mock.outbox == []  # type: ignore[attr-defined]


def test_verified_identities(mock: MockEmailService) -> None:
    sender = {**MSG, "from": "team@walkers.example"}
    with pytest.raises(EmailError) as info:
        mock.send_email(sender)
    assert info.value.code is EmailErrorCode.NOT_VERIFIED
    pending = mock.verify_domain("walkers.example")
    assert pending.status.value == "pending"
    mock.add_verified_domain("walkers.example")
    assert mock.verify_domain("walkers.example").verified
    assert mock.send_email(sender).accepted
    mock.add_verified_email("solo@other.example")
    assert mock.send_email({**MSG, "from": "Solo <solo@other.example>"}).accepted
    assert mock.get_verified_emails() == ["noreply@milequest.example", "solo@other.example"]
