"""create_email_service, settings from the environment, and the registry."""

from __future__ import annotations

import pytest
from milequest.services import (
    check_services_health,
    get_service,
    initialize_services,
    override_service,
)
from milequest.services.email import (
    EmailError,
    EmailErrorCode,
    EmailService,
    create_email_service,
)
from milequest.services.errors import CommonErrorCode
from milequest.services.health import HealthState


def test_error_codes_include_the_common_ones() -> None:
    for code in CommonErrorCode:
        assert EmailErrorCode(code.value).value == code.value
    required = [
        "INVALID_EMAIL",
        "INVALID_MESSAGE",
        "TOO_MANY_RECIPIENTS",
        "MESSAGE_TOO_LARGE",
        "SUPPRESSED",
        "NOT_VERIFIED",
        "TEMPLATE_NOT_FOUND",
        "TEMPLATE_RENDER_FAILED",
        "RATE_LIMITED",
        "QUOTA_EXCEEDED",
        "SENDING_PAUSED",
        "MESSAGE_REJECTED",
        "CONFIGURATION",
        "PROVIDER_UNAVAILABLE",
        "PROVIDER_ERROR",
    ]
    assert set(required) <= set(EmailErrorCode.__members__)
    for code in EmailErrorCode:
        assert code.value in EmailError.hints, code
        assert str(EmailError(code, "m")).startswith(f"{code.value}: m. ")


def test_provider_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "mock")
    assert create_email_service().provider_name == "mock"
    monkeypatch.setenv("EMAIL_PROVIDER", "SMTP")
    assert create_email_service().provider_name == "smtp"
    assert create_email_service("mock").provider_name == "mock"


@pytest.mark.parametrize("name", ["postmark"])
def test_reserved_providers_fail_clearly(name: str) -> None:
    with pytest.raises(EmailError) as info:
        create_email_service(name)
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "not yet available" in info.value.message


def test_unknown_provider_lists_valid_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "carrier-pigeon")
    with pytest.raises(EmailError) as info:
        create_email_service()
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "ses, smtp, mock, resend, sendgrid" in info.value.message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SES_SANDBOX", "maybe"),
        ("SMTP_SECURITY", "tls"),
        ("SMTP_PORT", "seventy"),
        ("SES_RETRY_MODE", "legacy"),
        ("SES_MAX_ATTEMPTS", "0"),
        ("EMAIL_CALL_TIMEOUT", "0"),
        ("EMAIL_CALL_TIMEOUT", "600"),
        ("EMAIL_API_MAX_ATTEMPTS", "0"),
        ("RESEND_BATCH_VALIDATION", "lenient"),
        ("SES_MAIL_FROM_SUBDOMAIN", "Bad Name"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(EmailError) as info:
        create_email_service("mock")
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert variable in info.value.message


def test_bad_default_sender_and_unknown_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEFAULT_FROM_EMAIL", "not-an-address")
    with pytest.raises(EmailError) as info:
        create_email_service("mock")
    assert "DEFAULT_FROM_EMAIL" in info.value.message
    with pytest.raises(EmailError) as info:
        create_email_service("mock", default_from_email="ok@example.com", colour="red")
    assert info.value.code is EmailErrorCode.CONFIGURATION


@pytest.mark.parametrize(
    ("provider", "variable"), [("resend", "RESEND_API_KEY"), ("sendgrid", "SENDGRID_API_KEY")]
)
def test_api_providers_need_their_key(provider: str, variable: str) -> None:
    with pytest.raises(EmailError) as info:
        create_email_service(provider)
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert variable in info.value.message


@pytest.mark.parametrize("value", ["weekly summary", "a:b:c", ":news", "x:*"])
def test_bulk_templates_setting_is_checked(value: str) -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("mock", email_bulk_templates=value)
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "EMAIL_BULK_TEMPLATES" in info.value.message


def test_instance_argument_of_another_provider_is_a_configuration_error() -> None:
    with pytest.raises(EmailError) as info:
        create_email_service("smtp", client=object())
    assert info.value.code is EmailErrorCode.CONFIGURATION
    assert "client" in info.value.message


def test_registry_serves_one_email_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "mock")
    service = get_service("email")
    assert isinstance(service, EmailService)
    assert get_service("email") is service
    assert initialize_services(["email"]) == {"email": service}
    report = check_services_health(["email"])
    assert report.status is HealthState.HEALTHY
    assert report.services["email"].provider == "mock"


def test_registry_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "mock")
    replacement = create_email_service("mock")
    with override_service("email", replacement):
        assert get_service("email") is replacement
    assert get_service("email") is not replacement


def test_unhealthy_creation_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAIL_PROVIDER", "postmark")
    report = check_services_health(["email"])
    assert report.status is HealthState.UNHEALTHY
    assert "not yet available" in report.services["email"].details["error"]
